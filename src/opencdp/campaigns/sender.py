"""The sender: claims due outbox rows, applies the delivery policy, renders, hands off, records.

One ``step``:

1. read up to ``batch`` due rows (planned and due, or left ``sending`` by a sender that died);
2. read the recipients (traits, consent, scores), the suppression list and the week's sends;
3. decide per row (``opencdp.campaigns.policy``): skipped rows keep the reason, deferred rows
   (quiet hours) get a later ``not_before``. **This is the only way to a channel**, so no
   message can reach a person without consent;
4. mark the rows to send ``sending`` (stored before any hand-off);
5. render (a large batch in the worker processes of ``opencdp.campaigns.rendering``, whose
   results the hand-off collects), then hand off each channel's share of the batch with one
   ``Channel.send_many`` call
   (the SMTP adapter pipelines it over its pooled connections; an adapter without a batch API
   gets ``threads`` parallel ``send`` calls), each channel's rate limit applied;
6. store each outcome: ``sent``/``delivered``; a transient error goes back to ``planned``
   after a backoff (``retry_base_s`` doubling, or the provider's Retry-After) until
   ``max_attempts``; a permanent one is ``failed`` and its address goes on the suppression list
   (``hard_bounce``); and write the message events (Message Sent, Delivered, Failed, Bounced).

An exception from a channel counts as a transient error for that message; anything that stops
the process between 4 and 6 leaves rows in ``sending``, which the next sender sends again with
the same message id (the provider's idempotency key).

``run_until_idle`` overlaps batches: while one thread hands batch N to the channels (socket I/O,
which releases the GIL), the caller's thread claims and renders batch N+1 and then records N.
Rows of the batch in flight are left out of the next claim (they are ``sending`` in the store,
which otherwise means "left by a dead sender"), so a crash leaves at most two batches
``sending``, each resent with the same message ids.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from opencdp.campaigns import context as contexts
from opencdp.campaigns import outbox, recipients, rendering, store, templates, tracking
from opencdp.campaigns.channels.base import Channel, Message, SendResult
from opencdp.campaigns.channels.cascade import Cascade
from opencdp.campaigns.experiments import in_global_control
from opencdp.campaigns.policy import Caps, Decision, decide
from opencdp.campaigns.registry import Channels, Configured
from opencdp.campaigns.tracking import MessageRef, Signer
from opencdp.consent import suppressions
from opencdp.errors import OpenCDPError
from opencdp.storage.base import Backend

log = logging.getLogger(__name__)
_OWN = rendering.OWN
_HARD = {"email": "email", "sms": "sms", "viber": "viber", "telegram": "telegram", "push": "push", "webpush": "web_push"}


@dataclass
class SenderOptions:
    base_url: str = "http://localhost:8000"
    batch: int = 500
    threads: int = 4
    max_attempts: int = 6
    retry_base_s: float = 30.0
    caps: dict[str, list[int]] = field(default_factory=lambda: {"all": [3, 10]})
    quiet_hours: list[str] = field(default_factory=lambda: ["21:00", "09:00"])
    timezone: str = "Europe/Moscow"
    global_control_percent: float = 0.0
    global_control_redraw_days: int = 90
    scores: bool = True
    overlap: bool = True
    """``run_until_idle`` claims and renders the next batch while the current one is being handed off."""
    render_processes: int = 0
    """Worker processes that render large batches (0: render in this process)."""
    render_pool_min: int = 500
    """Rows a batch needs before it goes to the workers (below it, their round trip costs more than it saves)."""

    @classmethod
    def from_settings(cls, settings: Any) -> SenderOptions:
        return cls(
            base_url=settings.campaign_base_url.rstrip("/"), batch=settings.campaign_sender_batch,
            threads=settings.campaign_sender_threads, max_attempts=settings.campaign_max_attempts,
            retry_base_s=settings.campaign_retry_base_s, caps=dict(settings.campaign_caps),
            quiet_hours=list(settings.campaign_quiet_hours), timezone=settings.campaign_timezone,
            global_control_percent=settings.campaign_global_control_percent,
            global_control_redraw_days=settings.campaign_global_control_redraw_days,
            render_processes=settings.campaign_render_processes,
        )


@dataclass
class StepResult:
    claimed: int = 0
    sent: int = 0
    skipped: int = 0
    deferred: int = 0
    retried: int = 0
    failed: int = 0


@dataclass
class SenderStats:
    steps: int = 0
    sent: int = 0
    skipped: int = 0
    retried: int = 0
    failed: int = 0
    handoff_lag_s: list[float] = field(default_factory=list)
    """Seconds from a row's ``not_before`` to its hand-off (the last 1000): trigger latency."""
    on_handoff: list[Callable[[dict[str, Any]], None]] = field(default_factory=list)


