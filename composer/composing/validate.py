"""Check a loaded issue against what this newsletter's templates can render."""

from __future__ import annotations

from pathlib import Path

from composer.errors import IssueError
from composer.model import Issue

BLOCK_TEMPLATE_SUFFIX = ".mjml.j2"


def block_kinds(templates: Path) -> frozenset[str]:
    """The block kinds the templates can render: one ``templates/blocks/<kind>.mjml.j2`` each."""
    return frozenset(
        path.name.removesuffix(BLOCK_TEMPLATE_SUFFIX)
        for path in (templates / "blocks").glob(f"*{BLOCK_TEMPLATE_SUFFIX}")
    )


def validate_issue(issue: Issue, kinds: frozenset[str]) -> Issue:
    """Return ``issue`` unchanged if every block has a template, else raise :class:`IssueError`."""
    for block in issue.blocks:
        if block.kind not in kinds:
            raise IssueError(
                issue.path,
                f"block {block.heading!r} is of kind {block.kind!r}, which has no template; "
                f"use one of {', '.join(sorted(kinds))} or add templates/blocks/"
                f"{block.kind}{BLOCK_TEMPLATE_SUFFIX}",
                block.line or None,
            )
    return issue
