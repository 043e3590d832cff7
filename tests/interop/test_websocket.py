"""MQTT over WebSocket at `/mqtt` (subprotocol `mqtt`): paho with `transport="websockets"`
on the plain HTTP port (ws://) and the HTTPS port (wss://, the dev CA trusted), 3.1.1 and
5.0, against paho over TCP on the same broker: QoS 0/1/2 both ways, retained messages,
wills on abrupt close, a 200 KB message (many frames), bursts (several packets a frame).
websocket-client (raw frames) for what paho does not do: packets split across frames or
packed several to a frame, text frames, a missing `mqtt` subprotocol.

The module's broker (`secure` fixture) allows anonymous clients."""

from __future__ import annotations

import base64
import os
import socket

import pytest
import websocket  # websocket-client

import rawmqtt
from conftest import close_all
from peer import TIMEOUT, V311, V5, PROTOCOL_NAMES, Peer
from pki import client_context

ALLOW_ANONYMOUS = True

VERSIONS = pytest.mark.parametrize("version", [V311, V5], ids=PROTOCOL_NAMES.get)
SCHEMES = pytest.mark.parametrize("scheme", ["ws", "wss"])


@pytest.fixture
def clients(secure, uid):
    """`clients(name, over="tcp"|"ws"|"wss", protocol=...)`: paho clients, not connected,
    all closed after the test."""
    created: list[Peer] = []

    def make(name: str, *, over: str, **kwargs) -> Peer:
        client_id = f"{uid}-{name}"
        if over == "tcp":
            peer = Peer(secure, client_id, **kwargs)
        elif over == "ws":
            peer = Peer(secure, client_id, port=secure.http_port, transport="websockets", **kwargs)
        elif over == "wss":
            peer = Peer(secure, client_id, port=secure.https_port, transport="websockets",
                        tls=client_context(secure.pki.ca), **kwargs)  # fmt: skip
        else:
            raise ValueError(over)
        created.append(peer)
        return peer

    yield make
    close_all(created)


def ws_url(secure, scheme: str) -> str:
    port = secure.http_port if scheme == "ws" else secure.https_port
    return f"{scheme}://127.0.0.1:{port}/mqtt"


def raw_ws(secure, scheme: str = "ws", subprotocols=("mqtt",)) -> websocket.WebSocket:
    options = {"sslopt": {"ca_certs": str(secure.pki.ca)}} if scheme == "wss" else {}
    return websocket.create_connection(
        ws_url(secure, scheme), subprotocols=list(subprotocols) if subprotocols else None, timeout=TIMEOUT, **options
    )


@SCHEMES
@VERSIONS
def test_websocket_and_tcp_clients_exchange_qos_0_1_2_both_ways(clients, uid, scheme, version):
    web = clients("web", over=scheme, protocol=version).connect()
    tcp = clients("tcp", over="tcp", protocol=version).connect()
    assert web.subscribe((f"{uid}/to-web/#", 2)) == [2]
    assert tcp.subscribe((f"{uid}/to-tcp/#", 2)) == [2]
    for qos in (0, 1, 2):
        payload = f"{scheme} qos {qos}".encode()
        tcp.publish(f"{uid}/to-web/{qos}", payload, qos=qos)
        message = web.expect_message(f"{uid}/to-web/{qos}")
        assert (message.payload, message.qos) == (payload, qos)
        web.publish(f"{uid}/to-tcp/{qos}", payload, qos=qos)
        message = tcp.expect_message(f"{uid}/to-tcp/{qos}")
        assert (message.payload, message.qos) == (payload, qos)


@SCHEMES
def test_a_websocket_subscriber_gets_the_retained_message_with_the_retain_flag(clients, uid, scheme):
    topic = f"{uid}/retained"
    tcp = clients("tcp", over="tcp").connect()
    tcp.publish(topic, b"kept", qos=1, retain=True)
    web = clients("web", over=scheme, protocol=V5).connect()
    web.subscribe((topic, 1))
    message = web.expect_message(topic)
    assert (message.payload, message.retain) == (b"kept", True)
    tcp.publish(topic, b"", qos=1, retain=True)  # leave no retained message behind


@SCHEMES
@VERSIONS
def test_a_websocket_clients_will_is_sent_when_its_connection_drops(clients, uid, scheme, version):
    will_topic = f"{uid}/will"
    watcher = clients("watcher", over="tcp").connect()
    watcher.subscribe((will_topic, 1))
    web = clients("web", over=scheme, protocol=version).connect(will=(will_topic, b"web gone", 1, False))
    web.client.socket().close()  # the TCP socket under the WebSocket: no DISCONNECT, no close frame
    message = watcher.expect_message(will_topic)
    assert (message.payload, message.qos) == (b"web gone", 1)


