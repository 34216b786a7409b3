//! Handing Keyway work to land: a batch of requests, each a stack of change URIs with a
//! strategy, checked up front, written as records and published on `submitqueue-merge`.

use keyway_runtime::redis::RedisBackend;
use keyway_runtime::stub::Producer;
use keyway_runtime::transport::{MessageId, Metadata};

use super::store::{Store, StoreError};
use crate::merge_service::uri::ChangeUri;
use crate::orchestrator::topics as otopics;
use crate::orchestrator::{Batch, BatchRef, BatchState, LandStrategy, Request, RequestState};

/// One request of a batch: the change URIs (an ordered stack) and how to land them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRequest {
    /// Change URIs, bottom of the stack first (see [`crate::merge_service::uri`]).
    pub uris: Vec<String>,
    /// How to land them; `Unset` means the queue's default.
    pub strategy: LandStrategy,
}

/// Why a submission was not accepted.
#[derive(Debug)]
pub enum SubmitError {
    /// The submission itself is wrong; nothing was written.
    Invalid(String),
    /// Redis failed.
    Store(StoreError),
    /// The records of this batch are written but the hand-over to the merge stage failed
    /// (the text says why): handing the same batch over again with [`hand_over`] is safe.
    Publish(Box<Batch>, String),
}

impl std::fmt::Display for SubmitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SubmitError::Invalid(why) => f.write_str(why),
            SubmitError::Store(e) => write!(f, "{e}"),
            SubmitError::Publish(_, e) => f.write_str(e),
        }
    }
}

impl std::error::Error for SubmitError {}

impl From<StoreError> for SubmitError {
    fn from(e: StoreError) -> Self {
        SubmitError::Store(e)
    }
}

/// The strategy named `name` on the command line or in a batch file.
pub fn strategy(name: &str) -> Option<LandStrategy> {
    Some(match name {
        "default" => LandStrategy::Unset,
        "rebase" => LandStrategy::Rebase,
        "squash-rebase" => LandStrategy::SquashRebase,
        "merge" => LandStrategy::Merge,
        "promote" => LandStrategy::Promote,
        _ => return None,
    })
}

/// Check a submission without touching Redis: a queue name, at least one request, every URI
/// well formed, one provider per batch, PROMOTE alone.
pub fn check(queue: &str, requests: &[NewRequest]) -> Result<(), SubmitError> {
    let invalid = |why: String| Err(SubmitError::Invalid(why));
    if queue.is_empty()
        || queue.len() > 100
        || !queue
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return invalid(format!(
            "queue {queue:?}: expected 1 to 100 letters, digits, `-`, `_` or `.`"
        ));
    }
    if requests.is_empty() {
        return invalid("a batch needs at least one request".into());
    }
    let mut provider: Option<String> = None;
    for (i, r) in requests.iter().enumerate() {
        let n = i + 1;
        if r.uris.is_empty() {
            return invalid(format!("request {n}: no change URIs"));
        }
        if r.strategy == LandStrategy::Promote && (requests.len() != 1 || r.uris.len() != 1) {
            return invalid(format!(
                "request {n}: promote needs a batch of exactly one request with one URI"
            ));
        }
        for (j, uri) in r.uris.iter().enumerate() {
            let parsed = ChangeUri::parse(uri).map_err(|e| {
                SubmitError::Invalid(format!("request {n}, URI {}: {uri}: {e}", j + 1))
            })?;
            match &provider {
                Some(p) if p != parsed.provider() => {
                    return invalid(format!(
                        "request {n}, URI {}: {uri} is on {}, the batch's other changes on {p}",
                        j + 1,
                        parsed.provider()
                    ))
                }
                Some(_) => {}
                None => provider = Some(parsed.provider().to_owned()),
            }
        }
    }
    Ok(())
}

