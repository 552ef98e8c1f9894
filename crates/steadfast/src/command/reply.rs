//! What a request is answered with.

use redis::Value;

use crate::connect::wire;

/// The reply to a request: one value, or one per command of a pipeline; or, for a request
/// sent as the caller encoded it, the server's frames, none an error (`forward`).
#[derive(Debug)]
pub(crate) enum Reply {
    Single(Value),
    Pipeline(Vec<Value>),
    Frames(Vec<u8>),
}

impl Reply {
    /// A single command's value (a pipeline's values as an array).
    pub(crate) fn into_value(self) -> Value {
        match self {
            Self::Single(value) => value,
            Self::Pipeline(values) => Value::Array(values),
            Self::Frames(_) => {
                let mut values = self.into_values();
                match values.len() {
                    1 => values.pop().unwrap_or(Value::Nil),
                    _ => Value::Array(values),
                }
            }
        }
    }

    /// The values, one per command.
    pub(crate) fn into_values(self) -> Vec<Value> {
        match self {
            Self::Single(value) => vec![value],
            Self::Pipeline(values) => values,
            // Frames the wire has read whole: they decode.
            Self::Frames(frames) => wire::values(&frames).unwrap_or_default(),
        }
    }
}
