//! Fuzzes the definition loader and checker: any bytes, read as a definition file is read
//! (`serde_json` into a value, the reader's error text otherwise), then validated with every
//! secret reference resolvable, twice in one set (so uniqueness checks across files run too).
//! The checker must report problems as diagnostics, never panic, and accept a set only when it
//! reports no error.

#![no_main]

use hookgate::definitions::{Origin, SourceDocument, ValidationOptions, json_reason, validate};
use hookgate::secrets::SecretSource;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let json = match serde_json::from_slice::<serde_json::Value>(data) {
        Ok(json) => json,
        Err(error) => {
            let _ = json_reason(&error);
            return;
        }
    };
    let options = ValidationOptions {
        event_prefix: "kustomer.app".into(),
        secrets: SecretSource::from_values([
            ("FUZZ_SECRET".to_owned(), "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned()),
            ("API_KEY".to_owned(), "hgk_fuzz".to_owned()),
        ]),
    };
    let one = SourceDocument { origin: Origin::File("fuzz.json".into()), json };
    let validated = validate(std::slice::from_ref(&one), &options);
    assert_eq!(validated.is_valid(), validated.errors().next().is_none());
    for diagnostic in &validated.diagnostics {
        let _ = diagnostic.to_string();
    }
    let twice = [one.clone(), SourceDocument { origin: Origin::Installed("again".into()), json: one.json }];
    let validated_twice = validate(&twice, &options);
    // The same app defined twice is always an error.
    if !validated.apps.is_empty() {
        assert!(!validated_twice.is_valid(), "a duplicated app was accepted");
    }
});
