"""The bounce fixtures of tests/fixtures/bounces/, filled in for one copy."""

from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "bounces"
RECIPIENT = "ann@example.org"
MESSAGE_ID = "<2024-05-03-example.0a1b2c3d4e5f60718293@example.com>"
BOUNCES = "bounces@news.example.com"


def report(
    name: str,
    *,
    recipient: str = RECIPIENT,
    message_id: str = MESSAGE_ID,
    to: str = BOUNCES,
    event: str = "1",
) -> bytes:
    """The fixture ``name`` (without .eml) as a report about ``recipient``'s copy
    ``message_id``, delivered to ``to``; ``event`` makes its own Message-ID unique."""
    text = (FIXTURES / f"{name}.eml").read_bytes().decode("utf-8")
    for hole, value in (
        ("{recipient}", recipient),
        ("{message_id}", message_id),
        ("{to}", to),
        ("{event}", event),
    ):
        text = text.replace(hole, value)
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")
