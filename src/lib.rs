//! Mandate: an authorization sidecar, a Cedar policy decision point that
//! answers "may this principal do this action on this resource?" over
//! AuthZEN 1.0 and a native Cedar API.
//!
//! A decision flows down the modules: [`server`] accepts a connection,
//! [`api`] decodes one wire format into an [`engine::DecisionRequest`],
//! [`engine`] reads the current [`policy::PolicySnapshot`] and the entity
//! slice from [`entities`] and answers a [`engine::Decision`] — a deny
//! whenever anything goes wrong. [`config`] is parsed once at start and
//! [`app`] wires the parts together. `ARCHITECTURE.md` has the full map.

pub mod api;
pub mod app;
pub mod bus;
pub mod config;
pub mod engine;
pub mod entities;
pub mod policy;
pub mod server;
pub mod support;
pub mod telemetry;
pub mod tools;
