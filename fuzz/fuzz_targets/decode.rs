//! Fuzz target for the MQTT decoder: arbitrary bytes, decoded as each protocol version.
//!
//! The decoder must never panic. Every packet it accepts must encode (a decoded packet is
//! always representable), `encoded_len` must match the bytes written, and decoding the
//! re-encoded bytes must give the same packet back.

#![no_main]

use bytes::BytesMut;
use fleetwire_mqtt_codec::{ProtocolVersion, decode, encode, encoded_len};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for version in [ProtocolVersion::V31, ProtocolVersion::V311, ProtocolVersion::V5] {
        let mut buf = BytesMut::from(data);
        // A small limit also exercises the early "packet too large" check.
        while let Ok(Some(packet)) = decode(&mut buf, version, 64 * 1024) {
            let mut wire = BytesMut::new();
            if let Err(error) = encode(&packet, version, &mut wire) {
                panic!("decoded {packet:?} but it does not encode: {error}");
            }
            assert_eq!(encoded_len(&packet, version), Ok(wire.len()), "encoded_len of {packet:?}");
            let again = decode(&mut wire, version, usize::MAX);
            assert_eq!(again, Ok(Some(packet)), "re-encoded packet decodes differently");
            assert!(wire.is_empty(), "re-encoded packet leaves bytes over");
        }
    }
});
