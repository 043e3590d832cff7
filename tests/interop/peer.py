"""A paho-mqtt client wrapped for tests: blocking connect/subscribe/publish with timeouts.

paho runs its network loop in a background thread; callbacks record what happened
(CONNACK, SUBACK, acks of our publishes, received messages, disconnects) so a test
can wait on them. Automatic reconnection is off: a test that loses its connection
must see it, not have paho quietly reconnect (which would also fight a takeover).
"""

from __future__ import annotations

import queue
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

V31, V311, V5 = mqtt.MQTTv31, mqtt.MQTTv311, mqtt.MQTTv5
PROTOCOL_NAMES = {V31: "v31", V311: "v311", V5: "v5"}

TIMEOUT = 10.0


class Peer:
    """`port` defaults to the broker's plain MQTT port; `transport="websockets"` speaks MQTT
    over WebSocket at `ws_path`; `tls` (an `ssl.SSLContext`) wraps either in TLS;
    `bind_address` (another loopback address, 127.0.0.2...) is the client's own address."""

    def __init__(
        self,
        broker,
        client_id: str,
        *,
        protocol: int = V311,
        clean: bool = True,
        keepalive: int = 60,
        port: int | None = None,
        transport: str = "tcp",
        ws_path: str = "/mqtt",
        tls=None,
        bind_address: str = "",
    ):
        self.broker = broker
        self.protocol = protocol
        self.clean = clean
        self.keepalive = keepalive
        self.port = port or broker.port
        self.bind_address = bind_address
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=protocol,
            clean_session=None if protocol == V5 else clean,
            reconnect_on_failure=False,
            transport=transport,
        )
        if transport == "websockets":
            self.client.ws_set_options(path=ws_path)
        if tls is not None:
            self.client.tls_set_context(tls)
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.session_present: bool | None = None
        self.connack_reason: mqtt.ReasonCode | None = None
        self.connack_properties: Properties | None = None
        self.disconnect_reason: mqtt.ReasonCode | None = None
        self._condition = threading.Condition()
        self._acked: set[int] = set()
        self.publish_reasons: dict[int, int] = {}
        self._subacks: dict[int, list[int]] = {}
        self._unsubacks: set[int] = set()

        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = lambda client, userdata, message: self.messages.put(message)
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.on_unsubscribe = self._on_unsubscribe

    # Callbacks (paho's network thread).

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.session_present = flags.session_present
        self.connack_reason = reason_code
        self.connack_properties = properties
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.disconnect_reason = reason_code
        self.disconnected.set()

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        with self._condition:
            self._acked.add(mid)
            self.publish_reasons[mid] = reason_code.value
            self._condition.notify_all()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        with self._condition:
            self._subacks[mid] = [code.value for code in reason_codes]
            self._condition.notify_all()

    def _on_unsubscribe(self, client, userdata, mid, reason_codes, properties):
        with self._condition:
            self._unsubacks.add(mid)
            self._condition.notify_all()

    def _wait_for(self, predicate, what: str, timeout: float):
        with self._condition:
            if not self._condition.wait_for(predicate, timeout):
                raise AssertionError(f"{self.client._client_id!r}: no {what} within {timeout} s")

    # Blocking operations (test thread).

    def connect(
        self, *, session_expiry: int | None = None, will: tuple | None = None, timeout: float = TIMEOUT
    ) -> "Peer":
        """Connect and wait for a successful CONNACK. `will` is (topic, payload, qos, retain)."""
        properties = None
        if self.protocol == V5 and session_expiry is not None:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = session_expiry
        if will:
            self.client.will_set(*will)
        clean_start = self.clean if self.protocol == V5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY
        self.client.connect(
            self.broker.host, self.port, keepalive=self.keepalive, bind_address=self.bind_address,
            clean_start=clean_start, properties=properties,
        )  # fmt: skip
        self.client.loop_start()
        assert self.connected.wait(timeout), f"no CONNACK within {timeout} s"
        assert self.connack_reason == 0, f"connection refused: {self.connack_reason}"
        return self

    def subscribe(
        self, *filters: tuple[str, int], properties: Properties | None = None, timeout: float = TIMEOUT
    ) -> list[int]:
        """Subscribe and wait for the SUBACK; returns its return/reason codes."""
        result, mid = self.client.subscribe(list(filters), properties=properties)
        assert result == mqtt.MQTT_ERR_SUCCESS, f"subscribe failed locally: {result}"
        self._wait_for(lambda: mid in self._subacks, f"SUBACK for {filters}", timeout)
        return self._subacks[mid]

    def unsubscribe(self, *filters: str, timeout: float = TIMEOUT) -> None:
        result, mid = self.client.unsubscribe(list(filters))
        assert result == mqtt.MQTT_ERR_SUCCESS, f"unsubscribe failed locally: {result}"
        self._wait_for(lambda: mid in self._unsubacks, f"UNSUBACK for {filters}", timeout)

    def publish_nowait(
        self,
        topic: str,
        payload: bytes | str = b"",
        qos: int = 0,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> int:
        info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, f"publish failed locally: {info.rc}"
        return info.mid

    def wait_acked(self, mids, timeout: float = TIMEOUT) -> None:
        """Wait until on_publish fired for all `mids` (PUBACK/PUBCOMP received, or QoS 0 written)."""
        pending = set(mids)
        self._wait_for(lambda: pending <= self._acked, f"ack for {len(pending)} publishes", timeout)

    def publish(
        self,
        topic: str,
        payload: bytes | str = b"",
        qos: int = 0,
        retain: bool = False,
        timeout: float = TIMEOUT,
        properties: Properties | None = None,
    ) -> int:
        """Publish and wait for the publish flow to complete."""
        mid = self.publish_nowait(topic, payload, qos, retain, properties)
        self.wait_acked([mid], timeout)
        return mid

    def expect_message(self, topic: str | None = None, timeout: float = TIMEOUT) -> mqtt.MQTTMessage:
        """Next received message (skipping none); checks its topic if given."""
        try:
            message = self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no message{' on ' + topic if topic else ''} within {timeout} s") from None
        if topic is not None:
            assert message.topic == topic, f"expected a message on {topic}, got one on {message.topic}"
        return message

    def messages_until(self, marker_topic: str, timeout: float = TIMEOUT) -> list[mqtt.MQTTMessage]:
        """All messages received before the first one on `marker_topic` (which is consumed)."""
        received, deadline = [], time.monotonic() + timeout
        while True:
            try:
                message = self.messages.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                topics = [m.topic for m in received]
                raise AssertionError(f"marker {marker_topic} not received within {timeout} s; got {topics}") from None
            if message.topic == marker_topic:
                return received
            received.append(message)

    def drain(self, quiet: float = 0.3) -> list[mqtt.MQTTMessage]:
        """Messages received until none arrives for `quiet` seconds."""
        received = []
        while True:
            try:
                received.append(self.messages.get(timeout=quiet))
            except queue.Empty:
                return received

    def disconnect(self, timeout: float = TIMEOUT) -> None:
        """Clean DISCONNECT, then wait for the network thread to finish."""
        if not self.disconnected.is_set():
            self.client.disconnect()
            assert self.disconnected.wait(timeout), "disconnect did not complete"
        self.client.loop_stop()

    def close(self) -> None:
        """Best-effort cleanup for fixtures."""
        try:
            if self.connected.is_set() and not self.disconnected.is_set():
                self.client.disconnect()
                self.disconnected.wait(2)
        finally:
            self.client.loop_stop()
            try:
                self.client.socket() and self.client.socket().close()
            except OSError:
                pass
