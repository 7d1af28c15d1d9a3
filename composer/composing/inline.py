"""Inline the CSS into every element, as most mail clients ignore <style> blocks."""

from __future__ import annotations

import logging
import re

import cssutils
from premailer import Premailer

# cssutils logs a warning for every property it does not know (mso-*, -webkit-*),
# all of which mail clients need; they are noise to an editor.
logging.getLogger("CSSUTILS").setLevel(logging.CRITICAL)
# premailer validates inline styles even with disable_validation=True (merge_styles
# parses them with cssutils' default), and the first validation compiles cssutils'
# property-profile regexes: 50-100 ms a process, spent only on warnings we silence.
# Without profiles, properties are kept as written, which is what an email needs.
cssutils.profile.removeProfile(all=True)

# premailer keeps a doctype only when the page starts with lxml's spelling of it, and
# MJML writes "<!doctype html>"; without one, browsers and the mail clients built on
# them lay the email out in quirks mode.
_DOCTYPE = re.compile(r"\A\s*<!doctype html>", re.IGNORECASE)


def inline_css(html: str) -> str:
    """Move the ``<style>`` rules onto the elements they match, keeping the doctype.

    Media queries and rules premailer cannot inline stay in a ``<style>`` block; the
    network is off because the machine may be offline and an email must not
    depend on it.
    """
    return str(
        Premailer(
            _DOCTYPE.sub("<!DOCTYPE html>", html, count=1),
            allow_network=False,
            allow_loading_external_files=False,
            keep_style_tags=False,
            remove_classes=False,
            strip_important=False,
            disable_validation=True,
            cssutils_logging_level=logging.CRITICAL,
            exclude_pseudoclasses=True,
            # premailer copies CSS sizes into attributes, overwriting the templates' own:
            # an image's width="584", the pixel width Outlook for Windows lays it out at,
            # became "100%", and height: auto became height="auto". MJML writes the size
            # attributes Outlook needs itself.
            disable_basic_attributes=["width", "height"],
        ).transform()
    )
