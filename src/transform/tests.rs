//! The sandbox as a specification: what a transformation can do, what it cannot reach, and how
//! each way of failing is reported.

use std::time::{Duration, Instant};

use serde_json::json;

use super::*;

fn limits() -> Limits {
    Limits::default()
}

#[track_caller]
fn run(source: &str, input: Value) -> Result<Transformed, TransformError> {
    Sandbox::compile(source, limits()).expect("compiles").call(&input)
}

#[test]
fn a_transformation_renames_fields_and_keeps_the_rest() {
    let source =
        "function transform(event) { event.data.total = event.data.amount; delete event.data.amount; return event; }";
    let changed = run(source, json!({"name": "x", "data": {"amount": 5, "currency": "eur"}})).unwrap();
    assert_eq!(changed, Transformed::Changed(json!({"name": "x", "data": {"currency": "eur", "total": 5}})));
}

#[test]
fn returning_null_drops_the_event() {
    assert_eq!(run("function transform(e) { return null; }", json!({})).unwrap(), Transformed::Dropped);
}

#[test]
fn returning_nothing_is_an_error_that_says_what_to_return() {
    let error = run("function transform(e) { }", json!({})).unwrap_err();
    assert!(error.to_string().contains("return the event, or null to drop it"), "{error}");
}

#[test]
fn a_thrown_error_is_reported_with_its_message() {
    let error =
        run("function transform(e) { throw new TypeError('no amount in ' + e.name); }", json!({"name": "order"}))
            .unwrap_err();
    assert_eq!(error.code(), "threw");
    assert!(error.to_string().contains("TypeError: no amount in order"), "{error}");
    let error = run("function transform(e) { throw 'plain'; }", json!({})).unwrap_err();
    assert!(error.to_string().contains("uncaught plain"), "{error}");
}

#[test]
fn an_endless_loop_is_stopped_at_the_time_limit_and_the_sandbox_still_answers() {
    let sandbox = Sandbox::compile(
        "function transform(e) { if (e.spin) { for (;;) {} } return e; }",
        Limits { time: Duration::from_millis(50), ..limits() },
    )
    .unwrap();
    let started = Instant::now();
    let error = sandbox.call(&json!({"spin": true})).unwrap_err();
    assert_eq!(error, TransformError::TimeLimit(Duration::from_millis(50)));
    assert!(started.elapsed() < Duration::from_secs(2), "stopped promptly: {:?}", started.elapsed());
    assert_eq!(sandbox.call(&json!({"spin": false})).unwrap(), Transformed::Changed(json!({"spin": false})));
}

#[test]
fn endless_allocation_is_stopped_at_the_memory_limit() {
    let error = run(
        "function transform(e) { const kept = []; for (;;) { kept.push(new Array(1 << 20).fill(kept.length)); } }",
        json!({}),
    )
    .unwrap_err();
    assert_eq!(error, TransformError::MemoryLimit(16 * 1024 * 1024));
}

#[test]
fn endless_recursion_is_an_error_not_a_crash() {
    let error = run("function transform(e) { return transform(e); }", json!({})).unwrap_err();
    assert_eq!(error.code(), "threw", "{error}");
}

#[test]
fn no_module_loader_and_no_io_globals_are_reachable() {
    let source = r#"function transform(e) {
        return ['require', 'process', 'fetch', 'XMLHttpRequest', 'std', 'os', 'setTimeout', 'console',
                'Deno', 'Bun', 'WebSocket', 'importScripts']
            .filter(name => typeof globalThis[name] !== 'undefined');
    }"#;
    assert_eq!(run(source, json!({})).unwrap(), Transformed::Changed(json!([])));
    let error =
        run("function transform(e) { return require('fs').readFileSync('/etc/passwd'); }", json!({})).unwrap_err();
    assert!(error.to_string().contains("require is not defined"), "{error}");
}

#[test]
fn a_source_without_transform_or_with_a_syntax_error_does_not_compile() {
    let error = Transformation::compile("function other(e) { return e; }").unwrap_err();
    assert!(error.to_string().contains("defines no function `transform(event)`"), "{error}");
    let error = Transformation::compile("function transform(e) { return e; ").unwrap_err();
    assert!(error.to_string().contains("SyntaxError"), "{error}");
    let error = Transformation::compile("for (;;) {}").unwrap_err();
    assert_eq!(error.code(), "time_limit", "top-level code runs under the limits too");
}

#[test]
fn the_version_is_the_start_of_the_sources_sha256() {
    let source = "function transform(e) { return e; }";
    let transformation = Transformation::compile(source).unwrap();
    assert_eq!(transformation.version(), &crate::secrets::sha256_hex(source)[..16]);
    assert_ne!(version_of(source), version_of("function transform(e) { return null; }"));
}

#[tokio::test]
async fn the_pool_keeps_serving_while_one_call_spins() {
    let transformer = Transformer::start(2, Limits { time: Duration::from_millis(200), ..limits() });
    let spin = Transformation::stored("function transform(e) { while (true) {} }");
    let quick = Transformation::stored("function transform(e) { return e.n + 1; }");
    let spinner = tokio::spawn({
        let transformer = transformer.clone();
        async move { transformer.run(&spin, json!({})).await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let started = Instant::now();
    assert_eq!(transformer.run(&quick, json!({"n": 1})).await.unwrap(), Transformed::Changed(json!(2)));
    assert!(started.elapsed() < Duration::from_millis(150), "answered while the other spins: {:?}", started.elapsed());
    assert_eq!(spinner.await.unwrap().unwrap_err().code(), "time_limit");
}

#[test]
fn a_compiled_transformation_holds_little_memory_between_calls() {
    let sandbox = Sandbox::compile("function transform(e) { return e; }", limits()).unwrap();
    sandbox.call(&json!({"data": {"items": vec![1; 10_000]}})).unwrap();
    assert!(sandbox.retained_bytes() < 1024 * 1024, "{} bytes", sandbox.retained_bytes());
    let hoarder = Sandbox::compile(
        "var kept = []; function transform(e) { kept.push(new Array(1 << 18).fill(1)); return null; }",
        limits(),
    )
    .unwrap();
    for _ in 0..3 {
        hoarder.call(&json!({})).unwrap();
    }
    assert!(hoarder.retained_bytes() > 4 * 1024 * 1024, "globals outlive a call: {} bytes", hoarder.retained_bytes());
}
