//! The same API suite on the PostgreSQL backend, and what only several nodes on one database
//! can show. Each gateway gets a fresh schema of the database at `HOOKGATE_TEST_POSTGRES_URL`
//! (`.ci/run` sets it); without it this binary says the suite was skipped and runs nothing, and a
//! strict run (`HOOKGATE_TEST_STRICT=1`) fails.
//!
//! `migrate` starts gateways on SQLite too: it moves their stores here with `hookgate migrate`.
//!
//! The API modules are the SQLite binary's own files (`tests/it/`), compiled again here with
//! `BACKEND` set to PostgreSQL: one suite of API tests, run on each backend.

// Helpers shared with the SQLite binary that the modules compiled here do not all use.
#![allow(dead_code)]

#[path = "../it/api.rs"]
mod api;
#[path = "../it/deliveries.rs"]
mod deliveries;
#[path = "../it/delivery_control.rs"]
mod delivery_control;
#[path = "../it/dns.rs"]
mod dns;
#[path = "../it/event_listing.rs"]
mod event_listing;
#[path = "../it/event_stream.rs"]
mod event_stream;
#[path = "../it/form_hooks.rs"]
mod form_hooks;
#[path = "../it/header_filters.rs"]
mod header_filters;
#[path = "../it/management_keys.rs"]
mod management_keys;
mod migrate;
mod nodes;
mod outage;
#[path = "../it/retention.rs"]
mod retention;
#[path = "../it/seed_faces.rs"]
mod seed_faces;
#[path = "../it/sources.rs"]
mod sources;
#[path = "../it/standard_webhooks.rs"]
mod standard_webhooks;
#[path = "../it/subscriptions.rs"]
mod subscriptions;
#[path = "../it/support.rs"]
mod support;
#[path = "../it/transformations.rs"]
mod transformations;
#[path = "../it/web_hooks.rs"]
mod web_hooks;

/// The store every gateway of this binary uses.
pub const BACKEND: support::Backend = support::Backend::Postgres;
