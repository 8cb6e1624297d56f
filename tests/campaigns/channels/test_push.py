"""FCM HTTP v1 (service-account JWT exchanged for a token, then messages:send) and Web Push
(VAPID + RFC 8291), each against a local server that checks what a real one checks."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from opencdp.campaigns.channels import ChannelConfigError, build_channel
from opencdp.campaigns.channels.webpush import b64url, encrypt

from .support import FakeProvider, Reply, Request, json_reply, message


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    header, claims, signature = token.split(".")
    return json.loads(unb64(header)), json.loads(unb64(claims)), f"{header}.{claims}".encode(), unb64(signature)


# -- FCM ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def service_account() -> tuple[dict[str, str], rsa.RSAPublicKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    account = {"type": "service_account", "project_id": "shop-app", "private_key_id": "kid-1", "private_key": pem,
               "client_email": "fcm@shop-app.iam.gserviceaccount.com"}
    return account, key.public_key()


class FakeFcm:
    """Google's token endpoint and the FCM v1 send endpoint in one server."""

    def __init__(self, provider: FakeProvider, public_key: rsa.RSAPublicKey) -> None:
        self.provider = provider
        self.public_key = public_key
        self.tokens_issued = 0
        self.send_replies: list[Reply] = []
        provider.responder = self.respond

    def respond(self, request: Request) -> Reply:
        if request.path == "/token":
            form = request.form()
            assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
            header, claims, signed, signature = jwt_parts(form["assertion"])
            assert header == {"alg": "RS256", "typ": "JWT", "kid": "kid-1"}
            self.public_key.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
            assert claims["iss"] == "fcm@shop-app.iam.gserviceaccount.com"
            assert claims["scope"] == "https://www.googleapis.com/auth/firebase.messaging"
            assert claims["aud"] == self.provider.url + "/token"
            assert claims["exp"] - claims["iat"] == 3600 and abs(claims["iat"] - time.time()) < 60
            self.tokens_issued += 1
            return json_reply(200, {"access_token": f"ya29.token{self.tokens_issued}", "expires_in": 3599,
                                    "token_type": "Bearer"})
        assert request.path == "/v1/projects/shop-app/messages:send"
        if self.send_replies:
            return self.send_replies.pop(0)
        return json_reply(200, {"name": "projects/shop-app/messages/0:1500415314455276%31bd1c9631bd1c96"})


