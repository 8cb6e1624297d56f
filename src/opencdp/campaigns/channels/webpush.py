"""Browser push (Web Push): VAPID authentication (RFC 8292) and aes128gcm payload encryption (RFC 8291).

``Message.to`` is the browser's PushSubscription as JSON: ``{"endpoint", "keys": {"p256dh", "auth"}}``.
The payload (``{"title", "body", "data", "id"}``) is encrypted for that subscription so the push
service cannot read it: an ephemeral P-256 key agrees a secret with the browser's ``p256dh`` key,
HKDF with the ``auth`` secret derives the content key and nonce, and AES-128-GCM seals one record
(RFC 8188 framing: salt, record size, the ephemeral public key, ciphertext). The request carries
``Authorization: vapid t=<ES256 JWT for the endpoint's origin>, k=<VAPID public key>``, ``TTL`` and
``Content-Encoding: aes128gcm``. Push services answer 201; 404 and 410 mean the subscription is
gone (permanent), 429 and 5xx transient.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import hashes, hmac, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from opencdp.campaigns.channels import _http
from opencdp.campaigns.channels.base import (
    Channel,
    ChannelConfigError,
    Message,
    SendResult,
    require,
)

RECORD_SIZE = 4096
# One record: the payload, the 0x02 last-record delimiter and the 16-byte GCM tag must fit in it.
MAX_PLAINTEXT = RECORD_SIZE - 16 - 1 - 16 - 4 - 1 - 65


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _hmac_sha256(key: bytes, data: bytes) -> bytes:
    mac = hmac.HMAC(key, hashes.SHA256())
    mac.update(data)
    return mac.finalize()


def point(public_key: ec.EllipticCurvePublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def derive_key_nonce(auth_secret: bytes, ecdh_secret: bytes, ua_public: bytes, as_public: bytes,
                     salt: bytes) -> tuple[bytes, bytes]:
    """RFC 8291 section 3.4: the content-encryption key and nonce both sides derive."""
    prk_key = _hmac_sha256(auth_secret, ecdh_secret)
    ikm = _hmac_sha256(prk_key, b"WebPush: info\x00" + ua_public + as_public + b"\x01")
    prk = _hmac_sha256(salt, ikm)
    cek = _hmac_sha256(prk, b"Content-Encoding: aes128gcm\x00\x01")[:16]
    nonce = _hmac_sha256(prk, b"Content-Encoding: nonce\x00\x01")[:12]
    return cek, nonce


def encrypt(plaintext: bytes, ua_public: bytes, auth_secret: bytes, *, salt: bytes | None = None,
            private_key: ec.EllipticCurvePrivateKey | None = None) -> bytes:
    """The aes128gcm body for a subscription with public key ``ua_public`` and ``auth_secret``."""
    if len(plaintext) > MAX_PLAINTEXT:
        raise ValueError(f"web push payload is {len(plaintext)} bytes; at most {MAX_PLAINTEXT} fit")
    salt = salt or os.urandom(16)
    as_key = private_key or ec.generate_private_key(ec.SECP256R1())
    as_public = point(as_key.public_key())
    receiver = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), ua_public)
    ecdh_secret = as_key.exchange(ec.ECDH(), receiver)
    cek, nonce = derive_key_nonce(auth_secret, ecdh_secret, ua_public, as_public, salt)
    ciphertext = AESGCM(cek).encrypt(nonce, plaintext + b"\x02", None)
    return salt + struct.pack("!IB", RECORD_SIZE, len(as_public)) + as_public + ciphertext


def vapid_jwt(private_key: ec.EllipticCurvePrivateKey, audience: str, subject: str, expires_in_s: int = 12 * 3600,
              now: float | None = None) -> str:
    """An ES256 JWT for the push service at ``audience`` (the endpoint's origin); at most 24 h valid."""
    header = b64url(json.dumps({"typ": "JWT", "alg": "ES256"}).encode())
    claims = {"aud": audience, "exp": int((time.time() if now is None else now) + expires_in_s), "sub": subject}
    signing_input = f"{header}.{b64url(json.dumps(claims).encode())}".encode()
    r, s = decode_dss_signature(private_key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
    # JWS wants the raw 64-byte r||s, not the DER that cryptography returns.
    return f"{signing_input.decode()}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def load_vapid_key(value: str) -> ec.EllipticCurvePrivateKey:
    """A VAPID private key as PEM, or as the base64url raw 32-byte scalar web-push libraries print."""
    try:
        if "BEGIN" in value:
            key = serialization.load_pem_private_key(value.encode(), password=None)
        else:
            key = ec.derive_private_key(int.from_bytes(b64url_decode(value), "big"), ec.SECP256R1())
    except ValueError as e:
        raise ChannelConfigError(f"webpush channel: vapid_private_key is not a P-256 key ({e})",
                                 field="vapid_private_key") from e
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ChannelConfigError("webpush channel: vapid_private_key must be a P-256 (prime256v1) key",
                                 field="vapid_private_key")
    return key


class WebPushChannel(Channel):
    name = "webpush"

    def __init__(self, vapid_private_key: ec.EllipticCurvePrivateKey, subject: str, *, ttl_s: int = 86400,
                 urgency: str = "normal", config: Mapping[str, Any] | None = None) -> None:
        if not subject.startswith(("mailto:", "https:")):
            raise ChannelConfigError("webpush channel: vapid_subject must be a mailto: or https: URL the push "
                                     "service can contact", field="vapid_subject")
        self.key = vapid_private_key
        self.public_key = b64url(point(vapid_private_key.public_key()))
        self.subject = subject
        self.ttl_s = ttl_s
        self.urgency = urgency
        self.client = _http.make_client(config or {}, self.name)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> WebPushChannel:
        key = load_vapid_key(str(require(config, "vapid_private_key", "webpush", "the VAPID private key (PEM or "
                                                                                 "base64url)")))
        return cls(key, str(require(config, "vapid_subject", "webpush", "mailto: contact of the sender")),
                   ttl_s=int(config.get("ttl_s", 86400)), urgency=str(config.get("urgency", "normal")), config=config)

    def payload(self, message: Message) -> bytes:
        return json.dumps({"id": message.message_id, "title": message.subject or "", "body": message.text,
                           "data": dict(message.data)}, separators=(",", ":"), default=str).encode()

    def send(self, message: Message) -> SendResult:
        try:
            subscription = json.loads(message.to)
            endpoint = str(subscription["endpoint"])
            ua_public = b64url_decode(subscription["keys"]["p256dh"])
            auth_secret = b64url_decode(subscription["keys"]["auth"])
            body = encrypt(self.payload(message), ua_public, auth_secret)
        except (ValueError, KeyError, TypeError) as e:
            return SendResult.permanent(f"web push subscription or payload is unusable: {e}")
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return SendResult.permanent(f"web push endpoint {endpoint!r} is not a URL")
        audience = f"{parts.scheme}://{parts.netloc}"
        headers = {
            "Authorization": f"vapid t={vapid_jwt(self.key, audience, self.subject)}, k={self.public_key}",
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "TTL": str(self.ttl_s),
            "Urgency": self.urgency,
        }
        response = _http.post(self.client, endpoint, content=body, headers=headers)
        if isinstance(response, SendResult):
            return response
        if response.is_success:
            return SendResult.sent(response.headers.get("location"))
        return _http.classify(response, f"web push {response.status_code}: {response.text[:300]}")

    def close(self) -> None:
        self.client.close()
