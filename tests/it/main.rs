//! Integration tests: the real `hookgate` binary on 127.0.0.1 port 0, real HTTP clients, a real
//! SQLite file. One binary, one module per area; `support` starts and stops gateways.

mod api;
mod browser;
mod cli;
mod console;
mod crash_safety;
mod definition_schema;
mod deliveries;
mod delivery_control;
mod dns;
mod documented_defaults;
mod durability;
mod email;
mod event_listing;
mod event_stream;
mod fairness;
mod first_start;
mod form_hooks;
mod header_filters;
mod independent_signers;
mod interop;
mod management_keys;
mod memory_bounds;
mod nats;
mod notices;
mod openapi;
mod opening_steps;
mod rejections;
mod reload;
mod retention;
mod route_authorization;
mod secrets;
mod seed_faces;
mod shapes;
mod shipped_sources;
mod shutdown;
mod smtp_properties;
mod sources;
mod standard_webhooks;
mod subscriptions;
mod support;
mod transformations;
mod web_hooks;

/// The store every gateway of this binary uses.
pub const BACKEND: support::Backend = support::Backend::Sqlite;
