"""Whatever an editor types, loading and composing ends in an issue or one IssueError."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from composer.composing.load import load_issue
from composer.composing.pipeline import compose
from composer.errors import IssueError

LINES = st.sampled_from(
    [
        "+++", 'title = "x"', "date = 2024-05-03", "## A", "## The Big Story", "**LEAD:** x",
        "**LEAD**:", "__LEAD:__ y", "<!-- paywall -->", "", "text", "- item", "> q", "```",
        "## {.big-story}", "## X {.Bad}", "## Y {.news}", "[[blocks]]", 'heading = "A"',
        'kind = "paywall"', 'kind = "big-story"', "[[blocks.items]]", 'lead = "L"', 'body = "b"',
        'body = """', '"""', "items = 3", "blocks = 1", "lede = 1", "title = 1", "   ", "***",
        "Setext", "---", "![](x.png)", "[a](b)", "| a | b |", "|---|---|", "1. one", "\t\tcode",
    ]
)  # fmt: skip
HEADS = {
    ".md": '+++\ntitle = "x"\ndate = 2024-05-03\n+++\n',
    ".toml": 'title = "x"\ndate = 2024-05-03\n',
}


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(lines=st.lists(LINES, max_size=14), suffix=st.sampled_from([".md", ".toml"]))
def test_any_issue_file_loads_and_composes_or_gives_one_issue_error(config, lines, suffix):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"issue{suffix}"
        path.write_text(HEADS[suffix] + "\n".join(lines), encoding="utf-8")
        try:
            issue = load_issue(path)
        except IssueError as error:
            assert str(path) in error.message
            return
        for tier in ("paid", "free"):
            try:
                compose(issue, config, tier)
            except IssueError as error:
                assert "no template" in error.message
