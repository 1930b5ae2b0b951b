//! Panics in dependencies that hookgate is known to catch, let through to hookgate's own
//! `catch_unwind` instead of aborting the fuzzer (libFuzzer's panic hook aborts on every panic,
//! caught or not). Only by location and message; any other panic still aborts.
//!
//! - mail-parser 0.11.9's `debug_assert!(false, "Invalid part ID, could not find multipart.")`,
//!   reached by malformed forwarded messages (found by `smtp_session`); release builds skip it,
//!   and `email::extract` catches it in debug builds.

use std::panic::PanicHookInfo;

fn is_known(info: &PanicHookInfo<'_>) -> bool {
    let message = info
        .payload()
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| info.payload().downcast_ref::<String>().cloned())
        .unwrap_or_default();
    let file = info.location().map(|location| location.file()).unwrap_or_default();
    file.contains("mail-parser-0.11.9") && message.contains("Invalid part ID, could not find multipart")
}

/// Wraps the panic hook in place (libFuzzer's) once: known panics pass silently.
pub fn let_known_panics_through() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !is_known(info) {
                previous(info);
            }
        }));
    });
}