@SCHEMES
def test_a_200_kb_message_crosses_websocket_frames_both_ways(clients, uid, scheme):
    payload = os.urandom(200 * 1024)
    web = clients("web", over=scheme, protocol=V5).connect()
    tcp = clients("tcp", over="tcp", protocol=V5).connect()
    web.subscribe((f"{uid}/big/to-web", 1))
    tcp.subscribe((f"{uid}/big/to-tcp", 1))
    web.publish(f"{uid}/big/to-tcp", payload, qos=1)
    assert tcp.expect_message(f"{uid}/big/to-tcp").payload == payload
    tcp.publish(f"{uid}/big/to-web", payload, qos=1)
    assert web.expect_message(f"{uid}/big/to-web").payload == payload


@SCHEMES
@VERSIONS
def test_a_burst_of_small_messages_arrives_complete_and_in_order_both_ways(clients, uid, scheme, version):
    count = 500
    web = clients("web", over=scheme, protocol=version).connect()
    tcp = clients("tcp", over="tcp", protocol=version).connect()
    web.subscribe((f"{uid}/burst/to-web/#", 1))
    tcp.subscribe((f"{uid}/burst/to-tcp/#", 1))

    mids = [web.publish_nowait(f"{uid}/burst/to-tcp/n", str(number).encode(), qos=1) for number in range(count)]
    web.wait_acked(mids)
    web.publish(f"{uid}/burst/to-tcp/end", b"", qos=1)
    received = [message.payload.decode() for message in tcp.messages_until(f"{uid}/burst/to-tcp/end")]
    assert received == [str(number) for number in range(count)]

    # The broker batches packets into frames on the way out: paho must find them all.
    mids = [tcp.publish_nowait(f"{uid}/burst/to-web/n", str(number).encode(), qos=1) for number in range(count)]
    tcp.wait_acked(mids)
    tcp.publish(f"{uid}/burst/to-web/end", b"", qos=1)
    received = [message.payload.decode() for message in web.messages_until(f"{uid}/burst/to-web/end")]
    assert received == [str(number) for number in range(count)]


class FrameReader:
    """MQTT packets out of the binary frames of a websocket-client connection, whatever
    the framing (the broker may pack several packets in a frame or split one)."""

    def __init__(self, ws: websocket.WebSocket):
        self.ws, self.buffer = ws, bytearray()

    def packet(self) -> rawmqtt.Packet:
        while True:
            parsed = self._parse()
            if parsed:
                return parsed
            opcode, data = self.ws.recv_data()
            assert opcode == websocket.ABNF.OPCODE_BINARY, f"expected a binary frame, got opcode {opcode}: {data!r}"
            self.buffer += data

    def _parse(self) -> rawmqtt.Packet | None:
        if len(self.buffer) < 2:
            return None
        length, shift, pos = 0, 0, 1
        while True:
            if pos >= len(self.buffer):
                return None
            byte = self.buffer[pos]
            length |= (byte & 0x7F) << shift
            shift, pos = shift + 7, pos + 1
            if not byte & 0x80:
                break
        if len(self.buffer) < pos + length:
            return None
        first, body = self.buffer[0], bytes(self.buffer[pos : pos + length])
        del self.buffer[: pos + length]
        return rawmqtt.Packet(first >> 4, first & 0x0F, body)


@SCHEMES
def test_packets_split_across_frames_and_packed_in_one_frame_are_read(secure, clients, uid, scheme):
    topic = f"{uid}/frames"
    watcher = clients("watcher", over="tcp").connect()
    watcher.subscribe((f"{topic}/a", 1), (f"{topic}/b", 1), (f"{topic}/c", 1))
    ws = raw_ws(secure, scheme)
    try:
        reader = FrameReader(ws)
        connect = rawmqtt.connect(f"{uid}-raw")
        ws.send_binary(connect[:3])  # one CONNECT in three frames
        ws.send_binary(connect[3:9])
        ws.send_binary(connect[9:])
        connack = reader.packet()
        assert (connack.kind, connack.return_code) == (rawmqtt.CONNACK, 0), connack
        # SUBSCRIBE, two PUBLISHes and a PINGREQ in one frame.
        ws.send_binary(
            rawmqtt.subscribe(1, [(f"{topic}/echo", 1)])
            + rawmqtt.publish(f"{topic}/a", b"first", qos=1, packet_id=2)
            + rawmqtt.publish(f"{topic}/b", b"second", qos=1, packet_id=3)
            + rawmqtt.pingreq()
        )
        got = [reader.packet() for _ in range(4)]
        expected = [rawmqtt.SUBACK, rawmqtt.PUBACK, rawmqtt.PUBACK, rawmqtt.PINGRESP]
        assert [packet.kind for packet in got] == expected, got
        assert [got[1].packet_id, got[2].packet_id] == [2, 3]
        assert watcher.expect_message(f"{topic}/a").payload == b"first"
        assert watcher.expect_message(f"{topic}/b").payload == b"second"
        # The tail of one PUBLISH and the head of the next share a frame.
        both = rawmqtt.publish(f"{topic}/echo", b"x" * 300, qos=1, packet_id=4) + rawmqtt.publish(
            f"{topic}/c", b"third", qos=1, packet_id=5
        )
        ws.send_binary(both[:200])
        ws.send_binary(both[200:])
        kinds = sorted(reader.packet().kind for _ in range(3))  # two PUBACKs and the echoed PUBLISH
        assert kinds == sorted([rawmqtt.PUBACK, rawmqtt.PUBACK, rawmqtt.PUBLISH]), kinds
        assert watcher.expect_message(f"{topic}/c").payload == b"third"
    finally:
        ws.close()


