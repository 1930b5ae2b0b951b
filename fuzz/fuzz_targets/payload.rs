//! Fuzzes the body decoders (`ingress::payload`): JSON, urlencoded forms, multipart and XML. The
//! input's first line is the `Content-Type` header (so the fuzzer varies boundaries and
//! charsets too), the rest is the body. Every body becomes a value or a typed refusal.

#![no_main]

use bytes::Bytes;
use hookgate::ingress::payload::{PayloadLimits, media_kind, parse_payload};
use libfuzzer_sys::fuzz_target;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| tokio::runtime::Builder::new_current_thread().build().expect("a runtime"))
}

fuzz_target!(|data: &[u8]| {
    let (header, body) = match data.iter().position(|&byte| byte == b'\n') {
        Some(end) => (&data[..end], &data[end + 1..]),
        None => (data, &[][..]),
    };
    let Ok(content_type) = std::str::from_utf8(header) else { return };
    let content_type = (!content_type.is_empty()).then_some(content_type);
    let kind = media_kind(content_type);
    let limits = PayloadLimits { max_file_bytes_kept: 64 };
    let parsed = runtime().block_on(parse_payload(content_type, Bytes::copy_from_slice(body), &limits));
    // The content type alone decides whether the media type is supported.
    if let Err(error) = &kind {
        assert!(parsed.is_err(), "an unsupported media type was parsed: {error}");
    }
    if let Err(error) = parsed {
        let _ = error.to_string();
    }
});
