use keyway::runway::messagequeue::MergeResult;
use keyway::topics::RunwayMergeProducer;
use keyway_runtime::transport::MessageId;

#[path = "support.rs"]
mod support;

fn main() {
    let requests = RunwayMergeProducer::new(support::Null);
    let id = MessageId::new("q/batch/1").unwrap();
    // `runway-merge` carries MergeRequest, not MergeResult.
    let result = MergeResult::default();
    let _pending = requests.publish(&result, id, "q", Default::default());
}
