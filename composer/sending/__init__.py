"""Sending: the outbox, send-test and the dispatch to the whole list.

    personalise (compose once, serialise once, substitute per recipient)
      → transport (one SMTP connection; the only module that talks to aiosmtplib)
      → dispatch (a pool of connections, retries, rate, journal, progress)

send runs them top to bottom for ``send``, ``send-test`` and ``status``; console
prints the confirmation, progress, summary and status; outbox is the local SMTP
server (``newsletter outbox``) that keeps each message as a ``.eml`` file.

The values passed between them (the recipient, the outcome, the delivery states)
belong to the record they are kept in: :mod:`composer.store.deliveries`.
"""
