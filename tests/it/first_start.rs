//! A first start on the shipped definitions, as on a fresh clone: `serve` says in one line how
//! many platform sources wait for a secret and which command lists them, and `hookgate sources`
//! lists every source with its URL, scheme and the names of the secrets it reads, set or not,
//! never a value. What is expected is read from the shipped files themselves.

use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/hook-definitions");

/// One shipped source as its file declares it.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Declared {
    app: String,
    path: String,
    scheme: String,
    /// Every secret name it reads: the `secrets` references, then a `verifyToken`.
    secrets: Vec<String>,
}

/// Every source hook in the shipped definition files, read as plain JSON.
fn shipped_sources() -> Vec<Declared> {
    let mut files = vec![];
    let mut folders = vec![Path::new(SHIPPED).to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(folder).unwrap().map(Result::unwrap) {
            let path = entry.path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|extension| extension == "json") {
                files.push(path);
            }
        }
    }
    let name =
        |reference: &Value| reference.as_str().unwrap().trim_start_matches("${").trim_end_matches('}').to_owned();
    let mut declared = vec![];
    for file in files {
        let app: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        for hook in app["hooks"].as_array().unwrap() {
            let Some(source) = hook.get("source") else { continue };
            let mut secrets: Vec<String> = source["secrets"].as_array().unwrap().iter().map(name).collect();
            secrets.extend(source.get("verifyToken").map(name));
            declared.push(Declared {
                app: app["app"].as_str().unwrap().to_owned(),
                path: source["path"].as_str().unwrap().to_owned(),
                scheme: source["scheme"].as_str().unwrap().to_owned(),
                secrets,
            });
        }
    }
    declared.sort();
    declared
}

/// The binary with no inherited environment (no secret set by accident), in `dir`, with DNS
/// lookups going to the test server.
fn hookgate(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hookgate"));
    command
        .current_dir(dir)
        .env_clear()
        .env("HOOKGATE_DNS_RESOLVER", crate::dns::address().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

#[test]
fn a_first_start_prints_one_line_about_unset_secrets_with_the_command_that_lists_them() {
    let waiting = shipped_sources().len();
    assert!(waiting >= 20, "the shipped definitions have their sources: {waiting}");
    let dir = tempfile::tempdir().unwrap();
    let mut child = hookgate(dir.path())
        .args(["serve", "--http", "127.0.0.1:0", "--smtp", "127.0.0.1:0", "--definitions", SHIPPED])
        .spawn()
        .unwrap();
    let expected = format!(
        "hookgate: {waiting} sources wait for their secrets (they answer 401 until then); `hookgate sources` lists them"
    );
    // Everything printed before the listening lines and the count has been flushed by then.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut printed = vec![];
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        while stdout.read_line(&mut line).is_ok_and(|read| read > 0) {
            let _ = lines_tx.send(std::mem::take(&mut line).trim_end().to_owned());
        }
    });
    while !printed.iter().any(|line: &String| line.starts_with("hookgate: http listening on")) {
        printed.push(lines_rx.recv_timeout(Duration::from_secs(30)).expect("serve prints its listening line"));
    }
    // The count comes right after the listening line, in the same flush.
    printed.push(lines_rx.recv_timeout(Duration::from_secs(5)).expect("a line after the listening line"));
    // Everything it logs while starting is written before the listening line; stop it now.
    child.kill().unwrap();
    child.wait().unwrap();
    let mut logged = String::new();
    child.stderr.take().unwrap().read_to_string(&mut logged).unwrap();
    assert!(logged.contains("Hook definitions loaded."), "the log at its default level was read: {logged}");
    let all: Vec<&str> = printed.iter().map(String::as_str).chain(logged.lines()).collect();
    // Besides the count, one line says where the generated key sealing subscription secrets is kept.
    let (about_the_key, about_secrets): (Vec<&str>, Vec<&str>) = all
        .iter()
        .copied()
        .filter(|line| line.to_lowercase().contains("secret"))
        .partition(|line| line.contains("Generated the key that subscription secrets are sealed with"));
    assert_eq!(about_secrets, [expected.as_str()], "{all:#?}");
    assert_eq!(about_the_key.len(), 1, "{all:#?}");
    assert!(about_the_key[0].contains("data/hookgate.db.secrets-key"), "{all:#?}");
}

#[test]
fn the_sources_command_lists_every_source_with_its_secret_names_and_whether_each_is_set() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secrets.toml"), "GITHUB_WEBHOOK_SECRET = \"from-the-file-9d1c\"\n").unwrap();
    let run = |json: bool| {
        let mut command = hookgate(dir.path());
        command
            .args(["sources", "--definitions", SHIPPED, "--secrets-file", "secrets.toml"])
            .args(["--public-url", "https://hooks.example"])
            .env("STRIPE_WEBHOOK_SECRET", "whsec_from-the-environment-77aa");
        if json {
            command.arg("--json");
        }
        let output = command.output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    };
    let declared = shipped_sources();
    let is_set = |name: &str| matches!(name, "STRIPE_WEBHOOK_SECRET" | "GITHUB_WEBHOOK_SECRET");
    assert!(declared.iter().any(|source| source.secrets == ["STRIPE_WEBHOOK_SECRET"]), "{declared:#?}");
    assert!(declared.iter().any(|source| source.secrets == ["GITHUB_WEBHOOK_SECRET"]), "{declared:#?}");

    let printed = run(true);
    let listed: Value = serde_json::from_str(&printed).unwrap();
    let mut listed: Vec<(Declared, Vec<bool>)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|source| {
            let secrets = source["secrets"].as_array().unwrap();
            let url = source["url"].as_str().unwrap();
            let declared = Declared {
                app: source["app"].as_str().unwrap().to_owned(),
                path: url.strip_prefix("https://hooks.example/api/webhooks/").unwrap_or(url).to_owned(),
                scheme: source["scheme"].as_str().unwrap().to_owned(),
                secrets: secrets.iter().map(|secret| secret["name"].as_str().unwrap().to_owned()).collect(),
            };
            (declared, secrets.iter().map(|secret| secret["set"].as_bool().unwrap()).collect())
        })
        .collect();
    listed.sort();
    let expected: Vec<(Declared, Vec<bool>)> = declared
        .into_iter()
        .map(|source| {
            let set = source.secrets.iter().map(|name| is_set(name)).collect();
            (source, set)
        })
        .collect();
    assert_eq!(listed, expected);
    assert!(!printed.contains("from-the-file-9d1c") && !printed.contains("from-the-environment-77aa"), "{printed}");

    let table = run(false);
    assert!(table.contains("STRIPE_WEBHOOK_SECRET: set"), "{table}");
    assert!(table.contains("GITHUB_WEBHOOK_SECRET: set"), "{table}");
    assert!(table.contains("SLACK_SIGNING_SECRET: NOT SET"), "{table}");
    assert!(table.contains("META_VERIFY_TOKEN (verify token): NOT SET"), "{table}");
    let summary = format!("{} sources, {} waiting for a secret", expected.len(), expected.len() - 2);
    assert!(table.contains(&summary), "{summary:?} in {table}");
    assert!(!table.contains("from-the-file-9d1c") && !table.contains("from-the-environment-77aa"), "{table}");
}
