"""``newsletter build``: compose an issue and write its files for a person to look at."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from composer.composing.message import build_message
from composer.composing.pipeline import ComposedIssue, compose_file, generic_urls
from composer.config import Config
from composer.model import Tier


@dataclass(frozen=True)
class BuildResult:
    composed: ComposedIssue
    files: tuple[Path, ...]


def build_issue(path: Path, config: Config, tier: Tier, out_dir: Path) -> BuildResult:
    """Compose ``path`` for ``tier`` and write ``<slug>.html``, ``.txt``, ``.mjml``, ``.eml``."""
    composed = compose_file(path, config, tier)
    composed = composed.with_urls(generic_urls(composed.issue, config))
    message = build_message(composed, config)
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = {
        ".html": composed.html.encode("utf-8"),
        ".txt": composed.text.encode("utf-8"),
        ".mjml": composed.mjml.encode("utf-8"),
        ".eml": message.as_bytes(),
    }
    files = []
    for suffix, data in outputs.items():
        target = out_dir / f"{composed.issue.slug}{suffix}"
        target.write_bytes(data)
        files.append(target)
    return BuildResult(composed, tuple(files))
