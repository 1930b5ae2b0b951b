//! Property tests for event-name and delivery-id templates.
//!
//! Any text parses or is refused without panicking (including JSONPath nested far deeper than
//! anyone writes, which must be refused quickly, not overflow the stack), and a parsed template
//! keeps its text. Rendering any parsed template over any JSON and any headers never panics and
//! yields only well-formed names. A template built from known parts renders exactly what its
//! parts find, by the documented rules (missing placeholders left out of names, ids only when
//! every placeholder finds a value, alternatives tried in order).

use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::Template;

/// Text inside a placeholder: a working lookup, or JSONPath pieces, header lookups,
/// separators and noise put together.
fn placeholder_text() -> impl Strategy<Value = String> {
    let working = prop::sample::select(vec![
        "$.type",
        "$['@type']",
        "$..*",
        "$..a",
        "$.*",
        "$.a[0]",
        "$.a[-1:]",
        "$[?@.a == 1 || @.b].id",
        "$.a[?length(@) > 1]",
        "header:X-Id",
        " header:webhook-id | header:x-id ",
        "$.a|header:x-id",
        "$.missing|$.type",
    ])
    .prop_map(str::to_owned);
    let assembled = prop::collection::vec(
        prop_oneof![
            8 => prop::sample::select(vec![
                "$", "$.type", "$['@type']", "$..*", "$.a[0]", "$[?@.a == 1 || @.b]", "$.a[-1:]", "length(@.a)",
                "header:", "header:X-Id", "header:bad name", "|", "||", " ", "[", "]", "[?", "(", ")", "@", ".",
                "'", "\"", "\\", "*", "{", "}",
            ])
            .prop_map(str::to_owned),
            2 => "[a-z.]{0,5}",
            2 => "\\PC{0,3}",
            // Nesting far past what anyone writes: refused, quickly and without overflowing.
            1 => (1..400usize).prop_map(|depth| format!("$[?{}@.a{}]", "(".repeat(depth), ")".repeat(depth))),
            1 => (1..400usize).prop_map(|depth| format!("$[?{}1{}]", "@[?".repeat(depth), "]".repeat(depth))),
        ],
        0..6,
    )
    .prop_map(|pieces| pieces.concat());
    prop_oneof![working, assembled]
}

/// Template-like text: literal text and placeholders, some left unclosed.
fn template_text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            "[a-z.}]{0,5}",
            "\\PC{0,3}",
            (placeholder_text(), prop::bool::weighted(0.9))
                .prop_map(|(inside, closed)| { format!("{{{inside}{}", if closed { "}" } else { "" }) }),
        ],
        0..5,
    )
    .prop_map(|pieces| pieces.concat())
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |number| number.is_finite()).prop_map(Value::from),
        "\\PC{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(vec!["type", "@type", "a", "b", "id", ""]), inner), 0..6)
                .prop_map(|entries| Value::Object(
                    entries.into_iter().map(|(key, value)| (key.to_owned(), value)).collect()
                )),
        ]
    })
}

fn header_map() -> impl Strategy<Value = HeaderMap> {
    prop::collection::vec((prop::sample::select(vec!["x-id", "x-github-event", "webhook-id"]), "[ -~]{0,12}"), 0..4)
        .prop_map(|pairs| {
            let mut headers = HeaderMap::new();
            for (name, value) in pairs {
                if let Ok(value) = HeaderValue::from_str(&value) {
                    headers.append(HeaderName::from_static(name), value);
                }
            }
            headers
        })
}

/// A dot-separated event name of letters, digits, `_` and `-`.
fn is_event_name(name: &str) -> bool {
    name.split('.').all(|segment| {
        !segment.is_empty() && segment.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    })
}

/// A value a placeholder can find: a string, a number or a boolean.
#[derive(Debug, Clone)]
enum Scalar {
    Text(String),
    Integer(i64),
    Flag(bool),
}

impl Scalar {
    fn json(&self) -> Value {
        match self {
            Scalar::Text(text) => json!(text),
            Scalar::Integer(number) => json!(number),
            Scalar::Flag(flag) => json!(flag),
        }
    }

