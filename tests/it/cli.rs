//! The command line of the same binary: `check`, `hooks`, `keys`, `events`, and `serve`
//! refusing invalid definitions. Commands run against a gateway's folder and database while
//! the gateway runs.

use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::support::*;

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs the binary in `dir` with only these arguments, failing the test after `timeout`.
fn hookgate_in(dir: &Path, args: &[&str], timeout: Duration) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .current_dir(dir)
        .args(args)
        .env("RUST_LOG", "warn")
        .env("HOOKGATE_ADMIN_TOKEN", ADMIN_TOKEN)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let pid = child.id().to_string();
    let (exited, exit) = std::sync::mpsc::channel();
    std::thread::spawn(move || exited.send(child.wait_with_output().expect("the binary can be waited for")));
    match exit.recv_timeout(timeout) {
        Ok(output) => output,
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            let output = exit.recv().expect("the killed binary is waited for");
            panic!("hookgate {args:?} still ran after {timeout:?}; stderr:\n{}", stderr(&output));
        }
    }
}

/// The event names of the default gateway's hooks (every one has a URL), sorted.
fn default_event_names() -> Vec<String> {
    let mut names: Vec<String> = [shop_definition(), crm_definition()]
        .iter()
        .flat_map(|app| app["hooks"].as_array().unwrap().clone())
        .map(|hook| hook["eventName"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

/// The sorted event names of a hook directory (`/api/hooks` data or `hooks --json`).
fn directory_names(directory: &Value) -> Vec<String> {
    let mut names: Vec<String> =
        directory.as_array().unwrap().iter().map(|hook| hook["eventName"].as_str().unwrap().to_owned()).collect();
    names.sort();
    names
}

/// A temporary folder holding these definition files.
fn definitions_folder(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

const INVALID_FILE: &str = r#"{
  "app": "shop",
  "version": "1",
  "hooks": [
    {"eventName": "kustomer.app.shop.sms", "type": "sms"},
    {"eventName": "kustomer.app.shop.order", "type": "form", "colour": "red"},
    {"type": "web"}
  ]
}"#;

const INVALID_FILE_DIAGNOSTICS: &[&str] = &[
    "file.json: /hooks/0/type: unknown hook type \"sms\", expected form, web or email",
    "file.json: /hooks/1/colour: unknown hook property \"colour\"",
    "file.json: /hooks/2: missing required property \"eventName\"",
];

/// Posts JSON to a form hook and returns the new event's id.
async fn post_form(gateway: &Gateway, event_name: &str, body: Value) -> String {
    let response = gateway.http.post(gateway.hook_url(event_name).await).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 202);
    response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

async fn post_with_key(gateway: &Gateway, event_name: &str, key: &str) -> reqwest::Response {
    let url = gateway.hook_url(event_name).await;
    gateway.http.post(url).header("x-api-key", key).json(&json!({"from": "cli key"})).send().await.unwrap()
}

// ---------------------------------------------------------------------------------------------
// check

#[test]
fn check_accepts_the_shipped_definitions() {
    let cwd = tempfile::tempdir().unwrap();
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/hook-definitions");
    let output = hookgate_in(cwd.path(), &["check", shipped], Duration::from_secs(30));
    assert!(output.status.success(), "{}{}", stdout(&output), stderr(&output));
    let printed = stdout(&output);
    assert!(printed.contains("27 apps, 27 hooks, valid (26 warnings)"), "{printed}");
    let warnings: Vec<&str> = printed.lines().filter(|line| line.contains("warning:")).collect();
    assert_eq!(warnings.len(), 26, "{printed}");
    assert!(
        warnings.iter().all(|line| line.contains("/source/") && line.contains("is not set;")),
        "the only warnings are the platform secrets an operator sets: {warnings:#?}"
    );
}

#[test]
fn check_reports_every_error_with_its_file_and_pointer() {
    let cwd = tempfile::tempdir().unwrap();
    let folder = definitions_folder(&[
        ("file.json", INVALID_FILE),
        ("broken.json", "{\"app\": "),
        (
            "good.json",
            r#"{"app": "good", "version": "1", "hooks": [{"eventName": "kustomer.app.good.x", "type": "form"}]}"#,
        ),
    ]);
    let output = hookgate_in(cwd.path(), &["check", folder.path().to_str().unwrap()], Duration::from_secs(30));
    let printed = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{printed}{}", stderr(&output));
    for expected in INVALID_FILE_DIAGNOSTICS {
        assert!(printed.lines().any(|line| line.starts_with(expected)), "no line {expected:?} in:\n{printed}");
    }
    assert!(
        printed.lines().any(|line| line.starts_with("broken.json: malformed JSON at line 1 column 8")),
        "{printed}"
    );
    assert!(printed.contains("invalid: 4 errors, 0 warnings"), "{printed}");
}

#[test]
fn check_refuses_a_definition_file_over_the_size_limit_naming_it() {
    let cwd = tempfile::tempdir().unwrap();
    let hooks = r#"[{"eventName": "kustomer.app.large.x", "type": "form"}]"#;
    // Valid JSON, 2 MiB of it: past the default limit of 1 MiB.
    let large =
        format!(r#"{{"app": "large", "version": "1", "description": "{}", "hooks": {hooks}}}"#, "x".repeat(2 << 20));
    let folder = definitions_folder(&[("large.json", large.as_str())]);
    let output = hookgate_in(cwd.path(), &["check", folder.path().to_str().unwrap()], Duration::from_secs(30));
    let printed = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{printed}{}", stderr(&output));
    assert!(
        printed.contains(
            "large.json: the file is larger than the limit of 1048576 bytes for a definition file \
             (max_definition_file_bytes)"
        ),
        "{printed}"
    );
    let raised = std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .current_dir(cwd.path())
        .args(["check", folder.path().to_str().unwrap()])
        .env("HOOKGATE_MAX_DEFINITION_FILE_BYTES", "4194304")
        .output()
        .unwrap();
    assert!(raised.status.success(), "a raised limit takes the file: {}", stdout(&raised));
}

#[test]
fn check_passes_definitions_with_warnings_only() {
    let cwd = tempfile::tempdir().unwrap();
    let folder = definitions_folder(&[(
        "loose.json",
        r#"{"app": "loose", "version": "1", "hooks": [{"eventName": "loose.order.created", "type": "form"}]}"#,
    )]);
    let output = hookgate_in(cwd.path(), &["check", folder.path().to_str().unwrap()], Duration::from_secs(30));
    let printed = stdout(&output);
    assert!(output.status.success(), "{printed}{}", stderr(&output));
    assert!(printed.contains("loose.json: /hooks/0/eventName: warning: "), "{printed}");
    assert!(printed.contains("1 apps, 1 hooks, valid (1 warnings)"), "{printed}");
}

// ---------------------------------------------------------------------------------------------
// hooks

#[tokio::test]
async fn hooks_prints_a_table_of_every_hook_with_its_url() {
    let gateway = Gateway::start().await;
    let output = gateway.cli(&["hooks", "--public-url", &gateway.base]);
    let printed = stdout(&output);
    assert!(output.status.success(), "{printed}{}", stderr(&output));
    let directory = gateway.admin_json("/api/hooks").await;
    assert_eq!(directory_names(&directory["data"]), default_event_names());
    for hook in directory["data"].as_array().unwrap() {
        let name = hook["eventName"].as_str().unwrap();
        let row = printed.lines().find(|line| line.contains(&format!(" {name} "))).unwrap_or_else(|| {
            panic!("no row for {name} in:\n{printed}");
        });
        assert!(row.contains(&format!(" {} ", hook["type"].as_str().unwrap())), "{row}");
        let url = hook["url"].as_str().unwrap_or_else(|| panic!("{name} has a URL"));
        assert!(row.contains(url), "{name}: {url} is not in the row {row:?}");
    }

    // Without --public-url the CLI cannot know the running gateway's port, but the path is the same.
    let output = gateway.cli(&["hooks"]);
    let printed = stdout(&output);
    assert!(output.status.success(), "{printed}{}", stderr(&output));
    for hook in directory["data"].as_array().unwrap() {
        let url = hook["url"].as_str().unwrap();
        let path = &url[gateway.base.len()..];
        assert!(printed.lines().any(|line| line.contains(path)), "{path} not in:\n{printed}");
    }
}

#[tokio::test]
async fn hooks_json_lists_the_same_urls_as_the_api() {
    let gateway = Gateway::start().await;
    let output = gateway.cli(&["hooks", "--json", "--public-url", &gateway.base]);
    assert!(output.status.success(), "{}", stderr(&output));
    let printed: Value = serde_json::from_slice(&output.stdout).expect("hooks --json prints JSON");
    let directory = gateway.admin_json("/api/hooks").await;
    assert_eq!(printed, directory["data"]);
    assert_eq!(directory_names(&printed), default_event_names());
}

// ---------------------------------------------------------------------------------------------
// keys

#[tokio::test]
async fn a_key_created_for_one_app_opens_only_that_apps_web_hooks() {
    let gateway = Gateway::start().await;
    let output = gateway.cli(&["keys", "create", "--name", "x", "--app", "shop"]);
    let printed = stdout(&output);
    assert!(output.status.success(), "{printed}{}", stderr(&output));
    assert_eq!(printed.matches("hgk_").count(), 1, "the key is printed once:\n{printed}");
    let key = printed.lines().find_map(|line| line.strip_prefix("key: ")).expect("a key line").trim().to_owned();
    assert!(key.starts_with("hgk_"), "{key}");
    let id = printed.lines().find_map(|line| line.strip_prefix("id:")).expect("an id line").trim().to_owned();
    assert!(stderr(&output).contains("only this once"), "{}", stderr(&output));

    assert_eq!(post_with_key(&gateway, ORDER_SYNC, &key).await.status(), 202);
    let (code, _) = error_code(post_with_key(&gateway, LEAD_CREATED, &key).await, 403).await;
    assert_eq!(code, "api_key_out_of_scope");

    let output = gateway.cli(&["keys", "list"]);
    let listed = stdout(&output);
    assert!(output.status.success(), "{}", stderr(&output));
    let row = listed.lines().find(|line| line.contains(&id)).unwrap_or_else(|| panic!("{id} not in:\n{listed}"));
    assert!(row.contains(" x ") && row.contains(" shop "), "{row}");
    assert!(!listed.contains(&key[12..]), "the key text is listed:\n{listed}");

    let output = gateway.cli(&["keys", "revoke", &id]);
    assert!(output.status.success(), "{}", stderr(&output));
    let (code, _) = error_code(post_with_key(&gateway, ORDER_SYNC, &key).await, 401).await;
    assert_eq!(code, "invalid_api_key");

    let output = gateway.cli(&["keys", "revoke", &id]);
    assert!(!output.status.success(), "revoking twice succeeded");
    assert!(stderr(&output).contains("no active key"), "{}", stderr(&output));
}

// ---------------------------------------------------------------------------------------------
// events

#[tokio::test]
async fn events_list_pages_from_the_newest_with_a_cursor_line() {
    let gateway = Gateway::start().await;
    let older = post_form(&gateway, ORDER_UPDATE, json!({"n": 1})).await;
    let newer = post_form(&gateway, ORDER_UPDATE, json!({"n": 2})).await;
    let other = post_form(&gateway, CONTACT_FORM, json!({"n": 3})).await;

    let output = gateway.cli(&["events", "list", "--name", ORDER_UPDATE, "--limit", "1"]);
    let printed = stdout(&output);
    assert!(output.status.success(), "{printed}{}", stderr(&output));
    assert!(printed.contains(&newer), "{printed}");
    assert!(!printed.contains(&older), "{printed}");
    assert!(!printed.contains(&other), "{printed}");
    let cursor = printed
        .lines()
        .find_map(|line| line.split_once("--cursor ").map(|(_, cursor)| cursor.trim().to_owned()))
        .unwrap_or_else(|| panic!("no --cursor line in:\n{printed}"));

    let output = gateway.cli(&["events", "list", "--name", ORDER_UPDATE, "--limit", "1", "--cursor", &cursor]);
    let printed = stdout(&output);
    assert!(output.status.success(), "{printed}{}", stderr(&output));
    assert!(printed.contains(&older), "{printed}");
    assert!(!printed.contains(&newer), "{printed}");
    assert!(!printed.contains("--cursor"), "the last page offers more:\n{printed}");
}

#[tokio::test]
async fn events_show_prints_the_event_as_json() {
    let gateway = Gateway::start().await;
    let id = post_form(&gateway, ORDER_UPDATE, json!({"order": {"id": 9}})).await;
    let output = gateway.cli(&["events", "show", &id]);
    assert!(output.status.success(), "{}", stderr(&output));
    let printed: Value = serde_json::from_slice(&output.stdout).expect("events show prints JSON");
    assert_eq!(printed, gateway.event(&id).await);
    assert_eq!(printed["data"], json!({"order": {"id": 9}}));
}

#[tokio::test]
async fn events_show_of_an_unknown_id_fails_with_a_clear_message() {
    let gateway = Gateway::start().await;
    let output = gateway.cli(&["events", "show", "evt_missing"]);
    assert!(!output.status.success());
    assert!(stdout(&output).is_empty(), "{}", stdout(&output));
    assert!(stderr(&output).contains("no event \"evt_missing\""), "{}", stderr(&output));
}

// ---------------------------------------------------------------------------------------------
// serve

#[test]
fn serve_refuses_invalid_definitions_and_prints_each_diagnostic() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("defs")).unwrap();
    std::fs::write(dir.path().join("defs/file.json"), INVALID_FILE).unwrap();
    let output = hookgate_in(dir.path(), SERVE, Duration::from_secs(30));
    let printed = stderr(&output);
    assert!(!output.status.success(), "serve started with invalid definitions:\n{printed}");
    for expected in INVALID_FILE_DIAGNOSTICS {
        assert!(printed.lines().any(|line| line.starts_with(expected)), "no line {expected:?} in:\n{printed}");
    }
    assert!(printed.contains("refusing to start"), "{printed}");
    assert!(!stdout(&output).contains("listening"), "{}", stdout(&output));
}

#[tokio::test]
async fn commands_other_than_serve_never_create_a_database() {
    let gateway = Gateway::start().await;
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("typo.db");
    let output = hookgate_in(
        gateway.dir.path(),
        &["keys", "create", "--name", "lost", "--database", missing.to_str().unwrap()],
        Duration::from_secs(30),
    );
    assert!(!output.status.success());
    assert!(stderr(&output).contains("no database at"), "{}", stderr(&output));
    assert!(!missing.exists(), "no database file was created");
}

#[tokio::test]
async fn hooks_shows_urls_on_the_given_http_address() {
    let gateway = Gateway::start().await;
    let output = gateway.cli(&["hooks", "--http", "127.0.0.1:18099"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let printed = stdout(&output);
    let directory = gateway.admin_json("/api/hooks").await;
    for hook in directory["data"].as_array().unwrap() {
        let path = &hook["url"].as_str().unwrap()[gateway.base.len()..];
        assert!(printed.contains(&format!("http://127.0.0.1:18099{path}")), "{path} not in:\n{printed}");
    }
    assert_eq!(printed.matches("http://127.0.0.1:18099/h/").count(), default_event_names().len(), "{printed}");
}

#[test]
fn serve_without_a_definitions_folder_says_which_folder_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let output = hookgate_in(
        dir.path(),
        &[
            "serve",
            "--http",
            "127.0.0.1:0",
            "--smtp",
            "127.0.0.1:0",
            "--definitions",
            "nowhere",
            "--database",
            "data/hookgate.db",
        ],
        Duration::from_secs(30),
    );
    assert!(!output.status.success());
    assert!(stderr(&output).contains("the definitions folder nowhere does not exist"), "{}", stderr(&output));
    assert!(!dir.path().join("data").exists());
}

#[tokio::test]
async fn apps_remove_recovers_a_gateway_whose_installed_app_became_invalid() {
    let mut gateway = Gateway::start().await;
    let app = json!({"app": "partner", "version": "1", "hooks": [
        {"eventName": "kustomer.app.partner.sync", "type": "web", "apiKeys": ["${SHOP_PARTNER_KEY}"]}
    ]});
    let installed =
        gateway.http.post(gateway.url("/api/apps")).bearer_auth(ADMIN_TOKEN).json(&app).send().await.unwrap();
    assert_eq!(installed.status(), 201);
    gateway.kill();
    // Without its secret the installed app is invalid, and serve refuses to start.
    let refused = Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .current_dir(gateway.dir.path())
        .args(SERVE)
        .env("HOOKGATE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("SHOP_PARTNER_KEY", "")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("installed app \"partner\""), "{}", stderr(&refused));
    let listed = gateway.cli(&["apps", "list"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert!(stdout(&listed).contains("partner"), "{}", stdout(&listed));
    let removed = gateway.cli(&["apps", "remove", "partner"]);
    assert!(removed.status.success(), "{}", stderr(&removed));
    gateway.restart().await;
    let (code, _) = error_code(gateway.admin_get("/api/apps/partner").await, 404).await;
    assert_eq!(code, "not_found");
    assert_eq!(directory_names(&gateway.admin_json("/api/hooks").await["data"]), default_event_names());
}
