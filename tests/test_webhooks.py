"""The webhooks of ``newsletter serve`` over real HTTP (uvicorn on a loopback port,
httpx), recording into a real SQLite store: each service's requests signed in the test
with the test's own keys (an RSA certificate for SNS, served over local HTTPS; an HMAC
key for Mailgun; an ECDSA P-256 key for SendGrid; Basic auth for Postmark), the payloads
those services document (tests/fixtures/webhooks/). No request leaves this machine."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import http.server
import json
import logging
import re
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from composer.config import Config, load_config
from composer.errors import ConfigError, WebhookRefused
from composer.store import NewSubscriber, SubscriberStore, open_store
from composer.web.esp.sns import SnsFetcher
from composer.web.serve import create_app
from tests.conftest import ROOT, both_backends, start_in_thread

FIXTURES = ROOT / "tests" / "fixtures" / "webhooks"
TOPIC = "arn:aws:sns:us-east-1:123456789012:ses-feedback"
READERS = ("jane@example.com", "richard@example.com", "bob@example.com", "eve@example.com")
MAILGUN_KEY = "key-mailgun-signing-0123456789abcdef"
POSTMARK_PASSWORD = "postmark-webhook-password-4242"

WEBHOOKS = f"""
[webhooks]
services = ["ses", "postmark", "mailgun", "sendgrid"]
ses_topic_arn = "{TOPIC}"
"""


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


# -- the SNS side: a signing certificate served over local HTTPS ------------------------


class SnsStandIn:
    """What SNS's own hosts do for a subscriber, on 127.0.0.1 over HTTPS: serve the
    signing certificate, and take subscription confirmations; ``requests`` lists the
    paths asked for. ``sign`` signs a message as SNS does."""

    def __init__(self, ca: trustme.CA) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
        now = dt.datetime.now(dt.UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .sign(self.key, hashes.SHA256())
        )
        self.requests: list[str] = []
        pem = self.certificate.public_bytes(serialization.Encoding.PEM)
        stand_in = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stand_in.requests.append(self.path)
                body = pem if self.path.endswith(".pem") else b"<ConfirmSubscriptionResponse/>"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(context)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.base = f"https://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        client = ssl.create_default_context()
        ca.configure_trust(client)
        # The fetcher the test app uses: production's, but for this host.
        self.fetcher = SnsFetcher(hosts=re.compile(r"127\.0\.0\.1:\d+"), context=client)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def message(
        self, kind: str = "Notification", version: int = 2, **fields: str
    ) -> dict[str, str]:
        """A signed SNS message of ``kind``: a notification carrying ``Message``, or a
        subscription confirmation."""
        message = {
            "Type": kind,
            "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
            "TopicArn": TOPIC,
            "Message": "{}",
            "Timestamp": dt.datetime.now(dt.UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "SignatureVersion": str(version),
            "SigningCertURL": f"{self.base}/SimpleNotificationService-test.pem",
        }
        if kind != "Notification":
            message["Token"] = "2336412f37fb687f5d51e6e2425f004ae"
            message["SubscribeURL"] = (
                f"{self.base}/?Action=ConfirmSubscription&TopicArn={TOPIC}&Token=2336412f37f"
            )
        message.update(fields)
        return self.sign(message, version)

    def sign(self, message: dict[str, str], version: int) -> dict[str, str]:
        # The canonical string as SNS documents it, spelled out here on its own.
        if message["Type"] == "Notification":
            names = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
        else:
            names = [
                "Message",
                "MessageId",
                "SubscribeURL",
                "Timestamp",
                "Token",
                "TopicArn",
                "Type",
            ]
        text = "".join(f"{name}\n{message[name]}\n" for name in names if name in message)
        digest = hashes.SHA1() if version == 1 else hashes.SHA256()
        signature = self.key.sign(text.encode(), padding.PKCS1v15(), digest)
        return {**message, "Signature": base64.b64encode(signature).decode()}


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def sns(ca: trustme.CA) -> Iterator[SnsStandIn]:
    stand_in = SnsStandIn(ca)
    yield stand_in
    stand_in.close()


# -- the service under test -------------------------------------------------------------


@pytest.fixture
def sendgrid_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def hooks_config(
    config_path: Path, monkeypatch: pytest.MonkeyPatch, sendgrid_key: ec.EllipticCurvePrivateKey
) -> Config:
    config_path.write_text(config_path.read_text(encoding="utf-8") + WEBHOOKS, encoding="utf-8")
    public = sendgrid_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    monkeypatch.setenv("NEWSLETTER_MAILGUN_SIGNING_KEY", MAILGUN_KEY)
    monkeypatch.setenv("NEWSLETTER_POSTMARK_PASSWORD", POSTMARK_PASSWORD)
    monkeypatch.setenv("NEWSLETTER_SENDGRID_PUBLIC_KEY", base64.b64encode(public).decode())
    return load_config(config_path)


@pytest.fixture
def readers(hooks_config: Config) -> Iterator[SubscriberStore]:
    with open_store(hooks_config.subscribers) as store:
        for email in READERS:
            store.save(NewSubscriber(email=email, key=email))
        yield store


def serving(app: Any) -> Iterator[httpx.Client]:
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    )
    thread, port = start_in_thread(server)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        yield client
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def client(
    hooks_config: Config, sns: SnsStandIn, readers: SubscriberStore
) -> Iterator[httpx.Client]:
    yield from serving(create_app(hooks_config, sns_fetcher=sns.fetcher))


def statuses(store: SubscriberStore) -> dict[str, str]:
    return {s.email: s.status for s in store.iter_all()}


def unchanged(store: SubscriberStore) -> bool:
    return set(statuses(store).values()) == {"active"} and store.recent_feedback() == []


# -- Amazon SES through SNS -------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2])
def test_ses_bounce_signed_by_sns_marks_each_recipient_bounced(client, sns, readers, version):
    message = sns.message(version=version, Message=json.dumps(fixture("ses-bounce.json")))
    response = client.post("/webhooks/ses", json=message)
    assert response.status_code == 200, response.text
    assert response.json() == {"effects": ["bounced", "bounced"]}
    assert statuses(readers)["jane@example.com"] == "bounced"
    assert statuses(readers)["richard@example.com"] == "bounced"
    recorded = {r.feedback.recipient: r.feedback for r in readers.recent_feedback()}
    jane = recorded["jane@example.com"]
    assert jane.kind == "hard" and jane.source == "ses"
    assert jane.message_id == "<issue-7.jane@news.example.com>"
    assert "5.1.1" in jane.reason and "User unknown" in jane.reason


def test_ses_complaint_and_transient_bounce_are_a_complaint_and_a_soft_bounce(client, sns, readers):
    complaint = sns.message(Message=json.dumps(fixture("ses-complaint.json")))
    transient = sns.message(Message=json.dumps(fixture("ses-transient-bounce.json")))
    assert client.post("/webhooks/ses", json=complaint).json() == {"effects": ["complained"]}
    assert client.post("/webhooks/ses", json=transient).json() == {"effects": ["counted"]}
    assert statuses(readers)["richard@example.com"] == "complained"
    assert statuses(readers)["jane@example.com"] == "active"


def test_ses_delivery_notifications_record_nothing(client, sns, readers):
    message = sns.message(Message=json.dumps(fixture("ses-delivery.json")))
    assert client.post("/webhooks/ses", json=message).json() == {"effects": []}
    assert unchanged(readers)


def test_ses_notification_sent_twice_changes_nothing_the_second_time(client, sns, readers):
    message = sns.message(Message=json.dumps(fixture("ses-bounce.json")))
    client.post("/webhooks/ses", json=message)
    before = [(s.email, s.status, s.status_changed_at) for s in readers.iter_all()]
    again = client.post("/webhooks/ses", json=message)
    assert again.json() == {"effects": ["duplicate", "duplicate"]}
    assert [(s.email, s.status, s.status_changed_at) for s in readers.iter_all()] == before
    assert len(readers.recent_feedback()) == 2


def test_ses_message_altered_or_signed_by_another_key_is_refused(client, sns, readers, ca):
    genuine = sns.message(Message=json.dumps(fixture("ses-bounce.json")))
    altered = {**genuine, "Message": json.dumps(fixture("ses-complaint.json"))}
    forger = SnsStandIn(ca)
    try:
        forged = forger.sign({k: v for k, v in genuine.items() if k != "Signature"}, 2)
    finally:
        forger.close()
    unsigned = {k: v for k, v in genuine.items() if k != "Signature"}
    version_0 = {**genuine, "SignatureVersion": "0"}
    for message in (altered, forged, unsigned, version_0):
        response = client.post("/webhooks/ses", json=message)
        assert response.status_code == 401, message
    assert unchanged(readers)


def test_ses_message_with_a_stale_timestamp_is_refused(client, sns, readers):
    old = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=6)).isoformat().replace("+00:00", "Z")
    message = sns.message(Message=json.dumps(fixture("ses-bounce.json")), Timestamp=old)
    assert client.post("/webhooks/ses", json=message).status_code == 401
    assert unchanged(readers)


def test_ses_message_from_another_topic_is_refused_without_fetching_anything(client, sns, readers):
    message = sns.message(
        Message=json.dumps(fixture("ses-bounce.json")),
        TopicArn="arn:aws:sns:us-east-1:999999999999:someone-elses",
    )
    assert client.post("/webhooks/ses", json=message).status_code == 401
    assert sns.requests == []
    assert unchanged(readers)


def test_the_signing_certificate_is_fetched_once_and_then_cached(client, sns, readers):
    for name in ("ses-bounce.json", "ses-complaint.json", "ses-delivery.json"):
        response = client.post("/webhooks/ses", json=sns.message(Message=json.dumps(fixture(name))))
        assert response.status_code == 200
    assert sns.requests == ["/SimpleNotificationService-test.pem"]


def test_subscription_confirmation_is_confirmed_through_its_subscribe_url(client, sns, readers):
    response = client.post("/webhooks/ses", json=sns.message("SubscriptionConfirmation"))
    assert response.status_code == 200
    assert sns.requests[-1].startswith("/?Action=ConfirmSubscription&TopicArn=")
    assert unchanged(readers)


def test_subscription_confirmation_with_a_subscribe_url_elsewhere_is_refused_unfetched(
    client, sns, readers
):
    message = sns.message(
        "SubscriptionConfirmation", SubscribeURL="https://attacker.example/?Action=Confirm"
    )
    assert client.post("/webhooks/ses", json=message).status_code == 401
    assert all(not path.startswith("/?") for path in sns.requests)


@pytest.mark.parametrize(
    "url",
    [
        "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-a.pem",
        "https://sns.us-east-1.amazonaws.com.attacker.example/SimpleNotificationService-a.pem",
        "https://attacker.example/sns.us-east-1.amazonaws.com/a.pem",
        "https://user@sns.us-east-1.amazonaws.com/SimpleNotificationService-a.pem",
        "https://sns.us-east-1.amazonaws.com:8443/SimpleNotificationService-a.pem",
        "https://s3.amazonaws.com/SimpleNotificationService-a.pem",
        "https://127.0.0.1/SimpleNotificationService-a.pem",
        "file:///etc/passwd",
    ],
)
def test_the_production_rule_refuses_any_certificate_url_but_https_sns_region_amazonaws_com(url):
    with pytest.raises(WebhookRefused):
        SnsFetcher().check(url)


def test_the_production_rule_accepts_sns_in_any_region():
    for region in ("us-east-1", "eu-west-2", "ap-southeast-1"):
        SnsFetcher().check(f"https://sns.{region}.amazonaws.com/SimpleNotificationService-a.pem")


def test_the_app_with_the_production_fetcher_refuses_a_local_certificate_before_fetching_it(
    hooks_config, sns, readers
):
    message = sns.message(Message=json.dumps(fixture("ses-bounce.json")))
    for client in serving(create_app(hooks_config)):
        assert client.post("/webhooks/ses", json=message).status_code == 401
    assert sns.requests == []
    assert unchanged(readers)


# -- Postmark -----------------------------------------------------------------------------


def test_postmark_bounce_with_the_basic_auth_credentials_is_recorded(client, readers):
    response = client.post(
        "/webhooks/postmark",
        json=fixture("postmark-hard-bounce.json"),
        auth=("postmark", POSTMARK_PASSWORD),
    )
    assert response.json() == {"effects": ["bounced"]}
    spam = client.post(
        "/webhooks/postmark",
        json=fixture("postmark-spam-complaint.json"),
        auth=("postmark", POSTMARK_PASSWORD),
    )
    assert spam.json() == {"effects": ["complained"]}
    assert statuses(readers)["jane@example.com"] == "bounced"
    assert statuses(readers)["richard@example.com"] == "complained"


def test_postmark_delivery_records_nothing(client, readers):
    response = client.post(
        "/webhooks/postmark",
        json=fixture("postmark-delivery.json"),
        auth=("postmark", POSTMARK_PASSWORD),
    )
    assert response.json() == {"effects": []}
    assert unchanged(readers)


@pytest.mark.parametrize(
    "auth", [None, ("postmark", "wrong"), ("someone", POSTMARK_PASSWORD), ("", "")]
)
def test_postmark_without_its_credentials_is_refused_401(client, readers, auth):
    response = client.post(
        "/webhooks/postmark", json=fixture("postmark-hard-bounce.json"), auth=auth
    )
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic")
    assert unchanged(readers)


def test_postmark_bounce_sent_again_changes_nothing(client, readers):
    for _ in range(2):
        response = client.post(
            "/webhooks/postmark",
            json=fixture("postmark-hard-bounce.json"),
            auth=("postmark", POSTMARK_PASSWORD),
        )
    assert response.json() == {"effects": ["duplicate"]}
    assert len(readers.recent_feedback()) == 1


# -- Mailgun ------------------------------------------------------------------------------


def mailgun(event: dict[str, Any], *, key: str = MAILGUN_KEY, age: float = 0) -> dict[str, Any]:
    timestamp = str(int(time.time() - age))
    token = "a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0"
    signature = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    return {"signature": {"timestamp": timestamp, "token": token, "signature": signature}, **event}


def test_mailgun_events_signed_with_the_signing_key_are_recorded(client, readers):
    failed = client.post(
        "/webhooks/mailgun", json=mailgun(fixture("mailgun-failed-permanent.json"))
    )
    assert failed.json() == {"effects": ["bounced"]}
    complained = client.post("/webhooks/mailgun", json=mailgun(fixture("mailgun-complained.json")))
    assert complained.json() == {"effects": ["complained"]}
    jane = [r for r in readers.recent_feedback() if r.feedback.recipient == "jane@example.com"]
    assert jane[0].feedback.message_id == "<issue-7.jane@news.example.com>"
    assert "550" in jane[0].feedback.reason


def test_mailgun_temporary_failure_is_a_soft_bounce(client, readers):
    event = fixture("mailgun-failed-permanent.json")
    event["event-data"]["severity"] = "temporary"
    assert client.post("/webhooks/mailgun", json=mailgun(event)).json() == {"effects": ["counted"]}


def test_mailgun_with_a_bad_signature_a_stale_timestamp_or_none_is_refused(client, readers):
    event = fixture("mailgun-failed-permanent.json")
    tampered = mailgun(event)
    tampered["signature"]["token"] = "another-token-entirely-0000000000000000000000000"
    for payload in (
        mailgun(event, key="not-the-signing-key-0000000000000"),
        mailgun(event, age=301),
        tampered,
        event,
    ):
        assert client.post("/webhooks/mailgun", json=payload).status_code == 401
    assert unchanged(readers)


def test_mailgun_event_sent_again_changes_nothing(client, readers):
    event = fixture("mailgun-failed-permanent.json")
    client.post("/webhooks/mailgun", json=mailgun(event))
    assert client.post("/webhooks/mailgun", json=mailgun(event)).json() == {
        "effects": ["duplicate"]
    }


# -- SendGrid -----------------------------------------------------------------------------


def sendgrid(
    key: ec.EllipticCurvePrivateKey, body: bytes, *, age: float = 0, signed: bytes | None = None
) -> dict[str, str]:
    timestamp = str(int(time.time() - age))
    signature = key.sign(
        timestamp.encode() + (body if signed is None else signed), ec.ECDSA(hashes.SHA256())
    )
    return {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        "Content-Type": "application/json",
    }


@both_backends
def test_sendgrid_signed_events_are_recorded_each_by_its_kind(client, readers, sendgrid_key):
    body = (FIXTURES / "sendgrid-events.json").read_bytes()
    response = client.post("/webhooks/sendgrid", content=body, headers=sendgrid(sendgrid_key, body))
    assert response.status_code == 200, response.text
    # bounce, spamreport, deferred (a soft bounce), dropped for a bounced address; the
    # delivered event records nothing.
    assert response.json() == {"effects": ["bounced", "complained", "counted", "bounced"]}
    assert statuses(readers) == {
        "jane@example.com": "bounced",
        "richard@example.com": "complained",
        "bob@example.com": "active",
        "eve@example.com": "bounced",
    }


def test_sendgrid_with_a_bad_or_missing_signature_or_a_stale_timestamp_is_refused(
    client, readers, sendgrid_key
):
    body = (FIXTURES / "sendgrid-events.json").read_bytes()
    other = ec.generate_private_key(ec.SECP256R1())
    cases = [
        sendgrid(other, body),
        sendgrid(sendgrid_key, body, age=301),
        sendgrid(sendgrid_key, body, signed=body.replace(b"bounce", b"open")),
        {"Content-Type": "application/json"},
        {
            "X-Twilio-Email-Event-Webhook-Signature": sendgrid(sendgrid_key, body)[
                "X-Twilio-Email-Event-Webhook-Signature"
            ],
            "Content-Type": "application/json",
        },
    ]
    for headers in cases:
        response = client.post("/webhooks/sendgrid", content=body, headers=headers)
        assert response.status_code == 401, headers
    assert unchanged(readers)


@both_backends
def test_sendgrid_batch_sent_again_changes_nothing(client, readers, sendgrid_key):
    body = (FIXTURES / "sendgrid-events.json").read_bytes()
    client.post("/webhooks/sendgrid", content=body, headers=sendgrid(sendgrid_key, body))
    again = client.post("/webhooks/sendgrid", content=body, headers=sendgrid(sendgrid_key, body))
    assert again.json() == {"effects": ["duplicate"] * 4}


# -- what every webhook shares ------------------------------------------------------------


def test_a_service_not_configured_has_no_route(config, store):
    for client in serving(create_app(config)):
        for service in ("ses", "postmark", "mailgun", "sendgrid", "other"):
            assert client.post(f"/webhooks/{service}", json={}).status_code == 404


def test_only_the_services_listed_are_answered(config_path, monkeypatch):
    config_path.write_text(
        config_path.read_text(encoding="utf-8") + '\n[webhooks]\nservices = ["mailgun"]\n'
    )
    monkeypatch.setenv("NEWSLETTER_MAILGUN_SIGNING_KEY", MAILGUN_KEY)
    for client in serving(create_app(load_config(config_path))):
        assert client.post("/webhooks/postmark", json={}).status_code == 404
        assert client.post("/webhooks/mailgun", json={}).status_code == 401


def test_webhooks_take_larger_bodies_than_the_other_routes_and_no_larger_than_their_cap(
    client, readers
):
    large = b"[" + b" " * (200 * 1024) + b"]"
    # Past the 4 KiB of the other routes, it reaches the verifier (no signature: 401).
    assert client.post("/webhooks/sendgrid", content=large).status_code == 401
    too_large = b"[" + b" " * (257 * 1024) + b"]"
    assert client.post("/webhooks/sendgrid", content=too_large).status_code == 413
    assert client.post("/unsubscribe", content=b"x" * 8192).status_code == 413


def test_a_secret_missing_from_the_environment_stops_serve_naming_its_variable(
    hooks_config, monkeypatch
):
    monkeypatch.delenv("NEWSLETTER_MAILGUN_SIGNING_KEY")
    with pytest.raises(ConfigError, match="NEWSLETTER_MAILGUN_SIGNING_KEY"):
        create_app(hooks_config)


def test_a_sendgrid_key_that_is_not_a_p256_public_key_is_one_config_error(
    hooks_config, monkeypatch
):
    monkeypatch.setenv("NEWSLETTER_SENDGRID_PUBLIC_KEY", "bm90IGEga2V5")
    with pytest.raises(ConfigError, match=r"NEWSLETTER_SENDGRID_PUBLIC_KEY.*not a public key"):
        create_app(hooks_config)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('services = ["mailchimp"]', "[webhooks] services may list ses, postmark"),
        ('services = ["ses"]', "[webhooks] ses_topic_arn must be the ARN"),
        ('services = ["ses"]\nses_topic_arn = "arn:aws:sqs:us-east-1:1:x"', "ses_topic_arn"),
        ("max_age = 0", "[webhooks] max_age must be a number of seconds above 0"),
    ],
)
def test_webhook_settings_are_checked_when_config_is_read(config_path, text, problem):
    config_path.write_text(config_path.read_text(encoding="utf-8") + f"\n[webhooks]\n{text}\n")
    with pytest.raises(ConfigError) as raised:
        load_config(config_path)
    assert problem in raised.value.format_message()


def test_refusals_are_logged_without_the_secrets(client, readers, caplog, sendgrid_key):
    caplog.set_level(logging.INFO)
    event = fixture("mailgun-failed-permanent.json")
    client.post("/webhooks/mailgun", json=mailgun(event, key="wrong-key-000000000000000"))
    client.post("/webhooks/postmark", json={}, auth=("postmark", "wrong"))
    client.post("/webhooks/mailgun", json=mailgun(event))
    logged = caplog.text
    assert "/webhooks/mailgun refused" in logged and "/webhooks/postmark refused" in logged
    assert MAILGUN_KEY not in logged and POSTMARK_PASSWORD not in logged


def test_a_verified_request_that_cannot_be_read_is_400_and_junk_never_a_500(client, readers):
    assert client.post("/webhooks/mailgun", json=mailgun({})).status_code == 400
    broken = mailgun({"event-data": {"event": "failed", "severity": "permanent"}})
    assert client.post("/webhooks/mailgun", json=broken).status_code == 400
    for service in ("ses", "postmark", "mailgun", "sendgrid"):
        for junk in (b"not json", b"[]", b"{}", b'"text"', b"\xff"):
            response = client.post(f"/webhooks/{service}", content=junk)
            assert response.status_code in (400, 401), (service, junk)
    assert unchanged(readers)
