"""Signing up on `newsletter serve`: the form, its defences against abuse, the
confirmation and welcome emails (through a real SMTP server), and `newsletter embed`."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import sqlite3
import time

import pytest

from composer.config import load_config
from composer.confirm_links import ConfirmLinks
from composer.store import NewSubscriber, open_store
from composer.web.throttle import RateLimit, client_address
from tests.conftest import SECRET, both_backends, newsletter, with_settings
from tests.joining import (
    aged_token,
    body,
    confirm_link,
    running_service,
    signup,
    wait_for_mail,
)


def subscriber(config_path, key):
    with open_store(load_config(config_path).subscribers) as store:
        return store.get(key)


def settle(seconds: float = 0.5) -> None:
    """Give the background sender time to send anything it (wrongly) would."""
    time.sleep(seconds)


@both_backends
def test_a_signup_is_confirmed_by_a_post_and_welcomed_with_unsubscribe_headers(send_config, smtp):
    with running_service(send_config) as service:
        page = service.client.get("/subscribe", params={"email": "ann@example.org"})
        assert page.status_code == 200 and 'value="ann@example.org"' in page.text
        assert page.headers["referrer-policy"] == "same-origin"
        assert signup(service, "Ann@example.org", name="Ann").status_code == 200
        assert subscriber(send_config, "ann@example.org").status == "pending"
        (confirmation,) = wait_for_mail(smtp, 1)
        assert "List-Unsubscribe" not in confirmation
        assert "You did not ask? Ignore this email" in body(confirmation)
        assert "Ann\n" not in body(confirmation), "nothing typed in the form is echoed"

        link = confirm_link(confirmation).removeprefix(service.url)
        shown = service.client.get(link)
        assert shown.status_code == 200 and "Confirm" in shown.text
        settle()
        assert subscriber(send_config, "ann@example.org").status == "pending", "GET changes nothing"
        assert service.client.post(link, headers={"Origin": service.url}).status_code == 200
        assert subscriber(send_config, "ann@example.org").status == "active"
        welcome = wait_for_mail(smtp, 2)[1]
        assert welcome["Subject"] == "Welcome aboard"
        assert "/unsubscribe?token=" in welcome["List-Unsubscribe"]
        assert welcome["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        # A second click on the link changes nothing and welcomes no one twice.
        assert service.client.post(link).status_code == 200
        settle()
    assert len(smtp.messages()) == 2


def test_the_answer_is_the_same_for_new_pending_active_and_departed_addresses(send_config, smtp):
    with open_store(load_config(send_config).subscribers) as store:
        store.save(NewSubscriber(email="active@example.org", key="active@example.org"))
        store.save(NewSubscriber(email="gone@example.org", key="gone@example.org"))
        store.mark_status("gone@example.org", "unsubscribed", "asked")
    with running_service(send_config) as service:
        signup(service, "pending@example.org")
        answers = [
            signup(service, address)
            for address in (
                "new@example.org",
                "pending@example.org",
                "active@example.org",
                "gone@example.org",
            )
        ]
        settle()
    first = answers[0]
    for answer in answers[1:]:
        assert answer.status_code == first.status_code == 200
        assert answer.content == first.content
        assert {k: v for k, v in answer.headers.items() if k != "date"} == {
            k: v for k, v in first.headers.items() if k != "date"
        }
    assert subscriber(send_config, "gone@example.org").status == "unsubscribed"
    received = smtp.received()
    assert "active@example.org" not in received, "an active reader is sent nothing"
    assert received["pending@example.org"] == 1, "one confirmation a day"


def test_fifty_quick_posts_from_one_client_are_limited_and_send_one_confirmation(send_config, smtp):
    with running_service(send_config) as service:
        answers = [signup(service, "ann@example.org") for _ in range(50)]
        settle(1.0)
    codes = [answer.status_code for answer in answers]
    assert codes[:10] == [200] * 10 and set(codes[10:]) == {429}
    assert int(answers[-1].headers["retry-after"]) > 0
    assert smtp.received() == {"ann@example.org": 1}


@both_backends
def test_one_address_from_many_clients_gets_one_confirmation_a_day(send_config, smtp):
    with_settings(send_config, "subscribe", trusted_proxies='["127.0.0.1"]')
    with running_service(send_config) as service:
        for n in range(20):
            forwarded = {"X-Forwarded-For": f"203.0.113.{n}"}
            response = service.client.post(
                "/subscribe",
                data={"email": "ann@example.org", "token": aged_token(), "website": ""},
                headers=forwarded,
            )
            assert response.status_code == 200
        settle(1.0)
    assert smtp.received() == {"ann@example.org": 1}


@pytest.mark.parametrize(
    "fields",
    [{"website": "http://spam.example"}, {"token": "made just now"}],
    ids=["honeypot", "too-fast"],
)
def test_a_filled_honeypot_or_a_post_faster_than_a_person_sends_nothing(send_config, smtp, fields):
    with running_service(send_config) as service:
        if "token" in fields:
            fields = {"token": aged_token(0.5)}
        assert signup(service, "ann@example.org", **fields).status_code == 200
        settle()
    assert subscriber(send_config, "ann@example.org") is None
    assert smtp.messages() == []


def test_a_forged_token_or_another_origin_is_refused_and_sends_nothing(send_config, smtp):
    with running_service(send_config) as service:
        assert signup(service, "a@example.org", token="x.y").status_code == 400
        elsewhere = service.client.post(
            "/subscribe",
            data={"email": "b@example.org", "token": aged_token(), "website": ""},
            headers={"Origin": "https://attacker.example"},
        )
        assert elsewhere.status_code == 403
        settle()
    assert smtp.messages() == []


def test_without_double_opt_in_a_signup_is_welcomed_but_a_departed_reader_must_confirm(
    send_config, smtp
):
    with_settings(send_config, "subscribe", double_opt_in="false")
    with open_store(load_config(send_config).subscribers) as store:
        store.save(NewSubscriber(email="gone@example.org", key="gone@example.org"))
        store.mark_status("gone@example.org", "unsubscribed", "asked")
    with running_service(send_config) as service:
        signup(service, "new@example.org")
        signup(service, "gone@example.org")
        messages = wait_for_mail(smtp, 2)
    subjects = {str(m["To"]): str(m["Subject"]) for m in messages}
    assert subjects["new@example.org"] == "Welcome aboard"
    assert subjects["gone@example.org"].startswith("Confirm your subscription")
    assert subscriber(send_config, "new@example.org").status == "active"
    assert subscriber(send_config, "gone@example.org").status == "unsubscribed"


def test_every_link_in_the_welcome_opens_a_page_and_manage_opens_the_readers_own(send_config, smtp):
    # The welcome is no issue: it has no web version to view or share, and its manage
    # link must carry the reader's token like an issue's does.
    with_settings(send_config, "subscribe", double_opt_in="false")
    with running_service(send_config) as service:
        signup(service, "new@example.org")
        (welcome,) = wait_for_mail(smtp, 1)
        html = str(welcome.get_body(("html",)).get_content())
        links = {*re.findall(r'href="([^"]+)"', html), *re.findall(r"https?://\S+", body(welcome))}
        own = sorted({link.replace("&amp;", "&") for link in links if link.startswith(service.url)})
        assert own, links
        assert not any("/issues/" in link for link in own), own
        assert "Share this issue" not in body(welcome)
        for link in own:
            page = service.client.get(link.removeprefix(service.url))
            assert page.status_code == 200, link
        [manage] = {link for link in own if "/manage" in link}
        assert "new@example.org" in service.client.get(manage.removeprefix(service.url)).text


def test_an_expired_or_altered_confirmation_link_changes_nothing(send_config, smtp):
    with running_service(send_config) as service:
        links = ConfirmLinks(service.url, SECRET.encode())
        expired = links.url("ann@example.org", "ann@example.org", _past())
        assert service.client.post(expired.removeprefix(service.url)).status_code == 400
        valid = links.url("ann@example.org", "ann@example.org", _future())
        altered = valid.removeprefix(service.url)[:-2] + "xx"
        assert service.client.post(altered).status_code == 400
    assert subscriber(send_config, "ann@example.org") is None


def test_the_embedded_form_opens_the_service_s_own_form_and_sends_nothing(
    send_config, smtp, run_cli
):
    with running_service(send_config) as service:
        printed = run_cli("embed")
        assert printed.exit_code == 0, printed.output
        assert f'action="{service.url}/subscribe"' in printed.output
        token = re.search(r'name="token" value="([^"]+)"', printed.output).group(1)
        posted = service.client.post(
            "/subscribe",
            data={"email": "ann@example.org", "token": token},
            headers={"Origin": "https://friend.example"},
        )
        assert posted.status_code == 200
        assert 'value="ann@example.org"' in posted.text and "One more step" in posted.text
        settle()
    assert subscriber(send_config, "ann@example.org") is None
    assert smtp.messages() == []


def test_the_client_is_the_peer_unless_the_peer_is_a_trusted_proxy():
    proxies = [ipaddress.ip_network("10.0.0.0/8")]
    assert client_address("198.51.100.7", "1.2.3.4", proxies) == "198.51.100.7"
    assert client_address("10.0.0.2", "6.6.6.6, 198.51.100.7, 10.0.0.9", proxies) == (
        "198.51.100.7"
    )
    assert client_address("10.0.0.2", "", proxies) == "10.0.0.2"


def test_a_client_on_ipv6_is_counted_by_its_network():
    limit = RateLimit(2)
    assert limit.take("2001:db8::1", 0) == 0
    assert limit.take("2001:db8::2", 0) == 0
    assert limit.take("2001:db8::3", 0) > 0
    assert limit.take("2001:db8:1::1", 0) == 0


def _past() -> dt.datetime:
    return dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)


def _future() -> dt.datetime:
    return dt.datetime.now(dt.UTC) + dt.timedelta(days=1)


def test_mail_refused_for_now_is_retried_and_mail_refused_for_good_is_recorded(send_config, smtp):
    smtp.handler.faults = {
        "later@example.org": ["451 4.7.1 greylisted, try again"],
        "nobody@example.org": ["550 5.1.1 no such user"],
    }
    with running_service(send_config) as service:
        for address in ("later@example.org", "nobody@example.org"):
            signup(service, address)
        wait_for_mail(smtp, 1, timeout=20)  # after its back-off of 1 to 2 s
        settle()
    assert smtp.received() == {"later@example.org": 1}
    with sqlite3.connect(load_config(send_config).subscribers.database) as db:
        rows = db.execute("SELECT email, state, attempts, reply FROM mail_queue ORDER BY id")
        (later, nobody) = rows.fetchall()
    assert later[:3] == ("later@example.org", "sent", 2)
    assert nobody[:3] == ("nobody@example.org", "failed", 1)
    assert "550 5.1.1 no such user" in nobody[3]


def test_a_trusted_proxy_that_is_not_an_address_is_one_line_naming_it(config_path, run_cli):
    with_settings(config_path, "subscribe", trusted_proxies='["10.0.0.0/8", "proxy.local"]')
    result = run_cli("embed")
    assert result.exit_code == 2
    assert "[subscribe] trusted_proxies has 'proxy.local', not an address or network" in (
        result.output
    )


@pytest.mark.parametrize("welcome", ["issues", "undated.md"])
def test_serve_will_not_start_with_a_welcome_that_does_not_compose(config_path, welcome):
    (config_path.parent / "issues").mkdir(exist_ok=True)
    (config_path.parent / "undated.md").write_text('+++\ntitle = "Hello"\n+++\n\nHi.\n')
    with_settings(config_path, "subscribe", welcome=f'"{welcome}"')
    result = newsletter("serve", "--port", "0", config_path=config_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1
    assert f"{welcome}" in result.stderr and "[subscribe] welcome" in result.stderr
