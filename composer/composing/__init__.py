"""Composing: an issue file becomes an email, one stage a module.

load → validate → typography → render (Jinja2 → MJML) → mjml_html → inline → text →
message, orchestrated by :mod:`composer.composing.pipeline`.
"""
