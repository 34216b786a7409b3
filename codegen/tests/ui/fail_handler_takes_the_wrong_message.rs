use keyway_runtime::stub::{Handled, HandlerError, TopicHandler};
use keyway_runtime::transport::Delivery;

#[path = "support.rs"]
mod support;

use support::contract::acme::billing::v1::InvoiceDue;
use support::contract::topics;

struct Confused;

// `order-audit` carries OrderPlaced: a handler for it cannot take InvoiceDue.
impl TopicHandler<topics::OrderAudit> for Confused {
    async fn handle(&self, _: InvoiceDue, _: &Delivery) -> Result<Handled, HandlerError> {
        Ok(Handled::Ack)
    }
}

fn main() {}
