//! The orchestrator: its merge stages, the dead-letter reconcilers and the
//! demo, on the generated typed topics and the Redis backend.

pub mod app;
pub mod demo;
pub mod orchestrator;
pub mod reconcile;
pub mod store;
