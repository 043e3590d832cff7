//! How the embedded store writes a [`Change`] as a log record, and reads it back.
//!
//! A record is a kind byte and its fields (varints, length-prefixed strings). Messages
//! are written as MQTT 5 `PUBLISH` packets through the MQTT codec, so that every property
//! survives without a second encoding of them. Times are milliseconds since the Unix
//! epoch plus one (zero: none).

use std::time::{Duration, SystemTime};

use fleetwire_journal::record::{self, Cursor};
use fleetwire_mqtt_codec::{
    Packet, PacketId, ProtocolVersion, Publish, QoS, RetainHandling, SubscriptionOptions,
    TopicFilter, TopicName,
};
use smallvec::SmallVec;

use super::{Change, SavedMessage, Target};

const SESSION: u8 = 1;
const SESSION_ENDED: u8 = 2;
const SUBSCRIBED: u8 = 3;
const UNSUBSCRIBED: u8 = 4;
const QUEUED: u8 = 5;
const SENT: u8 = 6;
const RELEASED: u8 = 7;
const REMOVED: u8 = 8;
const RECEIVED: u8 = 9;
const COMPLETED: u8 = 10;
const RETAINED: u8 = 11;
const RETAINED_CLEARED: u8 = 12;
const WILL_DELAYED: u8 = 13;
const WILL_SETTLED: u8 = 14;

/// Appends `change` to `out` as one framed record.
pub(crate) fn encode(change: &Change<'_>, out: &mut Vec<u8>) {
    let start = record::begin_frame(out);
    match *change {
        Change::Session {
            client_id,
            owner,
            expiry_interval,
            is_v5,
            disconnected_at,
        } => {
            out.push(SESSION);
            record::put_str(out, client_id);
            match owner {
                Some(owner) => {
                    out.push(1);
                    record::put_str(out, owner);
                }
                None => out.push(0),
            }
            record::put_varint(out, u64::from(expiry_interval));
            out.push(u8::from(is_v5));
            put_time(out, disconnected_at);
        }
        Change::SessionEnded { client_id } => {
            out.push(SESSION_ENDED);
            record::put_str(out, client_id);
        }
        Change::Subscribed {
            client_id,
            filter,
            options,
            subscription_id,
        } => {
            out.push(SUBSCRIBED);
            record::put_str(out, client_id);
            record::put_str(out, filter.as_str());
            out.push(options_byte(options));
            record::put_varint(out, subscription_id.map_or(0, |id| u64::from(id) + 1));
        }
        Change::Unsubscribed { client_id, filter } => {
            out.push(UNSUBSCRIBED);
            record::put_str(out, client_id);
            record::put_str(out, filter.as_str());
        }
        Change::Queued {
            id,
            message,
            targets,
        } => {
            out.push(QUEUED);
            record::put_varint(out, id);
            put_message(out, &message);
            record::put_varint(out, targets.len() as u64);
            for target in targets {
                record::put_str(out, target.client_id);
                out.push(target.qos as u8 | (u8::from(target.is_retained) << 2));
                record::put_varint(out, target.subscription_ids.len() as u64);
                for &subscription_id in target.subscription_ids {
                    record::put_varint(out, u64::from(subscription_id));
                }
            }
        }
        Change::Sent {
            client_id,
            id,
            packet_id,
        } => {
            out.push(SENT);
            record::put_str(out, client_id);
            record::put_varint(out, id);
            record::put_varint(out, u64::from(packet_id.get()));
        }
        Change::Released { client_id, id } => {
            out.push(RELEASED);
            record::put_str(out, client_id);
            record::put_varint(out, id);
        }
        Change::Removed { client_id, ids } => {
            out.push(REMOVED);
            record::put_str(out, client_id);
            record::put_varint(out, ids.len() as u64);
            for &id in ids {
                record::put_varint(out, id);
            }
        }
        Change::Received {
            client_id,
            packet_id,
        } => {
            out.push(RECEIVED);
            record::put_str(out, client_id);
            record::put_varint(out, u64::from(packet_id.get()));
        }
        Change::Completed {
            client_id,
            packet_id,
        } => {
            out.push(COMPLETED);
            record::put_str(out, client_id);
            record::put_varint(out, u64::from(packet_id.get()));
        }
        Change::Retained { message } => {
            out.push(RETAINED);
            put_message(out, &message);
        }
        Change::RetainedCleared { topic } => {
            out.push(RETAINED_CLEARED);
            record::put_str(out, topic.as_str());
        }
        Change::WillDelayed {
            client_id,
            will,
            due_at,
        } => {
            out.push(WILL_DELAYED);
            record::put_str(out, client_id);
            put_time(out, Some(due_at));
            put_message(out, &will);
        }
        Change::WillSettled { client_id } => {
            out.push(WILL_SETTLED);
            record::put_str(out, client_id);
        }
    }
    record::finish_frame(out, start);
}