def fcm_error(code: int, status: str, error_code: str | None = None, headers: dict[str, str] | None = None) -> Reply:
    details = [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": error_code}] \
        if error_code else []
    return json_reply(code, {"error": {"code": code, "message": f"{status} happened", "status": status,
                                       "details": details}}, headers)


def fcm_channel(provider: FakeProvider, account: dict[str, str]) -> Any:
    return build_channel("push", {"service_account": json.dumps(account), "token_uri": provider.url + "/token",
                                  "api_base": provider.url})


def test_fcm_token_exchange_and_send_format(provider: FakeProvider,
                                            service_account: tuple[dict[str, str], rsa.RSAPublicKey]) -> None:
    account, public_key = service_account
    fake = FakeFcm(provider, public_key)
    channel = fcm_channel(provider, account)
    result = channel.send(message("push", "fcm-token-abc", subject="Sale", text="Sofas -20%",
                                  data={"deeplink": "shop://sale", "count": 3}))
    assert result.status == "sent"
    assert result.provider_message_id == "projects/shop-app/messages/0:1500415314455276%31bd1c9631bd1c96"
    send = provider.last
    assert send.headers["authorization"] == "Bearer ya29.token1"
    assert send.json() == {"message": {"token": "fcm-token-abc", "notification": {"title": "Sale", "body": "Sofas -20%"},
                                       "data": {"deeplink": "shop://sale", "count": "3", "message_id": "c1-s1-p1"}}}
    channel.send(message("push", "fcm-token-abc"))
    assert fake.tokens_issued == 1  # the access token is cached


@pytest.mark.parametrize(("reply", "expected", "retry"), [
    (fcm_error(404, "NOT_FOUND", "UNREGISTERED"), "permanent", None),
    (fcm_error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT"), "permanent", None),
    (fcm_error(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", {"Retry-After": "30"}), "transient", 30.0),
    (fcm_error(503, "UNAVAILABLE", "UNAVAILABLE"), "transient", None),
    (fcm_error(403, "PERMISSION_DENIED", "THIRD_PARTY_AUTH_ERROR"), "transient", 300.0),
])
def test_fcm_errors(provider: FakeProvider, service_account: tuple[dict[str, str], rsa.RSAPublicKey],
                    reply: Reply, expected: str, retry: float | None) -> None:
    fake = FakeFcm(provider, service_account[1])
    fake.send_replies = [reply]
    result = fcm_channel(provider, service_account[0]).send(message("push", "t"))
    assert (result.status, result.retry_after_s) == (expected, retry)


def test_fcm_refreshes_a_revoked_token_once(provider: FakeProvider,
                                            service_account: tuple[dict[str, str], rsa.RSAPublicKey]) -> None:
    fake = FakeFcm(provider, service_account[1])
    fake.send_replies = [fcm_error(401, "UNAUTHENTICATED")]
    result = fcm_channel(provider, service_account[0]).send(message("push", "t"))
    assert result.status == "sent" and fake.tokens_issued == 2
    assert provider.last.headers["authorization"] == "Bearer ya29.token2"


def test_fcm_bad_credentials_are_config_errors(service_account: tuple[dict[str, str], rsa.RSAPublicKey]) -> None:
    account = service_account[0]
    for bad, field_name in [({**account, "private_key": "-----BEGIN PRIVATE KEY-----\nnope"},
                             "service_account.private_key"),
                            ({k: v for k, v in account.items() if k != "client_email"}, "client_email"),
                            ("{not json", "service_account")]:
        with pytest.raises(ChannelConfigError) as info:
            build_channel("push", {"service_account": bad})
        assert info.value.field == field_name


# -- Web Push -----------------------------------------------------------------------------------

def decrypt(body: bytes, ua_private: ec.EllipticCurvePrivateKey, auth_secret: bytes) -> bytes:
    """The browser's side of RFC 8291, written with HKDF independently of the sender's code."""
    salt, record_size, id_len = body[:16], int.from_bytes(body[16:20], "big"), body[20]
    as_public = body[21:21 + id_len]
    ciphertext = body[21 + id_len:]
    assert record_size == 4096 and id_len == 65
    ua_public = ua_private.public_key().public_bytes(serialization.Encoding.X962,
                                                     serialization.PublicFormat.UncompressedPoint)
    shared = ua_private.exchange(ec.ECDH(), ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), as_public))
    ikm = HKDF(hashes.SHA256(), 32, auth_secret, b"WebPush: info\x00" + ua_public + as_public).derive(shared)
    cek = HKDF(hashes.SHA256(), 16, salt, b"Content-Encoding: aes128gcm\x00").derive(ikm)
    nonce = HKDF(hashes.SHA256(), 12, salt, b"Content-Encoding: nonce\x00").derive(ikm)
    padded = AESGCM(cek).decrypt(nonce, ciphertext, None)
    assert padded.rstrip(b"\x00").endswith(b"\x02")  # the last-record delimiter
    return padded.rstrip(b"\x00")[:-1]


def test_rfc8291_appendix_a_vector() -> None:
    as_private = ec.derive_private_key(int.from_bytes(unb64("yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw"), "big"),
                                       ec.SECP256R1())
    body = encrypt(b"When I grow up, I want to be a watermelon",
                   unb64("BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"),
                   unb64("BTBZMqHH6r4Tts7J_aSIgg"), salt=unb64("DGv6ra1nlYgDCS1FRnbzlw"), private_key=as_private)
    assert b64url(body) == (
        "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru"
        "3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN")
    ua_private = ec.derive_private_key(int.from_bytes(unb64("q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94"), "big"),
                                       ec.SECP256R1())
    assert decrypt(body, ua_private, unb64("BTBZMqHH6r4Tts7J_aSIgg")) == b"When I grow up, I want to be a watermelon"


def test_web_push_request_decrypts_with_the_subscription_key(provider: FakeProvider) -> None:
    vapid = ec.generate_private_key(ec.SECP256R1())
    vapid_pem = vapid.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
    browser = ec.generate_private_key(ec.SECP256R1())
    auth_secret = b"0123456789abcdef"
    subscription = {"endpoint": provider.url + "/push/v2/abc123", "keys": {
        "p256dh": b64url(browser.public_key().public_bytes(serialization.Encoding.X962,
                                                           serialization.PublicFormat.UncompressedPoint)),
        "auth": b64url(auth_secret)}}
    provider.responder = lambda r: (201, {"Location": provider.url + "/m/42"}, b"")
    channel = build_channel("webpush", {"vapid_private_key": vapid_pem, "vapid_subject": "mailto:ops@shop.example",
                                        "ttl_s": 3600})
    result = channel.send(message("webpush", json.dumps(subscription), subject="Back in stock", text="The lamp is back",
                                  data={"url": "/p/lamp"}))
    assert result.status == "sent" and result.provider_message_id == provider.url + "/m/42"
    request = provider.last
    assert request.path == "/push/v2/abc123"
    assert request.headers["content-encoding"] == "aes128gcm" and request.headers["ttl"] == "3600"
    payload = json.loads(decrypt(request.body, browser, auth_secret))
    assert payload == {"id": "c1-s1-p1", "title": "Back in stock", "body": "The lamp is back", "data": {"url": "/p/lamp"}}
    # VAPID: "vapid t=<jwt>, k=<public key>", an ES256 JWT for the endpoint's origin, checked with k.
    scheme, _, params = request.headers["authorization"].partition(" ")
    fields = dict(p.strip().split("=", 1) for p in params.split(","))
    assert scheme == "vapid"
    header, claims, signed, signature = jwt_parts(fields["t"])
    assert header == {"typ": "JWT", "alg": "ES256"}
    assert claims["aud"] == provider.url and claims["sub"] == "mailto:ops@shop.example"
    assert time.time() < claims["exp"] <= time.time() + 24 * 3600
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64(fields["k"]))
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    key.verify(der, signed, ec.ECDSA(hashes.SHA256()))

    provider.responder = lambda r: (410, {}, b"subscription expired")
    assert channel.send(message("webpush", json.dumps(subscription))).status == "permanent"
    provider.responder = lambda r: (429, {"Retry-After": "60"}, b"")
    assert channel.send(message("webpush", json.dumps(subscription))).retry_after_s == 60.0
    assert channel.send(message("webpush", "not json")).status == "permanent"


def test_web_push_config() -> None:
    raw = b64url(ec.generate_private_key(ec.SECP256R1()).private_numbers().private_value.to_bytes(32, "big"))
    assert build_channel("webpush", {"vapid_private_key": raw, "vapid_subject": "mailto:a@b.c"}).name == "webpush"
    with pytest.raises(ChannelConfigError) as info:
        build_channel("webpush", {"vapid_private_key": raw, "vapid_subject": "ops"})
    assert info.value.field == "vapid_subject"
    with pytest.raises(ChannelConfigError) as info:
        build_channel("webpush", {"vapid_private_key": "AAAA", "vapid_subject": "mailto:a@b.c"})
    assert info.value.field == "vapid_private_key"
    rsa_pem = rsa.generate_private_key(public_exponent=65537, key_size=1024).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    with pytest.raises(ChannelConfigError) as info:
        build_channel("webpush", {"vapid_private_key": rsa_pem, "vapid_subject": "mailto:a@b.c"})
    assert info.value.field == "vapid_private_key"
