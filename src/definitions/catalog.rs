//! The catalog: the validated set of apps and hooks that is serving now, keyed by URL token.
//!
//! [`CatalogManager`] owns the current [`Catalog`] and replaces it atomically: a reload reads
//! the definitions folder and the apps installed through the API, validates them as one set,
//! gives every new hook its URL token (kept in the store, so URLs survive restarts) and swaps
//! the new catalog in. An invalid set is refused with its diagnostics and the old catalog keeps
//! serving. Readers never wait for a reload. Beside the catalog it keeps a [`CatalogStatus`]:
//! the serving set's warnings, what the secrets it was validated with resolve, and the errors of
//! the latest reload if it was refused, for operators to see where they are.

use arc_swap::ArcSwap;
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::{
    AppDefinition, Diagnostic, HookDefinition, Origin, SourceDocument, Validated, ValidationOptions, read_folder,
    validate,
};
use crate::event::{HookIdentity, HookType};
use crate::secrets::{SecretSource, SecretsFileError};
use crate::store::{InstalledApp, Store, StoreError};

/// A hook that is serving, with its URL token.
#[derive(Debug)]
pub struct Hook {
    pub app: String,
    pub definition: HookDefinition,
    pub token: String,
    pub origin: Origin,
}

impl Hook {
    /// The path of this hook's URL, relative to the public base URL.
    pub fn path(&self) -> String {
        format!("/h/{}", self.token)
    }

    pub fn identity(&self) -> HookIdentity<'_> {
        HookIdentity { app: &self.app, event_name: &self.definition.event_name, hook_type: self.definition.hook_type }
    }
}

/// An app that is serving.
#[derive(Debug, Clone)]
pub struct AppSummary {
    pub app: String,
    pub version: String,
    pub title: Option<String>,
    pub origin: Origin,
    pub event_names: Vec<String>,
}

/// The routing table: immutable once built.
#[derive(Debug, Default)]
pub struct Catalog {
    by_token: HashMap<String, Arc<Hook>>,
    /// Source hooks by their `/api/webhooks/{path}`.
    by_source: HashMap<String, Arc<Hook>>,
    /// Email hooks by their token in lower case (relays may fold an address's letter case).
    by_mail_token: HashMap<String, Arc<Hook>>,
    /// Every hook, ordered by app and then as defined.
    hooks: Vec<Arc<Hook>>,
    apps: Vec<AppSummary>,
    /// Named scopes of every app; a name two apps declare covers both apps' patterns.
    scopes: HashMap<String, Vec<String>>,
}

impl Catalog {
    fn build(apps: Vec<AppDefinition>, tokens: &HashMap<String, String>) -> Result<Catalog, StoreError> {
        let mut catalog = Catalog::default();
        let mut apps = apps;
        apps.sort_by(|a, b| a.app.cmp(&b.app));
        for app in apps {
            for (name, patterns) in &app.scopes {
                catalog.scopes.entry(name.clone()).or_default().extend(patterns.iter().cloned());
            }
            catalog.apps.push(AppSummary {
                app: app.app.clone(),
                version: app.version.clone(),
                title: app.title.clone(),
                origin: app.origin.clone(),
                event_names: app.hooks.iter().map(|h| h.event_name.clone()).collect(),
            });
            for definition in app.hooks {
                let token = tokens.get(&definition.event_name).cloned().ok_or_else(|| {
                    StoreError::Corrupt(format!("no URL token was returned for {}", definition.event_name))
                })?;
                let hook = Arc::new(Hook {
                    app: app.app.clone(),
                    definition,
                    token: token.clone(),
                    origin: app.origin.clone(),
                });
                catalog.by_token.insert(token, hook.clone());
                if let Some(source) = &hook.definition.source {
                    catalog.by_source.insert(source.path.clone(), hook.clone());
                }
                if hook.definition.hook_type == HookType::Email {
                    catalog.by_mail_token.insert(hook.token.to_ascii_lowercase(), hook.clone());
                }
                catalog.hooks.push(hook);
            }
        }
        Ok(catalog)
    }

    /// The event patterns a named scope stands for, when an app declares it.
    pub fn scope(&self, name: &str) -> Option<&[String]> {
        self.scopes.get(name).map(Vec::as_slice)
    }

    pub fn hook_by_token(&self, token: &str) -> Option<&Arc<Hook>> {
        self.by_token.get(token)
    }

    pub fn hook_by_source(&self, path: &str) -> Option<&Arc<Hook>> {
        self.by_source.get(path)
    }