/// Decodes the record `payload` and hands its change to `apply`.
pub(crate) fn decode(
    payload: &[u8],
    apply: &mut dyn FnMut(Change<'_>) -> Result<(), String>,
) -> Result<(), String> {
    let truncated = || "record ends in the middle of a field".to_owned();
    let mut cursor = Cursor::new(payload);
    let kind = cursor.u8().ok_or_else(truncated)?;
    match kind {
        SESSION => {
            let client_id = cursor.str().ok_or_else(truncated)?;
            let owner = match cursor.u8().ok_or_else(truncated)? {
                0 => None,
                _ => Some(cursor.str().ok_or_else(truncated)?),
            };
            let expiry_interval = cursor.varint_u32().ok_or_else(truncated)?;
            let is_v5 = cursor.u8().ok_or_else(truncated)? != 0;
            let disconnected_at = time(&mut cursor).ok_or_else(truncated)?;
            end(&cursor)?;
            apply(Change::Session {
                client_id,
                owner,
                expiry_interval,
                is_v5,
                disconnected_at,
            })
        }
        SESSION_ENDED => {
            let client_id = cursor.str().ok_or_else(truncated)?;
            end(&cursor)?;
            apply(Change::SessionEnded { client_id })
        }
        SUBSCRIBED => {
            let client_id = cursor.str().ok_or_else(truncated)?;
            let filter = filter(cursor.str().ok_or_else(truncated)?)?;
            let options = options(cursor.u8().ok_or_else(truncated)?)?;
            let subscription_id = match cursor.varint_u32().ok_or_else(truncated)? {
                0 => None,
                id => Some(id - 1),
            };
            end(&cursor)?;
            apply(Change::Subscribed {
                client_id,
                filter: &filter,
                options,
                subscription_id,
            })
        }
        UNSUBSCRIBED => {
            let client_id = cursor.str().ok_or_else(truncated)?;
            let filter = filter(cursor.str().ok_or_else(truncated)?)?;
            end(&cursor)?;
            apply(Change::Unsubscribed {
                client_id,
                filter: &filter,
            })
        }
        QUEUED => {
            let id = cursor.varint().ok_or_else(truncated)?;
            let (publish, expires_at) = message(&mut cursor)?;
            let count = cursor.varint().ok_or_else(truncated)?;
            let mut ids: Vec<SmallVec<[u32; 1]>> = Vec::new();
            let mut fields: Vec<(&str, QoS, bool)> = Vec::new();
            for _ in 0..count {
                let client_id = cursor.str().ok_or_else(truncated)?;
                let flags = cursor.u8().ok_or_else(truncated)?;
                let qos = QoS::from_u8(flags & 3).ok_or("bad QoS in a queued target")?;
                let subscriptions = cursor.varint().ok_or_else(truncated)?;
                let mut list = SmallVec::new();
                for _ in 0..subscriptions {
                    list.push(cursor.varint_u32().ok_or_else(truncated)?);
                }
                fields.push((client_id, qos, flags & 4 != 0));
                ids.push(list);
            }
            end(&cursor)?;
            let targets: Vec<Target<'_>> = fields
                .iter()
                .zip(&ids)
                .map(|(&(client_id, qos, is_retained), list)| Target {
                    client_id,
                    qos,
                    is_retained,
                    subscription_ids: list,
                })
                .collect();
            apply(Change::Queued {
                id,
                message: saved(&publish, expires_at),
                targets: &targets,
            })
        }
        SENT => {
            let client_id = cursor.str().ok_or_else(truncated)?;
            let id = cursor.varint().ok_or_else(truncated)?;
            let packet_id = packet_id(&mut cursor)?;
            end(&cursor)?;
            apply(Change::Sent {
                client_id,
                id,
                packet_id,
            })
        }
        RELEASED => {
            let client_id = cursor.str().ok_or_else(truncated)?;
            let id = cursor.varint().ok_or_else(truncated)?;
            end(&cursor)?;
            apply(Change::Released { client_id, id })
        }
        REMOVED => {
            let client_id = cursor.str().ok_or_else(truncated)?;
            let count = cursor.varint().ok_or_else(truncated)?;
            let mut ids = SmallVec::<[u64; 8]>::new();
            for _ in 0..count {
                ids.push(cursor.varint().ok_or_else(truncated)?);
            }
            end(&cursor)?;
            apply(Change::Removed {
                client_id,
                ids: &ids,
            })
        }
        RECEIVED | COMPLETED => {
            let client_id = cursor.str().ok_or_else(truncated)?;
            let packet_id = packet_id(&mut cursor)?;
            end(&cursor)?;
            apply(if kind == RECEIVED {
                Change::Received {
                    client_id,
                    packet_id,
                }
            } else {
                Change::Completed {
                    client_id,
                    packet_id,
                }
            })
        }
        RETAINED => {
            let (publish, expires_at) = message(&mut cursor)?;
            end(&cursor)?;
            apply(Change::Retained {
                message: saved(&publish, expires_at),
            })
        }
        RETAINED_CLEARED => {
            let text = cursor.str().ok_or_else(truncated)?;
            let topic = TopicName::new(text.to_owned())
                .map_err(|error| format!("bad retained topic {text:?}: {error}"))?;
            end(&cursor)?;
            apply(Change::RetainedCleared { topic: &topic })
        }
        WILL_DELAYED => {
            let client_id = cursor.str().ok_or_else(truncated)?;
            let due_at = time(&mut cursor)
                .flatten()
                .ok_or("a delayed will without its due time")?;
            let (publish, expires_at) = message(&mut cursor)?;
            end(&cursor)?;
            apply(Change::WillDelayed {
                client_id,
                will: saved(&publish, expires_at),
                due_at,
            })
        }
        WILL_SETTLED => {
            let client_id = cursor.str().ok_or_else(truncated)?;
            end(&cursor)?;
            apply(Change::WillSettled { client_id })
        }
        other => Err(format!("unknown record kind {other}")),
    }
}

fn end(cursor: &Cursor<'_>) -> Result<(), String> {
    if cursor.is_empty() {
        Ok(())
    } else {
        Err("record has bytes after its last field".to_owned())
    }
}

fn put_time(out: &mut Vec<u8>, time: Option<SystemTime>) {
    let millis = time.map_or(0, |time| {
        time.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_millis()).unwrap_or(u64::MAX - 1)
            })
            + 1
    });
    record::put_varint(out, millis);
}

