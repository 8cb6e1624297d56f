"""What every HTTP adapter shares: one pooled httpx client, timeouts, and the status mapping.

The mapping is the same for all providers unless their API says otherwise: a timeout, a
connection error, HTTP 408, 425, 429 and 5xx are transient (with ``Retry-After`` when sent);
any other 4xx is permanent. Adapters look at the provider's body first for the cases where it
knows better (Telegram's ``parameters.retry_after``, Viber's status codes inside an HTTP 200).
"""

from __future__ import annotations

import email.utils
import functools
import ssl
import time
from collections.abc import Mapping
from typing import Any

import httpx

from opencdp.campaigns.channels.base import ChannelConfigError, SendResult

TRANSIENT_HTTP = frozenset({408, 425, 429})


@functools.cache
def _tls() -> ssl.SSLContext:
    """One verifying TLS context for all clients: loading the CA bundle costs ~0.2 s per client otherwise."""
    return ssl.create_default_context()


def make_client(config: Mapping[str, Any], kind: str) -> httpx.Client:
    """A client with the channel's timeout (seconds, default 10) and a connection pool sized for sending."""
    try:
        timeout = float(config.get("timeout_s", 10.0))
        pool = int(config.get("max_connections", 20))
    except (TypeError, ValueError) as e:
        raise ChannelConfigError(f"{kind} channel: timeout_s and max_connections must be numbers ({e})",
                                 field="timeout_s") from e
    if timeout <= 0:
        raise ChannelConfigError(f"{kind} channel: timeout_s must be positive", field="timeout_s")
    limits = httpx.Limits(max_connections=pool, max_keepalive_connections=pool)
    return httpx.Client(timeout=httpx.Timeout(timeout), limits=limits, verify=_tls())


def retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header, either delta-seconds or an HTTP date (RFC 9110 10.2.3)."""
    value = headers.get("retry-after") or headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def classify(response: httpx.Response, error: str = "") -> SendResult:
    """The default mapping of a non-2xx answer to transient or permanent."""
    detail = error or f"HTTP {response.status_code}: {response.text[:300]}"
    if response.status_code in TRANSIENT_HTTP or response.status_code >= 500:
        return SendResult.transient(detail, retry_after(response.headers))
    return SendResult.permanent(detail)


def post(client: httpx.Client, url: str, **kwargs: Any) -> httpx.Response | SendResult:
    """POST, turning network failures into a transient result instead of an exception."""
    try:
        return client.post(url, **kwargs)
    except httpx.TimeoutException as e:
        return SendResult.transient(f"timeout calling {url}: {e!r}")
    except httpx.TransportError as e:
        return SendResult.transient(f"cannot reach {url}: {e!r}")


def json_body(response: httpx.Response) -> dict[str, Any]:
    """The JSON object a provider answered, or {} when it answered something else (an HTML error page)."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
