//! The orchestrator: its merge stages, the dead-letter reconcilers and the
//! demo, on the generated typed topics and the Redis backend.

pub mod app;
pub mod fixture;
pub mod orchestrator;
pub mod reconcile;
pub mod store;
pub mod submit;
