//! A subscription's `filter`: an RFC 9535 JSONPath over the event as stored (`id`, `name`,
//! `source`, `data`, …), which must find something for the event to be delivered. The event's
//! request headers are in `source.headers`, by lower-case name: GitHub's `X-GitHub-Event` and
//! Shopify's `X-Shopify-Topic` are matched as
//! `$[?$.source.headers['X-GitHub-Event'] == 'push']`. Header names are case-insensitive, as in
//! HTTP: the name selected right after `source.headers` is lower-cased when the filter is
//! compiled, so `X-GitHub-Event` and `x-github-event` are one filter. Pure.

use crate::jsonpath::{InvalidJsonPath, JsonPath};

/// Compiles a filter, with header names in lower case.
pub fn compile(text: &str) -> Result<JsonPath, InvalidJsonPath> {
    JsonPath::parse(&lowercase_header_names(text))
}

/// One name segment of a path: `.name`, `['name']` or `["name"]`.
struct Segment {
    /// Where the segment starts and ends in the text.
    start: usize,
    end: usize,
    /// Where its name is, without quotes.
    name: std::ops::Range<usize>,
}

/// The text with each name selected right after a `source` and `headers` segment in lower
/// case: `$.source.headers['X-GitHub-Event']` becomes `$.source.headers['x-github-event']`.
fn lowercase_header_names(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut segments = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        match segment_at(text, at) {
            Some(segment) => {
                at = segment.end;
                segments.push(segment);
            }
            None => at += 1,
        }
    }
    let mut lowered = text.to_owned();
    for window in segments.windows(3) {
        let [source, headers, name] = window else { continue };
        let adjacent = source.end == headers.start && headers.end == name.start;
        if adjacent && &text[source.name.clone()] == "source" && &text[headers.name.clone()] == "headers" {
            lowered.replace_range(name.name.clone(), &text[name.name.clone()].to_ascii_lowercase());
        }
    }
    lowered
}

/// The name segment starting at `at`, if one does.
fn segment_at(text: &str, at: usize) -> Option<Segment> {
    let bytes = text.as_bytes();
    match bytes[at] {
        b'.' => {
            let length = text[at + 1..]
                .bytes()
                .take_while(|byte| byte.is_ascii_alphanumeric() || *byte == b'_' || *byte >= 0x80)
                .count();
            (length > 0).then(|| Segment { start: at, end: at + 1 + length, name: at + 1..at + 1 + length })
        }
        b'[' => {
            let quote = *bytes.get(at + 1)?;
            if quote != b'\'' && quote != b'"' {
                return None;
            }
            let close = text[at + 2..].find(quote as char)? + at + 2;
            (bytes.get(close + 1) == Some(&b']')).then(|| Segment { start: at, end: close + 2, name: at + 2..close })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[track_caller]
    fn check(filter: &str, lowered: &str) {
        assert_eq!(lowercase_header_names(filter), lowered);
    }

    #[test]
    fn header_names_after_source_headers_are_lowered_and_nothing_else_is() {
        check("$.source.headers['X-GitHub-Event']", "$.source.headers['x-github-event']");
        check(r#"$["source"]["headers"]["X-Shopify-Topic"]"#, r#"$["source"]["headers"]["x-shopify-topic"]"#);
        check("$.source.headers.Authorization", "$.source.headers.authorization");
        check(
            "$[?$.source.headers['X-GitHub-Event'] == 'Push' && $.data.Action == 'opened']",
            "$[?$.source.headers['x-github-event'] == 'Push' && $.data.Action == 'opened']",
        );
        check("$.data.headers['X-Kept']", "$.data.headers['X-Kept']");
        check("$[?@.Total > 100]", "$[?@.Total > 100]");
    }

    #[test]
    fn a_filter_matches_headers_whatever_their_case_as_well_as_data() {
        let event = json!({
            "name": "github.pull_request.opened",
            "source": {"headers": {"x-github-event": "pull_request", "content-type": "application/json"}},
            "data": {"action": "opened", "number": 7}
        });
        let matches = |filter: &str| !compile(filter).unwrap().query(&event).is_empty();
        assert!(matches("$.source.headers['X-GitHub-Event']"));
        assert!(matches("$[?$.source.headers['X-GitHub-Event'] == 'pull_request']"));
        assert!(matches("$[?$.source.headers['x-github-event'] == 'pull_request' && $.data.action == 'opened']"));
        assert!(!matches("$[?$.source.headers['X-GitHub-Event'] == 'push']"));
        assert!(!matches("$[?$.source.headers['X-GitHub-Event'] == 'pull_request' && $.data.action == 'closed']"));
        assert!(!matches("$.source.headers['X-Shopify-Topic']"));
    }
}
