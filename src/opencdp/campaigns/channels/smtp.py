"""Email over SMTP: a pool of persistent connections, MIME building, one-click unsubscribe, DKIM.

Each message becomes ``multipart/alternative`` (text, then HTML) when it has HTML, plain text
otherwise, with ``Message-ID: <message_id@domain>`` (a resend after a crash carries the same id,
so receiving systems and our own bounce matching see one message) and, for marketing mail,
``List-Unsubscribe`` plus ``List-Unsubscribe-Post: List-Unsubscribe=One-Click`` (RFC 8058, which
Gmail and Yahoo require of bulk senders). With ``dkim`` configured the bytes are signed
(relaxed/relaxed rsa-sha256) right before they are sent.

Connections are opened on demand up to ``pool_size`` and kept open between sends (EHLO,
STARTTLS and AUTH are paid once per connection, not per message); one that fails is dropped and
the message is retried once on a fresh connection when the failure was on a reused one (servers
close idle connections). A connection is recycled after ``max_per_connection`` messages.
``send_many`` spreads a batch over the pool's connections in parallel threads.

SMTP replies map to results: 2xx sent; 4xx (greylisting, mailbox busy) transient; 5xx on the
recipient or the data permanent; connection errors and timeouts transient. A refused login or
sender is transient with a long wait: it is the sender's problem, the recipient must not be
suppressed for it.
"""

from __future__ import annotations

import smtplib
import ssl
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate
from typing import Any

from opencdp.campaigns.channels.base import (
    Channel,
    ChannelConfigError,
    Message,
    SendResult,
    require,
)
from opencdp.campaigns.channels.dkim import DkimSigner

SECURITY = ("starttls", "ssl", "none")
SENDER_PROBLEM_WAIT_S = 300.0


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    security: str = "starttls"
    username: str | None = None
    password: str | None = None
    timeout_s: float = 30.0
    local_hostname: str | None = None
    verify_tls: bool = True
    ca_file: str | None = None

    def tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca_file)
        if not self.verify_tls:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


@dataclass
class _Connection:
    smtp: smtplib.SMTP
    sent: int = 0


def open_connection(settings: SmtpSettings) -> smtplib.SMTP:
    """A connection that has said EHLO, upgraded to TLS if asked and logged in if configured."""
    smtp: smtplib.SMTP
    if settings.security == "ssl":
        smtp = smtplib.SMTP_SSL(settings.host, settings.port, settings.local_hostname, timeout=settings.timeout_s,
                                context=settings.tls_context())
    else:
        smtp = smtplib.SMTP(settings.host, settings.port, settings.local_hostname, timeout=settings.timeout_s)
    try:
        smtp.ehlo()
        if settings.security == "starttls":
            smtp.starttls(context=settings.tls_context())
            smtp.ehlo()
        if settings.username:
            smtp.login(settings.username, settings.password or "")
    except BaseException:
        smtp.close()
        raise
    return smtp


