"""Time composing the example issue, per stage and per tier.

    .venv/bin/python bench/compose.py [ISSUE] [--runs N]

Prints the median of N runs for each stage and the total per variant; the target is
under 150 ms a variant. The stages are timed inside the real ``compose_file``: every
function that :mod:`composer.composing.pipeline` calls from another composing module
(load_issue, validate_issue, typeset, render_mjml, mjml_to_html, inline_css,
render_text, ...) is wrapped with a clock for the run, so a stage added to the pipeline
shows up here by itself; "pipeline" is what compose does between its stages, and
"message" the serialised email built from the result.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import inspect
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from composer.composing import pipeline
from composer.composing.message import build_message
from composer.config import Config, load_config
from composer.model import Tier

ROOT = Path(__file__).resolve().parent.parent


def stage_names() -> list[str]:
    """The functions the pipeline module calls from the other composing modules."""
    return [
        name
        for name, value in vars(pipeline).items()
        if inspect.isfunction(value)
        and value.__module__.startswith("composer.composing.")
        and value.__module__ != pipeline.__name__
    ]


@contextlib.contextmanager
def clocked_stages(timings: dict[str, float]) -> Iterator[None]:
    """While open, each stage the pipeline calls adds its seconds to ``timings``."""
    originals = {name: getattr(pipeline, name) for name in stage_names()}

    def clocked(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                timings[name] = timings.get(name, 0.0) + time.perf_counter() - start

        return wrapper

    for name, function in originals.items():
        setattr(pipeline, name, clocked(name, function))
    try:
        yield
    finally:
        for name, function in originals.items():
            setattr(pipeline, name, function)


def time_variant(path: Path, config: Config, tier: Tier) -> tuple[dict[str, float], int]:
    """Seconds per stage for one composition of ``path`` for ``tier``, and its HTML size."""
    timings: dict[str, float] = {}
    start = time.perf_counter()
    with clocked_stages(timings):
        composed = pipeline.compose_file(path, config, tier)
    timings["pipeline"] = time.perf_counter() - start - sum(timings.values())
    start = time.perf_counter()
    build_message(composed, config).as_bytes()
    timings["message"] = time.perf_counter() - start
    return timings, composed.html_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("issue", nargs="?", default=ROOT / "issues" / "2024-05-03-example.md")
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    config = load_config(ROOT / "config.toml")
    path = Path(args.issue)

    tiers: tuple[Tier, ...] = ("paid", "free")
    for tier in tiers:
        # The first run warms caches (template compilation, CSS parsing).
        first, html_size = time_variant(path, config, tier)
        runs = [time_variant(path, config, tier)[0] for _ in range(args.runs)]
        medians = {stage: statistics.median(run[stage] for run in runs) * 1000 for stage in first}
        total = sum(medians.values())
        print(
            f"{tier}: {total:6.1f} ms a variant (median of {args.runs};"
            f" first run {sum(first.values()) * 1000:.1f} ms), {html_size / 1024:.1f} KB HTML"
        )
        for stage, value in medians.items():
            print(f"  {stage:<14}{value:7.2f} ms")


if __name__ == "__main__":
    main()
