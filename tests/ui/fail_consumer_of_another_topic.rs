use keyway::runway::messagequeue::MergeResult;
use keyway::topics::{MergeSignal, RunwayMergeConsumer};
use keyway_runtime::stub::{Handled, HandlerError, TopicHandler};
use keyway_runtime::transport::Delivery;

struct Signals;

impl TopicHandler<MergeSignal> for Signals {
    async fn handle(&self, _: MergeResult, _: &Delivery) -> Result<Handled, HandlerError> {
        Ok(Handled::Ack)
    }
}

fn main() {
    // A handler of `merge-signal` cannot consume `runway-merge`.
    let _consumer = RunwayMergeConsumer::new(Signals);
}
