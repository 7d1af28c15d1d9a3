"""The web side: ``serve`` (unsubscribe links, web versions, the archive and its feed),
the live preview, and the guards around both."""
