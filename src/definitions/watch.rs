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

/// Watches the folder and SIGHUP until `shutdown` resolves. Returns an error only when the
/// watch cannot be set up.
pub async fn watch(
    manager: Arc<CatalogManager>,
    folder: std::path::PathBuf,
    watch_folder: bool,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), notify::Error> {
    let (changes_tx, mut changes) = mpsc::unbounded_channel::<()>();
    let _watcher = if watch_folder {
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event
                && !event.kind.is_access()
            {
                let _ = changes_tx.send(());
            }
        })?;
        watcher.watch(&folder, RecursiveMode::Recursive)?;
        Some(watcher)
    } else {
        None
    };
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|error| notify::Error::generic(&format!("cannot listen for SIGHUP: {error}")))?;
    tokio::pin!(shutdown);
    loop {
        let trigger = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            Some(()) = changes.recv() => {
                // Let the burst of events from one save settle before reading the folder.
                while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, changes.recv()).await {}
                Trigger::FolderChanged
            }
            Some(()) = hangups.recv() => Trigger::Hangup,
        };
        reload_and_log(&manager, trigger).await;
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
