use keyway::runway::messagequeue::{MergeRequest, MergeResult};
use keyway::topics::{MergeSignal, MergeSignalConsumer, RunwayMerge, RunwayMergeProducer};
use keyway_runtime::stub::{Handled, HandlerError, Producer, TopicHandler};
use keyway_runtime::transport::{Delivery, MessageId};

#[path = "support.rs"]
mod support;

struct Signals;

impl TopicHandler<MergeSignal> for Signals {
    async fn handle(&self, _: MergeResult, _: &Delivery) -> Result<Handled, HandlerError> {
        Ok(Handled::Ack)
    }
}

fn main() {
    let requests = RunwayMergeProducer::new(support::Null);
    let id = MessageId::new("q/batch/1").unwrap();
    let request = MergeRequest::default();
    let _pending = requests.publish(&request, id, "q", Default::default());
    let _same = Producer::<RunwayMerge, _>::new(support::Null);
    let _consumer = MergeSignalConsumer::new(Signals);
}