/// `None` when the field is missing; `Some(None)` for "no time".
fn time(cursor: &mut Cursor<'_>) -> Option<Option<SystemTime>> {
    let millis = cursor.varint()?;
    Some(
        millis
            .checked_sub(1)
            .and_then(|millis| SystemTime::UNIX_EPOCH.checked_add(Duration::from_millis(millis))),
    )
}

fn put_message(out: &mut Vec<u8>, message: &SavedMessage<'_>) {
    put_time(out, message.expires_at);
    let publish = Packet::Publish(Publish::detached(
        message.topic.clone(),
        message.payload.clone(),
        message.qos,
        message.is_retained,
        message.properties.clone(),
    ));
    let encoded =
        fleetwire_mqtt_codec::encoded_len(&publish, ProtocolVersion::V5).and_then(|length| {
            record::put_varint(out, length as u64);
            fleetwire_mqtt_codec::encode_to_vec(&publish, ProtocolVersion::V5, out)
        });
    // Cannot happen for a message the broker accepted (and nothing is written then); an
    // empty field fails loudly at replay instead of silently.
    if let Err(error) = encoded {
        tracing::error!(%error, "cannot encode a message for the broker's log");
        record::put_bytes(out, &[]);
    }
}

fn message(cursor: &mut Cursor<'_>) -> Result<(Publish, Option<SystemTime>), String> {
    let truncated = || "record ends in the middle of a message".to_owned();
    let expires_at = time(cursor).ok_or_else(truncated)?;
    let bytes = cursor.bytes().ok_or_else(truncated)?;
    let publish =
        Publish::decode_detached(bytes).map_err(|detail| format!("a saved message: {detail}"))?;
    Ok((publish, expires_at))
}

fn saved(publish: &Publish, expires_at: Option<SystemTime>) -> SavedMessage<'_> {
    SavedMessage {
        topic: &publish.topic,
        payload: &publish.payload,
        qos: publish.qos,
        is_retained: publish.retain,
        properties: &publish.properties,
        expires_at,
    }
}

fn packet_id(cursor: &mut Cursor<'_>) -> Result<PacketId, String> {
    cursor
        .varint()
        .and_then(|id| u16::try_from(id).ok())
        .and_then(PacketId::new)
        .ok_or_else(|| "bad packet id".to_owned())
}

