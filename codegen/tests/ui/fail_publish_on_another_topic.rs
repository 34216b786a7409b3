use keyway_runtime::transport::MessageId;

#[path = "support.rs"]
mod support;

use support::contract::acme::billing::v1::InvoiceDue;
use support::contract::topics::OrderPlacedProducer;

fn main() {
    let orders = OrderPlacedProducer::new(support::Null);
    // `order-placed` carries OrderPlaced, not InvoiceDue.
    let invoice = InvoiceDue::default();
    let _pending = orders.publish(
        &invoice,
        MessageId::new("o/1").unwrap(),
        "o",
        Default::default(),
    );
}