    /// The text a template puts in its place.
    fn text(&self) -> String {
        match self {
            Scalar::Text(text) => text.clone(),
            Scalar::Integer(number) => number.to_string(),
            Scalar::Flag(flag) => flag.to_string(),
        }
    }
}

fn scalar() -> impl Strategy<Value = Scalar> {
    prop_oneof![
        "[ -~]{0,10}".prop_map(Scalar::Text),
        "\\PC{0,4}".prop_map(Scalar::Text),
        any::<i64>().prop_map(Scalar::Integer),
        any::<bool>().prop_map(Scalar::Flag),
    ]
}

/// How a JSONPath placeholder spells its way to a member.
#[derive(Debug, Clone, Copy)]
enum Spelling {
    Dot,
    SingleQuoted,
    DoubleQuoted,
    /// Under an object `o`, as `$.o.<key>`.
    Nested,
    /// The first element of an array `list`, as `$.list<n>[0]`.
    FirstElement,
}

/// One part of a generated template.
#[derive(Debug, Clone)]
enum Piece {
    /// Literal text (no `{`; a stray `}` is literal).
    Literal(String),
    /// A JSONPath to a member that holds `value`, or that is absent (`None`).
    Path { spelling: Spelling, value: Option<Scalar>, padded: bool },
    /// A header, present with `value` or absent; the name written in any letter case.
    Header { upper_case: bool, value: Option<String> },
    /// `{$.absent|header:...}`: the first alternative finds nothing, the second what it holds.
    Alternatives { value: Option<String> },
}

fn piece() -> impl Strategy<Value = Piece> {
    let spelling = prop::sample::select(vec![
        Spelling::Dot,
        Spelling::SingleQuoted,
        Spelling::DoubleQuoted,
        Spelling::Nested,
        Spelling::FirstElement,
    ]);
    // Header values as sent: visible ASCII, not starting or ending with a space.
    let header_value = "[!-~]([ -~]{0,8}[!-~])?";
    prop_oneof![
        "[a-zA-Z0-9 ./:_}-]{1,6}".prop_map(Piece::Literal),
        (spelling, prop::option::weighted(0.8, scalar()), any::<bool>())
            .prop_map(|(spelling, value, padded)| Piece::Path { spelling, value, padded }),
        (any::<bool>(), prop::option::weighted(0.8, header_value))
            .prop_map(|(upper_case, value)| Piece::Header { upper_case, value }),
        prop::option::weighted(0.8, header_value).prop_map(|value| Piece::Alternatives { value }),
    ]
}

/// The template text, the data and headers it reads, and what each piece finds (`None` for a
/// placeholder that finds nothing; literals always "find" themselves).
struct Built {
    text: String,
    data: Value,
    headers: HeaderMap,
    found: Vec<(bool, Option<String>)>,
}

fn build(pieces: &[Piece]) -> Built {
    let mut text = String::new();
    let mut data = Map::new();
    let mut nested = Map::new();
    let mut headers = HeaderMap::new();
    let mut found = Vec::new();
    for (index, piece) in pieces.iter().enumerate() {
        // Every piece reads its own member or header, so pieces never interfere.
        let key = format!("k{index}");
        let header = format!("x-h{index}");
        match piece {
            Piece::Literal(literal) => {
                text.push_str(literal);
                found.push((false, Some(literal.clone())));
            }
            Piece::Path { spelling, value, padded } => {
                let path = match spelling {
                    Spelling::Dot => format!("$.{key}"),
                    Spelling::SingleQuoted => format!("$['{key}']"),
                    Spelling::DoubleQuoted => format!("$[\"{key}\"]"),
                    Spelling::Nested => format!("$.o.{key}"),
                    Spelling::FirstElement => format!("$.list{index}[0]"),
                };
                let padding = if *padded { " " } else { "" };
                text.push_str(&format!("{{{padding}{path}{padding}}}"));
                if let Some(value) = value {
                    match spelling {
                        Spelling::Nested => {
                            nested.insert(key, value.json());
                        }
                        Spelling::FirstElement => {
                            data.insert(format!("list{index}"), json!([value.json(), "second"]));
                        }
                        Spelling::Dot | Spelling::SingleQuoted | Spelling::DoubleQuoted => {
                            data.insert(key, value.json());
                        }
                    }
                }
                found.push((true, value.as_ref().map(Scalar::text)));
            }
            Piece::Header { upper_case, value } => {
                let written = if *upper_case { header.to_ascii_uppercase() } else { header.clone() };
                text.push_str(&format!("{{header:{written}}}"));
                if let Some(value) = value {
                    headers.insert(
                        HeaderName::from_bytes(header.as_bytes()).expect("a header name"),
                        HeaderValue::from_str(value).expect("a visible value"),
                    );
                }
                found.push((true, value.clone()));
            }
            Piece::Alternatives { value } => {
                text.push_str(&format!("{{$.absent{index} | header:{header}}}"));
                if let Some(value) = value {
                    headers.insert(
                        HeaderName::from_bytes(header.as_bytes()).expect("a header name"),
                        HeaderValue::from_str(value).expect("a visible value"),
                    );
                }
                found.push((true, value.clone()));
            }
        }
    }
    // A member named like the nested object's key never exists at the top, so `$.o` is free.
    data.insert("o".to_owned(), Value::Object(nested));
    Built { text, data: Value::Object(data), headers, found }
}

