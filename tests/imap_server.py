"""A real IMAP server for the bounce tests: Debian's dovecot, started in a folder of its own
with one user, a Maildir, and a self-signed certificate for imaps and STARTTLS."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
USER = "bounces"
PASSWORD = "imap-test-password"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def available() -> bool:
    return Path(DOVECOT).exists() and shutil.which("openssl") is not None


class Dovecot:
    """dovecot on 127.0.0.1: ``imap_port`` (STARTTLS) and ``imaps_port`` (TLS); ``ca_file``
    is its self-signed certificate. Close it to stop it and remove its folder."""

    def __init__(self) -> None:
        # Its own folder under /tmp, not pytest's (mode 0700, closed to the unprivileged
        # user dovecot's processes run as when the tests run as root).
        self.root = Path(tempfile.mkdtemp(prefix="newsletter-dovecot-"))
        self.root.chmod(0o755)
        self.imap_port, self.imaps_port = free_port(), free_port()
        self.ca_file = self.root / "cert.pem"
        key = self.root / "key.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
             "-out", str(self.ca_file), "-days", "1", "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=IP:127.0.0.1"],
            check=True, capture_output=True,
        )  # fmt: skip
        key.chmod(0o600)
        # Mail may not be accessed as root: as root, the user's mail and dovecot's own
        # unprivileged processes run as nobody.
        account = pwd.getpwnam("nobody") if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())
        mail = self.root / "mail"
        mail.mkdir()
        os.chown(mail, account.pw_uid, account.pw_gid)
        (self.root / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n")
        dh = Path("/usr/share/dovecot/dh.pem")
        self.config = self.root / "dovecot.conf"
        self.config.write_text(
            f"""
base_dir = {self.root}/run
state_dir = {self.root}/state
log_path = {self.root}/dovecot.log
protocols = imap
listen = 127.0.0.1
default_internal_user = {account.pw_name}
default_login_user = {account.pw_name}
first_valid_uid = {account.pw_uid}
ssl = yes
ssl_cert = <{self.ca_file}
ssl_key = <{key}
{f"ssl_dh = <{dh}" if dh.exists() else ""}
auth_mechanisms = plain login
mail_location = maildir:{mail}/%u
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {self.root}/passwd
}}
userdb {{
  driver = static
  args = uid={account.pw_uid} gid={account.pw_gid} home={mail}/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.imaps_port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
""",
            encoding="utf-8",
        )
        self.process = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._wait()

    def _wait(self) -> None:
        deadline = time.monotonic() + 15
        while not self._listening():
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = self.root / "dovecot.log"
                detail = log.read_text() if log.exists() else ""
                self.close()
                raise RuntimeError(f"dovecot did not start: {detail}")
            time.sleep(0.05)

    def _listening(self) -> bool:
        try:
            for port in (self.imaps_port, self.imap_port):
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return False
        return True

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)
