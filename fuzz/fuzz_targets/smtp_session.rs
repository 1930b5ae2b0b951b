//! Fuzzes the SMTP session (`ingress::smtp`) as a client meets it: a real gateway (SQLite in a
//! temporary folder, one email hook, mail authentication off) runs in this process, and each
//! input is sent over one loopback connection, which is then half-closed and read to its end.
//! libFuzzer sees the coverage of the server's threads, since they share the process; a panic
//! anywhere aborts it. In the input, `{hook}` stands for the email hook's address token, so that
//! seeds (and mutations of them) reach `DATA` and the commit.
//!
//! Oracles: no panic; the server greets and then answers only well-formed reply lines
//! (three digits, then a space or a hyphen, ended by CRLF).

#![no_main]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::Duration;

use hookgate::config::Config;
use hookgate::store::{Store, StoreConfig};
use hookgate::{Gateway, Listeners};
use libfuzzer_sys::fuzz_target;

#[path = "known_upstream.rs"]
mod known_upstream;

const EVENT_NAME: &str = "kustomer.app.fuzzmail.received";
const DEFINITION: &str = r#"{
  "app": "fuzzmail",
  "version": "1.0.0",
  "title": "Fuzzed mail",
  "hooks": [
    {
      "eventName": "kustomer.app.fuzzmail.received",
      "type": "email",
      "email": { "eventName": "kustomer.app.fuzzmail.{$['@type']}" }
    }
  ]
}"#;

struct Harness {
    smtp: SocketAddr,
    token: String,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        // tmpfs when there is one: each accepted message is a commit, and fsyncs there are free.
        let base = if std::path::Path::new("/dev/shm").is_dir() { "/dev/shm" } else { "/tmp" };
        let folder = tempfile::Builder::new().prefix("hookgate-fuzz-smtp").tempdir_in(base).expect("a temp dir");
        let folder = folder.keep();
        let definitions = folder.join("definitions");
        std::fs::create_dir_all(&definitions).expect("the definitions folder");
        std::fs::write(definitions.join("fuzzmail.json"), DEFINITION).expect("the definition");
        let database = folder.join("hookgate.db");
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("a runtime");
            runtime.block_on(async move {
                let store = Store::open(&StoreConfig::Sqlite { path: database.clone() }).await.expect("the store");
                let tokens = store.hook_tokens(vec![EVENT_NAME.to_owned()]).await.expect("the hook token");
                drop(store);
                let config = Config {
                    definitions,
                    database,
                    admin_token: Some("fuzz-admin-token-0123456789abcdef".into()),
                    watch_definitions: false,
                    mail_domain: "fuzz.example".into(),
                    mail_authentication: false,
                    smtp_max_message_bytes: 64 * 1024,
                    smtp_command_timeout_secs: 5,
                    smtp_session_timeout_secs: 10,
                    ..Config::default()
                };
                let smtp_settings = hookgate::smtp_settings(&config).expect("SMTP settings");
                let (gateway, _) = Gateway::start(config, "http://127.0.0.1".into()).await.expect("the gateway");
                let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("an HTTP port");
                let smtp = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("an SMTP port");
                let smtp_address = smtp.local_addr().expect("the SMTP address");
                sender.send((smtp_address, tokens[EVENT_NAME].clone())).expect("the fuzzer waits");
                let listeners = Listeners { http, smtp: Some((smtp, smtp_settings)) };
                gateway.run(listeners, std::future::pending()).await.expect("the gateway runs");
            });
        });
        let (smtp, token) = receiver.recv().expect("the gateway started");
        Harness { smtp, token }
    })
}

fn replace_placeholder(data: &[u8], token: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 64);
    let mut rest = data;
    while let Some(at) = rest.windows(6).position(|window| window == b"{hook}") {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(token.as_bytes());
        rest = &rest[at + 6..];
    }
    out.extend_from_slice(rest);
    out
}

fuzz_target!(|data: &[u8]| {
    known_upstream::let_known_panics_through();
    let harness = harness();
    let input = replace_placeholder(data, &harness.token);
    let mut connection = TcpStream::connect(harness.smtp).expect("the SMTP listener accepts");
    connection.set_read_timeout(Some(Duration::from_secs(30))).expect("a read timeout");
    // The server may close first (too many errors, QUIT): what it answered is still read.
    let _ = connection.write_all(&input);
    let _ = connection.shutdown(Shutdown::Write);
    let mut replies = Vec::new();
    let _ = connection.read_to_end(&mut replies);
    // A server that closes with input unread resets the connection, which may cut its last
    // replies short: only complete lines are judged.
    if !replies.is_empty() {
        assert!(replies.starts_with(b"220"), "no greeting: {:?}", String::from_utf8_lossy(&replies));
    }
    let complete = replies.iter().rposition(|&byte| byte == b'\n').map_or(0, |end| end + 1);
    for line in replies[..complete].split(|&byte| byte == b'\n').filter(|line| !line.is_empty()) {
        let well_formed = line.len() >= 4
            && line[..3].iter().all(u8::is_ascii_digit)
            && matches!(line[3], b' ' | b'-')
            && line.ends_with(b"\r");
        assert!(well_formed, "a malformed reply line: {:?}", String::from_utf8_lossy(line));
    }
});
