"""Rendering outbox rows into messages, in this process or in a pool of worker processes.

Rendering (Jinja2 in the sandbox, tracked links, the open pixel) is the largest share of a
broadcast's CPU after the store's queries, and it needs nothing from the store once a batch's
recipients and products are read. So a large batch is cut into slices that worker processes
render, each with its own interpreter and GIL, while the sender's process claims the next batch
and talks SMTP. A message rendered in a worker is the same as one rendered here: the same
functions run on the same data.

What a worker gets is plain data (``Job``): the rows' fields a message needs, the recipients
(traits, consent, scores), the templates, the campaigns, and a ``Snapshot`` of the catalogue —
the products the batch's rows name and the bestsellers of their rooms, read once by the sender.
A batch whose campaign has a recommendation block asks the recommendation stage per recipient
(a store read), so it is rendered in this process.
"""

from __future__ import annotations

import atexit
import multiprocessing
import multiprocessing.connection
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgspec

from opencdp.campaigns import context as contexts
from opencdp.campaigns import templates, tracking
from opencdp.campaigns.channels.base import NOT_SENT, Message, SendResult
from opencdp.campaigns.recipients import Recipient
from opencdp.campaigns.tracking import Links, MessageRef, Signer
from opencdp.children import exit_with_parent

_decode = msgspec.json.Decoder().decode
OWN = NOT_SENT
"""Prefix of failures found before the hand-off (a template error): not the address's fault, never suppressed."""
ROW_FIELDS = ("message_id", "campaign_id", "step_id", "profile_id", "variant", "channel", "template_id", "topic",
              "transactional", "params", "address")
"""The outbox fields rendering reads (a worker gets only these)."""


