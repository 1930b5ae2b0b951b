//! Bulk retries in the background: stored jobs (`Store::create_retry_job`, from the API or the
//! CLI) worked off a batch at a time, each batch one transaction that makes its deliveries due
//! and moves the job's cursor, so a job goes on where it was after a restart, and several nodes
//! share the work without taking a batch twice. The delivery worker then sends what was queued,
//! at its usual pace (rate limits included).

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use crate::pipeline::Committer;
use crate::store::Store;

/// Deliveries made due again in one transaction.
pub const BATCH: usize = 200;
/// How often an idle runner looks for a new job.
const POLL: Duration = Duration::from_millis(500);

/// Runs until `stop` resolves: takes batches while there are any, then looks again every
/// [`POLL`].
pub async fn run(store: Store, committer: Arc<Committer>, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    loop {
        let wait = match store.advance_retry_job(Timestamp::now(), BATCH).await {
            Ok(Some(job)) => {
                committer.wake_deliveries();
                if job.state == "done" {
                    tracing::info!(job = %job.id, total = job.total, queued = job.queued, skipped = job.skipped, "A bulk retry has queued its deliveries.");
                }
                Duration::ZERO
            }
            Ok(None) => POLL,
            Err(error) => {
                tracing::warn!(%error, "A bulk retry's next batch could not be queued; trying again shortly.");
                POLL
            }
        };
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}
