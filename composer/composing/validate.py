"""Check a loaded issue against what this newsletter's templates can render."""

from __future__ import annotations

from pathlib import Path

from composer.composing.templates import BLOCK_TEMPLATE_SUFFIX, search_path
from composer.errors import IssueError
from composer.model import Issue


def block_kinds(templates: Path) -> frozenset[str]:
    """The block kinds a newsletter whose own templates folder is ``templates`` can render:
    one ``blocks/<kind>.mjml.j2`` each, in that folder or among the defaults."""
    return frozenset(
        path.name.removesuffix(BLOCK_TEMPLATE_SUFFIX)
        for folder in search_path(templates)
        for path in (folder / "blocks").glob(f"*{BLOCK_TEMPLATE_SUFFIX}")
    )


def validate_issue(issue: Issue, kinds: frozenset[str], templates: Path) -> Issue:
    """Return ``issue`` unchanged if every block has a template, else raise :class:`IssueError`
    naming the file to add under ``templates``, the newsletter's own folder."""
    for block in issue.blocks:
        if block.kind not in kinds:
            raise IssueError(
                issue.path,
                f"block {block.heading!r} is of kind {block.kind!r}, which has no template; "
                f"use one of {', '.join(sorted(kinds))} or add "
                f"{templates / 'blocks' / block.kind}{BLOCK_TEMPLATE_SUFFIX}",
                block.line or None,
            )
    return issue
