//! Properties of the generated codec, on values from the generated proptest strategies, for
//! every message of the contract and of the kitchen-sink fixture:
//! - canonical: decoding and re-encoding an encoding gives the same bytes;
//! - round trip: `decode(encode(m)) == m` (for values without NaN, which is not equal to itself);
//! - binary and JSON agree: `m` → binary → JSON equals `m` → JSON → binary → JSON. (Both sides
//!   pass through prost's binary once, because prost's binary form is itself lossy in one
//!   place: a map value of `-0.0` is taken for the default and dropped from the entry, so it
//!   decodes as `0.0`. The JSON keeps `-0`. Found by this property; see ARCHITECTURE.md.)
//!
//! Cases per property: 64, or `KEYWAY_PROPTEST_CASES` for a long run.

use keyway_conformance::kitchen_sink::keyway::fixtures::kitchen::{
    kitchen_sink::Nested, KitchenSink, Nothing,
};
use keyway_runtime::json::{self, JsonMessage};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    let cases = std::env::var("KEYWAY_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    ProptestConfig {
        cases,
        max_global_rejects: cases * 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn check<M>(m: &M) -> Result<(), TestCaseError>
where
    M: JsonMessage + prost::Message + PartialEq + Default + std::fmt::Debug,
{
    let encoded = json::to_vec(m).map_err(|e| TestCaseError::fail(format!("encode: {e}")))?;
    let decoded: M = json::from_slice(&encoded).map_err(|e| {
        TestCaseError::fail(format!(
            "decode of {}: {e}",
            String::from_utf8_lossy(&encoded)
        ))
    })?;
    let again = json::to_vec(&decoded).unwrap();
    prop_assert_eq!(
        String::from_utf8_lossy(&again),
        String::from_utf8_lossy(&encoded),
        "not canonical"
    );
    // A value holding NaN is not equal to itself; the byte comparisons above cover it.
    #[allow(clippy::eq_op)]
    let comparable = m == m;
    if comparable {
        prop_assert_eq!(
            &decoded,
            m,
            "round trip through {}",
            String::from_utf8_lossy(&encoded)
        );
    }
    let via_binary = M::decode(m.encode_to_vec().as_slice()).unwrap();
    let via_binary = json::to_vec(&via_binary).unwrap();
    let via_json = M::decode(decoded.encode_to_vec().as_slice()).unwrap();
    let via_json = json::to_vec(&via_json).unwrap();
    prop_assert_eq!(
        String::from_utf8_lossy(&via_binary),
        String::from_utf8_lossy(&via_json),
        "binary and JSON disagree"
    );
    Ok(())
}

macro_rules! properties {
    ($($name:ident: $ty:ty),* $(,)?) => {$(
        proptest! {
            #![proptest_config(config())]
            #[test]
            fn $name(m in any::<$ty>()) {
                check(&m)?;
            }
        }
    )*};
}

properties!(
    merge_request: keyway::runway::messagequeue::MergeRequest,
    merge_result: keyway::runway::messagequeue::MergeResult,
    merge_step: keyway::runway::messagequeue::MergeStep,
    step_result: keyway::runway::messagequeue::StepResult,
    change: keyway::base::change::Change,
    kitchen_sink: KitchenSink,
    nested: Nested,
    nothing: Nothing,
);
