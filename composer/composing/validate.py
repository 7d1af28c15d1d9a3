"""Check a loaded issue against what this newsletter's templates can render."""

from __future__ import annotations

from pathlib import Path

from composer.composing.templates import block_kinds, block_template
from composer.errors import IssueError
from composer.model import Issue


def validate_issue(issue: Issue, templates: Path) -> Issue:
    """Return ``issue`` unchanged if every block has a template, else raise :class:`IssueError`
    naming the file to add under ``templates``, the newsletter's own folder."""
    kinds = block_kinds(templates)
    for block in issue.blocks:
        if block.kind not in kinds:
            raise IssueError(
                issue.path,
                f"block {block.heading!r} is of kind {block.kind!r}, which has no template; "
                f"use one of {', '.join(sorted(kinds))} or add "
                f"{block_template(templates, block.kind)}",
                block.line or None,
            )
    return issue
