//! Fuzzes the mail extractor (`email::extract`): MIME parsing, JSON-LD in HTML parts, JSON in
//! plain text and JSON attachments, and the part outline the console shows. Any bytes must be
//! either extracted or refused with a reason; whatever is found is a JSON object or array.

#![no_main]

use hookgate::email::extract::{TextJson, extract, outline};
use libfuzzer_sys::fuzz_target;

#[path = "known_upstream.rs"]
mod known_upstream;

fuzz_target!(|data: &[u8]| {
    known_upstream::let_known_panics_through();
    for text_json in [TextJson::All, TextJson::First] {
        if let Ok(extracted) = extract(data, text_json) {
            for found in &extracted.found {
                assert!(found.value.is_object() || found.value.is_array(), "a bare scalar was extracted");
            }
            let _ = extracted.skipped.describe();
        }
    }
    if let Some(parts) = outline(data) {
        assert!(parts.len() <= hookgate::email::extract::OUTLINE_MAX_PARTS);
    }
});
