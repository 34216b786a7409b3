//! The [`Merger`] trait Runway's responder lands requests through, its verdicts, and
//! [`FakeMerger`], a deterministic merger for tests.

use std::future::Future;

use crate::runway::messagequeue::MergeRequest;

/// What a merge attempt concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every step applied; on a commit, the revisions each step landed as, per step.
    Succeeded {
        /// One list per step, in request order.
        outputs: Vec<Vec<String>>,
    },
    /// A step did not apply.
    Failed {
        /// Why, for the whole batch.
        reason: String,
        /// The failing step's index and its own reason.
        step: Option<(usize, String)>,
    },
}

/// The merge machinery could not run (not a verdict on the change): retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergerError(pub String);

impl std::fmt::Display for MergerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Applies a batch of changes: as a dry run (`commit == false`) or for real.
pub trait Merger: Send + Sync {
    /// Merge `request`'s steps in order.
    fn merge(
        &self,
        request: &MergeRequest,
        commit: bool,
    ) -> impl Future<Output = Result<Verdict, MergerError>> + Send;
}

/// Marker in a change URI that makes [`FakeMerger`] report a conflict on that step.
pub const FAKE_CONFLICT: &str = "keyway-fake=merge-conflict";
/// Marker in a change URI that makes [`FakeMerger`] fail as broken infrastructure would.
pub const FAKE_ERROR: &str = "keyway-fake=merge-error";

/// A deterministic merger for demos and tests, driven by markers in the change URIs:
/// [`FAKE_CONFLICT`] → FAILED with a reason; [`FAKE_ERROR`] → an infrastructure error;
/// otherwise SUCCEEDED with one 40-hex revision per step on a commit and none on a dry run.
#[derive(Debug, Clone, Copy, Default)]
pub struct FakeMerger;

/// A stable 40-hex "revision" for a step (FNV-1a over its URIs, widened).
pub fn fake_revision(step_id: &str, uris: &[String]) -> String {
    let mut out = String::with_capacity(40);
    let mut seed: u64 = 0xcbf2_9ce4_8422_2325;
    for round in 0u8..3 {
        let mut h = seed ^ u64::from(round);
        for b in step_id.bytes().chain(uris.iter().flat_map(|u| u.bytes())) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        out.push_str(&format!("{h:016x}"));
        seed = h;
    }
    out.truncate(40);
    out
}

impl Merger for FakeMerger {
    async fn merge(&self, request: &MergeRequest, commit: bool) -> Result<Verdict, MergerError> {
        if request.steps.is_empty() {
            return Ok(Verdict::Failed {
                reason: "invalid request: no steps".into(),
                step: None,
            });
        }
        let mut outputs = Vec::new();
        for (i, step) in request.steps.iter().enumerate() {
            let uris = step
                .change
                .as_ref()
                .map(|c| c.uris.as_slice())
                .unwrap_or_default();
            if uris.is_empty() {
                return Ok(Verdict::Failed {
                    reason: format!("invalid request: step {} has no change", step.step_id),
                    step: Some((i, "no change".into())),
                });
            }
            if uris.iter().any(|u| u.contains(FAKE_ERROR)) {
                return Err(MergerError(format!(
                    "merge backend unavailable while applying step {}",
                    step.step_id
                )));
            }
            if uris.iter().any(|u| u.contains(FAKE_CONFLICT)) {
                return Ok(Verdict::Failed {
                    reason: format!("merge conflict in step {}", step.step_id),
                    step: Some((i, "merge conflict".into())),
                });
            }
            outputs.push(if commit {
                vec![fake_revision(&step.step_id, uris)]
            } else {
                Vec::new()
            });
        }
        Ok(Verdict::Succeeded { outputs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::change::Change;
    use crate::merge_service::answer;
    use crate::runway::messagequeue::MergeStep;
    use crate::runway::messagequeue::Outcome;

    fn request(uris: &[&[&str]]) -> MergeRequest {
        MergeRequest {
            id: "q/batch/1".into(),
            queue_name: "q".into(),
            steps: uris
                .iter()
                .enumerate()
                .map(|(i, u)| MergeStep {
                    step_id: format!("q/{i}"),
                    change: Some(Change {
                        uris: u.iter().map(|s| s.to_string()).collect(),
                    }),
                    strategy: 0,
                })
                .collect(),
        }
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn the_fake_merger_follows_its_markers() {
        let ok = block_on(FakeMerger.merge(
            &request(&[&["git://h/r/main/a"], &["git://h/r/main/b"]]),
            true,
        ))
        .unwrap();
        let Verdict::Succeeded { outputs } = &ok else {
            panic!("{ok:?}")
        };
        assert_eq!(outputs.len(), 2);
        assert!(outputs.iter().all(|o| o.len() == 1
            && o[0].len() == 40
            && o[0].bytes().all(|b| b.is_ascii_hexdigit())));
        assert_ne!(outputs[0], outputs[1]);
        let dry = block_on(FakeMerger.merge(&request(&[&["git://h/r/main/a"]]), false)).unwrap();
        assert_eq!(
            dry,
            Verdict::Succeeded {
                outputs: vec![vec![]]
            }
        );
        let conflict = block_on(
            FakeMerger.merge(&request(&[&["a"], &["b?keyway-fake=merge-conflict"]]), true),
        )
        .unwrap();
        assert_eq!(
            conflict,
            Verdict::Failed {
                reason: "merge conflict in step q/1".into(),
                step: Some((1, "merge conflict".into()))
            }
        );
        assert!(
            block_on(FakeMerger.merge(&request(&[&["x?keyway-fake=merge-error"]]), true)).is_err()
        );
        let result = answer(&request(&[&["a"], &["b"]]), &conflict);
        assert_eq!(result.outcome(), Outcome::Failed);
        assert_eq!(result.steps[1].reason, "merge conflict");
        assert_eq!(result.queue_name, "q");
    }
}