fn filter(text: &str) -> Result<TopicFilter, String> {
    TopicFilter::new(text.to_owned()).map_err(|error| format!("bad filter {text:?}: {error}"))
}

fn options_byte(options: SubscriptionOptions) -> u8 {
    options.qos as u8
        | (u8::from(options.no_local) << 2)
        | (u8::from(options.retain_as_published) << 3)
        | ((options.retain_handling as u8) << 4)
}

fn options(byte: u8) -> Result<SubscriptionOptions, String> {
    Ok(SubscriptionOptions {
        qos: QoS::from_u8(byte & 3).ok_or("bad QoS in subscription options")?,
        no_local: byte & 4 != 0,
        retain_as_published: byte & 8 != 0,
        retain_handling: match (byte >> 4) & 3 {
            0 => RetainHandling::OnSubscribe,
            1 => RetainHandling::OnNewSubscription,
            2 => RetainHandling::Never,
            _ => return Err("bad retain handling in subscription options".to_owned()),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use fleetwire_mqtt_codec::Properties;

    fn round_trip(change: Change<'_>) -> String {
        let mut out = Vec::new();
        encode(&change, &mut out);
        let record::Next::Record(payload, end) = record::next(&out, 0) else {
            panic!("one record")
        };
        assert_eq!(end, out.len());
        let mut seen = String::new();
        decode(payload, &mut |decoded| {
            seen = format!("{decoded:?}");
            Ok(())
        })
        .expect("decodes");
        seen
    }

    #[test]
    fn every_change_reads_back_as_written() {
        let topic = TopicName::new("a/b").unwrap();
        let filter = TopicFilter::new("$share/g/a/+").unwrap();
        let payload = Bytes::from_static(b"hello");
        let properties = Properties {
            content_type: Some("text/plain".into()),
            correlation_data: Some(Bytes::from_static(b"\x01\x02")),
            user_properties: vec![("k".into(), "v".into())],
            ..Properties::default()
        };
        let expires_at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_800_000_000_123);
        let message = SavedMessage {
            topic: &topic,
            payload: &payload,
            qos: QoS::ExactlyOnce,
            is_retained: true,
            properties: &properties,
            expires_at: Some(expires_at),
        };
        let targets = [
            Target {
                client_id: "c1",
                qos: QoS::AtLeastOnce,
                is_retained: false,
                subscription_ids: &[],
            },
            Target {
                client_id: "c2",
                qos: QoS::ExactlyOnce,
                is_retained: true,
                subscription_ids: &[7, 300],
            },
        ];
        let packet_id = PacketId::new(65535).unwrap();
        let changes = [
            Change::Session {
                client_id: "c1",
                owner: Some("user"),
                expiry_interval: u32::MAX,
                is_v5: true,
                disconnected_at: Some(expires_at),
            },
            Change::Session {
                client_id: "c1",
                owner: None,
                expiry_interval: 0,
                is_v5: false,
                disconnected_at: None,
            },
            Change::SessionEnded { client_id: "c1" },
            Change::Subscribed {
                client_id: "c1",
                filter: &filter,
                options: SubscriptionOptions {
                    qos: QoS::ExactlyOnce,
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: RetainHandling::Never,
                },
                subscription_id: Some(0),
            },
            Change::Unsubscribed {
                client_id: "c1",
                filter: &filter,
            },
            Change::Queued {
                id: u64::MAX,
                message,
                targets: &targets,
            },
            Change::Sent {
                client_id: "c2",
                id: 3,
                packet_id,
            },
            Change::Released {
                client_id: "c2",
                id: 3,
            },
            Change::Removed {
                client_id: "c2",
                ids: &[3, u64::MAX, 0],
            },
            Change::Received {
                client_id: "c2",
                packet_id,
            },
            Change::Completed {
                client_id: "c2",
                packet_id,
            },
            Change::Retained { message },
            Change::RetainedCleared { topic: &topic },
            Change::WillDelayed {
                client_id: "c3",
                will: message,
                due_at: expires_at,
            },
            Change::WillSettled { client_id: "c3" },
        ];
        for change in changes {
            assert_eq!(round_trip(change), format!("{change:?}"));
        }
    }

    #[test]
    fn damaged_records_are_errors_not_panics() {
        let mut out = Vec::new();
        let topic = TopicName::new("t").unwrap();
        encode(&Change::RetainedCleared { topic: &topic }, &mut out);
        let payload = &out[record::HEADER_LEN..];
        for cut in 0..payload.len() {
            assert!(decode(&payload[..cut], &mut |_| Ok(())).is_err());
        }
        assert!(decode(&[99], &mut |_| Ok(())).is_err());
    }
}
