//! The `hookgate` binary: parses the command line and runs the chosen command (see `cli`).

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
