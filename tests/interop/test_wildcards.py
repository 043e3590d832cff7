"""Topic filter matching: `+`, `#`, and the `$SYS` exclusion for leading wildcards."""

import time

import pytest

# Topics (relative to the test's unique prefix P) published for every filter below.
TOPICS = ["", "/", "/a", "/a/", "/a/b", "/a/b/c", "/b/b", "/b/b/c", "/a/x/c"]

# filter (relative to P) -> the topics of TOPICS it must match, and no other.
MATCHES = {
    "/+": ["/", "/a"],
    "/a/+": ["/a/", "/a/b"],
    "/+/b": ["/a/b", "/b/b"],
    "/a/+/c": ["/a/b/c", "/a/x/c"],
    "/+/+/c": ["/a/b/c", "/b/b/c", "/a/x/c"],
    "/#": ["", "/", "/a", "/a/", "/a/b", "/a/b/c", "/b/b", "/b/b/c", "/a/x/c"],
    "/a/#": ["/a", "/a/", "/a/b", "/a/b/c", "/a/x/c"],
    "/a/b/#": ["/a/b", "/a/b/c"],
    "/+/b/#": ["/a/b", "/a/b/c", "/b/b", "/b/b/c"],
    "/a/b": ["/a/b"],
    "/a": ["/a"],
}


@pytest.mark.parametrize("topic_filter", list(MATCHES))
def test_filter_matches_exactly_the_expected_topics(peers, uid, protocol, topic_filter):
    prefix, marker = f"{uid}/w", f"{uid}/marker"
    subscriber = peers("subscriber", protocol=protocol).connect()
    subscriber.subscribe((prefix + topic_filter, 0), (marker, 0))
    publisher = peers("publisher", protocol=protocol).connect()
    for suffix in TOPICS:
        publisher.publish(prefix + suffix, suffix.encode(), qos=1)
    publisher.publish(marker, b"end", qos=1)
    received = sorted(m.topic for m in subscriber.messages_until(marker))
    assert received == sorted(prefix + suffix for suffix in MATCHES[topic_filter])


def test_leading_wildcards_do_not_match_sys_topics_but_sys_filter_does(peers, protocol):
    everything = peers("everything", protocol=protocol).connect()
    everything.subscribe(("#", 0), ("+/broker/uptime", 0), ("+/+/uptime", 0), ("+/#", 0))
    system = peers("system", protocol=protocol).connect()
    system.subscribe(("$SYS/#", 0))
    # Wait for a live (not retained) $SYS publication made after both subscriptions existed.
    deadline = time.monotonic() + 6
    while True:
        message = system.expect_message(timeout=max(0.1, deadline - time.monotonic()))
        assert message.topic.startswith("$SYS/"), f"$SYS/# delivered {message.topic}"
        if not message.retain:
            break
    time.sleep(0.3)  # let the same publication reach the other subscriber, if it wrongly matches
    leaked = [m.topic for m in everything.drain(0.2) if m.topic.startswith("$")]
    assert leaked == [], f"'#' or '+/...' matched $ topics: {sorted(set(leaked))}"
