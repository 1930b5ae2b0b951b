//! The platform sources of a set of definitions, listed for an operator: where each one
//! receives (`/api/webhooks/{path}`), how it verifies, the names of the secrets it reads and
//! whether each is set. Never a secret's value: only whether the secret source resolves it.

use serde::Serialize;

use super::HookDefinition;
use crate::secrets::SecretSource;

/// One platform source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceView {
    pub app: String,
    pub event_name: String,
    pub url: String,
    pub scheme: String,
    pub secrets: Vec<SecretStatus>,
}

/// A secret a source reads, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretStatus {
    pub name: String,
    /// Whether the environment or the secrets file sets it (to something not blank).
    pub set: bool,
    pub used_for: SecretUse,
}

/// What a source does with a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum SecretUse {
    /// Checking request signatures (one of several during a rotation).
    Signature,
    /// Answering Meta's subscription handshake.
    VerifyToken,
}

impl SourceView {
    /// Whether requests are refused for want of a secret: none of its signature secrets is set.
    pub fn waits_for_a_secret(&self) -> bool {
        !self.secrets.iter().any(|secret| secret.used_for == SecretUse::Signature && secret.set)
    }
}

/// Every source among `hooks` (app name and definition), in their order, with URLs under
/// `public_url` and each secret looked up in `secrets`.
pub fn sources<'a>(
    hooks: impl IntoIterator<Item = (&'a str, &'a HookDefinition)>,
    public_url: &str,
    secrets: &SecretSource,
) -> Vec<SourceView> {
    let base = public_url.trim_end_matches('/');
    let status =
        |name: &String, used_for| SecretStatus { name: name.clone(), set: secrets.resolve(name).is_some(), used_for };
    hooks
        .into_iter()
        .filter_map(|(app, hook)| {
            let source = hook.source.as_ref()?;
            let signing = source.secret_names.iter().map(|name| status(name, SecretUse::Signature));
            let handshake = source.verify_token_name.iter().map(|name| status(name, SecretUse::VerifyToken));
            Some(SourceView {
                app: app.to_owned(),
                event_name: hook.event_name.clone(),
                url: format!("{base}/api/webhooks/{}", source.path),
                scheme: source.scheme_name.clone(),
                secrets: signing.chain(handshake).collect(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definitions::{Origin, SourceDocument, ValidationOptions, validate};
    use serde_json::json;

    fn validated(secrets: &SecretSource) -> Vec<crate::definitions::AppDefinition> {
        let app = json!({"app": "meta", "version": "1", "hooks": [
            {"eventName": "meta.event", "type": "web", "source": {
                "path": "meta", "scheme": "meta", "secrets": ["${META_APP_SECRET}", "${META_APP_SECRET_NEXT}"],
                "verifyToken": "${META_VERIFY_TOKEN}"}},
            {"eventName": "kustomer.app.meta.form", "type": "form"}
        ]});
        let options = ValidationOptions { event_prefix: "kustomer.app".into(), secrets: secrets.clone() };
        let validated = validate(&[SourceDocument { origin: Origin::File("meta.json".into()), json: app }], &options);
        assert!(validated.is_valid(), "{:?}", validated.diagnostics);
        validated.apps
    }

    fn listed(secrets: &SecretSource) -> Vec<SourceView> {
        let apps = validated(secrets);
        let hooks = apps.iter().flat_map(|app| app.hooks.iter().map(|hook| (app.app.as_str(), hook)));
        sources(hooks, "https://hooks.example/", secrets)
    }

    #[test]
    fn a_source_is_listed_with_its_url_scheme_and_every_secret_name_and_never_a_value() {
        let secrets = SecretSource::from_values([("META_APP_SECRET_NEXT".to_owned(), "s3cr3t-value".to_owned())]);
        let expected = SourceView {
            app: "meta".into(),
            event_name: "meta.event".into(),
            url: "https://hooks.example/api/webhooks/meta".into(),
            scheme: "meta".into(),
            secrets: vec![
                SecretStatus { name: "META_APP_SECRET".into(), set: false, used_for: SecretUse::Signature },
                SecretStatus { name: "META_APP_SECRET_NEXT".into(), set: true, used_for: SecretUse::Signature },
                SecretStatus { name: "META_VERIFY_TOKEN".into(), set: false, used_for: SecretUse::VerifyToken },
            ],
        };
        let listed = listed(&secrets);
        assert_eq!(listed, [expected], "the form hook is not a source");
        assert!(!listed[0].waits_for_a_secret(), "one signature secret of two is enough");
        assert!(!serde_json::to_string(&listed).unwrap().contains("s3cr3t-value"));
    }

    #[test]
    fn a_source_waits_until_one_of_its_signature_secrets_is_set() {
        let only_the_token = SecretSource::from_values([("META_VERIFY_TOKEN".to_owned(), "t".to_owned())]);
        assert!(listed(&only_the_token)[0].waits_for_a_secret(), "the handshake token does not sign");
        assert!(listed(&SecretSource::from_values([]))[0].waits_for_a_secret());
    }
}
