"""The web side: ``serve`` (unsubscribe links, later the archive) and the live preview."""
