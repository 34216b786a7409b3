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

pub use generated::keyway::{base, runway};
pub use generated::topics;

/// The encoded `google.protobuf.FileDescriptorSet` of `api/`, imports, source info and the
/// `topic_keys` options included: what reflection and non-Rust clients load.
pub const DESCRIPTOR_SET: &[u8] = generated::FILE_DESCRIPTOR_SET;
