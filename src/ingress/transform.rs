//! A hook's transformation, run on each event after it is decoded and shaped and before it is
//! committed: its result's `data` is what is stored; `null` drops the event, so nothing is
//! stored and the reply says it was dropped. An exception or a limit hit refuses the request
//! (`422 transformation_failed`, with the message), as a payload that does not fit its shape is.

use serde_json::{Value, json};

use super::IngressState;
use super::error::IngressError;
use crate::definitions::catalog::Hook;
use crate::event::NewEvent;
use crate::transform::Transformed;

/// What a hook's transformation left of a request's events.
pub(super) struct Kept {
    pub events: Vec<NewEvent>,
    /// How many it dropped.
    pub dropped: usize,
}

impl Kept {
    /// The reply's note of dropped events, when there are some.
    pub fn note(&self, hook: &Hook) -> Option<Value> {
        let version = hook.definition.transform.as_ref().map(|transformation| transformation.version());
        (self.dropped > 0).then(|| {
            json!({
                "count": self.dropped,
                "reason": "dropped by the hook's transformation",
                "transformVersion": version,
            })
        })
    }
}

/// Runs the hook's transformation, if it has one, on each event.
pub(super) async fn apply(state: &IngressState, hook: &Hook, events: Vec<NewEvent>) -> Result<Kept, IngressError> {
    let Some(transformation) = &hook.definition.transform else { return Ok(Kept { events, dropped: 0 }) };
    let mut kept = Kept { events: Vec::with_capacity(events.len()), dropped: 0 };
    for mut new_event in events {
        let input = serde_json::to_value(&new_event.event).expect("an event serializes");
        let failed = |error| IngressError::Transformation { version: transformation.version().to_owned(), error };
        match state.transformer.run(transformation, input).await.map_err(failed)? {
            Transformed::Dropped => kept.dropped += 1,
            Transformed::Changed(Value::Object(mut changed)) if changed.contains_key("data") => {
                new_event.event.data = changed.remove("data").unwrap_or_default();
                // The stored data is no longer the body as received.
                new_event.data_is_raw_json = false;
                kept.events.push(new_event);
            }
            Transformed::Changed(_) => {
                return Err(failed(crate::transform::TransformError::Unusable(
                    "no event with `data`: return the event it was given (changed), or null to drop it".into(),
                )));
            }
        }
    }
    Ok(kept)
}
