//! The table of message types the testee answers for.

use keyway_runtime::json::{self, JsonMessage};
use prost::{Message, Name};

use super::options::JsonOptions;
use super::protocol::conformance::conformance_response::Result as Outcome;
use crate::kitchen_sink::keyway::fixtures::kitchen::{kitchen_sink::Nested, KitchenSink, Nothing};

/// A request's payload.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// The binary wire format.
    Binary(&'a [u8]),
    /// Protobuf JSON.
    Json(&'a str),
}

/// The format a request asks the message to be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// The binary wire format.
    Binary,
    /// Protobuf JSON.
    Json,
}

/// Parses a payload as one message type and writes it in the requested format.
pub type RunFn = fn(Input<'_>, Output, &JsonOptions) -> Outcome;

/// One message type the testee answers for.
#[derive(Debug, Clone)]
pub struct MessageType {
    full_name: String,
    run: RunFn,
    register: Option<fn()>,
}

impl MessageType {
    /// A generated message, under its full name: binary through prost, JSON through
    /// `keyway_runtime::json`. The table registers it for `google.protobuf.Any`.
    pub fn of<M>() -> Self
    where
        M: Message + Name + JsonMessage + Default + 'static,
    {
        MessageType {
            full_name: M::full_name(),
            run: run::<M>,
            register: Some(json::register::<M>),
        }
    }

    /// A message type answered by `run`, for types that are not generated messages.
    pub fn custom(full_name: impl Into<String>, run: RunFn) -> Self {
        MessageType {
            full_name: full_name.into(),
            run,
            register: None,
        }
    }

    /// The full name the runner asks for.
    pub fn full_name(&self) -> &str {
        &self.full_name
    }

    /// Parse `input` and write it as `output`.
    pub fn run(&self, input: Input<'_>, output: Output, options: &JsonOptions) -> Outcome {
        (self.run)(input, output, options)
    }
}

/// The message types a testee answers for, by full name.
#[derive(Debug, Clone)]
pub struct MessageTypes {
    types: Vec<MessageType>,
}

impl MessageTypes {
    /// A table of `types`; the generated ones are registered for `google.protobuf.Any`, so
    /// each can be packed in the others. A later type of the same name replaces an earlier one.
    pub fn new(types: Vec<MessageType>) -> Self {
        let mut table: Vec<MessageType> = Vec::with_capacity(types.len());
        for message_type in types {
            if let Some(register) = message_type.register {
                register();
            }
            table.retain(|t| t.full_name != message_type.full_name);
            table.push(message_type);
        }
        MessageTypes { types: table }
    }

    /// The table of the `keyway-conformance-testee` binary: every message Keyway generates
    /// for the conformance suite. Add a generated message here and the runner's requests for
    /// it are answered.
    pub fn builtin() -> Self {
        MessageTypes::new(vec![
            MessageType::of::<KitchenSink>(),
            MessageType::of::<Nested>(),
            MessageType::of::<Nothing>(),
        ])
    }

    /// The type named `full_name`.
    pub fn get(&self, full_name: &str) -> Option<&MessageType> {
        self.types.iter().find(|t| t.full_name == full_name)
    }

    /// Every full name in the table, in table order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.types.iter().map(|t| t.full_name.as_str())
    }
}

fn run<M>(input: Input<'_>, output: Output, options: &JsonOptions) -> Outcome
where
    M: Message + JsonMessage + Default,
{
    let message = match input {
        Input::Binary(bytes) => match M::decode(bytes) {
            Ok(message) => message,
            Err(e) => return Outcome::ParseError(format!("binary payload: {e}")),
        },
        Input::Json(text) => match options.decode::<M>(text.as_bytes()) {
            Ok(message) => message,
            Err(e) => return Outcome::ParseError(format!("JSON payload: {e}")),
        },
    };
    match output {
        Output::Binary => Outcome::ProtobufPayload(message.encode_to_vec()),
        Output::Json => match options.encode(&message) {
            Ok(json) => Outcome::JsonPayload(json),
            Err(e) => Outcome::SerializeError(e.to_string()),
        },
    }
}
