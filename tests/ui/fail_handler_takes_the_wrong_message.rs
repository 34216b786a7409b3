use keyway::runway::messagequeue::MergeResult;
use keyway::topics::RunwayMerge;
use keyway_runtime::stub::{Handled, HandlerError, TopicHandler};
use keyway_runtime::transport::Delivery;

struct Confused;

// `runway-merge` carries MergeRequest: a handler for it cannot take MergeResult.
impl TopicHandler<RunwayMerge> for Confused {
    async fn handle(&self, _: MergeResult, _: &Delivery) -> Result<Handled, HandlerError> {
        Ok(Handled::Ack)
    }
}

fn main() {}
