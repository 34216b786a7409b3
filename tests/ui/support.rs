// Shared by the UI cases: a publisher that accepts everything.
use keyway_runtime::transport::{OutgoingMessage, PublishReceipt, Publisher, TransportError};

pub struct Null;

impl Publisher for Null {
    async fn publish(&self, _: &str, _: OutgoingMessage) -> Result<PublishReceipt, TransportError> {
        Ok(PublishReceipt::Published)
    }
}
