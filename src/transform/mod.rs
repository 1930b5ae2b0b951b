//! Transformations: a JavaScript function `transform(event)` that a hook runs on each event
//! before it is stored, or a subscription before each delivery. It returns the changed event,
//! or `null` to drop it.
//!
//! JavaScript runs in QuickJS (through rquickjs), one runtime per transformation version
//! (`sandbox`): the source is evaluated once, and each call runs under a time limit and a memory
//! limit, with no I/O available. Runtimes are not `Send`, so they live on a few dedicated
//! threads ([`Transformer`]), never on tokio's workers. The threads take calls from one queue,
//! so a transformation that spins until its time limit holds up one thread, never the others;
//! each thread compiles a version on its first call there and keeps it (a version is compiled
//! at most once per thread). A limit hit or an exception is a [`TransformError`]; it ends the
//! call, never the process.
//!
//! A [`Transformation`]'s version is the start of the SHA-256 of its source: the same source is
//! the same version wherever it is defined, and any edit makes a new one.

mod sandbox;

pub use sandbox::Sandbox;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

/// The largest transformation source accepted, in bytes.
pub const MAX_SOURCE_BYTES: usize = 64 * 1024;
/// Calls waiting for a thread; callers wait when it is full.
const QUEUE: usize = 256;
/// Compiled transformations kept per thread; the least recently used goes first.
const KEPT_PER_THREAD: usize = 32;
/// A runtime holding more than this between calls (globals a transformation keeps filling) is
/// let go and compiled afresh on its next call, so what the threads keep stays bounded:
/// `threads × KEPT_PER_THREAD × KEPT_RUNTIME_BYTES` at most (256 MiB with two threads).
const KEPT_RUNTIME_BYTES: usize = 4 * 1024 * 1024;
/// Each thread's own stack: QuickJS's stack limit (`sandbox`) sits well inside it.
const THREAD_STACK_BYTES: usize = 4 * 1024 * 1024;

/// What one call may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Time for one call (wall time on a thread that does nothing else meanwhile).
    pub time: Duration,
    /// Memory of the transformation's runtime, its compiled code included.
    pub memory_bytes: usize,
}

impl Default for Limits {
    /// 50 ms and 16 MiB, as README documents (`transform_time_limit_ms`,
    /// `transform_memory_limit_bytes`).
    fn default() -> Limits {
        Limits { time: Duration::from_millis(50), memory_bytes: 16 * 1024 * 1024 }
    }
}

/// A transformation's source and its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transformation {
    source: Arc<str>,
    version: String,
}

impl Transformation {
    /// A transformation whose source compiles and defines `transform`; the reason otherwise.
    pub fn compile(source: &str) -> Result<Transformation, TransformError> {
        if source.len() > MAX_SOURCE_BYTES {
            return Err(TransformError::Compile(format!(
                "the source is {} bytes, more than the {MAX_SOURCE_BYTES} allowed",
                source.len()
            )));
        }
        Sandbox::compile(source, Limits::default())?;
        Ok(Transformation { source: source.into(), version: version_of(source) })
    }

    /// A transformation checked when it was saved: it is compiled where it runs, on first use.
    pub fn stored(source: &str) -> Transformation {
        Transformation { source: source.into(), version: version_of(source) }
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The first 16 hex digits of the source's SHA-256.
    pub fn version(&self) -> &str {
        &self.version
    }
}

/// The version of a transformation source: the first 16 hex digits of its SHA-256.
pub fn version_of(source: &str) -> String {
    let mut digest = crate::secrets::sha256_hex(source);
    digest.truncate(16);
    digest
}

/// What a transformation made of an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Transformed {
    /// The value it returned.
    Changed(Value),
    /// It returned `null`.
    Dropped,
}

/// Why a transformation gave no result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TransformError {
    #[error("the transformation does not compile: {0}")]
    Compile(String),
    #[error("the transformation threw {0}")]
    Threw(String),
    #[error("the transformation was stopped after its time limit of {} ms", .0.as_millis())]
    TimeLimit(Duration),
    #[error("the transformation was stopped at its memory limit of {0} bytes")]
    MemoryLimit(usize),
    #[error("the transformation returned {0}")]
    Unusable(String),
    #[error("transformations are not running (hookgate is stopping)")]
    Stopped,
}

