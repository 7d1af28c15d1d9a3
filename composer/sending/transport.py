"""The one place where mail leaves the program: a small interface and its implementation.

:class:`SmtpTransport` speaks SMTP through aiosmtplib, one client per connection
(a client is not safe to share between concurrent senders).

aiosmtplib's exceptions are translated into :mod:`composer.errors` here and nowhere
else, in :func:`_translate`.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from typing import Protocol

import aiosmtplib

from composer.config import (
    LOGIN_IN_CLEAR,
    Security,
    SmtpSettings,
    is_loopback,
    login_in_clear,
)
from composer.errors import (
    END_OF_DATA,
    SendError,
    SmtpAuthError,
    SmtpConnectError,
    SmtpConnectionLost,
    SmtpReplyError,
    UnsendableAddress,
)


class Connection(Protocol):
    """One open session with a mail server, used by one sender at a time."""

    async def send(self, sender: str, recipient: str, message: bytes) -> tuple[int, str]:
        """Deliver ``message`` to ``recipient``; the server's 2xx code and reply.

        An address that is not ASCII (a local part; domains come as punycode) goes
        with SMTPUTF8, and ``message`` then carries it in UTF-8 too. Raises
        :class:`SmtpReplyError` when the server refuses this message (the connection
        stays usable), :class:`SmtpConnectionLost` when the connection must be
        discarded, :class:`SmtpAuthError` if the server wants a login it refuses,
        :class:`UnsendableAddress` (before any command) for an address that needs
        SMTPUTF8 when the server does not offer it.
        """
        ...

    async def close(self) -> None:
        """Say goodbye if possible and release the connection; never raises."""
        ...


class Transport(Protocol):
    """Opens connections to one mail server."""

    description: str

    async def connect(self) -> Connection:
        """A new connection, logged in and encrypted as configured; raises
        :class:`SmtpConnectError` or :class:`SmtpAuthError`."""
        ...


_SECURITY_NAMES: dict[Security, str] = {"none": "", "starttls": " (STARTTLS)", "tls": " (TLS)"}


def describe_server(settings: SmtpSettings) -> str:
    """The ``[smtp]`` server as messages name it: ``host:port`` and how it is secured."""
    return f"{settings.host}:{settings.port}{_SECURITY_NAMES[settings.security]}"


# The login mechanisms tried, in this order of preference; only the first one offered
# is used. Over TLS (the only way a password leaves this machine unless
# allow_insecure_auth says otherwise) PLAIN is as safe as any, and what every server has.
LOGIN_MECHANISMS = ("plain", "login", "cram-md5")


class SmtpTransport:
    """Connections to the ``[smtp]`` server: no TLS, STARTTLS (required, never
    opportunistic) or implicit TLS, certificates verified, a timeout on every step."""

    def __init__(self, settings: SmtpSettings, password: str | None = None) -> None:
        self.settings = settings
        self.password = password
        # Built once, not per connection; ``ca_file`` replaces the system's CAs.
        self.tls_context = (
            ssl.create_default_context(cafile=settings.ca_file)
            if settings.security != "none"
            else None
        )
        self.description = describe_server(settings)
        # Checked when the config is loaded too; settings can be built without loading.
        if login_in_clear(
            settings.host, settings.security, settings.username, settings.allow_insecure_auth
        ):
            raise SmtpAuthError(LOGIN_IN_CLEAR.format(host=settings.host))
        if settings.username and not password:
            raise SmtpAuthError(
                f"[smtp] username is set but ${settings.password_env} is empty;"
                f" export {settings.password_env}=… before sending"
            )

    @classmethod
    def from_settings(cls, settings: SmtpSettings) -> SmtpTransport:
        """A transport whose password comes from the variable ``password_env`` names."""
        return cls(settings, os.environ.get(settings.password_env) or None)

    async def connect(self) -> Connection:
        s = self.settings
        client = aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            timeout=s.timeout,
            use_tls=s.security == "tls",
            # Explicit: aiosmtplib's default (None) upgrades only when the server offers
            # STARTTLS, so a stripped offer would send the password in clear.
            start_tls=s.security == "starttls",
            validate_certs=True,
            tls_context=self.tls_context,
            local_hostname="localhost" if is_loopback(s.host) else None,
        )
        try:
            await client.connect()
            if client.last_ehlo_response is None and client.last_helo_response is None:
                await client.ehlo()
            if s.username:
                await self._login(client)
        except (aiosmtplib.SMTPException, OSError, ssl.SSLError) as exc:
            client.close()
            raise _translate(exc, "CONNECT", self.description) from exc
        except SmtpAuthError:
            client.close()
            raise
        return SmtpConnection(client, self.description)

    async def _login(self, client: aiosmtplib.SMTP) -> None:
        """Log in with one mechanism, the first of :data:`LOGIN_MECHANISMS` the server
        offers. aiosmtplib's own login() tries each offered mechanism in turn, so one
        wrong password would count against the account once per mechanism."""
        offered = client.server_auth_methods
        mechanism = next((m for m in LOGIN_MECHANISMS if m in offered), None)
        if mechanism is None:
            raise SmtpAuthError(
                f"{self.description} offers no login that newsletter speaks"
                f" (AUTH {' '.join(offered).upper() or 'not offered'}; PLAIN, LOGIN or"
                " CRAM-MD5 would do); check [smtp] host, port and security"
            )
        login = {
            "plain": client.auth_plain,
            "login": client.auth_login,
            "cram-md5": client.auth_crammd5,
        }[mechanism]
        await login(self.settings.username, self.password or "")


class SmtpConnection:
    """One aiosmtplib client. After a refused message it sends RSET before the next."""

    def __init__(self, client: aiosmtplib.SMTP, description: str) -> None:
        self.client = client
        self.description = description
        self._needs_reset = False

    async def send(self, sender: str, recipient: str, message: bytes) -> tuple[int, str]:
        # The transaction is spelled out with the client's public execute_command, and
        # the message is dot-stuffed here in one pass: aiosmtplib's data() re-parses
        # both addresses and runs two regular expressions over the whole message,
        # about 0.7 ms a message, more than everything else in the hot loop together.
        # ``message`` is already CRLF-only (MessageTemplate guarantees it).
        client = self.client
        if recipient.isascii() and sender.isascii():
            mail_from, rcpt_to = b"FROM:<%s>" % sender.encode("ascii"), recipient.encode("ascii")
        elif client.supports_extension("smtputf8"):
            mail_from = b"FROM:<%s> SMTPUTF8" % sender.encode("utf-8")
            rcpt_to = recipient.encode("utf-8")
        else:
            which = "its local part" if not recipient.isascii() else f"the sender {sender!r}"
            raise UnsendableAddress(
                f"cannot send to {recipient!r}: {which} is not ASCII and {self.description}"
                " does not offer SMTPUTF8; send through a server that does, then use"
                " --retry-failed"
            )
        stage = "RSET"
        try:
            if self._needs_reset:
                await client.rset()
                self._needs_reset = False
            stage = "MAIL"
            _expect(await client.execute_command(b"MAIL", mail_from), stage)
            stage = "RCPT"
            _expect(await client.execute_command(b"RCPT", b"TO:<%s>" % rcpt_to), stage)
            stage = "DATA"
            _expect(await client.execute_command(b"DATA"), stage, 354)
            protocol = client.protocol
            if protocol is None:
                raise aiosmtplib.SMTPServerDisconnected("Connection lost")
            stage = END_OF_DATA
            protocol.write(dot_stuff(message) + b".\r\n")
            response = await protocol.read_response(timeout=client.timeout)
            _expect(response, stage)
        except (aiosmtplib.SMTPException, OSError, asyncio.IncompleteReadError) as exc:
            error = _translate(exc, stage, self.description)
            if isinstance(error, SmtpReplyError):
                self._needs_reset = True
            else:
                client.close()
            raise error from exc
        return response.code, response.message

    async def close(self) -> None:
        try:
            if self.client.is_connected:
                await self.client.quit(timeout=2)
        except (aiosmtplib.SMTPException, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self.client.close()


def dot_stuff(message: bytes) -> bytes:
    """``message`` (CRLF line endings) with every line that starts with a dot given a
    second one, and a final CRLF, as DATA requires (RFC 5321 section 4.5.2)."""
    if message.startswith(b"."):
        message = b"." + message
    message = message.replace(b"\r\n.", b"\r\n..")
    return message if message.endswith(b"\r\n") else message + b"\r\n"


def _expect(response: aiosmtplib.SMTPResponse, stage: str, code: int = 250) -> None:
    """Raise what aiosmtplib's own mail/rcpt/data would for an unexpected reply."""
    if response.code == code or (stage == "RCPT" and response.code == 251):
        return
    raise aiosmtplib.SMTPResponseException(response.code, response.message)


