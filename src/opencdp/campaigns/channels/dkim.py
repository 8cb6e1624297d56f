"""DKIM signing (RFC 6376), relaxed/relaxed canonicalisation, rsa-sha256.

The signature covers the exact bytes that go on the wire: the message is generated first (CRLF
line ends), then its headers and body are canonicalised and signed, and the ``DKIM-Signature``
header is put in front. Receivers fetch the public key from ``<selector>._domainkey.<domain>``
(a TXT record ``v=DKIM1; k=rsa; p=<base64 DER>``, see :func:`dns_record`).
"""

from __future__ import annotations

import base64
import hashlib
import re
import time

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from opencdp.campaigns.channels.base import ChannelConfigError

# Signed when present: what a forwarder or list must not change without breaking the signature.
SIGNED_HEADERS = ("from", "to", "subject", "date", "message-id", "reply-to", "mime-version", "content-type",
                  "list-unsubscribe", "list-unsubscribe-post", "feedback-id")
_WSP = re.compile(rb"[ \t]+")


def relaxed_body(body: bytes) -> bytes:
    """RFC 6376 3.4.4: runs of whitespace become one space, none at line ends, no empty lines at the end."""
    lines = body.split(b"\r\n")
    out = [_WSP.sub(b" ", line).rstrip(b" ") for line in lines]
    while out and out[-1] == b"":
        out.pop()
    return b"".join(line + b"\r\n" for line in out)


def relaxed_header(name: bytes, value: bytes) -> bytes:
    """RFC 6376 3.4.2: lower-case name, unfolded value, whitespace runs as one space, trimmed."""
    value = value.replace(b"\r\n", b"")
    return name.strip().lower() + b":" + _WSP.sub(b" ", value).strip(b" ") + b"\r\n"


def split_message(raw: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Headers as (name, raw value with folding) in order, and the body, of a CRLF message."""
    head, _, body = raw.partition(b"\r\n\r\n")
    headers: list[tuple[bytes, bytes]] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, value + b"\r\n" + line)
        else:
            name, _, value = line.partition(b":")
            headers.append((name, value))
    return headers, body


def canonical_headers(headers: list[tuple[bytes, bytes]], names: list[str]) -> bytes:
    """The signed header block: each listed name once, the last instance first (RFC 6376 5.4.2)."""
    remaining = list(headers)
    out = b""
    for wanted in names:
        for i in range(len(remaining) - 1, -1, -1):
            name, value = remaining[i]
            if name.strip().lower().decode() == wanted:
                out += relaxed_header(name, value)
                del remaining[i]
                break
    return out


class DkimSigner:
    """Signs messages for one domain and selector with one RSA key (1024 bits at least; 2048 advised)."""

    def __init__(self, domain: str, selector: str, private_key_pem: str) -> None:
        try:
            key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
        except ValueError as e:
            raise ChannelConfigError(f"dkim.private_key is not a PEM private key ({e})", field="dkim.private_key") from e
        if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < 1024:
            raise ChannelConfigError("dkim.private_key must be an RSA key of 1024 bits or more",
                                     field="dkim.private_key")
        self.key = key
        self.domain = domain
        self.selector = selector

    def dns_record(self) -> str:
        """The TXT record to publish at ``<selector>._domainkey.<domain>``."""
        der = self.key.public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
        return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"

    def signature_header(self, raw: bytes, timestamp: int | None = None) -> bytes:
        """The ``DKIM-Signature: ...`` header line (with CRLF) for the CRLF message ``raw``."""
        headers, body = split_message(raw)
        present = {name.strip().lower().decode() for name, _ in headers}
        names = [n for n in SIGNED_HEADERS if n in present]
        body_hash = base64.b64encode(hashlib.sha256(relaxed_body(body)).digest()).decode()
        t = int(time.time()) if timestamp is None else timestamp
        value = (f" v=1; a=rsa-sha256; c=relaxed/relaxed; d={self.domain}; s={self.selector}; t={t};"
                 f" h={':'.join(names)}; bh={body_hash}; b=")
        # The DKIM-Signature header itself is signed with an empty b= and without its final CRLF.
        signed = canonical_headers(headers, names) + relaxed_header(b"DKIM-Signature", value.encode())[:-2]
        signature = self.key.sign(signed, padding.PKCS1v15(), hashes.SHA256())
        return b"DKIM-Signature:" + value.encode() + base64.b64encode(signature) + b"\r\n"

    def sign(self, raw: bytes, timestamp: int | None = None) -> bytes:
        return self.signature_header(raw, timestamp) + raw
