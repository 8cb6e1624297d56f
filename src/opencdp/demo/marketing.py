"""E-mail and SMS campaigns: the send calendar and per-customer engagement."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from opencdp.demo import reference as ref
from opencdp.demo import text
from opencdp.demo.config import DAY_MS, HOUR_MS, Window
from opencdp.demo.events import EventColumns
from opencdp.demo.people import People
from opencdp.demo.taxonomy import ROOMS

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

SERVER_CONTEXT = '{"channel":"server","library":{"name":"opencdp-demo-esp","version":"1.0.0"}}'
_THEMES: tuple[tuple[str, str], ...] = (
    ("Кухня мечты: скидки до 30%", "Соберите кухню мечты — гарнитуры со скидкой до 30%"),
    ("Диваны недели", "Новые диваны и журнальные столики уже в каталоге"),
    ("Здоровый сон", "Матрасы и кровати в рассрочку 0%"),
    ("Детская комната", "Всё для детской: от кроватей до игрушек"),
    ("Уход и уют", "Полотенца и косметика: 2 по цене 1"),
    ("Прихожая за выходные", "Обувницы и зеркала со скидкой"),
    ("Домашний офис", "Удобное рабочее место: столы и кресла"),
)


@dataclass(frozen=True)
class Campaigns:
    """The run's campaign calendar plus paid-traffic sources, indexed as UTM tags.

    UTM index ``u`` < ``len(day)`` is a campaign (e-mail or SMS); larger indices are the
    ads of ``reference.AD_CAMPAIGNS``.
    """

    day: IntArray
    sms: BoolArray
    room: IntArray
    fragment: pa.Array  # JSON members: campaign_id, campaign_name (+ email_subject)
    link_url: pa.Array
    utm_query: pa.Array  # "?utm_source=..." per UTM index
    utm_context: pa.Array  # ',"campaign":{...}' per UTM index

    @classmethod
    def build(cls, seed: int, window: Window) -> Campaigns:
        rng = np.random.default_rng([seed, 2])
        email_days = np.arange(3, window.days - 3, 7)
        sms_days = np.arange(5, window.days - 3, 14)
        day = np.concatenate([email_days, sms_days]).astype(np.int64)
        sms = np.arange(len(day)) >= len(email_days)
        room = rng.choice(len(ROOMS), len(day), p=[0.3, 0.22, 0.14, 0.06, 0.16, 0.06, 0.06])
        fragments: list[str] = []
        links: list[str] = []
        tags: list[tuple[str, str, str]] = []
        for d, is_sms, r in zip(day, sms, room, strict=True):
            date = datetime.date(1970, 1, 1) + datetime.timedelta(days=int(window.start_day + d))
            source = "sms" if is_sms else "email"
            cid = f"{'sms' if is_sms else 'em'}-{date:%Y%m%d}-{ROOMS[r]}"
            name, subject = _THEMES[r]
            member = f'"campaign_id":"{cid}","campaign_name":{text.js(name)}'
            if not is_sms:
                member += f',"email_id":"{cid}-1","email_subject":{text.js(subject)}'
            fragments.append(member)
            links.append(
                f"{ref.SITE}/c/{ROOMS[r]}?utm_source={source}&utm_medium={source}&utm_campaign={cid}"
            )
            tags.append((source, source, cid))
        tags.extend(ref.AD_CAMPAIGNS)
        return cls(
            day=day,
            sms=sms,
            room=room,
            fragment=pa.array(fragments, pa.string()),
            link_url=pa.array(links, pa.string()),
            utm_query=pa.array(
                [f"?utm_source={s}&utm_medium={m}&utm_campaign={n}" for s, m, n in tags]
            ),
            utm_context=pa.array(
                [f',"campaign":{{"source":"{s}","medium":"{m}","name":"{n}"}}' for s, m, n in tags]
            ),
        )

    @property
    def ads(self) -> IntArray:
        """UTM indices of paid traffic."""
        return np.arange(len(self.day), len(self.day) + len(ref.AD_CAMPAIGNS), dtype=np.int64)


@dataclass(frozen=True)
class Engagement:
    events: EventColumns
    clicks_customer: IntArray  # link clicks that open a web session
    clicks_ms: IntArray
    clicks_campaign: IntArray
    unsubscribed: BoolArray


def engage(
    rng: np.random.Generator, people: People, campaigns: Campaigns, window: Window
) -> Engagement:
    """Deliveries, opens, clicks and unsubscribes of one chunk of customers."""
    n = people.size
    email_cols = np.flatnonzero(~campaigns.sms)
    sms_cols = np.flatnonzero(campaigns.sms)
    day = campaigns.day
    known = people.created_t[:, None] < day[None, :]

    email_ok = (people.has_email & people.email_consent)[:, None] & known[:, email_cols]
    delivered = email_ok & (rng.random(email_ok.shape) < 0.06)
    opened = delivered & (rng.random(email_ok.shape) < people.open_rate[:, None])
    unsub = opened & (rng.random(email_ok.shape) < 0.01)
    first_unsub = np.where(unsub.any(axis=1), unsub.argmax(axis=1), len(email_cols))
    after = np.arange(len(email_cols))[None, :] > first_unsub[:, None]
    delivered &= ~after
    opened &= ~after
    clicked = opened & (rng.random(email_ok.shape) < 0.2)

    sms_ok = (people.has_phone & people.sms_consent)[:, None] & known[:, sms_cols]
    sms_delivered = sms_ok & (rng.random(sms_ok.shape) < 0.08)
    sms_clicked = sms_delivered & (rng.random(sms_ok.shape) < 0.07)

    send_ms = window.start_ms + day * DAY_MS + 7 * HOUR_MS  # 10:00 Moscow time
    cust_d, col_d = np.nonzero(delivered)
    deliver_ms = send_ms[email_cols[col_d]] + rng.integers(0, 2 * HOUR_MS, len(col_d))
    delivered_ms = np.zeros((n, len(email_cols)), dtype=np.int64)
    delivered_ms[cust_d, col_d] = deliver_ms
    shape = delivered_ms.shape
    open_ms = delivered_ms + np.minimum(rng.exponential(4 * HOUR_MS, shape), 48 * HOUR_MS).astype(
        np.int64
    )
    click_ms = open_ms + rng.integers(5_000, 180_000, shape)
    unsub_ms = open_ms + rng.integers(10_000, 120_000, shape)
    sms_send = (
        send_ms[sms_cols][None, :] + 4 * HOUR_MS + rng.integers(0, HOUR_MS, (n, len(sms_cols)))
    )
    sms_click_ms = sms_send + rng.integers(30_000, 2 * HOUR_MS, sms_send.shape)

    cols = EventColumns()
    for event, mask, times, campaign_cols, link in (
        ("Email Delivered", delivered, delivered_ms, email_cols, False),
        ("Email Opened", opened, open_ms, email_cols, False),
        ("Email Link Clicked", clicked, click_ms, email_cols, True),
        ("Unsubscribed", unsub & ~after, unsub_ms, email_cols, False),
        ("SMS Delivered", sms_delivered, sms_send, sms_cols, False),
        ("SMS Link Clicked", sms_clicked, sms_click_ms, sms_cols, True),
    ):
        who, col = np.nonzero(mask)
        campaign = campaign_cols[col]
        props = text.cat("{", text.take(campaigns.fragment, campaign), "}")
        if link:
            props = text.cat(
                "{",
                text.take(campaigns.fragment, campaign),
                ',"link_url":"',
                text.take(campaigns.link_url, campaign),
                '"}',
            )
        cols.add_track(
            event, times[who, col], text.take(people.customer_id, who), None, props, SERVER_CONTEXT
        )

    e_who, e_col = np.nonzero(clicked)
    s_who, s_col = np.nonzero(sms_clicked)
    return Engagement(
        events=cols,
        clicks_customer=np.concatenate([e_who, s_who]).astype(np.int64),
        clicks_ms=np.concatenate([click_ms[e_who, e_col], sms_click_ms[s_who, s_col]]) + 3_000,
        clicks_campaign=np.concatenate([email_cols[e_col], sms_cols[s_col]]).astype(np.int64),
        unsubscribed=np.asarray(unsub.any(axis=1), dtype=bool),
    )