def assert_closed_without_connack(ws: websocket.WebSocket) -> None:
    """Reads until the connection ends; fails on a CONNACK or a timeout."""
    try:
        while True:
            opcode, data = ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return
            assert not (opcode == websocket.ABNF.OPCODE_BINARY and data[:1] == b"\x20"), "got a CONNACK"
    except websocket.WebSocketConnectionClosedException:
        return
    except websocket.WebSocketTimeoutException:
        pytest.fail(f"the connection stayed open for {TIMEOUT} s")
    except ConnectionResetError:
        return


@SCHEMES
def test_a_text_frame_closes_the_connection(secure, scheme, uid):
    ws = raw_ws(secure, scheme)
    try:
        ws.send(rawmqtt.connect(f"{uid}-text").decode("latin-1"))  # a CONNECT, but in a text frame
        assert_closed_without_connack(ws)
    finally:
        ws.close()
    # Control: the same CONNECT in a binary frame gets its CONNACK.
    ws = raw_ws(secure, scheme)
    try:
        ws.send_binary(rawmqtt.connect(f"{uid}-binary"))
        assert FrameReader(ws).packet().kind == rawmqtt.CONNACK
    finally:
        ws.close()


def raw_upgrade(port: int, offered: str | None, *, source: str | None = None) -> tuple[int, bytes, socket.socket]:
    """A WebSocket upgrade request on a plain socket (so the server's answer is seen as it
    is, not as a client library judges it): returns (status, response head, socket)."""
    key = base64.b64encode(os.urandom(16)).decode()
    head = (
        f"GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        + (f"Sec-WebSocket-Protocol: {offered}\r\n" if offered else "")
        + "\r\n"
    )
    sock = socket.create_connection(
        ("127.0.0.1", port), timeout=TIMEOUT, source_address=(source, 0) if source else None
    )
    sock.sendall(head.encode())
    response = bytearray()
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(4096)
        if not chunk:
            break
        response += chunk
    status_line = bytes(response).split(b"\r\n", 1)[0]
    status = int(status_line.split()[1]) if len(status_line.split()) > 1 else 0
    return status, bytes(response), sock


def masked_binary_frame(payload: bytes) -> bytes:
    assert len(payload) < 126
    mask = os.urandom(4)
    return bytes([0x82, 0x80 | len(payload)]) + mask + bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))


@pytest.mark.parametrize("offered", [None, "chat"], ids=["no-subprotocol", "other-subprotocol"])
def test_a_websocket_without_the_mqtt_subprotocol_is_refused(secure, uid, offered):
    """MQTT 5.0 section 6: the client offers `mqtt` and the server answers with it. A
    client that does not offer it is not speaking MQTT over WebSocket: it gets no
    upgrade, or a connection closed before any CONNACK."""
    status, response, sock = raw_upgrade(secure.http_port, offered)
    with sock:
        if status != 101:
            assert status >= 400, response
            return
        # Upgraded anyway: then at least no MQTT session may start on it.
        sock.sendall(masked_binary_frame(rawmqtt.connect(f"{uid}-nosub")))
        answer = bytearray()
        try:
            while chunk := sock.recv(4096):
                answer += chunk
                if len(answer) >= 3 and answer[0] == 0x82 and answer[2] == 0x20:
                    break
        except (ConnectionResetError, socket.timeout):
            pass
        assert not (len(answer) >= 3 and answer[0] == 0x82 and answer[2] == 0x20), (
            f"upgraded a WebSocket offering {offered or 'no subprotocol'} and answered its CONNECT with a CONNACK; "
            f"the upgrade was:\n{response.decode(errors='replace')}"
        )


def test_the_mqtt_subprotocol_is_echoed(secure):
    ws = raw_ws(secure, "ws")
    try:
        assert ws.getstatus() == 101 and ws.getsubprotocol() == "mqtt"
    finally:
        ws.close()
