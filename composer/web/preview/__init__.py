"""``newsletter preview``: the composed email in a local page that follows every save.

One module per job:

- :mod:`.snapshot`: one composition (every tier's email, or the error), and the
  subscriber it may be shown as;
- :mod:`.live`: :class:`Preview`, recomposing on every save and telling the pages;
- :mod:`.app`: the routes the page talks to, and the guard on send-test;
- :mod:`.server`: uvicorn on 127.0.0.1, and :func:`serve_preview`, the command.
"""

from composer.web.preview.live import Preview
from composer.web.preview.server import PreviewServer, serve_preview
from composer.web.preview.snapshot import find_reader

__all__ = ["Preview", "PreviewServer", "find_reader", "serve_preview"]
