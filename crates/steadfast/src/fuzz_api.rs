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
