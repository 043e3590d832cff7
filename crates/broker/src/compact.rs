//! Copies of data that outlive the packet it arrived in.
//!
//! Decoded topics and payloads are slices of a connection's read buffer, which is what
//! makes routing zero-copy. Anything kept for long (a subscription's filter, a retained
//! message, a will) would keep that whole buffer alive for a few bytes of its own, so it
//! is copied into an allocation of its exact size first.

use bytes::Bytes;
use bytestring::ByteString;
use fleetwire_mqtt_codec::{TopicFilter, TopicName, Will};

fn owned(text: &str) -> ByteString {
    ByteString::from(text.to_owned())
}

/// A topic filter in its own allocation.
pub(crate) fn filter(filter: &TopicFilter) -> TopicFilter {
    // Re-validating an already valid filter cannot fail; keep the original if it did.
    TopicFilter::new(owned(filter.as_str())).unwrap_or_else(|_| filter.clone())
}

/// A topic name in its own allocation.
pub(crate) fn topic(topic: &TopicName) -> TopicName {
    TopicName::new(owned(topic.as_str())).unwrap_or_else(|_| topic.clone())
}

/// A payload in its own allocation.
pub(crate) fn payload(payload: &Bytes) -> Bytes {
    Bytes::copy_from_slice(payload)
}

/// A will message that no longer points into the `CONNECT` read buffer.
pub(crate) fn will(will: Will) -> Will {
    Will {
        topic: topic(&will.topic),
        payload: payload(&will.payload),
        properties: will.properties,
        ..will
    }
}
