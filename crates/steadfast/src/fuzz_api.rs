//! Parsers of outside input that have no public entry of their own, for the fuzz targets
//! (`fuzz/`). Not part of the API: hidden from the docs, may change in any release.

use redis::PushInfo;

use crate::pubsub::frames::{self, Frame};

/// What a subscriber link makes of one push frame: a published message (its channel, pattern
/// and payload), an ended subscription (its channel), or `None` for anything else.
pub enum PubSubFrame {
    /// A published message.
    Message {
        /// The channel it was published on.
        channel: String,
        /// The pattern that matched it, for a pattern subscription.
        pattern: Option<String>,
        /// Its payload.
        payload: Vec<u8>,
    },
    /// The server ended a subscription.
    Unsubscribed {
        /// Its channel or pattern.
        channel: String,
    },
}

/// Reads `frame` as a subscriber link does.
pub fn pubsub_frame(frame: &PushInfo) -> Option<PubSubFrame> {
    match frames::read(frame) {
        Frame::Message(message) => Some(PubSubFrame::Message {
            channel: message.channel,
            pattern: message.pattern,
            payload: message.payload,
        }),
        Frame::Unsubscribed { channel, .. } => Some(PubSubFrame::Unsubscribed { channel }),
        Frame::Other => None,
    }
}

/// The length of the first complete RESP2 / RESP3 frame in `buf` as the library's own
/// connection finds it (`None` while more bytes are needed), or what makes the bytes not RESP.
/// Also the lab's push proxy and the proxy's overhead bench cut their streams with it.
pub fn resp_frame_length(buf: &[u8]) -> Result<Option<usize>, String> {
    crate::connect::wire::frame_length(buf).map_err(|e| e.to_string())
}

/// The values the library's own connection makes of whole reply frames (`bytes`, one frame
/// after another), or why it could not.
pub fn decode_replies(bytes: &[u8]) -> Result<Vec<redis::Value>, String> {
    crate::connect::wire::values(bytes).map_err(|e| e.to_string())
}
