//! Event name patterns: an exact name, `*`, or a prefix ending in `.*` (`stripe.*`). Used by
//! subscriptions to pick events and by management keys' scopes to bound what they may touch.

/// `*` matches every name; `stripe.*` every name under `stripe.`; anything else is exact.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some("") => true,
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// Whether every name `pattern` matches is also matched by `scope`: how a management key's
/// scopes bound the subscriptions it may make (`stripe.*` covers `stripe.charge.*` and
/// `stripe.invoice.paid`, not `*`).
pub fn pattern_covers(scope: &str, pattern: &str) -> bool {
    match scope.strip_suffix('*') {
        Some(prefix) => pattern.strip_suffix('*').unwrap_or(pattern).starts_with(prefix),
        None => scope == pattern,
    }
}

/// An event name, `*`, or a prefix pattern ending in `.*`.
pub fn is_pattern(pattern: &str) -> bool {
    let name = pattern.strip_suffix(".*").unwrap_or(pattern);
    pattern == "*"
        || (!name.is_empty()
            && name.len() <= 200
            && name.split('.').all(|segment| {
                !segment.is_empty() && segment.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_exact_names_star_or_prefixes() {
        assert!(pattern_matches("*", "stripe.charge.succeeded"));
        assert!(pattern_matches("stripe.*", "stripe.charge.succeeded"));
        assert!(!pattern_matches("stripe.*", "stripes.charge"));
        assert!(pattern_matches("github.push", "github.push"));
        assert!(!pattern_matches("github.push", "github.push.x"));
        assert!(is_pattern("stripe.*") && is_pattern("*") && is_pattern("a.b-c_d"));
        assert!(!is_pattern("stripe*") && !is_pattern("a..b") && !is_pattern(".*") && !is_pattern("a b"));
    }

    #[test]
    fn a_scope_covers_the_patterns_whose_every_match_it_matches() {
        assert!(pattern_covers("*", "*") && pattern_covers("*", "stripe.*") && pattern_covers("*", "a.b"));
        assert!(pattern_covers("stripe.*", "stripe.*"));
        assert!(pattern_covers("stripe.*", "stripe.charge.*"));
        assert!(pattern_covers("stripe.*", "stripe.invoice.paid"));
        assert!(!pattern_covers("stripe.*", "*"), "all events reach beyond stripe");
        assert!(!pattern_covers("stripe.*", "stripes.charge"));
        assert!(!pattern_covers("stripe.*", "stripe"), "the name stripe is not under stripe.");
        assert!(pattern_covers("github.push", "github.push"));
        assert!(!pattern_covers("github.push", "github.*"));
        assert!(!pattern_covers("github.push", "github.push_request"));
    }
}
