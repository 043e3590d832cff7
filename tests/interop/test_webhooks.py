"""Webhook actions against a real HTTP server in the test: the document a rule posts when it
raises and clears, retries with exponential backoff when the receiver fails or hangs, and
the per-URL circuit breaker opening after failed deliveries in a row and closing again.

Delivery is made fast through configuration (the defaults are 5 s timeout, 4 attempts from
500 ms, circuit open after 5 failures for 30 s)."""

from __future__ import annotations

import time

import pytest

from fleet import BASE_MS, WebhookReceiver, wait_until

TIMEOUT_MS = 500
ATTEMPTS = 3
FIRST_BACKOFF_MS = 100
CIRCUIT_FAILURES = 2
CIRCUIT_OPEN_SECS = 2

FLEETWIRE_ENV = {
    "FLEETWIRE_WEBHOOKS__TIMEOUT_MS": str(TIMEOUT_MS),
    "FLEETWIRE_WEBHOOKS__ATTEMPTS": str(ATTEMPTS),
    "FLEETWIRE_WEBHOOKS__FIRST_BACKOFF_MS": str(FIRST_BACKOFF_MS),
    "FLEETWIRE_WEBHOOKS__CIRCUIT_FAILURES": str(CIRCUIT_FAILURES),
    "FLEETWIRE_WEBHOOKS__CIRCUIT_OPEN_SECS": str(CIRCUIT_OPEN_SECS),
}


@pytest.fixture(scope="module")
def receiver():
    server = WebhookReceiver()
    yield server
    server.close()


class Counters:
    """The webhook counters of /metrics, as differences from when this was made."""

    NAMES = ("delivered", "failed", "short_circuited", "dropped")

    def __init__(self, api):
        self.api = api
        self.start = self.read()

    def read(self) -> dict[str, float]:
        return {name: self.api.metric(f"fleetwire_webhooks_{name}_total") for name in self.NAMES}

    def delta(self) -> dict[str, float]:
        now = self.read()
        return {name: now[name] - self.start[name] for name in self.NAMES}

    def wait_for(self, **expected) -> dict[str, float]:
        return wait_until(
            lambda: (lambda delta: delta if all(delta[k] == v for k, v in expected.items()) else None)(self.delta()),
            f"webhook counters to change by {expected}",
        )


def webhook_rule(api, uid: str, device: str, url: str, *, alarm: bool = True) -> dict:
    actions = ([{"type": "alarm"}] if alarm else []) + [{"type": "webhook", "url": url}]
    return api.create_rule({
        "id": f"hook-{uid}", "name": "too hot", "match": {"devices": [device]},
        "condition": "temperature > 30", "clear": "temperature < 25", "severity": "high", "actions": actions,
    })  # fmt: skip


def test_webhook_posts_the_raised_and_cleared_documents(api, receiver, uid):
    device, path = f"wh-{uid}", f"/hooks/{uid}"
    api.create_device(device)
    counters = Counters(api)
    created = webhook_rule(api, uid, device, receiver.url(path))
    api.write(device, {"ts": BASE_MS + 1000, "temperature": 31.5, "humidity": 40})
    raised = receiver.wait_for(path, 1)[0]
    alarm = api.alarms(rule=created["id"], device=device)[0]
    assert raised.headers["content-type"].startswith("application/json")
    assert raised.body == {
        "event": "raised",
        "rule": {"id": created["id"], "name": "too hot"},
        "device_id": device,
        "severity": "high",
        "values": {"temperature": 31.5},
        "ts": BASE_MS + 1000,
        "alarm": {"id": alarm["id"], "status": "active"},
    }
    api.write(device, {"ts": BASE_MS + 2000, "temperature": 24})
    cleared = receiver.wait_for(path, 2)[1]
    assert cleared.body == {
        **raised.body,
        "event": "cleared",
        "values": {"temperature": 24.0},
        "ts": BASE_MS + 2000,
        "alarm": {"id": alarm["id"], "status": "cleared"},
    }
    counters.wait_for(delivered=2, failed=0, short_circuited=0, dropped=0)


def test_webhook_is_retried_with_backoff_until_the_receiver_answers(api, receiver, uid):
    device, path = f"retry-{uid}", f"/flaky/{uid}"
    api.create_device(device)
    receiver.script(path, [503, 500])  # fails twice, then 200
    counters = Counters(api)
    webhook_rule(api, uid, device, receiver.url(path), alarm=False)
    api.write(device, {"ts": BASE_MS, "temperature": 35})
    first, second, third = receiver.wait_for(path, 3)
    assert [d.status for d in (first, second, third)] == [503, 500, 200]
    assert first.body == second.body == third.body and first.body["event"] == "raised"
    assert first.body["alarm"] is None  # the rule has no alarm action
    # Exponential backoff: 100 ms, then 200 ms (with room for a slow machine above).
    first_wait, second_wait = second.at - first.at, third.at - second.at
    assert FIRST_BACKOFF_MS / 1000 * 0.9 <= first_wait < 2.0, first_wait
    assert 2 * FIRST_BACKOFF_MS / 1000 * 0.9 <= second_wait < 2.0, second_wait
    counters.wait_for(delivered=1, failed=0)
    assert len(receiver.received(path)) == 3


