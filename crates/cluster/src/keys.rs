//! The cluster's JetStream key-value buckets, and their keys for MQTT text (topics,
//! client ids): a key may hold only `-/_=.` and ASCII letters and digits, so other bytes
//! (and `=`, and `.`, which separates subject tokens) are written `=XX` (hex),
//! reversibly.

use std::time::Duration;

use async_nats::jetstream::{self, kv};

use crate::ClusterError;

/// How long a bucket with markers keeps the marker of a purged key.
pub(crate) const MARKER_TTL: Duration = Duration::from_secs(5);

/// Opens the bucket `name`, or creates it (one value per key, on disk, `replicas`).
/// With `markers` (NATS 2.11 or later), a purged key's marker goes after
/// [`MARKER_TTL`], so that the bucket holds only live keys: a bucket made without them
/// gets them, and on an older NATS the bucket is made without (and said so).
pub(crate) async fn bucket(
    jetstream: &jetstream::Context,
    name: &str,
    description: &str,
    replicas: usize,
    markers: bool,
    what: &'static str,
) -> Result<kv::Store, ClusterError> {
    if let Ok(store) = jetstream.get_key_value(name).await {
        if !markers || store.stream.cached_info().config.allow_message_ttl {
            return Ok(store);
        }
        let config = jetstream::stream::Config {
            allow_message_ttl: true,
            subject_delete_marker_ttl: Some(MARKER_TTL),
            ..store.stream.cached_info().config.clone()
        };
        return match jetstream.update_stream(config).await {
            Ok(_) => {
                tracing::info!(bucket = name, "purged keys' markers now expire");
                jetstream
                    .get_key_value(name)
                    .await
                    .map_err(|error| ClusterError::JetStream {
                        what,
                        detail: error.to_string(),
                    })
            }
            Err(error) => {
                tracing::warn!(bucket = name, %error, "purged keys leave a marker for good");
                Ok(store)
            }
        };
    }
    let config = kv::Config {
        bucket: name.to_owned(),
        description: description.to_owned(),
        history: 1,
        num_replicas: replicas,
        storage: jetstream::stream::StorageType::File,
        limit_markers: markers.then_some(MARKER_TTL),
        ..kv::Config::default()
    };
    let created = match jetstream.create_key_value(config.clone()).await {
        Err(error)
            if error.kind()
                == jetstream::context::CreateKeyValueErrorKind::LimitMarkersNotSupported =>
        {
            tracing::warn!(
                bucket = name,
                "NATS older than 2.11: purged keys leave a marker for good"
            );
            jetstream
                .create_key_value(kv::Config {
                    limit_markers: None,
                    ..config
                })
                .await
        }
        created => created,
    };
    created.map_err(|error| ClusterError::JetStream {
        what,
        detail: error.to_string(),
    })
}

/// Purges `key` of `store` (if its revision is still `revision`, when given), with a
/// marker that goes after [`MARKER_TTL`] when the bucket allows it.
pub(crate) async fn purge(
    store: &kv::Store,
    key: &str,
    revision: Option<u64>,
) -> Result<(), kv::PurgeError> {
    let expires = store.stream.cached_info().config.allow_message_ttl;
    match (revision, expires) {
        (Some(revision), true) => {
            store
                .purge_expect_revision_with_ttl(key, revision, MARKER_TTL)
                .await
        }
        (None, true) => store.purge_with_ttl(key, MARKER_TTL).await,
        (revision, false) => store.purge_expect_revision(key, revision).await,
    }
}

/// The longest key written (NATS refuses subjects longer than its control line, 4 KiB
/// by default).
pub(crate) const MAX_KEY: usize = 2048;

/// The key of `text`: its bytes, but for those a key may not hold (and `=`), written
/// `=XX` (hex). `None` when longer than [`MAX_KEY`].
pub(crate) fn key(text: &str) -> Option<String> {
    let mut key = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'/') {
            key.push(char::from(byte));
        } else {
            key.push('=');
            key.push(char::from(HEX[usize::from(byte >> 4)]));
            key.push(char::from(HEX[usize::from(byte & 0xF)]));
        }
        if key.len() > MAX_KEY {
            return None;
        }
    }
    Some(key)
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// The text of a key made by [`key`].
pub(crate) fn text(key: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(key.len());
    let mut rest = key.bytes();
    while let Some(byte) = rest.next() {
        if byte == b'=' {
            let high = rest.next().and_then(hex_digit)?;
            let low = rest.next().and_then(hex_digit)?;
            bytes.push(high << 4 | low);
        } else {
            bytes.push(byte);
        }
    }
    String::from_utf8(bytes).ok()
}

fn hex_digit(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|value| u8::try_from(value).ok())
}
