"""Mobile push through Firebase Cloud Messaging HTTP v1 (https://firebase.google.com/docs/cloud-messaging).

Authentication is the OAuth2 service-account flow (RFC 7523): a JWT signed RS256 with the
service account's private key (``iss`` = client_email, ``scope`` = firebase.messaging, ``aud`` =
token_uri) is exchanged at ``token_uri`` for an access token, cached until a minute before it
expires and shared by all threads. Each message is ``POST {api_base}/v1/projects/{project}/messages:send``
with ``{"message": {"token", "notification": {"title", "body"}, "data": {str: str}}}``; FCM
answers ``{"name": "projects/.../messages/<id>"}``.

Errors follow google.rpc.Status with an FcmError detail: UNREGISTERED (404) and INVALID_ARGUMENT
(400) mean the token is dead or the message wrong (permanent); QUOTA_EXCEEDED (429), UNAVAILABLE
(503) and INTERNAL (500) are transient; UNAUTHENTICATED (401) refreshes the access token once.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Mapping
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from opencdp.campaigns.channels import _http
from opencdp.campaigns.channels.base import (
    Channel,
    ChannelConfigError,
    Message,
    SendResult,
    require,
)

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
DEFAULT_TOKEN_URI = "https://oauth2.googleapis.com/token"
DEFAULT_API_BASE = "https://fcm.googleapis.com"
PERMANENT_FCM = frozenset({"UNREGISTERED", "INVALID_ARGUMENT", "SENDER_ID_MISMATCH"})


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def service_account_jwt(client_email: str, private_key: rsa.RSAPrivateKey, key_id: str | None, token_uri: str,
                        now: float | None = None) -> str:
    """The signed assertion exchanged for an access token (valid one hour, the maximum Google accepts)."""
    issued = int(time.time() if now is None else now)
    header: dict[str, str] = {"alg": "RS256", "typ": "JWT"}
    if key_id:
        header["kid"] = key_id
    claims = {"iss": client_email, "scope": SCOPE, "aud": token_uri, "iat": issued, "exp": issued + 3600}
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}".encode()
    signature = private_key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input.decode()}.{b64url(signature)}"


class FcmChannel(Channel):
    name = "push"

    def __init__(self, service_account: Mapping[str, Any], *, project_id: str | None = None,
                 api_base: str = DEFAULT_API_BASE, token_uri: str | None = None,
                 config: Mapping[str, Any] | None = None) -> None:
        self.client_email = str(require(service_account, "client_email", "push", "the service account e-mail "
                                        "(from the Firebase service-account JSON)"))
        pem = str(require(service_account, "private_key", "push", "the PEM private key of the service account"))
        try:
            key = serialization.load_pem_private_key(pem.encode(), password=None)
        except ValueError as e:
            raise ChannelConfigError(f"push channel: private_key is not a PEM private key ({e})",
                                     field="service_account.private_key") from e
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ChannelConfigError("push channel: private_key must be an RSA key", field="service_account.private_key")
        self.private_key = key
        self.key_id = service_account.get("private_key_id")
        self.project_id = str(project_id or require(service_account, "project_id", "push", "the Firebase project id"))
        self.token_uri = str(token_uri or service_account.get("token_uri") or DEFAULT_TOKEN_URI)
        self.url = f"{api_base.rstrip('/')}/v1/projects/{self.project_id}/messages:send"
        self.client = _http.make_client(config or {}, self.name)
        self._lock = threading.Lock()
        self._token: str | None = None
        self._token_expires = 0.0

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> FcmChannel:
        account = require(config, "service_account", "push", "the Firebase service-account JSON (a dict or its text)")
        if isinstance(account, str):
            try:
                account = json.loads(account)
            except ValueError as e:
                raise ChannelConfigError(f"push channel: service_account is not JSON ({e})",
                                         field="service_account") from e
        if not isinstance(account, Mapping):
            raise ChannelConfigError("push channel: service_account must be a JSON object", field="service_account")
        return cls(account, project_id=config.get("project_id"), api_base=str(config.get("api_base", DEFAULT_API_BASE)),
                   token_uri=config.get("token_uri"), config=config)

    def access_token(self, *, refresh: bool = False) -> str | SendResult:
        """The cached bearer token, exchanged again when it is about to expire or was refused."""
        with self._lock:
            if not refresh and self._token and time.time() < self._token_expires - 60:
                return self._token
            assertion = service_account_jwt(self.client_email, self.private_key, self.key_id, self.token_uri)
            response = _http.post(self.client, self.token_uri, data={
                "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion})
            if isinstance(response, SendResult):
                return response
            answer = _http.json_body(response)
            if response.status_code != 200 or "access_token" not in answer:
                # A refused service account is the operator's problem: wait, never suppress the token.
                return SendResult.transient(f"FCM token exchange failed: HTTP {response.status_code} "
                                            f"{answer.get('error', '')} {answer.get('error_description', '')}", 300.0)
            self._token = str(answer["access_token"])
            self._token_expires = time.time() + float(answer.get("expires_in", 3600))
            return self._token

    def payload(self, message: Message) -> dict[str, Any]:
        body: dict[str, Any] = {"token": message.to}
        if message.subject or message.text:
            body["notification"] = {"title": message.subject or "", "body": message.text}
        # FCM data values must be strings.
        data = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in message.data.items()}
        data.setdefault("message_id", message.message_id)
        body["data"] = data
        return {"message": body}

    def _post(self, message: Message, *, refresh: bool) -> httpx.Response | SendResult:
        token = self.access_token(refresh=refresh)
        if isinstance(token, SendResult):
            return token
        return _http.post(self.client, self.url, json=self.payload(message),
                          headers={"Authorization": f"Bearer {token}"})

    def send(self, message: Message) -> SendResult:
        response = self._post(message, refresh=False)
        if not isinstance(response, SendResult) and response.status_code == 401:
            response = self._post(message, refresh=True)  # the cached access token was revoked or expired
        if isinstance(response, SendResult):
            return response
        if response.status_code == 200:
            return SendResult.sent(str(_http.json_body(response).get("name", "")) or None)
        error = _http.json_body(response).get("error", {})
        codes = {d.get("errorCode") for d in error.get("details", []) if isinstance(d, dict)} | {error.get("status")}
        text = f"FCM {response.status_code} {error.get('status', '')}: {error.get('message', response.text[:300])}"
        if codes & PERMANENT_FCM:
            return SendResult.permanent(text)
        if response.status_code in (401, 403):
            # The project's credentials or APNs key, not the device: wait for the operator to fix it.
            return SendResult.transient(text, 300.0)
        return _http.classify(response, text)

    def close(self) -> None:
        self.client.close()
