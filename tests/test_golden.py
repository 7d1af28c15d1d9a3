"""Golden files: the example issue's whole composed output, checked in and diffed.

A deliberate change to the templates or the pipeline regenerates them with
``make golden`` (``UPDATE_GOLDEN=1 pytest tests/test_golden.py``); review the diff.
"""

from __future__ import annotations

import difflib
import os

import pytest

from composer.composing.pipeline import compose_file
from tests.conftest import EXAMPLE_MD, ROOT

GOLDEN = ROOT / "tests" / "golden"


@pytest.mark.parametrize("tier", ["paid", "free"])
@pytest.mark.parametrize("part", ["html", "text", "mjml"])
def test_example_issue_matches_its_golden_file(config, tier, part):
    actual = getattr(compose_file(EXAMPLE_MD, config, tier), part)
    golden = GOLDEN / f"2024-05-03-example.{tier}.{part}"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(actual, encoding="utf-8")
    expected = golden.read_text(encoding="utf-8")
    if actual != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(True), actual.splitlines(True), str(golden), "composed", n=2
            )
        )
        pytest.fail(f"{golden.name} differs (run `make golden` if intended):\n{diff[:4000]}")
