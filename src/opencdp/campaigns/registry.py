"""The channels campaigns may use, by name, built once from ``Settings.campaign_channels``.

A campaign names a channel (``"email"``, ``"sms_fallback"``); the name maps to an adapter kind
and its settings. ``check`` is what activation calls: a name that is not configured, or a
configuration the adapter refuses, is an error naming the field before anything is sent.
Each channel has an optional rate limit (``Settings.campaign_rate_limits``: messages per second,
a provider's limit), enforced by a token bucket shared by the sender's threads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from opencdp.campaigns import receipt_store
from opencdp.campaigns.channels.base import Channel, ChannelConfigError, build_channel
from opencdp.campaigns.recipients import CONSENT_CHANNEL
from opencdp.campaigns.store import DefinitionError


@dataclass
class Configured:
    name: str
    kind: str
    consent_channel: str
    channel: Channel


class RateLimit:
    """A token bucket: at most ``rate`` acquisitions per second on average, bursts of ``rate``."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = rate
        self.at = time.monotonic()
        self.lock = threading.Lock()

    def acquire(self) -> None:
        while True:
            with self.lock:
                now = time.monotonic()
                self.tokens = min(self.rate, self.tokens + (now - self.at) * self.rate)
                self.at = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                wait = (1 - self.tokens) / self.rate
            time.sleep(wait)


class Channels:
    def __init__(
        self,
        config: Mapping[str, Mapping[str, Any]],
        rate_limits: Mapping[str, float] | None = None,
        *,
        factory: Callable[[str, Mapping[str, Any]], Channel] = build_channel,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.config = {name: dict(value) for name, value in config.items()}
        self.factory = factory
        self.extra = dict(extra or {})  # the backend, for the inbox; webhook_allowed_networks (urlguard)
        self.limits = {name: RateLimit(rate) for name, rate in (rate_limits or {}).items() if rate > 0}
        self._built: dict[str, Configured] = {}
        self._lock = threading.Lock()

    def kind(self, name: str, field: str = "channel") -> str:
        entry = self.config.get(name)
        if entry is None:
            known = ", ".join(sorted(self.config)) or "none (set campaign_channels)"
            raise DefinitionError(f"`{field}` {name!r} is not a configured channel; configured: {known}", field=field)
        kind = entry.get("kind")
        if not isinstance(kind, str):
            raise DefinitionError(f"campaign_channels.{name} needs `kind` (an adapter: email, sms, ...)", field=field)
        return kind

    def get(self, name: str, field: str = "channel") -> Configured:
        with self._lock:
            found = self._built.get(name)
            if found is None:
                kind = self.kind(name, field)
                settings = {k: v for k, v in self.config[name].items() if k not in ("kind", "consent_channel")}
                if kind == "inbox":
                    settings.setdefault("backend", self.extra.get("backend"))
                if kind == "cascade" and self.extra.get("backend") is not None:
                    # receipts in the store: one that reaches another worker still ends the wait
                    settings.setdefault("receipts", receipt_store.for_backend(self.extra["backend"]))
                    settings.setdefault("backend", self.extra["backend"])
                if kind in ("webhook", "cascade"):  # the installation's SSRF allowance (urlguard)
                    settings.setdefault("allowed_networks", list(self.extra.get("webhook_allowed_networks") or ()))
                try:
                    channel = self.factory(kind, settings)
                except ChannelConfigError as error:
                    raise DefinitionError(
                        f"channel {name!r} is not usable: {error.detail}", field=f"{field}.{error.field or 'config'}"
                    ) from None
                consent = str(self.config[name].get("consent_channel") or CONSENT_CHANNEL.get(kind, kind))
                found = self._built[name] = Configured(name, kind, consent, channel)
            return found

    def check(self, name: str, field: str = "channel") -> str:
        """The kind of a usable channel, or a DefinitionError naming ``field``."""
        return self.get(name, field).kind

    def throttle(self, name: str) -> None:
        limit = self.limits.get(name)
        if limit is not None:
            limit.acquire()

    def close(self) -> None:
        with self._lock:
            for entry in self._built.values():
                entry.channel.close()
            self._built.clear()
