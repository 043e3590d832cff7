//! Streaming decoder (placeholder signature; being written).

use bytes::BytesMut;

use crate::{DecodeError, Packet, ProtocolVersion};

/// Decodes one packet from the front of `buf`.
pub fn decode(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet_size: usize,
) -> Result<Option<Packet>, DecodeError> {
    let _ = (buf, version, max_packet_size);
    unimplemented!()
}
