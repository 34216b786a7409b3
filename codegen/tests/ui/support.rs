// Shared by the cases: the generated bindings, and a publisher that accepts everything.
#[allow(dead_code, unreachable_pub)]
pub mod contract {
    include!(concat!(env!("KEYWAY_UI_BINDINGS"), "/_includes.rs"));
}

use keyway_runtime::transport::{OutgoingMessage, PublishReceipt, Publisher, TransportError};

pub struct Null;

impl Publisher for Null {
    async fn publish(&self, _: &str, _: OutgoingMessage) -> Result<PublishReceipt, TransportError> {
        Ok(PublishReceipt::Published)
    }
}
