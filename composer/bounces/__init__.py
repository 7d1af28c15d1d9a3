"""Mail that comes back: reading the bounce mailbox into the store's feedback.

    parse.py     one message → a Report: DSN, ARF complaint, auto-reply, other bounces
    mailbox.py   the mailbox: a Maildir or an IMAP folder, read once, marked after
    fetch.py     ``bounces fetch``: read, record, mark, summarise

The rules of what a bounce or complaint does live in :mod:`composer.store.feedback`;
the return paths that name each copy in :mod:`composer.returnpath`.
"""
