"""Webhooks to `https://` receivers: the certificate is checked. The server trusts the
roots of `webhooks.ca_file` (an internal CA made here with openssl); a receiver whose
certificate comes from another CA gets no delivery, and the failure is counted."""

from __future__ import annotations

import ssl
import subprocess
import tempfile
from pathlib import Path

import pytest

from fleet import WebhookReceiver, assert_problem
from test_webhooks import Counters, webhook_rule

CERTS = Path(tempfile.mkdtemp(prefix="fleetwire-webhook-tls-"))


def make_ca_and_leaf(name: str) -> tuple[Path, Path, Path]:
    """A CA and a server certificate it signed for 127.0.0.1; returns (ca, leaf, key)."""
    ca_key, ca, key, request, leaf = (CERTS / f"{name}.{suffix}" for suffix in ("ca.key", "ca.pem", "key", "csr", "pem"))
    extensions = CERTS / f"{name}.ext"
    extensions.write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    for command in (
        ["req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", f"/CN={name} test CA"],
        ["req", *ec, "-keyout", key, "-out", request, "-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", request, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", leaf,
         "-days", "2", "-extfile", extensions],
    ):  # fmt: skip
        subprocess.run(["openssl", *map(str, command)], check=True, capture_output=True)
    return ca, leaf, key


TRUSTED_CA, TRUSTED_LEAF, TRUSTED_KEY = make_ca_and_leaf("trusted")
_, ROGUE_LEAF, ROGUE_KEY = make_ca_and_leaf("rogue")

FLEETWIRE_ENV = {
    "FLEETWIRE_WEBHOOKS__CA_FILE": str(TRUSTED_CA),
    "FLEETWIRE_WEBHOOKS__ATTEMPTS": "2",
    "FLEETWIRE_WEBHOOKS__FIRST_BACKOFF_MS": "50",
}


def https_receiver(leaf: Path, key: Path) -> WebhookReceiver:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(leaf, key)
    return WebhookReceiver(tls=context)


@pytest.fixture(scope="module")
def trusted():
    server = https_receiver(TRUSTED_LEAF, TRUSTED_KEY)
    yield server
    server.close()


@pytest.fixture(scope="module")
def rogue():
    server = https_receiver(ROGUE_LEAF, ROGUE_KEY)
    yield server
    server.close()


def test_https_webhook_is_delivered_to_a_receiver_the_configured_ca_signed(api, trusted, uid):
    device, path = f"tls-{uid}", f"/hooks/{uid}"
    api.create_device(device)
    counters = Counters(api)
    rule = webhook_rule(api, uid, device, trusted.url(path))
    assert rule["actions"][-1]["url"].startswith("https://")
    api.write(device, {"temperature": 35})
    delivery = trusted.wait_for(path, 1)[0]
    assert delivery.body["event"] == "raised" and delivery.body["device_id"] == device
    counters.wait_for(delivered=1, failed=0)


def test_a_receiver_with_a_certificate_from_another_ca_gets_nothing(api, rogue, uid):
    device, path = f"rogue-{uid}", f"/hooks/{uid}"
    api.create_device(device)
    counters = Counters(api)
    webhook_rule(api, uid, device, rogue.url(path))
    api.write(device, {"temperature": 35})
    counters.wait_for(delivered=0, failed=1)
    assert rogue.received(path) == [], "the body went to a server whose certificate was not trusted"


def test_a_webhook_url_must_be_http_or_https(api, uid):
    response = api.post("/api/v1/rules", {
        "id": f"ftp-{uid}", "name": "bad", "match": {}, "condition": "temperature > 1",
        "actions": [{"type": "webhook", "url": "ftp://127.0.0.1/x"}],
    })  # fmt: skip
    assert_problem(response, 422, "http(s)://")
