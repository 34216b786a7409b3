//! Keyway's reference queue contract, generated from the `.proto` files in `api/`.
//!
//! ```
//! use keyway::runway::messagequeue::{MergeRequest, MergeStep};
//! use keyway::base::{change::Change, mergestrategy::Strategy};
//!
//! let request = MergeRequest {
//!     id: "payments/batch/7".into(),
//!     queue_name: "payments".into(),
//!     steps: vec![MergeStep {
//!         step_id: "payments/41".into(),
//!         change: Some(Change { uris: vec!["git://example.com/pay/main/0123456789abcdef0123456789abcdef01234567".into()] }),
//!         strategy: Strategy::SquashRebase as i32,
//!     }],
//! };
//! let json = keyway_runtime::json::to_string(&request).unwrap();
//! assert!(json.starts_with(r#"{"id":"payments/batch/7","queue_name":"payments","steps":[{"step_id""#));
//! assert_eq!(keyway_runtime::json::from_str::<MergeRequest>(&json).unwrap(), request);
//! ```

#[allow(unreachable_pub)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/_includes.rs"));
}

#[allow(unreachable_pub)]
mod generated_orchestrator {
    include!(concat!(env!("OUT_DIR"), "/orchestrator/_includes.rs"));
}

/// The orchestrator's own payloads and state records (`orchestrator/proto/`), with their
/// topics: `submitqueue-merge`, `conclude`, `speculate` (`BatchRef`), `log` (`LogEvent`) and
/// `parked` (`Parked`).
pub mod orchestrator {
    pub use crate::generated_orchestrator::keyway::orchestrator::v1::*;
    pub use crate::generated_orchestrator::topics;

    /// The encoded `FileDescriptorSet` of the orchestrator's protos.
    pub const DESCRIPTOR_SET: &[u8] = crate::generated_orchestrator::FILE_DESCRIPTOR_SET;
}

#[cfg(feature = "stages")]
pub mod demo;
#[cfg(feature = "stages")]
pub mod merge_service;
#[cfg(feature = "stages")]
pub mod stages;

pub use generated::keyway::{base, runway};
pub use generated::topics;

/// The encoded `google.protobuf.FileDescriptorSet` of `api/`, imports, source info and the
/// `topic_keys` options included: what reflection and non-Rust clients load.
pub const DESCRIPTOR_SET: &[u8] = generated::FILE_DESCRIPTOR_SET;
