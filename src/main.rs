//! The `hookgate` binary: parses the command line and runs the chosen command (see `cli`).

mod cli;

/// glibc's allocator cost about a fifth of ingest CPU in profiles (many small, short-lived
/// allocations across threads); mimalloc handles that pattern far better.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // One rustls crypto provider for the process (ring), installed before any TLS is set up.
    let _ = rustls::crypto::ring::default_provider().install_default();
    cli::main()
}