/// The documented name rule: characters other than letters, digits, `_` and `-` separate
/// segments; empty segments are dropped.
fn name_of(text: &str) -> Option<String> {
    let segments: Vec<&str> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .filter(|segment| !segment.is_empty())
        .collect();
    (!segments.is_empty()).then(|| segments.join("."))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Any text parses or is refused with a reason; a parsed template keeps its exact text.
    #[test]
    fn any_text_parses_or_is_refused(text in template_text()) {
        match Template::parse(&text) {
            Ok(template) => prop_assert_eq!(template.as_str(), text.as_str()),
            Err(reason) => prop_assert!(!reason.is_empty()),
        }
    }

    /// Rendering a parsed template never panics; names are well formed, ids never blank.
    #[test]
    fn rendering_never_panics_and_names_are_well_formed(
        text in template_text(),
        data in json_value(),
        headers in header_map(),
    ) {
        let Ok(template) = Template::parse(&text) else { return Ok(()) };
        for name in [template.render_name(&data, &headers), template.render_name_if_found(&data, &headers)].into_iter().flatten() {
            prop_assert!(is_event_name(&name), "{:?} rendered {:?}", text, name);
        }
        if let Some(id) = template.render_id(&data, &headers) {
            prop_assert!(!id.trim().is_empty(), "{:?} rendered a blank id", text);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// A template built from known parts renders what its parts find: an id only when every
    /// placeholder finds a value, a name from whatever is found, and with `render_name_if_found`
    /// nothing when no placeholder finds anything.
    #[test]
    fn a_template_renders_what_its_parts_find(pieces in prop::collection::vec(piece(), 1..6)) {
        let built = build(&pieces);
        let template = Template::parse(&built.text).map_err(|reason| TestCaseError::fail(format!("{:?}: {reason}", built.text)))?;
        prop_assert_eq!(template.as_str(), built.text.as_str());

        let id: Option<String> = built.found.iter().map(|(_, found)| found.clone()).collect();
        let expected_id = id.filter(|id| !id.trim().is_empty());
        prop_assert_eq!(template.render_id(&built.data, &built.headers), expected_id, "template {:?}", built.text);

        let text: String = built.found.iter().filter_map(|(_, found)| found.clone()).collect();
        let expected_name = name_of(&text);
        prop_assert_eq!(template.render_name(&built.data, &built.headers), expected_name.clone(), "template {:?}", built.text);

        let placeholders: Vec<&Option<String>> = built.found.iter().filter(|(placeholder, _)| *placeholder).map(|(_, found)| found).collect();
        let nothing_found = !placeholders.is_empty() && placeholders.iter().all(|found| found.is_none());
        let expected_if_found = if nothing_found { None } else { expected_name };
        prop_assert_eq!(template.render_name_if_found(&built.data, &built.headers), expected_if_found, "template {:?}", built.text);
    }
}
