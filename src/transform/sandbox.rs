//! One compiled transformation in its own QuickJS runtime: the source evaluated once, then
//! `transform(event)` called per event under a time limit (an interrupt handler that checks a
//! deadline) and a memory limit (the runtime's allocator limit). The context has QuickJS's
//! language intrinsics only: no `require`, no modules loader, no `std`/`os`, no `fetch`, no
//! timers, no `console`, so a transformation can do no I/O. A [`Sandbox`] is not `Send`: it
//! lives on the thread that made it (`pool`).

use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;

use rquickjs::{CatchResultExt, CaughtError, Context, Function, Runtime};
use serde_json::Value;

use super::{Limits, TransformError, Transformed};

/// A runtime holding more than this after a call is collected at once.
const COLLECT_ABOVE_BYTES: usize = 1024 * 1024;

/// The deepest JavaScript stack a transformation may use; deeper recursion is a `RangeError`.
const MAX_STACK_BYTES: usize = 256 * 1024;

/// A transformation compiled in a runtime of its own.
pub struct Sandbox {
    /// Dropped after the context, which holds a reference to it.
    runtime: Runtime,
    context: Context,
    deadline: Rc<Cell<Option<Instant>>>,
    limits: Limits,
}

impl Sandbox {
    /// Evaluates `source` once; it must define a function `transform`.
    pub fn compile(source: &str, limits: Limits) -> Result<Sandbox, TransformError> {
        let runtime = Runtime::new().map_err(|error| TransformError::Compile(error.to_string()))?;
        runtime.set_memory_limit(limits.memory_bytes);
        runtime.set_max_stack_size(MAX_STACK_BYTES);
        let deadline: Rc<Cell<Option<Instant>>> = Rc::default();
        let watched = deadline.clone();
        runtime.set_interrupt_handler(Some(Box::new(move || watched.get().is_some_and(|at| Instant::now() >= at))));
        let context = Context::full(&runtime).map_err(|error| TransformError::Compile(error.to_string()))?;
        let sandbox = Sandbox { runtime, context, deadline, limits };
        sandbox.within_limits(|| {
            sandbox.context.with(|ctx| {
                ctx.eval::<(), _>(source).catch(&ctx).map_err(|error| TransformError::Compile(describe(&error)))?;
                match ctx.globals().get::<_, rquickjs::Value>("transform") {
                    Ok(value) if value.is_function() => Ok(()),
                    _ => Err(TransformError::Compile("the source defines no function `transform(event)`".into())),
                }
            })
        })?;
        Ok(sandbox)
    }

    /// Calls `transform(input)`: the changed value, or `Dropped` when it returned `null`.
    pub fn call(&self, input: &Value) -> Result<Transformed, TransformError> {
        let json = serde_json::to_string(input).expect("a JSON value serializes");
        let outcome = self.within_limits(|| {
            self.context.with(|ctx| {
                let run = || -> rquickjs::Result<Option<String>> {
                    let transform: Function = ctx.globals().get("transform")?;
                    let event = ctx.json_parse(json)?;
                    let result: rquickjs::Value = transform.call((event,))?;
                    if result.is_null() {
                        return Ok(None);
                    }
                    if result.is_undefined() {
                        return Err(rquickjs::Exception::throw_type(
                            &ctx,
                            "transform returned undefined: return the event, or null to drop it",
                        ));
                    }
                    let text = ctx.json_stringify(result)?;
                    Ok(Some(text.map(|text| text.to_string()).transpose()?.unwrap_or_else(|| "null".into())))
                };
                run().catch(&ctx).map_err(|error| TransformError::Threw(describe(&error)))
            })
        });
        // Reference counting frees most of what a call made as it returns; cycles are collected
        // when the runtime's own threshold is reached, or here when much is left, so that it is
        // not counted against the next call.
        if self.retained_bytes() > COLLECT_ABOVE_BYTES {
            self.runtime.run_gc();
        }
        match outcome? {
            None => Ok(Transformed::Dropped),
            Some(text) => serde_json::from_str(&text)
                .map(Transformed::Changed)
                .map_err(|error| TransformError::Threw(format!("the result is not JSON: {error}"))),
        }
    }

    /// The memory the runtime holds between calls: its compiled code and whatever globals the
    /// transformation left behind.
    pub fn retained_bytes(&self) -> usize {
        usize::try_from(self.runtime.memory_usage().malloc_size).unwrap_or(usize::MAX)
    }

    /// Runs `work` with the deadline set, and names a limit that stopped it: an interrupt is
    /// reported as the time limit, an allocation refused as the memory limit.
    fn within_limits<T>(&self, work: impl FnOnce() -> Result<T, TransformError>) -> Result<T, TransformError> {
        let started = Instant::now();
        self.deadline.set(Some(started + self.limits.time));
        let outcome = work();
        self.deadline.set(None);
        outcome.map_err(|error| {
            let message = error.to_string();
            if started.elapsed() >= self.limits.time && message.contains("interrupted") {
                TransformError::TimeLimit(self.limits.time)
            } else if message.contains("out of memory") || message.contains("Allocation failed") {
                TransformError::MemoryLimit(self.limits.memory_bytes)
            } else {
                error
            }
        })
    }
}

/// A caught JavaScript error as one line: `TypeError: x is not a function (at transform:3)`.
fn describe(error: &CaughtError<'_>) -> String {
    match error {
        CaughtError::Exception(exception) => {
            let message = exception.message().unwrap_or_default();
            let name = exception.get::<_, Option<String>>("name").ok().flatten().unwrap_or_else(|| "Error".to_owned());
            let place = exception
                .stack()
                .and_then(|stack| stack.lines().next().map(|line| line.trim().to_owned()))
                .filter(|line| !line.is_empty());
            match place {
                Some(place) => format!("{name}: {message} ({place})"),
                None => format!("{name}: {message}"),
            }
        }
        CaughtError::Value(value) => {
            let text = value
                .as_string()
                .and_then(|text| text.to_string().ok())
                .or_else(|| value.as_number().map(|number| number.to_string()))
                .unwrap_or_else(|| format!("a thrown {}", value.type_name()));
            format!("uncaught {text}")
        }
        CaughtError::Error(error) => error.to_string(),
    }
}