@dataclass
class Snapshot:
    """The catalogue reads of one batch, answered from memory (``context.Catalogue``'s interface)."""

    known: dict[str, dict[str, Any]] = field(default_factory=dict)
    best: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def products(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return {i: self.known[i] for i in ids if i in self.known}

    def bestsellers(self, room: str | None, n: int = 8) -> list[dict[str, Any]]:
        return self.best.get(room or "", [])

    def recommend(self, block: str, profile_id: str, shown: Sequence[str], n: int = 4) -> list[dict[str, Any]] | None:
        return None  # batches with a recommendation block are rendered where the store is

    @classmethod
    def read(cls, catalogue: contexts.Catalogue, rows: Sequence[Mapping[str, Any]]) -> Snapshot:
        """Everything ``context.build`` will ask the catalogue about these rows."""
        ids: set[str] = set()
        rooms: set[str] = {""}
        for row in rows:
            params = _params(row)
            for item in contexts._products_of(params):
                if item.get("product_id"):
                    ids.add(str(item["product_id"]))
                if item.get("room"):
                    rooms.add(str(item["room"]))
            named = params.get("product_ids") or ([params["product_id"]] if params.get("product_id") else [])
            if isinstance(named, list):
                ids.update(str(i) for i in named)
        known = catalogue.products(sorted(ids)) if ids else {}
        rooms.update(str(p["room"]) for p in known.values() if p.get("room"))
        return cls(known, {room: catalogue.bestsellers(room or None) for room in sorted(rooms)})


class Item(NamedTuple):
    """One row to render: its fields, its recipient's data, and (through a cascade) each step's channel name.

    A tuple of plain values, not the sender's objects: a batch crosses to the workers pickled,
    and plain values pickle several times faster than dataclasses.
    """

    row: dict[str, Any]
    kind: str
    profile_id: str
    traits: dict[str, Any]
    scores: dict[str, Any]
    cascade: list[str] | None = None

    def person(self) -> Recipient:
        return Recipient(self.profile_id, self.traits, {}, self.scores)


@dataclass
class Job:
    """A slice of a batch for one worker (picklable, no store, no sockets)."""

    base_url: str
    secret: bytes
    templates: dict[str, templates.Template | None]
    campaigns: dict[str, dict[str, Any]]
    catalogue: Snapshot
    items: list[Item]


def _params(row: Mapping[str, Any]) -> dict[str, Any]:
    raw = row.get("params")
    if not raw:
        return {}
    try:
        value = _decode(raw)
    except msgspec.DecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def ref_of(row: Mapping[str, Any], kind: str) -> MessageRef:
    return MessageRef(row["message_id"], row["campaign_id"], row["step_id"], row["profile_id"], row["variant"], kind,
                      row["topic"])


def message(row: Mapping[str, Any], ref: MessageRef, template: templates.Template, person: Recipient,
            campaign: Mapping[str, Any], *, base_url: str, signer: Signer, catalogue: Any,
            cascade: Sequence[str] | None = None) -> Message:
    """Render one outbox row into the channel's message (links tracked, unsubscribe headers).

    Through a cascade (``cascade``: its steps' channel names), ``data["addresses"]`` has the
    person's address for each step's channel (a Viber id for Viber, the phone for SMS); ``to``
    stays the row's address.
    """
    links = Links(base_url, signer, ref)
    token = links.token
    urls = links.urls(token)
    ctx = contexts.build(person, _params(row), campaign=campaign, urls=urls, catalogue=catalogue,
                         variant=row["variant"], message_id=row["message_id"])
    rendered = templates.render(template, ctx)
    html = tracking.rewrite_links(rendered.html, links, token) if rendered.html else None
    text = rendered.text or (templates.html_to_text(rendered.html) if rendered.html else "")
    if ref.channel != "email":
        text = tracking.rewrite_text_links(text, links, token)
    unsubscribe = None if row["transactional"] else urls["unsubscribe_url"]
    data: dict[str, Any] = {"campaign_id": row["campaign_id"], "step_id": row["step_id"], "variant": row["variant"],
                            "token": token}
    if cascade is not None:
        data["addresses"] = {name: address for name in cascade if (address := person.address(name)) is not None}
    return Message(
        message_id=row["message_id"], channel=ref.channel, to=row["address"], text=text,
        subject=rendered.subject or None, html=html, data=data,
        list_unsubscribe=unsubscribe, list_unsubscribe_post=unsubscribe is not None,
        profile_id=row["profile_id"], campaign_id=row["campaign_id"], transactional=bool(row["transactional"]),
    )


def render(job: Job, catalogue: Any = None, signer: Signer | None = None) -> list[Message | SendResult]:
    """Each item's message, or the result that stands for it (a missing or failing template)."""
    signer = signer or Signer(job.secret)
    catalogue = catalogue if catalogue is not None else job.catalogue
    out: list[Message | SendResult] = []
    for item in job.items:
        template = job.templates.get(item.row["template_id"])
        if template is None:
            out.append(SendResult.permanent(f"{OWN}template {item.row['template_id']!r} does not exist"))
            continue
        try:
            out.append(message(item.row, ref_of(item.row, item.kind), template, item.person(),
                               job.campaigns[item.row["campaign_id"]], base_url=job.base_url, signer=signer,
                               catalogue=catalogue, cascade=item.cascade))
        except templates.TemplateError as error:
            out.append(SendResult("permanent", None, f"{OWN}template: {error.detail}"))
    return out


class Pool:
    """Worker processes that render slices of a batch; started on first use, stopped with the sender.

    Workers are spawned (not forked: the parent holds store connections and threads), so the
    first batch pays their start (~1 s); a broadcast of thousands of messages repays it at once.
    Each worker exits when the parent dies (``exit_with_parent``), closed or not.
    """

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._executor: ProcessPoolExecutor | None = None
        self._registered = False
        self._lock = threading.Lock()

    def submit(self, job: Job) -> list[Future[list[Message | SendResult]]]:
        """The job cut into one slice per worker; the futures' results, concatenated, follow ``job.items``."""
        size = -(-len(job.items) // self.processes)
        slices = [Job(job.base_url, job.secret, job.templates, job.campaigns, job.catalogue, job.items[k : k + size])
                  for k in range(0, len(job.items), size)]
        try:
            executor = self._started()
            return [executor.submit(render, part) for part in slices]
        except BrokenProcessPool:  # a worker died (killed, out of memory): start new ones once
            self.close()
            executor = self._started()
            return [executor.submit(render, part) for part in slices]

    def _started(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("spawn"),
                                                     initializer=exit_with_parent)
                if not self._registered:
                    atexit.register(self.close)
                    self._registered = True
            return self._executor

    def render(self, job: Job) -> list[Message | SendResult]:
        return [m for part in self.submit(job) for m in part.result()]

    def close(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def broken(self) -> None:
        """A slice failed: the next batch starts new workers (the rows of this one go back to planned)."""
        self.close()
