//! Encoder (placeholder signature; being written).

use bytes::BytesMut;

use crate::{EncodeError, Packet, ProtocolVersion};

/// Appends `packet` to `out`.
pub fn encode(packet: &Packet, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
    let _ = (packet, version, out);
    unimplemented!()
}

/// The size of the encoded packet, fixed header included.
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> Result<usize, EncodeError> {
    let _ = (packet, version);
    unimplemented!()
}