@dataclass
class _Batch:
    """One claimed batch on its way through the sender: claimed, rendered, handed off, recorded."""

    now: dt.datetime
    result: StepResult
    claimed: set[str]
    """Message ids of every row read, settled or not: the next claim leaves them out until recorded."""
    people: dict[str, recipients.Recipient]
    done: list[dict[str, Any]]
    """Rows settled before any hand-off (skipped, deferred, failed), written with the outcomes."""
    to_send: list[dict[str, Any]]
    """Rows stored as ``sending``, in order; the lists below are parallel to it."""
    refs: list[MessageRef] = field(default_factory=list)
    messages: list[Message | SendResult] = field(default_factory=list)
    """The rendered message, or the result that stands for it (a missing or failing template)."""
    rendering: list[Future[list[Message | SendResult]]] | None = None
    """Slices being rendered by the worker processes: the hand-off waits for them (``messages`` is empty until then)."""


class Sender:
    def __init__(
        self,
        backend: Backend,
        channels: Channels,
        signer: Signer,
        options: SenderOptions | None = None,
        *,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.backend = backend
        self.channels = channels
        self.signer = signer
        self.options = options or SenderOptions()
        self.clock = clock
        self.catalogue = contexts.Catalogue(backend)
        self.stats = SenderStats()
        self._pool = ThreadPoolExecutor(max_workers=self.options.threads, thread_name_prefix="campaign-send")
        self._handing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="campaign-handoff")
        self._pool_render = rendering.Pool(self.options.render_processes) if self.options.render_processes > 0 else None
        self._running = threading.Lock()
        """One claimer at a time in this process: two threads claiming together could both read a row as due
        (the server's loop and a send asked for through the API or a test)."""

    def close(self) -> None:
        self._handing.shutdown(wait=True)
        self._pool.shutdown(wait=True)
        if self._pool_render is not None:
            self._pool_render.close()

    def run_until_idle(self, max_steps: int = 100_000) -> StepResult:
        """Step until nothing is due now (tests, the CLI, benchmarks), overlapping batches.

        The next batch is claimed and rendered while the previous one is handed off on the
        hand-off thread; its outcomes are recorded before the one after is submitted, so at most
        one batch is in flight.
        """
        with self._running:
            return self._run_until_idle(max_steps)

    def _run_until_idle(self, max_steps: int) -> StepResult:
        total = StepResult()
        if not self.options.overlap:
            for _ in range(max_steps):
                result = self._step()
                _add(total, result)
                if result.claimed == 0:
                    break
            return total
        flying: tuple[_Batch, Future[list[SendResult]]] | None = None
        try:
            for _ in range(max_steps):
                batch = self._claim(self.clock(), flying[0] if flying else None)
                if batch is not None:
                    self._render(batch)
                if flying is not None:
                    previous, future = flying
                    flying = None
                    self._record(previous, future.result())
                    _add(total, previous.result)
                if batch is None:
                    break
                flying = (batch, self._handing.submit(self._hand_off, batch))
        finally:
            if flying is not None:  # the caller's thread failed: what was handed off is still recorded
                self._record(flying[0], flying[1].result())
                _add(total, flying[0].result)
        return total

    # -- one step -------------------------------------------------------------------------
    def step(self) -> StepResult:
        """One batch, start to end (``run_until_idle`` overlaps them)."""
        with self._running:
            return self._step()

    def _step(self) -> StepResult:
        batch = self._claim(self.clock(), None)
        if batch is None:
            return StepResult()
        self._render(batch)
        self._record(batch, self._hand_off(batch))
        return batch.result

    def _claim(self, now: dt.datetime, in_flight: _Batch | None) -> _Batch | None:
        """Steps 1-4: read due rows (not those of the batch ``in_flight``), decide, store the ones to send as ``sending``."""
        skip = in_flight.claimed if in_flight is not None else set()
        rows = outbox.due(self.backend, now, self.options.batch, skip=skip)
        if not rows:
            return None
        result = StepResult(claimed=len(rows))
        self.stats.steps += 1
        profiles = list(dict.fromkeys(r["profile_id"] for r in rows))
        people = recipients.load(self.backend, profiles, scores=self.options.scores)
        capped = any(self.options.caps.values())  # no caps configured: the week's sends need not be read
        sent = outbox.sent_since(self.backend, profiles, now - dt.timedelta(days=7)) if capped else []
        caps = Caps.from_sent(self.options.caps, sent, now)
        for row in in_flight.to_send if in_flight is not None else []:  # handed off, not yet recorded as sent
            if not row["transactional"]:
                caps.count(row["profile_id"], row["channel"])

        addresses: dict[int, str | None] = {}
        kinds: dict[int, tuple[str, str]] = {}
        for i, row in enumerate(rows):
            try:
                configured = self.channels.get(row["channel"])
            except OpenCDPError as error:
                addresses[i] = None
                kinds[i] = ("", "")
                row["_error"] = f"channel: {error.detail}"
                continue
            kinds[i] = (configured.kind, configured.consent_channel)
            addresses[i] = people[row["profile_id"]].address(configured.kind)
        blocked = self._suppressed(rows, addresses, kinds)

        to_send: list[dict[str, Any]] = []
        done: list[dict[str, Any]] = []
        for i, row in enumerate(rows):
            if "_error" in row:
                done.append(self._finish(row, outbox.FAILED, now, reason=row.pop("_error")))
                result.failed += 1
                continue
            consent_channel = kinds[i][1]
            decision: Decision = decide(
                people[row["profile_id"]], address=addresses[i], consent_channel=consent_channel, topic=row["topic"],
                transactional=bool(row["transactional"]), suppressed=i in blocked,
                in_global_control=in_global_control(
                    row["profile_id"], self.options.global_control_percent, now, self.options.global_control_redraw_days
                ),
                channel=row["channel"], caps=caps, now=now, quiet=self.options.quiet_hours,
                default_zone=self.options.timezone,
            )
            if decision.send:
                if not row["transactional"]:
                    caps.count(row["profile_id"], row["channel"])
                to_send.append({**row, "state": outbox.SENDING, "address": addresses[i], "attempts": row["attempts"] + 1})
            elif decision.defer_until is not None:
                done.append({**row, "state": outbox.PLANNED, "not_before": decision.defer_until, "reason": decision.reason})
                result.deferred += 1
            else:
                done.append(self._finish(row, outbox.SKIPPED, now, reason=decision.reason))
                result.skipped += 1
        outbox.write(self.backend, to_send, now)  # claimed: from here a crash means "send again"
        for row in to_send:
            row["updated_at"] = outbox._after(row.get("updated_at"), now)
        return _Batch(now, result, {r["message_id"] for r in rows}, people, done, to_send)

    def _render(self, batch: _Batch) -> None:
        """Step 5a: one message per row to send (templates read once per batch, compiled once per source).

        A batch of at least ``render_pool_min`` rows is rendered by the worker processes
        (``opencdp.campaigns.rendering``) unless its campaign has a recommendation block, which
        reads the store per recipient.
        """
        found = self._templates({r["template_id"] for r in batch.to_send})
        campaigns = self._campaigns({r["campaign_id"] for r in batch.to_send})
        items: list[rendering.Item] = []
        for row in batch.to_send:
            configured = self.channels.get(row["channel"])
            cascade = [step.channel.name for step in configured.channel.steps] if isinstance(configured.channel, Cascade) else None
            person = batch.people[row["profile_id"]]
            items.append(rendering.Item(row, configured.kind, person.profile_id, person.traits, person.scores, cascade))
            batch.refs.append(rendering.ref_of(row, configured.kind))
        pooled = (self._pool_render is not None and len(items) >= self.options.render_pool_min
                  and not any(c["recommendation_block"] for c in campaigns.values()))
        if pooled and self._pool_render is not None:
            slim = [i._replace(row={k: i.row[k] for k in rendering.ROW_FIELDS}) for i in items]
            job = rendering.Job(self.options.base_url, self.signer.secret, found, campaigns,
                                rendering.Snapshot.read(self.catalogue, batch.to_send), slim)
            batch.rendering = self._pool_render.submit(job)  # the hand-off collects them: the next claim starts now
        else:
            job = rendering.Job(self.options.base_url, self.signer.secret, found, campaigns, rendering.Snapshot(), items)
            batch.messages = rendering.render(job, self.catalogue, self.signer)

    def _hand_off(self, batch: _Batch) -> list[SendResult]:
        """Step 5b: each channel's messages of the batch in one ``send_many``; one outcome per row."""
        if batch.rendering is not None:
            try:
                batch.messages = [m for part in batch.rendering for m in part.result()]
            except Exception as error:  # a worker died: the rows go back to planned, nothing was handed off
                log.exception("render workers failed")
                if self._pool_render is not None:
                    self._pool_render.broken()
                batch.messages = [SendResult.transient(f"render worker failed: {type(error).__name__}: {error}")] * len(batch.to_send)
            batch.rendering = None
        outcomes: list[SendResult | None] = [m if isinstance(m, SendResult) else None for m in batch.messages]
        by_channel: dict[str, list[int]] = {}
        for i, row in enumerate(batch.to_send):
            if outcomes[i] is None:
                by_channel.setdefault(row["channel"], []).append(i)
        for name, indexes in by_channel.items():
            messages = [batch.messages[i] for i in indexes]
            sent = self._send(name, self.channels.get(name), [m for m in messages if isinstance(m, Message)])
            for i, outcome in zip(indexes, sent, strict=True):
                outcomes[i] = outcome
        at = self.clock()
        lags = self.stats.handoff_lag_s
        for row in batch.to_send:
            lags.append((at - row["not_before"]).total_seconds())
            for hook in self.stats.on_handoff:
                hook(row)
        if len(lags) > 1000:
            del lags[:-1000]
        return [o or SendResult.transient("not handed off") for o in outcomes]

    def _send(self, name: str, configured: Configured, messages: list[Message]) -> list[SendResult]:
        """The channel's batch, in slices of its rate limit (one second's worth) when it has one."""
        limit = self.channels.limits.get(name)
        size = max(1, int(limit.rate)) if limit is not None else max(1, len(messages))
        out: list[SendResult] = []
        for start in range(0, len(messages), size):
            piece = messages[start : start + size]
            for _ in piece:
                self.channels.throttle(name)
            out += self._send_piece(name, configured.channel, piece)
        return out

    def _send_piece(self, name: str, channel: Channel, messages: list[Message]) -> list[SendResult]:
        if type(channel).send_many is Channel.send_many:  # no batch API: ``threads`` sends at a time
            return list(self._pool.map(lambda m: self._send_one(name, channel, m), messages))
        try:
            results = channel.send_many(messages)
        except Exception as error:  # a broken adapter is a provider that is down: retry later
            log.exception("channel %s raised", name)
            return [SendResult.transient(f"{type(error).__name__}: {error}")] * len(messages)
        if len(results) != len(messages):
            log.error("channel %s answered %d results for %d messages", name, len(results), len(messages))
            return [SendResult.transient("the channel lost track of the batch")] * len(messages)
        return list(results)

    def _send_one(self, name: str, channel: Channel, message: Message) -> SendResult:
        try:
            return channel.send(message)
        except Exception as error:  # a broken adapter is a provider that is down: retry later
            log.exception("channel %s raised", name)
            return SendResult.transient(f"{type(error).__name__}: {error}")

    def _record(self, batch: _Batch, outcomes: list[SendResult]) -> None:
        """Step 6: every row's new state in one write, then the message events."""
        result, done = batch.result, batch.done
        finished_at = self.clock()
        events: dict[str, list[MessageRef]] = {}
        for row, ref, outcome in zip(batch.to_send, batch.refs, outcomes, strict=True):
            if outcome.ok:
                state = outbox.DELIVERED if outcome.status == "delivered" else outbox.SENT
                done.append(self._finish(row, state, finished_at, provider=outcome.provider_message_id))
                events.setdefault(tracking.SENT, []).append(ref)
                if state == outbox.DELIVERED:
                    events.setdefault(tracking.DELIVERED, []).append(ref)
                result.sent += 1
            elif outcome.status == "transient" and row["attempts"] < self.options.max_attempts:
                delay = outcome.retry_after_s or min(3600.0, self.options.retry_base_s * 2 ** (row["attempts"] - 1))
                done.append({**row, "state": outbox.PLANNED, "reason": f"retry: {outcome.error}"[:500],
                             "not_before": finished_at + dt.timedelta(seconds=delay)})
                result.retried += 1
            else:
                done.append(self._finish(row, outbox.FAILED, finished_at, reason=outcome.error[:500] or outcome.status))
                events.setdefault(tracking.FAILED, []).append(ref)
                if outcome.status == "permanent" and ref.channel in _HARD and row.get("address") and not outcome.error.startswith(_OWN):
                    events.setdefault(tracking.BOUNCED, []).append(ref)
                    self._suppress(_HARD[ref.channel], row["address"], outcome.error)
                result.failed += 1
        outbox.write(self.backend, done, finished_at)
        for name, refs in events.items():
            tracking.record(self.backend, tracking.event_rows(name, refs, finished_at))
        self.stats.sent += result.sent
        self.stats.skipped += result.skipped
        self.stats.retried += result.retried
        self.stats.failed += result.failed

    # -- pieces ---------------------------------------------------------------------------
    def _finish(self, row: dict[str, Any], state: str, now: dt.datetime, *, reason: str | None = None,
                provider: str | None = None) -> dict[str, Any]:
        sent = now if state in (outbox.SENT, outbox.DELIVERED) else row.get("sent_at")
        return {**row, "state": state, "reason": reason, "sent_at": sent, "provider_message_id": provider}

    def _templates(self, ids: set[str]) -> dict[str, templates.Template | None]:
        found: dict[str, templates.Template | None] = {}
        for tid in ids:
            stored = store.get(self.backend, store.TEMPLATE, tid)
            found[tid] = templates.Template.from_dict(stored.definition, tid) if stored else None
        return found

    def _campaigns(self, ids: set[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for cid in ids:
            stored = store.get(self.backend, store.CAMPAIGN, cid) or store.get(self.backend, store.SCENARIO, cid)
            out[cid] = {"id": cid, "name": stored.name if stored else cid,
                        "recommendation_block": stored.definition.get("recommendation_block") if stored else None}
        return out

    def _suppressed(self, rows: Sequence[dict[str, Any]], addresses: dict[int, str | None],
                    kinds: dict[int, tuple[str, str]]) -> set[int]:
        by_channel: dict[str, list[int]] = {}
        for i in range(len(rows)):
            if addresses[i] and kinds[i][1]:
                by_channel.setdefault(kinds[i][1], []).append(i)
        blocked: set[int] = set()
        for channel, indexes in by_channel.items():
            try:
                found = suppressions.suppressed(self.backend, channel, [addresses[i] or "" for i in indexes])
            except OpenCDPError:
                continue
            blocked.update(i for i in indexes if addresses[i] in found)
        return blocked

    def _suppress(self, channel: str, address: str, error: str) -> None:
        try:
            suppressions.add(self.backend, channel, address, suppressions.Reason.HARD_BOUNCE, source=f"send: {error[:100]}")
        except OpenCDPError:
            log.warning("could not suppress %s on %s", address, channel)

    def message(self, row: dict[str, Any], ref: MessageRef, template: templates.Template,
                person: recipients.Recipient, campaign: dict[str, Any], channel: Channel | None = None) -> Message:
        """Render one outbox row into the channel's message (``rendering.message`` with this sender's settings)."""
        cascade = [step.channel.name for step in channel.steps] if isinstance(channel, Cascade) else None
        return rendering.message(row, ref, template, person, campaign, base_url=self.options.base_url,
                                 signer=self.signer, catalogue=self.catalogue, cascade=cascade)


def _add(total: StepResult, result: StepResult) -> None:
    for name in total.__dataclass_fields__:
        setattr(total, name, getattr(total, name) + getattr(result, name))
