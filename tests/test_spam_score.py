"""A reader's copy, exactly as `send` writes it, scored by SpamAssassin.

Debian's ``spamassassin`` with the rules it ships (no ``sa-update``: the tests run
offline) and local tests only (``-L``: no DNS blocklists, no Razor or Pyzor). One
process scores the four copies as one mbox, loading the rules once: about 2.5 s of
CPU (3 to 6 s on a busy two-core machine), where a process per copy cost 1.6 s of
CPU each. Without the binary these tests skip and say why.
"""

from __future__ import annotations

import mailbox
import os
import re
import shutil
import subprocess

import pytest

from composer.composing.pipeline import compose_file
from composer.config import Config
from composer.sending.personalise import MessageTemplate
from composer.store.deliveries import Recipient
from composer.unsubscribe import UnsubscribeLinks
from tests.conftest import EXAMPLE_MD, SECOND_ISSUE, SECRET

MAX_SCORE = 0.1
SPAMASSASSIN = shutil.which("spamassassin")
ISSUES = {"example": EXAMPLE_MD, "second": SECOND_ISSUE}
TIERS = ("paid", "free")
_SCORE = re.compile(r"^X-Spam-Status: \w+, score=(-?\d+(?:\.\d+)?)", re.MULTILINE)


@pytest.fixture(scope="module")
def scores(
    tmp_path_factory: pytest.TempPathFactory, module_config: Config
) -> dict[tuple[str, str], tuple[float, str]]:
    """Each reader's copy's score and SpamAssassin's report on it, by issue and tier."""
    if SPAMASSASSIN is None:
        pytest.skip(
            "spamassassin is not installed, so no spam score was checked "
            "(apt-get install spamassassin; .ci/run does it)"
        )
    config, folder = module_config, tmp_path_factory.mktemp("spam")
    links = UnsubscribeLinks(
        config.newsletter.base_url, SECRET.encode(), config.newsletter.unsubscribe_mailto
    )
    copies = mailbox.mbox(folder / "copies.mbox")
    keys = [(issue, tier) for issue in ISSUES for tier in TIERS]
    for issue, tier in keys:
        composed = compose_file(ISSUES[issue], config, tier)
        template = MessageTemplate.build(composed, config, links=links)
        reader = Recipient(
            email="ann@example.org", name="Ann Reader", key="ann@example.org", tier=tier
        )
        copies.add(template.render(reader).data.replace(b"\r\n", b"\n"))
    copies.close()
    with (folder / "copies.mbox").open("rb") as mbox:
        scored = subprocess.run(
            [SPAMASSASSIN, "-L", "-t", "--mbox"],
            stdin=mbox,
            capture_output=True,
            check=True,
            timeout=300,
            # SpamAssassin writes its per-user files under $HOME; keep them out of the real one.
            env={**os.environ, "HOME": str(folder)},
        )
    # The copies come back in order, each with its X-Spam-Status and its report.
    output = scored.stdout.decode("utf-8", "replace")
    found = list(_SCORE.finditer(output))
    assert len(found) == len(keys), output[:2000]
    ends = [match.start() for match in found[1:]] + [len(output)]
    return {
        key: (float(match.group(1)), output[match.start() : end])
        for key, match, end in zip(keys, found, ends, strict=True)
    }


@pytest.mark.parametrize("issue", ISSUES)
@pytest.mark.parametrize("tier", TIERS)
def test_readers_copy_scores_at_most_a_tenth_of_a_point(scores, issue, tier):
    score, report = scores[issue, tier]
    details = report[report.find("Content analysis details") :][:1500]
    assert score <= MAX_SCORE, details
