use keyway_runtime::stub::{Handled, HandlerError, TopicHandler};
use keyway_runtime::transport::Delivery;

#[path = "support.rs"]
mod support;

use support::contract::acme::billing::v1::InvoiceDue;
use support::contract::topics::{self, OrderPlacedConsumer};

struct Invoices;

impl TopicHandler<topics::InvoiceDue> for Invoices {
    async fn handle(&self, _: InvoiceDue, _: &Delivery) -> Result<Handled, HandlerError> {
        Ok(Handled::Ack)
    }
}

fn main() {
    // A handler of `invoice-due` cannot consume `order-placed`.
    let _consumer = OrderPlacedConsumer::new(Invoices);
}