/// Submit a batch of `requests` to `queue`: check it, write the requests and the batch (ready
/// to merge), and hand it to the merge stage. Returns the batch as written.
pub async fn submit(
    backend: &RedisBackend,
    store: &Store,
    queue: &str,
    requests: &[NewRequest],
) -> Result<Batch, SubmitError> {
    check(queue, requests)?;
    let count = u64::try_from(requests.len()).unwrap_or(u64::MAX);
    let (first, n) = tokio::try_join!(
        store.next_numbers(queue, "request", count),
        store.next_numbers(queue, "batch", 1)
    )?;
    let mut records: Vec<Request> = (first..)
        .zip(requests)
        .map(|(n, r)| Request {
            id: format!("{queue}/{n}"),
            queue: queue.to_owned(),
            uris: r.uris.clone(),
            strategy: r.strategy as i32,
            state: RequestState::Queued as i32,
            ..Request::default()
        })
        .collect();
    let mut batch = Batch {
        id: format!("{queue}/batch/{n}"),
        queue: queue.to_owned(),
        contains: records.iter().map(|r| r.id.clone()).collect(),
        state: BatchState::Merging as i32,
        ..Batch::default()
    };
    store.create(&mut batch, &mut records).await?;
    hand_over(backend, &batch).await?;
    Ok(batch)
}

/// Publish `batch` on `submitqueue-merge` (partition key = its queue, so a queue's batches
/// merge in order; the message id is the intent, so a repeat is dropped).
pub async fn hand_over(backend: &RedisBackend, batch: &Batch) -> Result<(), SubmitError> {
    let producer = Producer::<otopics::SubmitqueueMerge, _>::new(backend.clone());
    let r = BatchRef {
        id: batch.id.clone(),
        queue: batch.queue.clone(),
        contains: batch.contains.clone(),
    };
    let id = MessageId::intent(&batch.id, &["merge"])
        .map_err(|e| SubmitError::Invalid(format!("batch id {}: {e}", batch.id)))?;
    producer
        .publish(&r, id, &batch.queue, Metadata::new())
        .await
        .map_err(|e| {
            SubmitError::Publish(
                Box::new(batch.clone()),
                format!(
                    "{} is recorded but was not handed to the merge stage ({e}): \
                     `keyway submit --resume {}` hands it over",
                    batch.id, batch.id
                ),
            )
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    fn req(uris: &[&str], strategy: LandStrategy) -> NewRequest {
        NewRequest {
            uris: uris.iter().map(|u| u.to_string()).collect(),
            strategy,
        }
    }

    #[test]
    fn submissions_are_checked_up_front() {
        let good = format!("file:///srv/pay.git/refs%2Fheads%2Fx/{SHA}");
        let other = format!("git://git.example.com/pay/refs%2Fheads%2Fx/{SHA}");
        assert!(check("payments", &[req(&[&good, &good], LandStrategy::Rebase)]).is_ok());
        for (queue, requests, says) in [
            (
                "",
                vec![req(&[&good], LandStrategy::Rebase)],
                "queue \"\": expected",
            ),
            (
                "a/b",
                vec![req(&[&good], LandStrategy::Rebase)],
                "queue \"a/b\"",
            ),
            ("q", vec![], "at least one request"),
            (
                "q",
                vec![req(&[], LandStrategy::Rebase)],
                "request 1: no change URIs",
            ),
            (
                "q",
                vec![
                    req(&[&good], LandStrategy::Rebase),
                    req(&[&good, "nope"], LandStrategy::Merge),
                ],
                "request 2, URI 2: nope: not a URI",
            ),
            (
                "q",
                vec![
                    req(&[&good], LandStrategy::Rebase),
                    req(&[&other], LandStrategy::Rebase),
                ],
                "request 2, URI 1: git://git.example.com/pay/",
            ),
            (
                "q",
                vec![req(&[&good, &good], LandStrategy::Promote)],
                "request 1: promote needs a batch of exactly one request with one URI",
            ),
        ] {
            let e = check(queue, &requests).unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        }
    }

    #[test]
    fn strategies_by_name() {
        assert_eq!(strategy("squash-rebase"), Some(LandStrategy::SquashRebase));
        assert_eq!(strategy("default"), Some(LandStrategy::Unset));
        assert_eq!(strategy("fast"), None);
    }
}