    /// The email hook whose address has `token` as its local part, in any letter case.
    pub fn hook_by_mail_token(&self, token: &str) -> Option<&Arc<Hook>> {
        self.by_mail_token.get(&token.to_ascii_lowercase())
    }

    pub fn hook_by_event_name(&self, event_name: &str) -> Option<&Arc<Hook>> {
        self.hooks.iter().find(|hook| hook.definition.event_name == event_name)
    }

    pub fn hooks(&self) -> &[Arc<Hook>] {
        &self.hooks
    }

    pub fn apps(&self) -> &[AppSummary] {
        &self.apps
    }
}

/// Why a new set of definitions was not put in service.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the definitions are invalid ({} errors)", .0.iter().filter(|d| d.severity == super::Severity::Error).count())]
    Invalid(Vec<Diagnostic>),
    #[error(transparent)]
    Secrets(#[from] SecretsFileError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the catalog is built from.
#[derive(Debug, Clone)]
pub struct CatalogSettings {
    pub folder: PathBuf,
    /// A definition file larger than this is refused.
    pub max_file_bytes: u64,
    pub secrets_file: Option<PathBuf>,
    pub event_prefix: String,
}

/// A successful reload: how many apps and hooks now serve, and any warnings.
#[derive(Debug)]
pub struct Reloaded {
    pub apps: usize,
    pub hooks: usize,
    pub warnings: Vec<Diagnostic>,
}

fn event_names(validated: &Validated) -> Vec<String> {
    validated.apps.iter().flat_map(|app| app.hooks.iter().map(|hook| hook.event_name.clone())).collect()
}

/// A change to the installed apps, applied to the documents before validation.
enum Change<'a> {
    None,
    /// Adds this app, replacing an installed app of the same name.
    Install(SourceDocument),
    /// Leaves out the installed app of this name.
    Remove(&'a str),
}

/// What the latest reload left to tell besides the catalog.
#[derive(Debug, Default)]
pub struct CatalogStatus {
    /// The warnings of the set serving now.
    pub warnings: Vec<Diagnostic>,
    /// The secrets the serving set was validated with: whether each name is set.
    pub secrets: SecretSource,
    /// The latest reload, when it was refused (a later successful one clears it): when, and
    /// every error and warning of the set it refused.
    pub refused: Option<(jiff::Timestamp, Vec<Diagnostic>)>,
}

/// Owns the serving catalog and every change to it.
pub struct CatalogManager {
    current: ArcSwap<Catalog>,
    status: ArcSwap<CatalogStatus>,
    store: Store,
    settings: CatalogSettings,
    /// One change at a time, so that two reloads cannot interleave their swaps.
    change: tokio::sync::Mutex<()>,
}

impl CatalogManager {
    /// Builds the first catalog; fails when the definitions are invalid.
    pub async fn start(store: Store, settings: CatalogSettings) -> Result<(CatalogManager, Reloaded), ReloadError> {
        let manager = CatalogManager {
            current: ArcSwap::from_pointee(Catalog::default()),
            status: ArcSwap::from_pointee(CatalogStatus::default()),
            store,
            settings,
            change: Default::default(),
        };
        let reloaded = manager.reload().await?;
        Ok((manager, reloaded))
    }

    /// The catalog serving now.
    pub fn current(&self) -> Arc<Catalog> {
        self.current.load_full()
    }

    /// The serving set's warnings and secrets, and the latest refused reload.
    pub fn status(&self) -> Arc<CatalogStatus> {
        self.status.load_full()
    }

    /// Reads the folder and the installed apps again and swaps in the result if it is valid.
    /// A refusal is kept in the [`CatalogStatus`] until a reload succeeds.
    pub async fn reload(&self) -> Result<Reloaded, ReloadError> {
        let _change = self.change.lock().await;
        let reloaded = match self.documents(Change::None).await {
            Ok(documents) => self.put_in_service(&documents).await,
            Err(error) => Err(error),
        };
        if let Err(ReloadError::Invalid(diagnostics)) = &reloaded {
            let current = self.status.load();
            self.status.store(Arc::new(CatalogStatus {
                warnings: current.warnings.clone(),
                secrets: current.secrets.clone(),
                refused: Some((jiff::Timestamp::now(), diagnostics.clone())),
            }));
        }
        reloaded
    }

    /// Installs (or replaces) an app from its definition JSON: validated with everything else
    /// that serves, stored, then put in service. Says whether an installed app was replaced.
    pub async fn install_app(&self, json: Value) -> Result<(Reloaded, bool), ReloadError> {
        let _change = self.change.lock().await;
        let app_name = json.get("app").and_then(Value::as_str).unwrap_or_default().to_owned();
        let replaced = self.store.apps().await?.iter().any(|installed| installed.app == app_name);
        let candidate = SourceDocument { origin: Origin::Installed(app_name.clone()), json: json.clone() };
        let documents = self.documents(Change::Install(candidate)).await?;
        let (validated, secrets) = self.validate(&documents).await?;
        if !validated.is_valid() {
            return Err(ReloadError::Invalid(validated.diagnostics));
        }
        // Tokens first: if that fails, nothing was installed.
        self.store.hook_tokens(event_names(&validated)).await?;
        self.store
            .put_app(InstalledApp { app: app_name, definition: json.to_string(), installed_at: jiff::Timestamp::now() })
            .await?;
        Ok((self.swap(validated, secrets).await?, replaced))
    }

    /// Removes an installed app; `Ok(None)` when no app of that name was installed. The set
    /// without it is validated first: a refused removal leaves the app installed.
    pub async fn remove_app(&self, app: &str) -> Result<Option<Reloaded>, ReloadError> {
        let _change = self.change.lock().await;
        if !self.store.apps().await?.iter().any(|installed| installed.app == app) {
            return Ok(None);
        }
        let documents = self.documents(Change::Remove(app)).await?;
        let (validated, secrets) = self.validate(&documents).await?;
        if !validated.is_valid() {
            return Err(ReloadError::Invalid(validated.diagnostics));
        }
        if !self.store.delete_app(app).await? {
            return Ok(None);
        }
        self.swap(validated, secrets).await.map(Some)
    }

    /// The definitions folder's documents and the installed apps, with `change` applied.
    async fn documents(&self, change: Change<'_>) -> Result<Vec<SourceDocument>, ReloadError> {
        let (folder, max_file_bytes) = (self.settings.folder.clone(), self.settings.max_file_bytes);
        let (mut documents, diagnostics) = tokio::task::spawn_blocking(move || read_folder(&folder, max_file_bytes))
            .await
            .map_err(|error| StoreError::Unavailable(format!("reading definitions failed: {error}")))?;
        if !diagnostics.is_empty() {
            return Err(ReloadError::Invalid(diagnostics));
        }
        let (skipped, candidate) = match change {
            Change::None => (None, None),
            Change::Install(candidate) => (Some(candidate.origin.clone()), Some(candidate)),
            Change::Remove(app) => (Some(Origin::Installed(app.to_owned())), None),
        };
        for installed in self.store.apps().await? {
            if skipped.as_ref().is_some_and(|skipped| *skipped == Origin::Installed(installed.app.clone())) {
                continue;
            }
            let json = serde_json::from_str(&installed.definition)
                .map_err(|error| StoreError::Corrupt(format!("installed app {:?}: {error}", installed.app)))?;
            documents.push(SourceDocument { origin: Origin::Installed(installed.app), json });
        }
        documents.extend(candidate);
        Ok(documents)
    }

    /// The documents validated, with the secrets they were validated with. On a blocking
    /// thread: validation compiles hooks' transformations (JavaScript never runs on tokio's
    /// workers).
    async fn validate(&self, documents: &[SourceDocument]) -> Result<(Validated, SecretSource), ReloadError> {
        let options = ValidationOptions {
            event_prefix: self.settings.event_prefix.clone(),
            secrets: SecretSource::load(self.settings.secrets_file.as_deref())?,
        };
        let documents = documents.to_vec();
        tokio::task::spawn_blocking(move || {
            let validated = validate(&documents, &options);
            (validated, options.secrets)
        })
        .await
        .map_err(|error| ReloadError::from(StoreError::Unavailable(format!("validating definitions failed: {error}"))))
    }

    async fn put_in_service(&self, documents: &[SourceDocument]) -> Result<Reloaded, ReloadError> {
        let (validated, secrets) = self.validate(documents).await?;
        if !validated.is_valid() {
            return Err(ReloadError::Invalid(validated.diagnostics));
        }
        self.swap(validated, secrets).await
    }

    async fn swap(&self, validated: Validated, secrets: SecretSource) -> Result<Reloaded, ReloadError> {
        let tokens = self.store.hook_tokens(event_names(&validated)).await?;
        let warnings: Vec<Diagnostic> = validated.warnings().cloned().collect();
        let catalog = Catalog::build(validated.apps, &tokens)?;
        let reloaded = Reloaded { apps: catalog.apps.len(), hooks: catalog.hooks.len(), warnings };
        self.current.store(Arc::new(catalog));
        self.status.store(Arc::new(CatalogStatus { warnings: reloaded.warnings.clone(), secrets, refused: None }));
        Ok(reloaded)
    }
}
