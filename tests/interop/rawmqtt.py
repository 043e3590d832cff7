"""Raw MQTT 3.1.1 / 5.0 packets over a plain socket, for what paho will not send.

Builders return the bytes of one packet; `RawClient` sends bytes and reads whole
packets (fixed header + remaining length + body) with timeouts. Only the handful
of packets the interop tests need are covered, on purpose.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass

# Control packet types (high nibble of the first byte).
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK = 8, 9, 10, 11
PINGREQ, PINGRESP, DISCONNECT, AUTH = 12, 13, 14, 15

V311, V5 = 4, 5

# MQTT 5.0 property identifiers this module writes or reads by name.
SESSION_EXPIRY_INTERVAL = 0x11
ASSIGNED_CLIENT_IDENTIFIER = 0x12
REASON_STRING = 0x1F

# Property identifier -> value kind, from MQTT 5.0 section 2.2.2.2.
_PROPERTY_KINDS = {
    **dict.fromkeys([0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A], "byte"),
    **dict.fromkeys([0x13, 0x21, 0x22, 0x23], "u16"),
    **dict.fromkeys([0x02, 0x11, 0x18, 0x27], "u32"),
    0x0B: "varint",
    **dict.fromkeys([0x03, 0x08, 0x12, 0x15, 0x1A, 0x1C, 0x1F], "string"),
    **dict.fromkeys([0x09, 0x16], "binary"),
    0x26: "pair",
}


def varint(value: int) -> bytes:
    """Encode a variable byte integer (remaining length, property length)."""
    out = bytearray()
    while True:
        byte, value = value % 128, value // 128
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def string(value: str | bytes) -> bytes:
    """Encode a length-prefixed UTF-8 string (or raw bytes, to send invalid ones)."""
    data = value.encode() if isinstance(value, str) else value
    return struct.pack("!H", len(data)) + data


def packet(first_byte: int, body: bytes) -> bytes:
    """Frame a body with its fixed header."""
    return bytes([first_byte]) + varint(len(body)) + body


def properties(props: dict[int, object] | None = None) -> bytes:
    """Encode a 5.0 property block. Values: int, str, bytes (binary data), a list of
    ints for the subscription identifier, a list of (name, value) for user properties."""
    out = bytearray()
    for ident, value in (props or {}).items():
        kind = _PROPERTY_KINDS[ident]
        if kind == "pair":
            for name, text in value:
                out.append(ident)
                out += string(name) + string(text)
            continue
        if kind == "varint":
            for number in value if isinstance(value, list) else [value]:
                out.append(ident)
                out += varint(number)
            continue
        out.append(ident)
        if kind == "u32":
            out += struct.pack("!I", value)
        elif kind == "u16":
            out += struct.pack("!H", value)
        elif kind == "byte":
            out.append(value)
        elif kind in ("string", "binary"):
            out += string(value)
        else:
            raise ValueError(f"encoding property kind {kind} is not supported here")
    return varint(len(out)) + bytes(out)


@dataclass
class Will:
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False


def connect(
    client_id: str,
    *,
    version: int = V311,
    clean: bool = True,
    keepalive: int = 60,
    will: Will | None = None,
    session_expiry: int | None = None,
    protocol_name: str = "MQTT",
    props: dict[int, object] | None = None,
    will_props: dict[int, object] | None = None,
) -> bytes:
    """`props` and `will_props`: 5.0 CONNECT and will properties (besides `session_expiry`)."""
    flags = 0x02 if clean else 0x00
    if will:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
    body = string(protocol_name) + bytes([version, flags]) + struct.pack("!H", keepalive)
    if version == V5:
        connect_props = {SESSION_EXPIRY_INTERVAL: session_expiry} if session_expiry else {}
        body += properties({**connect_props, **(props or {})})
    body += string(client_id)
    if will:
        if version == V5:
            body += properties(will_props)
        body += string(will.topic) + string(will.payload)
    return packet(CONNECT << 4, body)


def subscribe(packet_id: int, filters: list[tuple[str, int]], *, version: int = V311, flags: int = 0x02) -> bytes:
    body = struct.pack("!H", packet_id)
    if version == V5:
        body += properties()
    for topic_filter, qos in filters:
        body += string(topic_filter) + bytes([qos])
    return packet(SUBSCRIBE << 4 | flags, body)


def publish(
    topic: str | bytes,
    payload: bytes,
    *,
    qos: int = 0,
    retain: bool = False,
    dup: bool = False,
    packet_id: int | None = None,
    version: int = V311,
    props: dict[int, object] | None = None,
) -> bytes:
    first = PUBLISH << 4 | (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    body = string(topic)
    if qos:
        body += struct.pack("!H", packet_id)
    if version == V5:
        body += properties(props)
    return packet(first, body + payload)


def ack(kind: int, packet_id: int) -> bytes:
    """PUBACK, PUBREC, PUBREL or PUBCOMP (success, no reason code: valid in 3.1.1 and 5.0)."""
    return packet(kind << 4 | (0x02 if kind == PUBREL else 0), struct.pack("!H", packet_id))


def auth(reason: int = 0) -> bytes:
    """5.0 AUTH with a reason code and no properties."""
    return packet(AUTH << 4, bytes([reason]) + properties())


def pingreq() -> bytes:
    return packet(PINGREQ << 4, b"")


def disconnect(*, version: int = V311, reason: int = 0) -> bytes:
    body = bytes([reason]) + properties() if version == V5 and reason else b""
    return packet(DISCONNECT << 4, body)


def decode_properties(data: bytes, pos: int) -> tuple[dict[int, object], int]:
    """Decode a 5.0 property block at `pos`; returns (properties, position after it).
    User properties and subscription identifiers, which may repeat, come as lists."""
    length, pos = _read_varint(data, pos)
    end, props = pos + length, {}
    while pos < end:
        ident, kind = data[pos], _PROPERTY_KINDS[data[pos]]
        pos += 1
        if kind == "byte":
            value, pos = data[pos], pos + 1
        elif kind == "u16":
            value, pos = struct.unpack_from("!H", data, pos)[0], pos + 2
        elif kind == "u32":
            value, pos = struct.unpack_from("!I", data, pos)[0], pos + 4
        elif kind == "varint":
            value, pos = _read_varint(data, pos)
        elif kind == "pair":
            key, pos = _read_string(data, pos)
            val, pos = _read_string(data, pos)
            value = (key.decode(), val.decode())
        else:
            raw, pos = _read_string(data, pos)
            value = raw.decode() if kind == "string" else raw
        if kind in ("pair", "varint"):
            props.setdefault(ident, []).append(value)
        else:
            props[ident] = value
    return props, end


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _read_string(data: bytes, pos: int) -> tuple[bytes, int]:
    (length,) = struct.unpack_from("!H", data, pos)
    return data[pos + 2 : pos + 2 + length], pos + 2 + length


@dataclass
class Packet:
    """One received packet: `kind` is the packet type, `flags` the low nibble."""

    kind: int
    flags: int
    body: bytes

    @property
    def qos(self) -> int:
        return (self.flags >> 1) & 0x03

    @property
    def dup(self) -> bool:
        return bool(self.flags & 0x08)

    @property
    def retain(self) -> bool:
        return bool(self.flags & 0x01)

    @property
    def packet_id(self) -> int:
        """Packet id of an ack, SUBACK, UNSUBACK or QoS 1/2 PUBLISH."""
        if self.kind == PUBLISH:
            (topic_length,) = struct.unpack_from("!H", self.body, 0)
            return struct.unpack_from("!H", self.body, 2 + topic_length)[0]
        return struct.unpack_from("!H", self.body, 0)[0]

    def publish_fields(self, version: int = V311) -> tuple[str, bytes]:
        """(topic, payload) of a PUBLISH."""
        topic, pos = _read_string(self.body, 0)
        if self.qos:
            pos += 2
        if version == V5:
            _, pos = decode_properties(self.body, pos)
        return topic.decode(), self.body[pos:]

    def publish_properties(self) -> dict[int, object]:
        """The properties of a 5.0 PUBLISH."""
        _, pos = _read_string(self.body, 0)
        if self.qos:
            pos += 2
        return decode_properties(self.body, pos)[0]

    @property
    def session_present(self) -> bool:
        return bool(self.body[0] & 0x01)

    @property
    def return_code(self) -> int:
        """CONNACK return code (3.1.1) or reason code (5.0); DISCONNECT reason code."""
        if self.kind == DISCONNECT:
            return self.body[0] if self.body else 0
        return self.body[1]

    def connack_properties(self) -> dict[int, object]:
        return decode_properties(self.body, 2)[0] if len(self.body) > 2 else {}

    def __repr__(self) -> str:
        return f"Packet(kind={self.kind}, flags={self.flags:#x}, body={self.body[:64]!r})"


class ConnectionClosed(Exception):
    """The broker closed the connection."""


class RawClient:
    """A blocking socket that sends bytes and reads whole MQTT packets."""

    def __init__(self, host: str, port: int, timeout: float = 5.0, *, source: str | None = None):
        """`source`: the local address to connect from (another loopback address)."""
        source_address = (source, 0) if source else None
        self.sock = socket.create_connection((host, port), timeout=timeout, source_address=source_address)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffer = bytearray()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, count: int, deadline: float) -> None:
        while len(self._buffer) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no complete packet within the timeout (have {bytes(self._buffer[:32])!r})")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise ConnectionClosed(f"connection closed with {len(self._buffer)} unread bytes")
            self._buffer += chunk

    def read_packet(self, timeout: float = 5.0) -> Packet:
        """Read one packet; raises TimeoutError or ConnectionClosed."""
        deadline = time.monotonic() + timeout
        self._fill(2, deadline)
        length, shift, pos = 0, 0, 1
        while True:
            self._fill(pos + 1, deadline)
            byte = self._buffer[pos]
            length |= (byte & 0x7F) << shift
            shift += 7
            pos += 1
            if not byte & 0x80:
                break
        self._fill(pos + length, deadline)
        first, body = self._buffer[0], bytes(self._buffer[pos : pos + length])
        del self._buffer[: pos + length]
        return Packet(first >> 4, first & 0x0F, body)

    def expect(self, kind: int, timeout: float = 5.0) -> Packet:
        received = self.read_packet(timeout)
        assert received.kind == kind, f"expected packet type {kind}, got {received!r}"
        return received

    def read_until_closed(self, timeout: float = 5.0) -> list[Packet]:
        """Read packets until the broker closes; raises TimeoutError if it stays open."""
        received, deadline = [], time.monotonic() + timeout
        while True:
            try:
                received.append(self.read_packet(max(0.0, deadline - time.monotonic())))
            except ConnectionClosed:
                return received

    def connect(self, client_id: str, **kwargs) -> Packet:
        """Send CONNECT and return the CONNACK."""
        self.send(connect(client_id, **kwargs))
        return self.expect(CONNACK)

    def close(self) -> None:
        """Close the socket without DISCONNECT: an abnormal disconnect for the broker."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
