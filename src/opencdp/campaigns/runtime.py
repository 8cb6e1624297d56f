"""What runs with the server: the sender and the scenario engine, each on its own thread.

The engine is a loader listener (``observe``) and wakes at once when a trigger arrives; when
it plans a message it wakes the sender, so an event reaches the channel in a tick or two of
``campaign_interval_s`` plus the store's own latency. Broadcast experiments are checked for a
winner every minute. Activated broadcasts are planned on a thread of their own
(``plan_in_background``); one left ``planning`` by a server that stopped is resumed at start.
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
        allowed = list(settings.campaign_webhook_allowed_networks)
        self.channels = channels or Channels(settings.campaign_channels, settings.campaign_rate_limits,
                                             extra={"backend": backend, "webhook_allowed_networks": allowed})
        self.signer = Signer.for_data_dir(settings.data_dir, settings.campaign_secret)
        self.sender = Sender(backend, self.channels, self.signer, SenderOptions.from_settings(settings))
        self.engine = Engine(backend, default_zone=settings.campaign_timezone, on_planned=self.wake_sender,
                             allowed_networks=allowed)
        self._send_wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._decided_at = 0.0
        self._planning: dict[str, threading.Thread] = {}
        self._planning_lock = threading.Lock()

    def wake_sender(self) -> None:
        self._send_wake.set()

    def plan_in_background(self, campaign_id: str) -> bool:
        """Plan a campaign ``broadcast.begin`` marked, on its own thread; False if one is already at it."""
        with self._planning_lock:
            running = self._planning.get(campaign_id)
            if running is not None and running.is_alive():
                return False
            thread = threading.Thread(target=self._plan, args=(campaign_id,), name=f"campaign-plan-{campaign_id}", daemon=True)
            self._planning[campaign_id] = thread
            thread.start()
        return True

    def planning(self, campaign_id: str) -> bool:
        thread = self._planning.get(campaign_id)
        return thread is not None and thread.is_alive()

    def wait_planned(self, campaign_id: str, timeout: float | None = None) -> None:
        thread = self._planning.get(campaign_id)
        if thread is not None:
            thread.join(timeout)

    def _plan(self, campaign_id: str) -> None:
        try:
            broadcast.run_planning(self.backend, campaign_id, dt.datetime.now(dt.UTC),
                                   default_zone=self.settings.campaign_timezone,
                                   progress=lambda: self.wake_sender())
        except Exception:
            log.exception("planning campaign %s failed", campaign_id)
        self.wake_sender()

    def resume_planning(self) -> None:
        """Campaigns left ``planning`` (the server stopped mid-way): planned again, adding only missing rows."""
        for campaign in store.list_all(self.backend, store.CAMPAIGN):
            if campaign.status == store.PLANNING:
                self.plan_in_background(campaign.id)

    def start(self) -> None:
        self.resume_planning()
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