def _translate(exc: BaseException, stage: str, server: str) -> SendError:
    """The :mod:`composer.errors` exception for what aiosmtplib (or the socket) raised."""
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return SmtpAuthError(
            f"{server} refused the login: {exc.code} {exc.message}; check [smtp] username"
            " and the password variable (not retried, so the account is not locked)",
            code=exc.code,
            reply=exc.message,
        )
    if isinstance(exc, TimeoutError):  # aiosmtplib's timeouts are TimeoutErrors too
        if stage == END_OF_DATA:
            return SmtpConnectionLost(
                f"{server} did not answer the end of the message in time",
                reply="no reply to the end of the message in time: it may have been delivered",
                timeout=True,
                stage=stage,
            )
        return SmtpConnectionLost(
            f"{server} did not answer {stage} in time", reply="timed out", timeout=True, stage=stage
        )
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        if exc.code == 421 or stage in ("CONNECT", "RSET"):
            if stage == "CONNECT" and exc.code != 421:
                return SmtpConnectError(
                    f"{server} refused the session: {exc.code} {exc.message}",
                    code=exc.code,
                    reply=exc.message,
                )
            return SmtpConnectionLost(
                f"{server} closed the session at {stage}: {exc.code} {exc.message}",
                code=exc.code,
                reply=exc.message,
                stage=stage,
            )
        return SmtpReplyError(
            f"{server} refused {stage}: {exc.code} {exc.message}",
            code=exc.code,
            reply=exc.message,
            stage=stage,
        )
    if stage == "CONNECT" and (unverified := _certificate_failure(exc)) is not None:
        return SmtpConnectError(
            f"{server}: TLS certificate verification failed ({unverified.verify_message});"
            " nothing was sent. If the server's certificate comes from a private CA,"
            " set [smtp] ca_file to that CA's certificate (PEM)",
            reply=unverified.verify_message,
        )
    if stage == "CONNECT":
        detail = str(exc) or type(exc).__name__
        return SmtpConnectError(
            f"cannot connect to {server}: {detail}; is the server running"
            " (`newsletter outbox` for the shipped config)?",
            reply=detail,
        )
    return SmtpConnectionLost(
        f"{server} dropped the connection at {stage}: {exc or type(exc).__name__}",
        reply=str(exc) or "connection lost",
        stage=stage,
    )


def _certificate_failure(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate check behind ``exc``: aiosmtplib wraps it for implicit TLS, and
    lets it through as it is from STARTTLS."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