impl TransformError {
    /// The metric label and the short name of the outcome.
    pub fn code(&self) -> &'static str {
        match self {
            TransformError::Compile(_) => "compile_error",
            TransformError::Threw(_) => "threw",
            TransformError::TimeLimit(_) => "time_limit",
            TransformError::MemoryLimit(_) => "memory_limit",
            TransformError::Unusable(_) => "unusable_result",
            TransformError::Stopped => "stopped",
        }
    }
}

/// Runs transformations on dedicated threads; cheap to clone.
#[derive(Clone)]
pub struct Transformer {
    calls: mpsc::Sender<Call>,
}

/// One call, with where its outcome goes.
struct Call {
    transformation: Transformation,
    input: Value,
    reply: oneshot::Sender<Result<Transformed, TransformError>>,
}

impl Transformer {
    /// Starts `threads` threads (at least one). They end when every clone is dropped.
    pub fn start(threads: usize, limits: Limits) -> Transformer {
        let (calls, queue) = mpsc::channel(QUEUE);
        let queue = Arc::new(Mutex::new(queue));
        for index in 0..threads.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("hookgate-transform-{index}"))
                .stack_size(THREAD_STACK_BYTES)
                .spawn(move || serve(&queue, limits))
                .expect("a transformation thread starts");
        }
        Transformer { calls }
    }

    /// Runs `transformation` on `input`, on the first thread free.
    pub async fn run(&self, transformation: &Transformation, input: Value) -> Result<Transformed, TransformError> {
        let (reply, outcome) = oneshot::channel();
        let call = Call { transformation: transformation.clone(), input, reply };
        self.calls.send(call).await.map_err(|_| TransformError::Stopped)?;
        let outcome = outcome.await.map_err(|_| TransformError::Stopped)?;
        let label = match &outcome {
            Ok(Transformed::Changed(_)) => "changed",
            Ok(Transformed::Dropped) => "dropped",
            Err(error) => error.code(),
        };
        metrics::counter!("hookgate_transformations_total", "outcome" => label).increment(1);
        outcome
    }
}

/// One thread's loop: calls in arrival order, each transformation compiled on first use and
/// kept (at most [`KEPT_PER_THREAD`]); one stopped by a limit, or holding more than
/// [`KEPT_RUNTIME_BYTES`] after a call, is compiled afresh next time, so nothing it left behind
/// carries over.
fn serve(queue: &Mutex<mpsc::Receiver<Call>>, limits: Limits) {
    let mut kept: HashMap<String, (Sandbox, u64)> = HashMap::new();
    let mut clock = 0u64;
    loop {
        // One thread waits on the queue at a time; the lock is let go before the call runs.
        let next = queue.lock().map(|mut queue| queue.blocking_recv());
        let Ok(Some(call)) = next else { return };
        clock += 1;
        let version = call.transformation.version().to_owned();
        if !kept.contains_key(&version) {
            if kept.len() >= KEPT_PER_THREAD
                && let Some(oldest) = kept.iter().min_by_key(|(_, (_, used))| *used).map(|(key, _)| key.clone())
            {
                kept.remove(&oldest);
            }
            match Sandbox::compile(call.transformation.source(), limits) {
                Ok(sandbox) => {
                    kept.insert(version.clone(), (sandbox, clock));
                }
                Err(error) => {
                    let _ = call.reply.send(Err(error));
                    continue;
                }
            }
        }
        let (sandbox, used) = kept.get_mut(&version).expect("compiled above");
        *used = clock;
        let outcome = sandbox.call(&call.input);
        let limit_hit = matches!(outcome, Err(TransformError::TimeLimit(_) | TransformError::MemoryLimit(_)));
        if limit_hit || sandbox.retained_bytes() > KEPT_RUNTIME_BYTES {
            kept.remove(&version);
        }
        let _ = call.reply.send(outcome);
    }
}

#[cfg(test)]
mod tests;
