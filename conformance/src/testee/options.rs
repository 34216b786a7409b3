//! The JSON codec options a request asks for: chosen in one place from its test category, and
//! applied in one place.

use keyway_runtime::json::{self, DecodeError, EncodeError, FieldNames, JsonMessage};

use super::protocol::conformance::TestCategory;

/// How a request's JSON is read and written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonOptions {
    /// Write lowerCamelCase `json_name` keys, protobuf's default and what the runner checks,
    /// instead of proto field names.
    pub camel_case_keys: bool,
    /// On read, skip unknown fields and unknown enum names instead of rejecting them.
    pub ignore_unknown_fields: bool,
}

impl JsonOptions {
    /// The options the runner expects for `category`: lowerCamelCase keys always; unknown
    /// fields ignored only in `JSON_IGNORE_UNKNOWN_PARSING_TEST` and rejected otherwise (as
    /// protobuf's libraries do by default).
    pub fn for_category(category: TestCategory) -> Self {
        JsonOptions {
            camel_case_keys: true,
            ignore_unknown_fields: category == TestCategory::JsonIgnoreUnknownParsingTest,
        }
    }

    /// The codec options these stand for: protobuf's defaults
    /// ([`json::JsonOptions::protobuf`]) with the key style and the handling of unknown fields
    /// set from these.
    pub fn codec(&self) -> json::JsonOptions {
        json::JsonOptions::protobuf()
            .with_field_names(if self.camel_case_keys {
                FieldNames::Json
            } else {
                FieldNames::Proto
            })
            .with_ignore_unknown_fields(self.ignore_unknown_fields)
    }

    /// Decode `json` as `M` with these options.
    pub fn decode<M: JsonMessage>(&self, json: &[u8]) -> Result<M, DecodeError> {
        json::from_slice_with(json, &self.codec())
    }

    /// Encode `message` with these options.
    pub fn encode<M: JsonMessage>(&self, message: &M) -> Result<String, EncodeError> {
        json::to_string_with(message, &self.codec())
    }
}
