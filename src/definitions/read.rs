//! Reading the definitions folder: every `*.json` file, recursively, hidden entries skipped, in
//! path order. A file that cannot be read, is larger than the limit (`max_definition_file_bytes`,
//! 1 MiB by default: read no further than that) or is not JSON is a diagnostic, not a failure. A
//! hook's `"transform": "name.js"` names a file beside its definition: it is read here and put in
//! the document as `{"file": "name.js", "source": "..."}` (or `"error"`, why it could not be read),
//! the form the checker takes, so an installed app may give `{"source": ...}` inline.

use serde_json::Value;
use std::path::{Path, PathBuf};

use super::{Diagnostic, Origin, SourceDocument};

/// The default of `max_definition_file_bytes`: 1 MiB, many times the largest app definition
/// seen.
pub const MAX_DEFINITION_FILE_BYTES: u64 = 1024 * 1024;

/// Reads every `*.json` file under `dir` (recursively, skipping hidden entries), in path
/// order. Unreadable files, files over `max_file_bytes` and malformed JSON are reported as
/// diagnostics.
pub fn read_folder(dir: &Path, max_file_bytes: u64) -> (Vec<SourceDocument>, Vec<Diagnostic>) {
    let mut paths = Vec::new();
    let mut diagnostics = Vec::new();
    collect_json_files(dir, &mut paths, &mut diagnostics);
    paths.sort();
    let mut documents = Vec::new();
    for path in paths {
        let origin = path.strip_prefix(dir).unwrap_or(&path).display().to_string();
        match read_at_most(&path, max_file_bytes) {
            Err(error) => diagnostics.push(Diagnostic::error(&origin, "", format!("cannot read the file: {error}"))),
            Ok(None) => diagnostics.push(Diagnostic::error(
                &origin,
                "",
                format!(
                    "the file is larger than the limit of {max_file_bytes} bytes for a definition file \
                     (max_definition_file_bytes)"
                ),
            )),
            Ok(Some(bytes)) => match serde_json::from_slice::<Value>(&bytes) {
                Ok(mut json) => {
                    read_transform_files(&mut json, path.parent().unwrap_or(dir));
                    documents.push(SourceDocument { origin: Origin::File(origin), json })
                }
                Err(error) => diagnostics.push(Diagnostic::error(
                    &origin,
                    "",
                    format!(
                        "malformed JSON at line {} column {}: {}",
                        error.line(),
                        error.column(),
                        json_reason(&error)
                    ),
                )),
            },
        }
    }
    (documents, diagnostics)
}

/// The file's bytes, or `None` when it holds more than `limit`: never more than `limit + 1`
/// bytes are read.
fn read_at_most(path: &Path, limit: u64) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= limit).then_some(bytes))
}

/// Replaces each hook's `"transform": "<file>"` by the file's text, read from `folder` (the
/// definition's own): `{"file", "source"}`, or `{"file", "error"}` when it cannot be read. Only a
/// plain file name or a path below `folder` is read, at most `transform::MAX_SOURCE_BYTES`.
fn read_transform_files(json: &mut Value, folder: &Path) {
    let Some(hooks) = json.get_mut("hooks").and_then(Value::as_array_mut) else { return };
    for hook in hooks {
        let Some(transform) = hook.get_mut("transform") else { continue };
        let Some(file) = transform.as_str().map(str::to_owned) else { continue };
        let below = Path::new(&file).components().all(|component| matches!(component, std::path::Component::Normal(_)));
        let read = if !below || file.is_empty() {
            Err("only a file in the definition's folder (or below it) may be named".to_owned())
        } else {
            read_bounded(&folder.join(&file), crate::transform::MAX_SOURCE_BYTES)
        };
        *transform = match read {
            Ok(source) => serde_json::json!({"file": file, "source": source}),
            Err(error) => serde_json::json!({"file": file, "error": error}),
        };
    }
}

/// A UTF-8 file of at most `limit` bytes.
fn read_bounded(path: &Path, limit: usize) -> Result<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|error| error.to_string())?;
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1).read_to_end(&mut bytes).map_err(|error| error.to_string())?;
    if bytes.len() > limit {
        return Err(format!("the file is larger than {limit} bytes"));
    }
    String::from_utf8(bytes).map_err(|_| "the file is not UTF-8 text".to_owned())
}

/// serde_json's message without its trailing " at line L column C".
pub fn json_reason(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.rfind(" at line ") {
        Some(index) => text[..index].to_owned(),
        None => text,
    }
}

fn collect_json_files(dir: &Path, paths: &mut Vec<PathBuf>, diagnostics: &mut Vec<Diagnostic>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) => {
            diagnostics.push(Diagnostic::error(
                &dir.display().to_string(),
                "",
                format!("cannot read the folder: {error}"),
            ));
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if hidden {
            continue;
        }
        if path.is_dir() {
            collect_json_files(&path, paths, diagnostics);
        } else if path.extension().is_some_and(|ext| ext == "json") {
            paths.push(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definitions::checker::tests::KUSTOMER_EXAMPLE;

    #[test]
    fn reading_a_folder_reports_malformed_files_and_skips_hidden_ones() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("good.json"), KUSTOMER_EXAMPLE).unwrap();
        std::fs::write(dir.path().join("broken.json"), "{\"app\": ").unwrap();
        std::fs::write(dir.path().join(".hidden.json"), "nonsense").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "nonsense").unwrap();
        std::fs::create_dir(dir.path().join("nested")).unwrap();
        std::fs::write(dir.path().join("nested/other.json"), r#"{"app": "other", "version": "1"}"#).unwrap();
        std::fs::write(dir.path().join("large.json"), format!("{{\"pad\": \"{}\"}}", "x".repeat(2000))).unwrap();
        let (documents, diagnostics) = read_folder(dir.path(), 2000);
        let origins: Vec<String> = documents.iter().map(|d| d.origin.to_string()).collect();
        assert_eq!(origins, vec!["good.json", "nested/other.json"]);
        let rendered: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
        assert_eq!(
            rendered,
            vec![
                "broken.json: malformed JSON at line 1 column 8: EOF while parsing a value",
                "large.json: the file is larger than the limit of 2000 bytes for a definition file \
                 (max_definition_file_bytes)"
            ]
        );
    }
}
