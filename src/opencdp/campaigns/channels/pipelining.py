"""SMTP command pipelining (RFC 2920): one round trip per message instead of four.

Without pipelining each message costs MAIL, RCPT, DATA and the end of data, each waiting for
its reply. A server that advertises PIPELINING accepts them in groups: this writes the content of
message n, its final dot and the MAIL/RCPT/DATA of message n+1 in one write, then reads the
replies in order (RFC 2920 section 3.1 lets the message content start a group). A failed group
(refused recipient) is followed by RSET in the next write. A broken connection stops the batch:
messages whose final reply was read are settled, the others are left as None for the caller to
resend (one whose data went out but whose reply was lost may then arrive twice, with the same
Message-ID, which receivers and our bounce matching treat as one message).
"""

from __future__ import annotations

import re
import smtplib
from collections.abc import Callable, Sequence

from opencdp.campaigns.channels.base import SendResult

_LEADING_DOT = re.compile(rb"(?m)^\.")
Reply = tuple[int, bytes]


def quoted(raw: bytes) -> bytes:
    """The message content as DATA sends it: leading dots doubled, ended by CRLF.CRLF."""
    body = _LEADING_DOT.sub(b"..", raw)
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body + b".\r\n"


def envelope(return_path: str, recipient: str) -> bytes:
    """MAIL, RCPT and DATA; a non-ASCII address is sent in UTF-8 with ``SMTPUTF8`` (the caller checked
    that the server offers it)."""
    utf8 = " SMTPUTF8 BODY=8BITMIME" if not (return_path + recipient).isascii() else ""
    return f"MAIL FROM:<{return_path}>{utf8}\r\nRCPT TO:<{recipient}>\r\nDATA\r\n".encode()


def send_pipelined(smtp: smtplib.SMTP, return_path: str, batch: Sequence[tuple[str, bytes]],
                   settle: Callable[[str, Reply], SendResult], refused: Callable[[Reply, Reply, Reply], SendResult],
                   ) -> tuple[list[SendResult | None], bool]:
    """Send (recipient, bytes) pairs over one connection: a result per pair (None where unsettled)
    and whether the connection broke.

    ``settle`` maps the reply to the end of data, ``refused`` the replies of a group whose DATA
    was not accepted with 354. Connection errors end the batch early; the connection is then
    unusable and the unsettled entries stay None.
    """
    results: list[SendResult | None] = [None] * len(batch)
    prefix = b""
    awaiting: list[int | None] = []  # replies owed before this group's: a message's final reply, or None to skip
    try:
        for i, (recipient, raw) in enumerate(batch):
            smtp.send(prefix + envelope(return_path, recipient))
            for owner in awaiting:
                reply = smtp.getreply()
                if owner is not None:
                    results[owner] = settle(batch[owner][0], reply)
            mail, rcpt, data = smtp.getreply(), smtp.getreply(), smtp.getreply()
            if data[0] == 354 and mail[0] == 250 and rcpt[0] in (250, 251):
                prefix, awaiting = quoted(raw), [i]
            elif data[0] == 354:
                # Refused yet asked for data (a server bug): end the empty data, then reset.
                results[i] = refused(mail, rcpt, data)
                prefix, awaiting = b".\r\nRSET\r\n", [None, None]
            else:
                results[i] = refused(mail, rcpt, data)
                prefix, awaiting = b"RSET\r\n", [None]
        if prefix:
            smtp.send(prefix)
            for owner in awaiting:
                reply = smtp.getreply()
                if owner is not None:
                    results[owner] = settle(batch[owner][0], reply)
    except (smtplib.SMTPException, OSError, ValueError):  # ValueError: smtplib on a closed socket file
        return results, True
    return results, False
