//! The seed platforms' subscription APIs, each at its own path with its own request and reply
//! shapes, as thin adapters over the one subscription model of `api::subscriptions`: a
//! subscription made through one face is listed by every other, in its shape.
//!
//! - `integrations`: seed 001's `/api/integrations/webhooks` (`enabled`, `created_at`, its
//!   delivery history items).
//! - `jsonapi`: seed 004's `/api/v1/hooks` (JSON:API documents, errors as `errors`) and its
//!   `/api/v1/hooks/{event}_sample`.
//!
//! `/api/webhooks` itself serves seeds 000 and 003, and takes the other seeds' field names too
//! (`subscriptions::canonical`). A face never validates, stores or authorizes on its own: it
//! translates, and calls the functions `api::subscriptions` serves with.

pub mod integrations;
pub mod jsonapi;
