"""Where a newsletter's templates come from: its own folder first, file by file, then the
defaults that ship inside the package.

The defaults are the repository's top-level ``templates/`` folder: ``composer/templates``
links to it, a wheel carries the files as package data and an editable install follows
the link, so :data:`DEFAULT_TEMPLATES` is the one place their location is spelled.
A newsletter overrides a default by keeping a file of the same name in its own folder
(``[newsletter] templates``, ``templates/`` next to config.toml), and adds a block kind
by adding a file there; ``newsletter templates copy`` starts such a file from the default.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import jinja2
from jinja2.loaders import split_template_path

from composer.errors import NewsletterError

DEFAULT_TEMPLATES = (Path(__file__).resolve().parent.parent / "templates").resolve()
TEMPLATE_SUFFIX = ".j2"
BLOCK_TEMPLATE_SUFFIX = ".mjml.j2"
# Each block kind is rendered by its own template, ``blocks/<kind>.mjml.j2``.
BLOCKS_FOLDER = "blocks"

# default: only the package has it; override: the newsletter's own file replaces the
# default of that name; added: only the newsletter has it (a new block kind, a partial).
TemplateSource = Literal["default", "override", "added"]


def search_path(own: Path) -> tuple[Path, ...]:
    """The folders templates are looked up in, in order: ``own`` (the newsletter's folder,
    which need not exist yet) first, then the defaults."""
    if own.resolve() == DEFAULT_TEMPLATES:  # the project's own checkout
        return (DEFAULT_TEMPLATES,)
    return (own, DEFAULT_TEMPLATES)


def block_kinds(own: Path) -> frozenset[str]:
    """The block kinds the newsletter whose folder is ``own`` can render: one
    ``blocks/<kind>.mjml.j2`` each, in that folder or among the defaults."""
    return frozenset(
        path.name.removesuffix(BLOCK_TEMPLATE_SUFFIX)
        for folder in search_path(own)
        for path in (folder / BLOCKS_FOLDER).glob(f"*{BLOCK_TEMPLATE_SUFFIX}")
    )


def block_template(own: Path, kind: str) -> Path:
    """Where the newsletter whose folder is ``own`` keeps its template for blocks of ``kind``."""
    return own / BLOCKS_FOLDER / f"{kind}{BLOCK_TEMPLATE_SUFFIX}"


def template_names(folder: Path) -> list[str]:
    """The templates under ``folder`` as names relative to it (``blocks/news.mjml.j2``),
    sorted; none when it does not exist."""
    return sorted(
        path.relative_to(folder).as_posix()
        for path in folder.rglob(f"*{TEMPLATE_SUFFIX}")
        if path.is_file()
    )


class LayeredLoader(jinja2.FileSystemLoader):
    """Loads each template from the first folder of ``search_path`` that has it.

    A template is stale once it changes on disk (what FileSystemLoader checks) and also
    once an earlier folder gains a file of that name, so a template copied into the
    newsletter's folder while the preview runs replaces the default at the next render.
    """

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        source, filename, unchanged = super().get_source(environment, template)
        pieces = split_template_path(template)
        earlier = []
        for folder in self.searchpath:
            candidate = os.path.normpath(posixpath.join(folder, *pieces))
            if candidate == filename:
                break
            earlier.append(candidate)

        def uptodate() -> bool:
            return unchanged() and not any(os.path.isfile(path) for path in earlier)

        return source, filename, uptodate


@dataclass(frozen=True)
class TemplateEntry:
    """One template a newsletter composes with, and where it comes from."""

    name: str
    source: TemplateSource


def list_templates(own: Path) -> list[TemplateEntry]:
    """Every template the newsletter whose folder is ``own`` can use, sorted by name."""
    if search_path(own) == (DEFAULT_TEMPLATES,):
        return [TemplateEntry(name, "default") for name in template_names(DEFAULT_TEMPLATES)]
    defaults = set(template_names(DEFAULT_TEMPLATES))
    owned = set(template_names(own))
    entries = [TemplateEntry(name, "override" if name in owned else "default") for name in defaults]
    entries += [TemplateEntry(name, "added") for name in owned - defaults]
    return sorted(entries, key=lambda entry: entry.name)


@dataclass(frozen=True)
class CopiedTemplates:
    """What ``newsletter templates copy`` did: the names written into ``folder``, and
    those kept as they were because the folder already had them."""

    folder: Path
    copied: tuple[str, ...]
    skipped: tuple[str, ...]


def copy_templates(own: Path, names: Sequence[str] = ()) -> CopiedTemplates:
    """Copy the default templates named (all when ``names`` is empty) into ``own`` for
    editing; a file already there is never overwritten. A name is a template's path
    (``blocks/news.mjml.j2``) or its short form (``news``, ``email``)."""
    defaults = template_names(DEFAULT_TEMPLATES)
    chosen = [default_template(name, defaults) for name in names] if names else defaults
    copied, skipped = [], []
    for name in dict.fromkeys(chosen):
        target = own / name
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("xb") as file:
                file.write((DEFAULT_TEMPLATES / name).read_bytes())
        except FileExistsError:
            skipped.append(name)
        except OSError as exc:  # a file where a folder must be, no permission, a full disk
            raise NewsletterError(
                f"cannot copy {name} into {own} ({exc.strerror or exc}:"
                f" {exc.filename or target}); point [newsletter] templates at a folder"
                " you can write to, not a file"
            ) from exc
        else:
            copied.append(name)
    return CopiedTemplates(own, tuple(copied), tuple(skipped))


def default_template(name: str, defaults: Sequence[str]) -> str:
    """The default template ``name`` stands for, or :class:`NewsletterError` naming them."""
    for candidate in (
        name,
        f"{name}{BLOCK_TEMPLATE_SUFFIX}",
        f"{BLOCKS_FOLDER}/{name}{BLOCK_TEMPLATE_SUFFIX}",
    ):
        if candidate in defaults:
            return candidate
    raise NewsletterError(
        f"no default template {name!r}; the defaults are {', '.join(defaults)}"
        " (see `newsletter templates list`)"
    )
