"""Inline the CSS into every element, as most mail clients ignore <style> blocks."""

from __future__ import annotations

import logging

from premailer import Premailer

# cssutils logs a warning for every property it does not know (mso-*, -webkit-*),
# all of which mail clients need; they are noise to an editor.
logging.getLogger("CSSUTILS").setLevel(logging.CRITICAL)


def inline_css(html: str) -> str:
    """Move the ``<style>`` rules onto the elements they match.

    Media queries and rules premailer cannot inline stay in a ``<style>`` block; the
    network is off because the machine may be offline and an email must not
    depend on it.
    """
    return str(
        Premailer(
            html,
            allow_network=False,
            allow_loading_external_files=False,
            keep_style_tags=False,
            remove_classes=False,
            strip_important=False,
            disable_validation=True,
            cssutils_logging_level=logging.CRITICAL,
            exclude_pseudoclasses=True,
        ).transform()
    )