def test_a_hanging_receiver_times_out_and_does_not_hold_up_ingest(api, receiver, uid):
    device, path = f"hang-{uid}", f"/slow/{uid}"
    api.create_device(device)
    receiver.script(path, [("hang", 3 * TIMEOUT_MS / 1000)])
    counters = Counters(api)
    webhook_rule(api, uid, device, receiver.url(path), alarm=False)
    api.write(device, {"ts": BASE_MS, "temperature": 35})
    receiver.wait_for(path, 1)
    # While the webhook hangs, telemetry is still written at once.
    started = time.monotonic()
    for index in range(1, 11):
        api.write(device, {"ts": BASE_MS + index, "temperature": 36})
    assert time.monotonic() - started < TIMEOUT_MS / 1000
    hung, retried = receiver.wait_for(path, 2)
    assert retried.at - hung.at >= (TIMEOUT_MS + FIRST_BACKOFF_MS) / 1000 * 0.9
    assert retried.status == 200 and retried.body == hung.body
    counters.wait_for(delivered=1, failed=0)


def test_circuit_opens_after_failed_deliveries_and_closes_again(api, receiver, uid):
    device, path = f"circuit-{uid}", f"/down/{uid}"
    api.create_device(device)
    receiver.script(path, [], then=500)  # down until told otherwise
    counters = Counters(api)
    webhook_rule(api, uid, device, receiver.url(path), alarm=False)
    ts = iter(range(BASE_MS, BASE_MS + 1_000_000, 1000))

    # Two deliveries (raised, cleared) fail every attempt: the circuit opens.
    api.write(device, {"ts": next(ts), "temperature": 35})
    api.write(device, {"ts": next(ts), "temperature": 20})
    counters.wait_for(failed=CIRCUIT_FAILURES, delivered=0)
    opened_by = time.monotonic()
    assert len(receiver.received(path)) == CIRCUIT_FAILURES * ATTEMPTS

    # While it is open, deliveries are refused at once, without a request.
    for temperature in (35, 20, 35):
        api.write(device, {"ts": next(ts), "temperature": temperature})
    counters.wait_for(failed=CIRCUIT_FAILURES, short_circuited=3, delivered=0)
    assert len(receiver.received(path)) == CIRCUIT_FAILURES * ATTEMPTS
    assert time.monotonic() - opened_by < CIRCUIT_OPEN_SECS, "too slow to check the open circuit"

    # The receiver is back; once the open time is over, one delivery is tried (half
    # open), succeeds, and the circuit is closed: the next one goes straight through.
    receiver.script(path, [], then=200)
    time.sleep(max(0.0, opened_by + CIRCUIT_OPEN_SECS + 0.1 - time.monotonic()))
    api.write(device, {"ts": next(ts), "temperature": 20})
    receiver.wait_for(path, CIRCUIT_FAILURES * ATTEMPTS + 1)
    counters.wait_for(delivered=1, short_circuited=3, failed=CIRCUIT_FAILURES)
    api.write(device, {"ts": next(ts), "temperature": 35})
    last = receiver.wait_for(path, CIRCUIT_FAILURES * ATTEMPTS + 2)[-1]
    assert last.status == 200 and last.body["event"] == "raised"
    counters.wait_for(delivered=2, short_circuited=3, failed=CIRCUIT_FAILURES)


def test_a_failed_half_open_attempt_opens_the_circuit_again(api, receiver, uid):
    device, path = f"half-{uid}", f"/half/{uid}"
    api.create_device(device)
    receiver.script(path, [], then=500)
    counters = Counters(api)
    webhook_rule(api, uid, device, receiver.url(path), alarm=False)
    api.write(device, {"ts": BASE_MS, "temperature": 35})
    api.write(device, {"ts": BASE_MS + 1, "temperature": 20})
    counters.wait_for(failed=CIRCUIT_FAILURES)
    opened_by = time.monotonic()
    time.sleep(max(0.0, opened_by + CIRCUIT_OPEN_SECS + 0.1 - time.monotonic()))
    # Half open: one attempt only, which fails, and the circuit is open again at once.
    api.write(device, {"ts": BASE_MS + 2, "temperature": 35})
    counters.wait_for(failed=CIRCUIT_FAILURES + 1)
    api.write(device, {"ts": BASE_MS + 3, "temperature": 20})
    counters.wait_for(failed=CIRCUIT_FAILURES + 1, short_circuited=1, delivered=0)
    assert len(receiver.received(path)) == CIRCUIT_FAILURES * ATTEMPTS + 1


def test_circuits_are_per_url(api, receiver, uid):
    """Another URL's open circuit does not stop this one (the previous test's is closed
    again, so open one here)."""
    down_device, up_device = f"down-{uid}", f"up-{uid}"
    down_path, up_path = f"/down/{uid}", f"/up/{uid}"
    receiver.script(down_path, [], then=500)
    for device in (down_device, up_device):
        api.create_device(device)
    webhook_rule(api, uid, down_device, receiver.url(down_path), alarm=False)
    api.create_rule({
        "id": f"up-{uid}", "name": "up", "match": {"devices": [up_device]}, "condition": "temperature > 30",
        "actions": [{"type": "webhook", "url": receiver.url(up_path)}],
    })  # fmt: skip
    counters = Counters(api)
    api.write(down_device, {"ts": BASE_MS, "temperature": 35})
    api.write(down_device, {"ts": BASE_MS + 1, "temperature": 20})
    counters.wait_for(failed=CIRCUIT_FAILURES)
    api.write(down_device, {"ts": BASE_MS + 2, "temperature": 35})
    counters.wait_for(short_circuited=1)
    api.write(up_device, {"ts": BASE_MS, "temperature": 35})
    delivery = receiver.wait_for(up_path, 1)[0]
    assert delivery.status == 200 and delivery.body["device_id"] == up_device
    counters.wait_for(delivered=1)
