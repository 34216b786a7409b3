//! The orchestrator: submitting batches, the merge, mergesignal, conclude and speculate stages,
//! the dead-letter reconcilers and the records they keep, on the generated typed topics and the
//! Redis backend. Reads `submitqueue-merge`, `merge-signal`, `conclude`, `speculate` and the
//! dead-letter streams; writes `runway-merge`, `log`, `conclude`, `speculate` and `parked`.

pub mod app;
pub mod fixture;
pub mod orchestrator;
pub mod reconcile;
pub mod store;
pub mod submit;
