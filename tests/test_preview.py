"""`newsletter preview` over real HTTP: the bytes build writes, a subscriber's copy, errors
shown instead of raised, and recomposition when the issue, a template or the config changes.
The page itself is driven in Chromium in test_preview_in_browser.py."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from composer.composing.build import build_issue
from composer.composing.templates import DEFAULT_TEMPLATES, copy_templates
from composer.errors import NewsletterError
from composer.store import NewSubscriber
from composer.unsubscribe import UnsubscribeLinks
from composer.web.listen import listen
from tests.conftest import EXAMPLE_MD, with_settings
from tests.previewing import (
    RunningPreview,
    copy_example,
    edit,
    running_preview,
    wait_until_watching,
)


@pytest.fixture
def example(tmp_path: Path) -> Path:
    return copy_example(tmp_path)


@pytest.fixture
def running(example: Path, config_path: Path) -> Iterator[RunningPreview]:
    with running_preview(example, config_path) as running:
        yield running


@pytest.mark.parametrize("tier", ["paid", "free"])
def test_email_is_exactly_the_bytes_build_writes(running, config, tier, tmp_path):
    built = build_issue(running.issue, config, tier, tmp_path / "build")
    html, text = (path.read_bytes() for path in built.files[:2])
    assert running.client.get("/email", params={"tier": tier}).content == html
    assert running.client.get("/email", params={"tier": tier, "format": "text"}).content == text


def test_state_has_subject_preheader_sizes_and_findings(running):
    # The findings follow the email by a moment after any recomposition (the watcher may
    # start with one), so wait for them as the page does.
    deadline = time.monotonic() + 5
    while (state := running.client.get("/state").json())["findings"] is None:
        assert time.monotonic() < deadline, "the check's findings never arrived"
        time.sleep(0.02)
    assert state["error"] is None
    assert state["subject"] == "The data pipeline behind the apps everyone uses"
    assert state["preheader"]
    assert 0 < state["sizes"]["free"] < state["sizes"]["paid"] < state["clip_bytes"] == 102 * 1024
    assert [f["severity"] for f in state["findings"]] == ["info"] * 5  # one a block


def test_as_a_subscriber_shows_their_tier_and_their_unsubscribe_link(running, config, store):
    ann = NewSubscriber(email="Ann@Example.com", key="ann@example.com", name="Ann", tier="free")
    store.save(ann)
    state = running.client.get("/state", params={"as": "Ann@EXAMPLE.com"}).json()
    assert state["reader"] == {
        "email": "Ann@Example.com",
        "name": "Ann",
        "tier": "free",
        "status": "active",
    }
    text = running.client.get(
        "/email", params={"as": "Ann@EXAMPLE.com", "tier": "paid", "format": "text"}
    ).text
    assert "Keep reading" in text  # her tier, whatever the toolbar asked for
    link = next(word for word in text.split() if "/unsubscribe?token=" in word)
    token = parse_qs(urlsplit(link.strip("<>()")).query)["token"][0]
    verified = UnsubscribeLinks.from_config(config).verify(token)
    assert (verified.key, verified.issue) == ("ann@example.com", "2024-05-03-example")


def test_as_someone_not_on_the_list_is_explained(running, store):
    state = running.client.get("/state", params={"as": "nobody@example.com"}).json()
    assert state["reader"] is None
    assert "not on the subscriber list" in state["reader_problem"]
    assert running.client.get("/email", params={"as": "nobody@example.com"}).status_code == 404


def test_a_broken_issue_is_shown_with_file_and_line_and_the_server_recovers(running):
    good = running.issue.read_text(encoding="utf-8")
    edit(running.issue, lambda text: text.replace("date = 2024-05-03", "date = someday"))
    state = running.wait_for(lambda state: state["error"] is not None)
    assert state["error"]["where"].startswith(f"{running.issue}:")
    assert state["error"]["reason"]
    assert running.client.get("/email").status_code == 503

    running.issue.write_text(good, encoding="utf-8")
    running.wait_for(lambda state: state["error"] is None)
    assert running.client.get("/email").status_code == 200


def test_a_template_or_config_edit_recomposes(example, config_path, tmp_path):
    templates = tmp_path / "templates"
    shutil.copytree(DEFAULT_TEMPLATES, templates)
    with running_preview(example, config_path) as running:
        edit(  # a template in a subfolder
            templates / "blocks" / "what-happened.mjml.j2",
            lambda text: text.replace("{{ block.body_html }}", "{{ block.body_html }}Edited!"),
        )
        wait_for_email_text(running, "Edited!")

        edit(templates / "email.mjml.j2", lambda text: text.replace("{{", "{%", 1))
        state = running.wait_for(lambda state: state["error"] is not None)
        assert state["error"]["where"] is None
        assert "email.mjml.j2" in state["error"]["reason"]

        edit(config_path, lambda text: text.replace('"China Boss News"', '"Renamed News"', 1))
        edit(templates / "email.mjml.j2", lambda text: text.replace("{%", "{{", 1))
        wait_for_email_text(running, "Renamed News")


def test_a_template_copied_into_the_newsletter_while_previewing_replaces_the_default(
    example, config, config_path
):
    own = config.newsletter.templates
    assert not own.exists()
    with running_preview(example, config_path) as running:
        copy_templates(own, ["what-happened"])
        edit(
            own / "blocks" / "what-happened.mjml.j2",
            lambda text: text.replace("{{ block.body_html }}", "{{ block.body_html }}Mine!"),
        )
        wait_for_email_text(running, "Mine!")
        wait_until_watching(running, own / "blocks" / "what-happened.mjml.j2")
        (own / "blocks" / "what-happened.mjml.j2").unlink()  # back to the default
        wait_until_gone(running, "Mine!")


def wait_until_gone(running: RunningPreview, text: str) -> None:
    deadline = time.monotonic() + 5
    while text in running.client.get("/email").text:
        assert time.monotonic() < deadline, f"{text!r} stayed in the email"
        time.sleep(0.02)


def wait_for_email_text(running: RunningPreview, text: str) -> None:
    deadline = time.monotonic() + 5
    while text not in running.client.get("/email").text:
        assert time.monotonic() < deadline, f"{text!r} never showed in the email"
        time.sleep(0.02)


def test_a_port_in_use_is_a_readable_error():
    taken = listen(0)
    try:
        with pytest.raises(NewsletterError, match="pass --port"):
            listen(taken.getsockname()[1])
    finally:
        taken.close()


def test_as_an_unknown_address_stops_before_serving(run_cli, store):
    result = run_cli("preview", EXAMPLE_MD, "--no-open", "--port", "0", "--as", "x@example.com")
    assert result.exit_code == 2
    assert "x@example.com is not on the subscriber list" in result.output


def test_ctrl_c_stops_cleanly_even_with_a_page_connected(config_path, example):
    command = [sys.executable, "-m", "composer", "preview", str(example), "--no-open"]
    process = subprocess.Popen(
        [*command, "--port", "0", "--config", str(config_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = ""
        while "Previewing" not in line:
            line = process.stdout.readline()
            assert line, process.stderr.read() if process.stderr else "no output"
        url = line.split(" at ")[1].split()[0]
        with httpx.stream("GET", url + "events", timeout=10) as events:
            assert next(events.iter_lines()).startswith("retry:")
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=10)
    finally:
        process.kill()
    assert process.returncode == 0
    assert "Stopped." in out
    assert "Traceback" not in err


# -- send-test ---------------------------------------------------------------------------

FROM_THE_PAGE = {"X-Newsletter-Preview": "1"}


@pytest.fixture
def sending(example: Path, send_config: Path) -> Iterator[RunningPreview]:
    """The preview with [smtp] pointing at the test SMTP server and two test recipients."""
    edit(
        send_config,
        lambda text: text.replace(
            '"editor@example.com"]', '"editor@example.com", "proof@example.com"]'
        ),
    )
    with running_preview(example, send_config) as running:
        yield running


def test_send_test_sends_the_chosen_tier_to_each_test_recipient(sending, smtp):
    response = sending.client.post("/send-test", json={"tier": "free"}, headers=FROM_THE_PAGE)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "sent": 2,
        "recipients": ["editor@example.com", "proof@example.com"],
        "failed": [],
        "error": None,
    }
    assert smtp.received() == {"editor@example.com": 1, "proof@example.com": 1}
    for message in smtp.messages():
        assert message["Subject"] == "[TEST] The data pipeline behind the apps everyone uses"
        assert "Keep reading" in message.get_body(("plain",)).get_content()


def test_send_test_reports_each_refused_address_with_the_servers_reply(sending, smtp):
    smtp.handler.faults["proof@example.com"] = ["550 5.1.1 No such user"]
    response = sending.client.post("/send-test?tier=paid", headers=FROM_THE_PAGE)
    assert response.json()["sent"] == 1
    assert response.json()["failed"] == [
        {"address": "proof@example.com", "code": 550, "reply": "5.1.1 No such user"}
    ]
    [message] = smtp.messages()
    assert "Keep reading" not in message.get_body(("plain",)).get_content()


def test_send_test_not_from_the_page_is_refused_and_sends_nothing(sending, smtp):
    for headers in (
        {},  # a plain cross-site form
        {**FROM_THE_PAGE, "Origin": "http://evil.example"},
        {**FROM_THE_PAGE, "Host": "evil.example"},  # a name rebound to 127.0.0.1
    ):
        response = sending.client.post("/send-test", json={"tier": "paid"}, headers=headers)
        assert response.status_code == 403, headers
    assert smtp.handler.attempts.total() == 0


def test_send_test_to_a_server_that_is_down_is_a_clear_json_error(example, send_config):
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        with_settings(send_config, "smtp", port=port)
        with running_preview(example, send_config) as running:
            response = running.client.post("/send-test?tier=paid", headers=FROM_THE_PAGE)
            assert running.client.get("/state").status_code == 200, "the preview runs on"
    assert response.status_code == 502
    error = response.json()["error"]
    assert error.startswith(f"cannot connect to 127.0.0.1:{port}")
    assert "`newsletter outbox`" in error and "\n" not in error


def test_send_test_with_no_test_recipients_is_refused_with_the_fix(example, send_config, smtp):
    edit(send_config, lambda text: text.replace('["editor@example.com"]', "[]"))
    with running_preview(example, send_config) as running:
        response = running.client.post("/send-test?tier=paid", headers=FROM_THE_PAGE)
    assert response.status_code == 409
    assert "list them in [newsletter] test_recipients" in response.json()["error"]
    assert smtp.handler.attempts.total() == 0


def test_send_test_is_refused_while_the_issue_has_an_error(sending, smtp):
    edit(sending.issue, lambda text: text.replace("date = 2024-05-03", "date = someday"))
    sending.wait_for(lambda state: state["error"] is not None)
    response = sending.client.post("/send-test?tier=paid", headers=FROM_THE_PAGE)
    assert response.status_code == 409
    assert response.json()["error"].startswith("fix the issue before sending a test")
    assert smtp.handler.attempts.total() == 0