class SmtpChannel(Channel):
    name = "email"

    def __init__(self, settings: SmtpSettings, sender: str, *, sender_name: str | None = None,
                 reply_to: str | None = None, return_path: str | None = None, dkim: DkimSigner | None = None,
                 message_id_domain: str | None = None, pool_size: int = 4, max_per_connection: int = 1000) -> None:
        self.settings = settings
        self.sender = Address(display_name=sender_name or "", addr_spec=sender)
        self.reply_to = reply_to
        self.return_path = return_path or sender
        self.dkim = dkim
        self.domain = message_id_domain or sender.rpartition("@")[2]
        self.pool_size = pool_size
        self.max_per_connection = max_per_connection
        self._idle: list[_Connection] = []
        self._open = 0
        self._cond = threading.Condition()
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> SmtpChannel:
        host = str(require(config, "host", "email", "the SMTP server's host name"))
        security = str(config.get("security", "starttls"))
        if security not in SECURITY:
            raise ChannelConfigError(f"email channel: security must be one of {', '.join(SECURITY)}",
                                     field="security")
        default_port = {"starttls": 587, "ssl": 465, "none": 25}[security]
        try:
            port = int(config.get("port", default_port))
            pool_size = int(config.get("pool_size", 4))
            timeout = float(config.get("timeout_s", 30.0))
        except (TypeError, ValueError) as e:
            raise ChannelConfigError(f"email channel: port, pool_size and timeout_s must be numbers ({e})",
                                     field="port") from e
        if pool_size < 1:
            raise ChannelConfigError("email channel: pool_size must be at least 1", field="pool_size")
        if config.get("username") and config.get("password") is None:
            raise ChannelConfigError("email channel: username is set but password is not", field="password")
        sender = str(require(config, "from", "email", "the From address, e.g. news@shop.example"))
        if "@" not in sender:
            raise ChannelConfigError(f"email channel: from {sender!r} is not an e-mail address", field="from")
        dkim = None
        if config.get("dkim"):
            d = config["dkim"]
            dkim = DkimSigner(str(require(d, "domain", "email", "dkim.domain: the signing domain (d=)")),
                              str(require(d, "selector", "email", "dkim.selector: the DNS selector (s=)")),
                              str(require(d, "private_key", "email", "dkim.private_key: PEM RSA key")))
        settings = SmtpSettings(host, port, security, config.get("username"), config.get("password"), timeout,
                                config.get("local_hostname"), bool(config.get("verify_tls", True)),
                                config.get("ca_file"))
        return cls(settings, sender, sender_name=config.get("from_name"), reply_to=config.get("reply_to"),
                   return_path=config.get("return_path"), dkim=dkim, message_id_domain=config.get("message_id_domain"),
                   pool_size=pool_size, max_per_connection=int(config.get("max_per_connection", 1000)))

    # -- building ------------------------------------------------------------------------------------
    def build(self, message: Message) -> bytes:
        """The bytes that go on the wire, signed when DKIM is configured."""
        mail = EmailMessage(policy=SMTP)
        mail["From"] = self.sender
        mail["To"] = message.to
        mail["Subject"] = message.subject or ""
        mail["Date"] = formatdate(time.time(), localtime=False, usegmt=True)
        mail["Message-ID"] = f"<{message.message_id}@{self.domain}>"
        if self.reply_to:
            mail["Reply-To"] = self.reply_to
        if message.list_unsubscribe:
            mail["List-Unsubscribe"] = f"<{message.list_unsubscribe}>"
            if message.list_unsubscribe_post:
                mail["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        for name, value in message.headers.items():
            mail[name] = value
        mail.set_content(message.text or "", subtype="plain", charset="utf-8")
        if message.html:
            mail.add_alternative(message.html, subtype="html", charset="utf-8")
        raw = mail.as_bytes()
        return self.dkim.sign(raw) if self.dkim else raw

    # -- the pool ------------------------------------------------------------------------------------
    def _acquire(self) -> tuple[_Connection, bool]:
        """An idle connection (reused=True) or a new one when the pool has room; waits otherwise."""
        with self._cond:
            while True:
                if self._closed:
                    raise smtplib.SMTPServerDisconnected("channel is closed")
                if self._idle:
                    return self._idle.pop(), True
                if self._open < self.pool_size:
                    self._open += 1
                    break
                self._cond.wait()
        try:
            return _Connection(open_connection(self.settings)), False
        except BaseException:
            self._discard(None)
            raise

    def _release(self, conn: _Connection) -> None:
        if conn.sent >= self.max_per_connection:
            self._discard(conn)
            return
        with self._cond:
            self._idle.append(conn)
            self._cond.notify()

    def _discard(self, conn: _Connection | None) -> None:
        if conn is not None:
            try:
                conn.smtp.quit()
            except (smtplib.SMTPException, OSError):
                conn.smtp.close()
        with self._cond:
            self._open -= 1
            self._cond.notify()

    # -- sending -------------------------------------------------------------------------------------
    def send(self, message: Message) -> SendResult:
        if "@" not in message.to or any(c in message.to for c in "\r\n<>"):
            return SendResult.permanent(f"{message.to!r} is not an e-mail address")
        try:
            raw = self.build(message)
        except (ValueError, TypeError) as e:
            return SendResult.permanent(f"message cannot be built: {e}")
        for _attempt in (0, 1):
            try:
                conn, reused = self._acquire()
            except smtplib.SMTPAuthenticationError as e:
                return SendResult.transient(f"SMTP login refused: {e.smtp_code} {_text(e.smtp_error)}",
                                            SENDER_PROBLEM_WAIT_S)
            except (smtplib.SMTPException, OSError) as e:
                return SendResult.transient(f"cannot connect to {self.settings.host}:{self.settings.port}: {e!r}")
            outcome = self._transact(conn, message, raw)
            if outcome is None:
                # The connection broke: a reused one may just have been closed by the server while
                # idle, so one more try on a fresh connection; a fresh one failing is reported.
                if reused:
                    continue
                return SendResult.transient(f"SMTP connection to {self.settings.host} failed during the transaction")
            return outcome
        return SendResult.transient(f"SMTP connection to {self.settings.host} failed twice")

    def _transact(self, conn: _Connection, message: Message, raw: bytes) -> SendResult | None:
        """One MAIL/RCPT/DATA transaction; None when the connection died and was discarded."""
        try:
            conn.smtp.sendmail(self.return_path, [message.to], raw)
        except smtplib.SMTPRecipientsRefused as e:
            self._release(conn)
            code, text = e.recipients.get(message.to, (550, b"recipient refused"))
            return _by_code(code, f"recipient refused: {code} {_text(text)}")
        except smtplib.SMTPSenderRefused as e:
            self._release(conn)
            return SendResult.transient(f"sender refused: {e.smtp_code} {_text(e.smtp_error)}",
                                        None if e.smtp_code < 500 else SENDER_PROBLEM_WAIT_S)
        except smtplib.SMTPDataError as e:
            self._release(conn)
            return _by_code(e.smtp_code, f"message refused: {e.smtp_code} {_text(e.smtp_error)}")
        except smtplib.SMTPResponseException as e:
            self._discard(conn)
            return _by_code(e.smtp_code, f"SMTP error: {e.smtp_code} {_text(e.smtp_error)}")
        except (smtplib.SMTPException, OSError):
            self._discard(conn)
            return None
        conn.sent += 1
        self._release(conn)
        return SendResult.sent(f"<{message.message_id}@{self.domain}>")

    def send_many(self, messages: Sequence[Message]) -> list[SendResult]:
        """The batch over the pool's connections at once; results in the order of ``messages``."""
        if len(messages) <= 1 or self.pool_size == 1:
            return [self.send(m) for m in messages]
        with self._cond:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.pool_size, thread_name_prefix="smtp")
            executor = self._executor
        return list(executor.map(self.send, messages))

    def close(self) -> None:
        """Finish the batches in flight, then QUIT every idle connection."""
        with self._cond:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            self._discard(conn)


def _by_code(code: int, error: str) -> SendResult:
    return SendResult.transient(error) if 400 <= code < 500 else SendResult.permanent(error)


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value
