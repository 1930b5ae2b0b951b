//! Reloads the catalog when the definitions folder changes or the process receives SIGHUP.
//!
//! File events are debounced (editors write files in several steps), then one reload runs.
//! A refused reload is logged with every diagnostic; the old catalog keeps serving.

use notify::{RecursiveMode, Watcher};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

use super::catalog::{CatalogManager, ReloadError};

/// How long the folder must be quiet before a reload starts.
const DEBOUNCE: Duration = Duration::from_millis(250);

/// Why a reload was asked for, for the log.
#[derive(Debug, Clone, Copy)]
enum Trigger {
    FolderChanged,
    Hangup,
}

/// The sources of reloads, set up before the first catalog is loaded so that no change made
/// after start-up can be missed.
pub struct DefinitionWatch {
    _watcher: Option<notify::RecommendedWatcher>,
    changes: mpsc::UnboundedReceiver<()>,
    hangups: tokio::signal::unix::Signal,
}

impl DefinitionWatch {
    /// Starts watching `folder` (when `watch_folder`) and SIGHUP. Must run inside a tokio runtime.
    pub fn start(folder: &std::path::Path, watch_folder: bool) -> Result<DefinitionWatch, notify::Error> {
        let (changes_tx, changes) = mpsc::unbounded_channel::<()>();
        let watcher = if watch_folder {
            let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if let Ok(event) = event
                    && !event.kind.is_access()
                {
                    let _ = changes_tx.send(());
                }
            })?;
            watcher.watch(folder, RecursiveMode::Recursive)?;
            Some(watcher)
        } else {
            None
        };
        let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|error| notify::Error::generic(&format!("cannot listen for SIGHUP: {error}")))?;
        Ok(DefinitionWatch { _watcher: watcher, changes, hangups })
    }

    /// Reloads on every change or SIGHUP until `shutdown` resolves.
    pub async fn run(mut self, manager: Arc<CatalogManager>, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let trigger = tokio::select! {
                _ = &mut shutdown => return,
                Some(()) = self.changes.recv() => {
                    // Let the burst of events from one save settle before reading the folder.
                    while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, self.changes.recv()).await {}
                    Trigger::FolderChanged
                }
                Some(()) = self.hangups.recv() => Trigger::Hangup,
            };
            reload_and_log(&manager, trigger).await;
        }
    }
}

async fn reload_and_log(manager: &CatalogManager, trigger: Trigger) {
    match manager.reload().await {
        Ok(reloaded) => {
            for warning in &reloaded.warnings {
                tracing::warn!(%warning, "A hook definition has a warning.");
            }
            tracing::info!(?trigger, apps = reloaded.apps, hooks = reloaded.hooks, "Hook definitions reloaded.");
            metrics::counter!("hookgate_definition_reloads_total", "outcome" => "applied").increment(1);
        }
        Err(ReloadError::Invalid(diagnostics)) => {
            for diagnostic in &diagnostics {
                tracing::warn!(%diagnostic, "Refused the new hook definitions; the previous set keeps serving.");
            }
            metrics::counter!("hookgate_definition_reloads_total", "outcome" => "refused").increment(1);
        }
        Err(error) => {
            tracing::error!(%error, "Reloading hook definitions failed; the previous set keeps serving.");
            metrics::counter!("hookgate_definition_reloads_total", "outcome" => "failed").increment(1);
        }
    }
}
