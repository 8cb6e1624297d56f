"""Customers (a CRM export): one ``identify`` event per row, on channel ``crm``.

The row's ids become ``userId`` (customer_id) or, without one, an anonymousId
``email:<address>`` / ``phone:<E.164>`` that the identity stage can attach later.
Everything else becomes traits; unmapped columns are kept as custom traits. The
event time is ``updated_at``, else ``created_at``, else the time of the import.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from opencdp.ingest.imports.build import (
    check_id_length,
    check_time,
    content_id,
    events_table,
    external_id,
    json_text,
)
from opencdp.ingest.imports.context import Context
from opencdp.ingest.imports.frame import Frame
from opencdp.ingest.imports.normalise import (
    NOT_A_DATE_TIME,
    booleans,
    emails,
    genders,
    iso_seconds,
    not_a_number,
    numbers,
    present,
    upper,
)
from opencdp.ingest.imports.reader import Chunk

CHANNEL = "crm"
_TEXT = ("first_name", "last_name", "city", "timezone", "loyalty_card")
# Target column -> trait name, in the order traits are written.
TRAITS = (
    ("email", "email"),
    ("phone", "phone"),
    ("first_name", "firstName"),
    ("last_name", "lastName"),
    ("gender", "gender"),
    ("birthday", "birthday"),
    ("city", "city"),
    ("timezone", "timezone"),
    ("country", "country"),
    ("loyalty_card", "loyalty_card"),
    ("bonus_balance", "bonus_balance"),
    ("bonus_expires_at", "bonus_expires_at"),
    ("email_consent", "email_consent"),
    ("sms_consent", "sms_consent"),
    ("created_at", "created_at"),
)


class CustomersImporter:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def process(self, chunk: Chunk) -> None:
        frame = self.ctx.frame(chunk)
        columns = self._parse(frame)
        self.ctx.reject_frame(frame)
        good = frame.good
        if good.any():
            keep = pa.array(good)
            self.ctx.write(self._events({k: v.filter(keep) for k, v in columns.items()}, int(good.sum()), frame, keep))

    def finish(self) -> None:
        pass

    def _parse(self, frame: Frame) -> dict[str, pa.Array]:
        ctx = self.ctx
        out: dict[str, pa.Array] = {}
        out["customer_id"] = frame.text("customer_id")
        check_id_length(frame, "customer_id", out["customer_id"])
        email = emails(frame.text("email"))
        frame.flag(email.bad, "email", "invalid_email", lambda v: f"{v!r} is not a valid e-mail address; write it as name@example.com")
        out["email"] = email.values
        phone = ctx.phones.parse(frame.text("phone"))
        frame.flag(phone.bad, "phone", "invalid_phone", ctx.phones.problem)
        out["phone"] = phone.values
        no_id = ~(present(out["customer_id"]) | present(out["email"]) | present(out["phone"]))
        frame.flag_rows(
            no_id,
            "missing_identifier",
            frame.resolved.column("customer_id"),
            lambda _i: "the row has no customer_id, email or phone; at least one is needed to identify the customer",
        )
        for target in _TEXT:
            out[target] = frame.text(target)
        out["country"] = upper(frame.text("country"))
        out["gender"] = genders(frame.text("gender"))
        birthday = ctx.clock.dates(frame.text("birthday"))
        frame.flag(birthday.bad, "birthday", "invalid_date", lambda v: f"{v!r} is not a date; write it as YYYY-MM-DD or DD.MM.YYYY")
        out["birthday"] = birthday.values
        balance = numbers(frame.text("bonus_balance"))
        frame.flag(balance.bad, "bonus_balance", "invalid_number", not_a_number)
        out["bonus_balance"] = balance.values
        for target in ("email_consent", "sms_consent"):
            consent = booleans(frame.text(target))
            frame.flag(consent.bad, target, "invalid_boolean", lambda v: f"{v!r} is not yes or no; write true or false")
            out[target] = consent.values
        times: dict[str, pa.Array] = {}
        for target in ("bonus_expires_at", "created_at", "updated_at"):
            parsed = ctx.clock.timestamps(frame.text(target))
            frame.flag(parsed.bad, target, "invalid_timestamp", lambda v: f"{v!r} {NOT_A_DATE_TIME}")
            times[target] = parsed.values
        out["bonus_expires_at"] = iso_seconds(times["bonus_expires_at"])
        out["created_at"] = iso_seconds(times["created_at"])
        # The event time is updated_at, else created_at: check the one used, naming its column.
        created_used = pc.if_else(pc.is_null(times["updated_at"]), times["created_at"], pa.scalar(None, pa.int64()))
        check_time(frame, "updated_at", times["updated_at"], ctx.received_ms, ctx.max_future_ms)
        check_time(frame, "created_at", created_used, ctx.received_ms, ctx.max_future_ms)
        out["_time"] = pc.coalesce(times["updated_at"], times["created_at"])
        return out

    def _events(self, columns: dict[str, pa.Array], n: int, frame: Frame, keep: pa.Array) -> pa.Table:
        ctx = self.ctx
        lists = {name: values.to_pylist() for name, values in columns.items()}
        extras = [(name, frame.extra(name).filter(keep).to_pylist()) for name in frame.resolved.extras]
        # Whole bonus balances as integers, as a CRM shows them.
        lists["bonus_balance"] = [v if v is None or not v.is_integer() else int(v) for v in lists["bonus_balance"]]
        message_ids: list[str] = []
        user_ids: list[str | None] = []
        anonymous_ids: list[str | None] = []
        traits_json: list[str | None] = []
        context_json: list[str | None] = []
        for i in range(n):
            customer_id, email, phone = lists["customer_id"][i], lists["email"][i], lists["phone"][i]
            card = lists["loyalty_card"][i]
            traits: dict[str, Any] = {}
            for target, trait in TRAITS:
                value = lists[target][i]
                if value is not None:
                    traits[trait] = value
            for name, values in extras:
                if values[i] is not None:
                    traits.setdefault(name, values[i])
            anonymous = None if customer_id else (f"email:{email}" if email else f"phone:{phone}")
            context = {"externalIds": [external_id(card, "loyalty_card")]} if card else None
            message_ids.append(content_id("imp:customers:", [customer_id, anonymous, traits, lists["_time"][i]]))
            user_ids.append(customer_id)
            anonymous_ids.append(anonymous)
            traits_json.append(json_text(traits))
            context_json.append(json_text(context))
        timestamps = pc.fill_null(columns["_time"], ctx.received_ms)
        return events_table(
            n,
            {
                "message_id": message_ids,
                "type": "identify",
                "event": "",
                "timestamp": timestamps,
                "received_at": ctx.received_ms,
                "user_id": user_ids,
                "anonymous_id": anonymous_ids,
                "source": ctx.source,
                "channel": CHANNEL,
                "traits": traits_json,
                "context": context_json,
                "lsn": 0,
            },
        )
