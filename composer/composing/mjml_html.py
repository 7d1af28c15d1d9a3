"""Turn MJML into responsive, table-based HTML with mjml-python (MRML, the Rust port)."""

from __future__ import annotations

from mjml import mjml2html

from composer.errors import TemplateError


def mjml_to_html(mjml: str) -> str:
    """Render MJML to HTML. No web fonts are linked: the email must not depend on the network."""
    try:
        return mjml2html(mjml, disable_comments=True, fonts={})
    except Exception as exc:  # mjml-python raises a bare Exception carrying MRML's message
        raise TemplateError(f"the templates produced invalid MJML: {exc}") from exc
