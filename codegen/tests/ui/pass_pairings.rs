use keyway_runtime::stub::{Handled, HandlerError, Producer, TopicHandler};
use keyway_runtime::transport::{Delivery, MessageId};

#[path = "support.rs"]
mod support;

use support::contract::acme::billing::v1::InvoiceDue;
use support::contract::acme::orders::v1::OrderPlaced;
use support::contract::topics::{
    self, InvoiceDueConsumer, OrderAuditProducer, OrderPlacedProducer,
};

struct Invoices;

impl TopicHandler<topics::InvoiceDue> for Invoices {
    async fn handle(&self, _: InvoiceDue, _: &Delivery) -> Result<Handled, HandlerError> {
        Ok(Handled::Ack)
    }
}

fn main() {
    // One message on both of its keys.
    let order = OrderPlaced::default();
    let placed = OrderPlacedProducer::new(support::Null);
    let _pending = placed.publish(
        &order,
        MessageId::new("o/1").unwrap(),
        "o",
        Default::default(),
    );
    let audit = OrderAuditProducer::new(support::Null);
    let _pending = audit.publish(
        &order,
        MessageId::new("o/1").unwrap(),
        "o",
        Default::default(),
    );
    let _same = Producer::<topics::OrderPlaced, _>::new(support::Null);
    let _consumer = InvoiceDueConsumer::new(Invoices);
}
