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

Addresses: an internationalised domain (``пример.рф``) is sent in its IDNA form, which every
server accepts; a non-ASCII local part (``иван@пример.рф``) needs the server's ``SMTPUTF8``
(RFC 6531): the envelope carries ``SMTPUTF8`` and the ``To`` header is UTF-8 (RFC 6532). A server
without it gets nothing for that recipient, whose result is a permanent ``not sent:`` error
(not the address's fault: it is never suppressed for it); the rest of the batch goes as usual.
"""

from __future__ import annotations

import dataclasses
import re
import smtplib
import ssl
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any

from opencdp.campaigns.channels import mime
from opencdp.campaigns.channels.base import (
    NOT_SENT,
    Channel,
    ChannelConfigError,
    Message,
    SendResult,
    require,
)
from opencdp.campaigns.channels.dkim import DkimSigner
from opencdp.campaigns.channels.pipelining import send_pipelined

SECURITY = ("starttls", "ssl", "none")
SENDER_PROBLEM_WAIT_S = 300.0
PIPELINE_GROUP = 100  # messages per pipelined run on one connection before it goes back to the pool
_HEADER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,75}")
_OWN_HEADERS = frozenset({"from", "to", "subject", "date", "message-id", "mime-version", "content-type",
                          "content-transfer-encoding", "list-unsubscribe", "list-unsubscribe-post", "dkim-signature",
                          # recipients come from the envelope only: a template must not add any
                          "cc", "bcc", "sender", "return-path", "received", "reply-to"})
_date_cache: tuple[int, str] = (0, "")


def _date() -> str:
    """The Date header, formatted once per second (formatdate costs more than the rest of a header block)."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, localtime=False, usegmt=True))
    return _date_cache[1]


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
        self.from_header = mime.address(sender_name, sender)
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
        reply_to = config.get("reply_to")
        if reply_to is not None and (not str(reply_to).isascii() or "@" not in str(reply_to)):
            raise ChannelConfigError("email channel: reply_to must be an ASCII e-mail address", field="reply_to")
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
        """The bytes that go on the wire, signed when DKIM is configured (see mime.py for the format)."""
        headers = [
            ("From", self.from_header),
            ("To", mime.clean(message.to)),
            ("Subject", mime.encode_words(mime.clean(message.subject or ""))),
            ("Date", _date()),
            ("Message-ID", f"<{message.message_id}@{self.domain}>"),
        ]
        if self.reply_to:
            headers.append(("Reply-To", mime.clean(self.reply_to)))
        if message.list_unsubscribe:
            headers.append(("List-Unsubscribe", f"<{mime.clean(message.list_unsubscribe)}>"))
            if message.list_unsubscribe_post:
                headers.append(("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
        for name, value in message.headers.items():
            if not _HEADER_NAME.fullmatch(name) or name.lower() in _OWN_HEADERS:
                raise ValueError(f"header {name!r} is not allowed: letters, digits and '-', and not an address or "
                                 "structure header (those come from the channel)")
            headers.append((name, mime.encode_words(mime.clean(value))))
        raw = mime.compose(headers, message.text or "", message.html)
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
            except (smtplib.SMTPException, OSError, ValueError):
                conn.smtp.close()
        with self._cond:
            self._open -= 1
            self._cond.notify()

    # -- sending -------------------------------------------------------------------------------------
    def _prepare(self, message: Message) -> tuple[Message, bytes] | SendResult:
        """The message with its address in wire form (IDNA domain), and its bytes; or why it cannot go."""
        if "@" not in message.to or any(c in message.to for c in "\r\n<> "):
            return SendResult.permanent(f"{message.to!r} is not an e-mail address")
        try:
            to = mime.mailbox(message.to)
        except ValueError as e:
            return SendResult.permanent(str(e))
        if to != message.to:
            message = dataclasses.replace(message, to=to)
        try:
            return message, self.build(message)
        except (ValueError, TypeError) as e:
            return SendResult.permanent(f"message cannot be built: {e}")

    def send(self, message: Message) -> SendResult:
        prepared = self._prepare(message)
        return prepared if isinstance(prepared, SendResult) else self._send_raw(*prepared)

    def _no_smtputf8(self, smtp: smtplib.SMTP, message: Message) -> SendResult | None:
        """The result for a non-ASCII address on a server without SMTPUTF8 (None: it can go)."""
        if (self.return_path + message.to).isascii() or smtp.has_extn("smtputf8"):
            return None
        return SendResult.permanent(f"{NOT_SENT}{message.to!r} needs SMTPUTF8 (RFC 6531), which the SMTP server "
                                    f"{self.settings.host} does not offer")

    def _connect(self) -> tuple[_Connection, bool] | SendResult:
        try:
            return self._acquire()
        except smtplib.SMTPAuthenticationError as e:
            return SendResult.transient(f"SMTP login refused: {e.smtp_code} {_text(e.smtp_error)}",
                                        SENDER_PROBLEM_WAIT_S)
        except (smtplib.SMTPException, OSError) as e:
            return SendResult.transient(f"cannot connect to {self.settings.host}:{self.settings.port}: {e!r}")

    def _send_raw(self, message: Message, raw: bytes) -> SendResult:
        for _attempt in (0, 1):
            acquired = self._connect()
            if isinstance(acquired, SendResult):
                return acquired
            conn, reused = acquired
            outcome, alive = self._transact(conn, message, raw)
            self._hand_back(conn, alive)
            if outcome is None:
                # The connection broke: a reused one may just have been closed by the server while
                # idle, so one more try on a fresh connection; a fresh one failing is reported.
                if reused:
                    continue
                return SendResult.transient(f"SMTP connection to {self.settings.host} failed during the transaction")
            return outcome
        return SendResult.transient(f"SMTP connection to {self.settings.host} failed twice")

    def _transact(self, conn: _Connection, message: Message, raw: bytes) -> tuple[SendResult | None, bool]:
        """One MAIL/RCPT/DATA transaction: (result, whether the connection is still usable).

        The result is None when the connection died mid-transaction. The caller hands the
        connection back (``_release``) or drops it (``_discard``) accordingly.
        """
        refused = self._no_smtputf8(conn.smtp, message)
        if refused is not None:
            return refused, True
        options = [] if (self.return_path + message.to).isascii() else ["SMTPUTF8", "BODY=8BITMIME"]
        try:
            conn.smtp.sendmail(self.return_path, [message.to], raw, mail_options=options)
        except smtplib.SMTPRecipientsRefused as e:
            code, text = e.recipients.get(message.to, (550, b"recipient refused"))
            return _by_code(code, f"recipient refused: {code} {_text(text)}"), True
        except smtplib.SMTPSenderRefused as e:
            return SendResult.transient(f"sender refused: {e.smtp_code} {_text(e.smtp_error)}",
                                        None if e.smtp_code < 500 else SENDER_PROBLEM_WAIT_S), True
        except smtplib.SMTPDataError as e:
            return _by_code(e.smtp_code, f"message refused: {e.smtp_code} {_text(e.smtp_error)}"), True
        except smtplib.SMTPResponseException as e:
            return _by_code(e.smtp_code, f"SMTP error: {e.smtp_code} {_text(e.smtp_error)}"), False
        except (smtplib.SMTPException, OSError, ValueError):
            # ValueError: smtplib reading a socket file that is already closed.
            return None, False
        conn.sent += 1
        return SendResult.sent(f"<{message.message_id}@{self.domain}>"), True

    def _hand_back(self, conn: _Connection, alive: bool) -> None:
        if alive:
            self._release(conn)
        else:
            self._discard(conn)

    def send_many(self, messages: Sequence[Message]) -> list[SendResult]:
        """The batch over the pool's connections at once, pipelined where the server allows it.

        Each connection takes a contiguous share of the batch; results come back in the order
        of ``messages``.
        """
        results: list[SendResult | None] = [None] * len(messages)
        todo: list[tuple[int, Message, bytes]] = []
        for i, m in enumerate(messages):
            prepared = self._prepare(m)
            if isinstance(prepared, SendResult):
                results[i] = prepared
            else:
                todo.append((i, *prepared))
        shares = min(self.pool_size, len(todo))
        if shares:
            size = -(-len(todo) // shares)
            chunks = [todo[k:k + size] for k in range(0, len(todo), size)]
            if len(chunks) == 1:
                done = [self._send_share(chunks[0])]
            else:
                with self._cond:
                    if self._executor is None:
                        self._executor = ThreadPoolExecutor(self.pool_size, thread_name_prefix="smtp")
                    executor = self._executor
                done = list(executor.map(self._send_share, chunks))
            for share in done:
                for i, result in share:
                    results[i] = result
        return [r if r is not None else SendResult.transient("not sent") for r in results]

    def _send_share(self, items: list[tuple[int, Message, bytes]]) -> list[tuple[int, SendResult]]:
        """One connection's share of a batch: pipelined groups, or one transaction at a time."""
        acquired = self._connect()
        if isinstance(acquired, SendResult):
            return [(i, acquired) for i, _, _ in items]
        conn, _ = acquired
        out: list[tuple[int, SendResult]] = []
        left = list(items)
        if conn.smtp.has_extn("pipelining"):
            refused = [(i, r) for i, m, _ in left if (r := self._no_smtputf8(conn.smtp, m)) is not None]
            if refused:
                out += refused
                skip = {i for i, _ in refused}
                left = [item for item in left if item[0] not in skip]
            while left:
                group, left = left[:PIPELINE_GROUP], left[PIPELINE_GROUP:]
                settled, broken = send_pipelined(conn.smtp, self.return_path, [(m.to, raw) for _, m, raw in group],
                                                 self._settle, _refused)
                conn.sent += sum(1 for r in settled if r is not None and r.status == "sent")
                out += [(i, dataclasses.replace(r, provider_message_id=f"<{m.message_id}@{self.domain}>")
                         if r.status == "sent" else r)
                        for (i, m, _), r in zip(group, settled, strict=True) if r is not None]
                if broken:
                    self._discard(conn)
                    # What was not settled goes again one by one, on fresh connections.
                    retry = [item for item, r in zip(group, settled, strict=True) if r is None] + left
                    return out + [(i, self._send_raw(m, raw)) for i, m, raw in retry]
            self._release(conn)
            return out
        for n, (i, m, raw) in enumerate(left):
            outcome, alive = self._transact(conn, m, raw)
            if outcome is not None:
                out.append((i, outcome))
            if not alive or conn.sent >= self.max_per_connection:
                # Gone, or due for recycling: the rest of the share goes on other connections.
                self._hand_back(conn, alive)
                rest = left[n + 1:] if outcome is not None else left[n:]
                return out + [(j, self._send_raw(mm, rr)) for j, mm, rr in rest]
        self._release(conn)
        return out

    def _settle(self, recipient: str, reply: tuple[int, bytes]) -> SendResult:
        code, text = reply
        if code == 250:
            return SendResult.sent()
        return _by_code(code, f"message refused: {code} {_text(text)}")

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


def _refused(mail: tuple[int, bytes], rcpt: tuple[int, bytes], data: tuple[int, bytes]) -> SendResult:
    """The first refusal of a pipelined group, mapped as in a plain transaction."""
    if mail[0] != 250:
        return SendResult.transient(f"sender refused: {mail[0]} {_text(mail[1])}",
                                    None if mail[0] < 500 else SENDER_PROBLEM_WAIT_S)
    if rcpt[0] not in (250, 251):
        return _by_code(rcpt[0], f"recipient refused: {rcpt[0]} {_text(rcpt[1])}")
    return _by_code(data[0], f"message refused: {data[0]} {_text(data[1])}")


def _by_code(code: int, error: str) -> SendResult:
    return SendResult.transient(error) if 400 <= code < 500 else SendResult.permanent(error)


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value
