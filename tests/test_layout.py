"""The package's floors: every module sits on one, and imports only from its own floor or
the floors below (read from the source with :mod:`ast`, lazy imports included)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "composer"

# Bottom to top. A name stands for that module and every module under it, except the
# package itself, which stands for composer/__init__.py alone.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # The vocabulary, the errors and the settings, signed tokens, and the signed links
    # (unsubscribe, manage, read, confirmation) and return paths that sending, the store,
    # the bounce reader and the web side make from the settings alone.
    (
        "ground",
        (
            "composer",
            "composer.model",
            "composer.errors",
            "composer.config",
            "composer.signing",
            "composer.unsubscribe",
            "composer.returnpath",
            "composer.reader_links",
            "composer.confirm_links",
        ),
    ),
    ("composing", ("composer.composing",)),
    ("store", ("composer.store",)),
    # Reading what comes back (the bounce mailbox) into the store.
    ("bounces", ("composer.bounces",)),
    ("sending", ("composer.sending",)),
    ("web", ("composer.web",)),
    ("cli", ("composer.cli", "composer.__main__")),
)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def floor(module: str) -> int | None:
    """The index in :data:`LAYERS` of ``module``'s floor (None: on none)."""
    for index, (_, names) in enumerate(LAYERS):
        for name in names:
            if module == name or (name != "composer" and module.startswith(name + ".")):
                return index
    return None


def imported(module: str) -> Iterator[str]:
    """Every module ``module`` imports, relative imports resolved, ``from a import b``
    read as ``a.b`` when that is a module of the package."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base


def test_every_module_of_the_package_sits_on_a_floor() -> None:
    assert [module for module in MODULES if floor(module) is None] == []


def test_imports_run_only_downwards() -> None:
    upward = []
    for module in MODULES:
        here = floor(module)
        assert here is not None
        for target in imported(module):
            there = floor(target) if target.split(".")[0] == "composer" else None
            if there is not None and there > here:
                upward.append(f"{module} ({LAYERS[here][0]}) imports {target} ({LAYERS[there][0]})")
    assert upward == []


def test_sending_and_the_web_reach_storage_only_through_the_store_interface() -> None:
    above = [
        index for index, (name, _) in enumerate(LAYERS) if name in ("bounces", "sending", "web")
    ]
    for module in MODULES:
        if floor(module) not in above:
            continue
        targets = set(imported(module))
        assert not {t for t in targets if t.startswith("composer.store.sqlite")}, module
        assert "sqlite3" not in targets, module
