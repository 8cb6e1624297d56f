"""What runs with the server: the sender and the scenario engine, each on its own thread.

The engine is a loader listener (``observe``) and wakes at once when a trigger arrives; when
it plans a message it wakes the sender, so an event reaches the channel in a tick or two of
``campaign_interval_s`` plus the store's own latency. Broadcast experiments are checked for a
winner every minute.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from typing import Any

from opencdp.campaigns import broadcast, store
from opencdp.campaigns.engine import Engine
from opencdp.campaigns.registry import Channels
from opencdp.campaigns.sender import Sender, SenderOptions
from opencdp.campaigns.tracking import Signer
from opencdp.storage.base import Backend

log = logging.getLogger(__name__)


class CampaignRuntime:
    def __init__(self, backend: Backend, settings: Any, *, channels: Channels | None = None) -> None:
        self.backend = backend
        self.settings = settings
        self.channels = channels or Channels(settings.campaign_channels, settings.campaign_rate_limits, extra={"backend": backend})
        self.signer = Signer.for_data_dir(settings.data_dir, settings.campaign_secret)
        self.sender = Sender(backend, self.channels, self.signer, SenderOptions.from_settings(settings))
        self.engine = Engine(backend, default_zone=settings.campaign_timezone, on_planned=self.wake_sender)
        self._send_wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._decided_at = 0.0

    def wake_sender(self) -> None:
        self._send_wake.set()

    def start(self) -> None:
        if self.settings.campaign_interval_s <= 0:
            return
        for name, target in (("campaign-sender", self._send_loop), ("campaign-engine", self._engine_loop)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        self._send_wake.set()
        self.engine.wake.set()
        for thread in self._threads:
            thread.join(timeout=30)
        self.sender.close()
        self.channels.close()

    def _send_loop(self) -> None:
        while not self._stop.is_set():
            try:
                # batches overlapped (the next rendered while one is handed off), a stop looked at every 20
                if self.sender.run_until_idle(max_steps=20).claimed:
                    continue
            except Exception:
                log.exception("campaign sender step failed; retrying")
                time.sleep(1.0)
            self._send_wake.wait(self.settings.campaign_interval_s * 5)
            self._send_wake.clear()

    def _engine_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.engine.tick()
                if time.monotonic() - self._decided_at > 60:
                    self._decided_at = time.monotonic()
                    self.decide_experiments()
            except Exception:
                log.exception("scenario engine tick failed; retrying")
                time.sleep(1.0)
            self.engine.wake.wait(self.settings.campaign_interval_s)
            self.engine.wake.clear()

    def decide_experiments(self) -> None:
        now = dt.datetime.now(dt.UTC)
        for campaign in store.list_all(self.backend, store.CAMPAIGN):
            pending = campaign.definition.get("experiment") and not campaign.definition.get("winner")
            if campaign.status == store.ACTIVE and pending and broadcast.decide(self.backend, campaign.id, campaign.definition, now,
                                    default_zone=self.settings.campaign_timezone,
                                    attribution_hours=self.settings.campaign_attribution_hours,
                                    conversion_event=self.settings.campaign_conversion_event):
                self.wake_sender()
