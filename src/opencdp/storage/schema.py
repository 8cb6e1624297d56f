"""The tables of the store, declared once and rendered to DDL by each backend.

Columns use a handful of logical types; each backend maps them to engine types
(``TYPE_MAP`` in its module) and each has an Arrow type for batches moving between
Python and the engine. ``order_by`` is the physical sort key: events are kept
time-ordered inside each event name so windowed scans read few blocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import pyarrow as pa


class T(Enum):
    """Logical column types."""

    STRING = "string"
    LOW_CARD = "low_cardinality_string"  # event names, types, currencies, channels
    INT = "int64"
    FLOAT = "float64"
    BOOL = "bool"
    TIMESTAMP = "timestamp"  # UTC, millisecond precision
    DATE = "date"
    JSON = "json"  # JSON text; engines query it with their JSON functions


ARROW_TYPES: dict[T, pa.DataType] = {
    T.STRING: pa.string(),
    T.LOW_CARD: pa.string(),
    T.INT: pa.int64(),
    T.FLOAT: pa.float64(),
    T.BOOL: pa.bool_(),
    T.TIMESTAMP: pa.timestamp("ms", tz="UTC"),
    T.DATE: pa.date32(),
    T.JSON: pa.string(),
}


@dataclass(frozen=True)
class Column:
    name: str
    type: T
    nullable: bool = True
    doc: str = ""


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    order_by: tuple[str, ...]
    doc: str = ""
    key: tuple[str, ...] = ()
    """Columns identifying a row in a current-state table (upserted, newest ``version`` wins)."""
    version: str | None = None
    partition_by_month: str | None = None
    """Timestamp column to partition by month on engines that partition."""
    indexes: tuple[str, ...] = field(default=())
    """Columns read by value that are not the sort key: a secondary index each (DuckDB: an ART
    index, held in memory whole once used, about 40 bytes per row; ClickHouse: a bloom-filter
    data-skipping index)."""

    @property
    def arrow_schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, ARROW_TYPES[c.type], nullable=c.nullable) for c in self.columns])

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def empty(self) -> pa.Table:
        return self.arrow_schema.empty_table()

    def filled(self, rows: int, **values: object) -> pa.Table:
        """A batch of ``rows`` rows: Arrow arrays as given, other values repeated, missing columns null."""
        columns = []
        for spec in self.arrow_schema:
            value = values.get(spec.name)
            if isinstance(value, pa.Array):
                columns.append(value.cast(spec.type))
            else:
                columns.append(pa.array([value] * rows, spec.type) if value is not None else pa.nulls(rows, spec.type))
        return pa.Table.from_arrays(columns, schema=self.arrow_schema)


def _c(name: str, type: T, nullable: bool = True, doc: str = "") -> Column:
    return Column(name, type, nullable, doc)


EVENTS = Table(
    "events",
    (
        _c("message_id", T.STRING, False, "Segment messageId; unique, the idempotency key"),
        _c("type", T.LOW_CARD, False, "track, identify, page, screen, group, alias"),
        _c("event", T.LOW_CARD, False, "track event name; '' for other types"),
        _c("name", T.STRING, doc="page or screen name"),
        _c("timestamp", T.TIMESTAMP, False, "when it happened, corrected for client clock skew"),
        _c("original_timestamp", T.TIMESTAMP),
        _c("sent_at", T.TIMESTAMP),
        _c("received_at", T.TIMESTAMP, False),
        _c("user_id", T.STRING),
        _c("anonymous_id", T.STRING),
        _c("group_id", T.STRING),
        _c("previous_id", T.STRING),
        _c("source", T.LOW_CARD, False, "the write key's source, or import:<kind>"),
        _c("channel", T.LOW_CARD, False, "web, app, server, pos, crm, email, sms, import"),
        _c("properties", T.JSON),
        _c("traits", T.JSON),
        _c("context", T.JSON),
        _c("integrations", T.JSON),
        # Typed e-commerce columns extracted from properties (Segment e-commerce spec).
        _c("order_id", T.STRING),
        _c("revenue", T.FLOAT),
        _c("total", T.FLOAT),
        _c("currency", T.LOW_CARD),
        _c("product_id", T.STRING),
        _c("category", T.STRING),
        _c("price", T.FLOAT),
        _c("quantity", T.FLOAT),
        _c("store_id", T.STRING),
        _c("lsn", T.INT, False, "write-ahead log position the event was loaded from (0 for imports)"),
        _c("profile_id", T.STRING, doc="the profile identity resolution gave the event when it was loaded; "
           "read it through profile_map, which redirects merged profiles to the survivor"),
    ),
    order_by=("event", "timestamp"),
    indexes=("profile_id",),  # a profile's history by key: real-time segments, the timeline
    doc="Every event ever accepted: the source of truth from which profiles are derived.",
    partition_by_month="timestamp",
)

ORDER_LINES = Table(
    "order_lines",
    (
        _c("message_id", T.STRING, False, "the order event's messageId"),
        _c("line_no", T.INT, False),
        _c("order_id", T.STRING),
        _c("timestamp", T.TIMESTAMP, False),
        _c("user_id", T.STRING),
        _c("anonymous_id", T.STRING),
        _c("event", T.LOW_CARD, False),
        _c("channel", T.LOW_CARD, False),
        _c("store_id", T.STRING),
        _c("product_id", T.STRING),
        _c("sku", T.STRING),
        _c("name", T.STRING),
        _c("category", T.STRING),
        _c("brand", T.STRING),
        _c("price", T.FLOAT),
        _c("quantity", T.FLOAT),
        _c("discount", T.FLOAT),
        _c("currency", T.LOW_CARD),
        _c("profile_id", T.STRING, doc="the order event's profile_id"),
    ),
    order_by=("timestamp",),
    indexes=("profile_id",),  # a profile's order lines by key (real-time segments)
    doc="One row per product in an order event's products[] array.",
    partition_by_month="timestamp",
)

# Order-line columns that come from the order event rather than from the product.
ORDER_LINE_EVENT_COLUMNS = (
    "message_id", "order_id", "timestamp", "user_id", "anonymous_id", "event", "channel", "store_id", "currency",
    "profile_id",
)

PRODUCTS = Table(
    "products",
    (
        _c("product_id", T.STRING, False),
        _c("sku", T.STRING),
        _c("name", T.STRING),
        _c("category", T.STRING, doc="category path, levels separated by ' > '"),
        _c("room", T.LOW_CARD),
        _c("brand", T.STRING),
        _c("price", T.FLOAT),
        _c("old_price", T.FLOAT),
        _c("currency", T.LOW_CARD),
        _c("stock", T.INT),
        _c("url", T.STRING),
        _c("image_url", T.STRING),
        _c("consumption_days", T.INT, doc="how long a consumable lasts; null for durable goods"),
        _c("attributes", T.JSON),
        _c("updated_at", T.TIMESTAMP, False),
    ),
    order_by=("product_id",),
    key=("product_id",),
    version="updated_at",
    doc="The product catalogue, current state.",
)

PRODUCT_CHANGES = Table(
    "product_changes",
    (
        _c("product_id", T.STRING, False),
        _c("changed_at", T.TIMESTAMP, False),
        _c("field", T.LOW_CARD, False, "price or stock"),
        _c("old_value", T.FLOAT),
        _c("new_value", T.FLOAT),
    ),
    order_by=("product_id", "changed_at"),
    doc="History of catalogue price and stock changes.",
)

QUARANTINE = Table(
    "quarantine",
    (
        _c("received_at", T.TIMESTAMP, False),
        _c("source", T.LOW_CARD, False, "api:<source> or import:<file>"),
        _c("error", T.LOW_CARD, False, "machine-readable reason"),
        _c("detail", T.STRING, False, "human-readable reason naming the field"),
        _c("field", T.STRING),
        _c("position", T.INT, doc="index in the batch, or line number in the file"),
        _c("payload", T.STRING, doc="the rejected input as received"),
    ),
    order_by=("received_at",),
    doc="Rejected events and rows, kept with the reason: nothing is dropped silently.",
)

CHECKPOINTS = Table(
    "checkpoints",
    (
        _c("name", T.STRING, False),
        _c("position", T.INT, False),
        _c("updated_at", T.TIMESTAMP, False),
    ),
    order_by=("name",),
    key=("name",),
    version="updated_at",
    doc="Progress markers of pipeline stages (the loader's write-ahead log position).",
)

API_KEYS = Table(
    "api_keys",
    (
        _c("key_id", T.STRING, False),
        _c("kind", T.LOW_CARD, False, "write or admin"),
        _c("name", T.STRING, False, "the source name for write keys"),
        _c("secret", T.STRING, False, "the write key itself, or the SHA-256 of an admin key"),
        _c("created_at", T.TIMESTAMP, False),
        _c("revoked_at", T.TIMESTAMP),
        _c("updated_at", T.TIMESTAMP, False),
        _c("scopes", T.STRING, True, "admin keys: comma-separated read, write, admin, pii:mask; null = admin (keys made before scopes)"),
    ),
    order_by=("key_id",),
    key=("key_id",),
    version="updated_at",
    doc="Write keys (public, per source) and admin keys (secret, stored hashed).",
)

# -- identity ------------------------------------------------------------------
IDENTITIES = Table(
    "identities",
    (
        _c("identifier", T.STRING, False, "kind:value, e.g. email:anna@example.ru (values normalised)"),
        _c("kind", T.LOW_CARD, False, "user_id, anonymous_id, email, phone, loyalty_card, device_token, click, external:<type>"),
        _c("value", T.STRING, False),
        _c("profile_id", T.STRING, False, "the profile the identifier belongs to (follow profile_map for merges)"),
        _c("first_seen", T.TIMESTAMP, False, "event time of the first event that carried it"),
        _c("message_id", T.STRING, False, "that first event"),
        _c("updated_at", T.TIMESTAMP, False),
        _c("deleted", T.BOOL, False, "erased or detached (unmerge): no longer identifies anyone"),
    ),
    order_by=("identifier",),
    key=("identifier",),
    version="updated_at",
    indexes=("profile_id",),  # a profile's identifiers (GET /api/v1/profiles)
    doc="Identity graph: which profile each known identifier belongs to.",
)

PROFILE_MAP = Table(
    "profile_map",
    (
        _c("profile_id", T.STRING, False, "a profile id events or identities may still carry"),
        _c("canonical_id", T.STRING, False, "the profile it is now part of (itself when not merged)"),
        _c("updated_at", T.TIMESTAMP, False),
    ),
    order_by=("profile_id",),
    key=("profile_id",),
    version="updated_at",
    indexes=("canonical_id",),  # the ids merged into a profile
    doc="Every profile id ever issued -> the surviving profile; join events on it to read merged history.",
)

PROFILE_MERGES = Table(
    "profile_merges",
    (
        _c("merged_id", T.STRING, False, "the profile that stopped existing"),
        _c("into_id", T.STRING, False, "the surviving profile"),
        _c("at", T.TIMESTAMP, False, "when the merge was made (wall clock)"),
        _c("event_time", T.TIMESTAMP, doc="time of the event that caused it"),
        _c("message_id", T.STRING, doc="the event that caused it; null for manual and probabilistic merges"),
        _c("reason", T.LOW_CARD, False, "shared_identifier, alias, probabilistic, manual, unmerge"),
        _c("evidence", T.JSON, doc="the identifiers (or match scores) that justified it"),
    ),
    order_by=("at",),
    doc="History of merges and splits of profiles.",
)

IDENTITY_CONFLICTS = Table(
    "identity_conflicts",
    (
        _c("message_id", T.STRING, False),
        _c("event_time", T.TIMESTAMP, False),
        _c("identifier", T.STRING, False, "the identifier dropped from the event"),
        _c("profile_id", T.STRING, doc="the profile it belongs to"),
        _c("other_profile_id", T.STRING, doc="the profile the rest of the event resolved to"),
        _c("reason", T.LOW_CARD, False, "user_id_conflict, limit, blocked, invalid"),
        _c("recorded_at", T.TIMESTAMP, False),
    ),
    order_by=("recorded_at",),
    doc="Identifiers not used for matching, and why (merge protection, limits, blocked or invalid values).",
)

MATCH_CANDIDATES = Table(
    "match_candidates",
    (
        _c("profile_id_l", T.STRING, False),
        _c("profile_id_r", T.STRING, False),
        _c("match_probability", T.FLOAT, False),
        _c("evidence", T.JSON, doc="per compared field: the comparison level and the values"),
        _c("status", T.LOW_CARD, False, "pending, merged, rejected, refused (merge protection)"),
        _c("decided_by", T.STRING, doc="key id of who accepted or rejected it; 'auto' for automatic merges"),
        _c("updated_at", T.TIMESTAMP, False),
    ),
    order_by=("profile_id_l", "profile_id_r"),
    key=("profile_id_l", "profile_id_r"),
    version="updated_at",
    doc="Pairs of profiles probabilistic matching found, and what was decided about them.",
)

SUPPRESSIONS = Table(
    "suppressions",
    (
        _c("channel", T.LOW_CARD, False, "email, sms, push, web_push, viber, telegram, whatsapp"),
        _c("address", T.STRING, False, "normalised: e-mail lower-case, phone E.164, else the token or id as given"),
        _c("reason", T.LOW_CARD, False, "hard_bounce, complaint, manual, unsubscribed_all"),
        _c("source", T.STRING, doc="who or what added it (the admin key's name, an ESP webhook)"),
        _c("created_at", T.TIMESTAMP, False, "when it was (last) added"),
        _c("updated_at", T.TIMESTAMP, False),
        _c("deleted", T.BOOL, False, "removed from the list: the address may be messaged again (with consent)"),
    ),
    order_by=("channel", "address"),
    key=("channel", "address"),
    version="updated_at",
    doc="Addresses never to message on a channel, whatever the consent says (bounces, complaints, manual blocks).",
)

# -- privacy -------------------------------------------------------------------
ERASED_IDENTIFIERS = Table(
    "erased_identifiers",
    (
        _c("identifier_hash", T.STRING, False, "HMAC-SHA256 of the identifier text kind:value, keyed with the "
           "store's privacy salt (<data_dir>/privacy_salt): recognises the value without keeping it"),
        _c("erased_at", T.TIMESTAMP, False),
        _c("request_id", T.STRING, doc="the erasure that added it (privacy_audit.request_id)"),
    ),
    order_by=("identifier_hash",),
    doc="Identifiers of erased people: later events carrying one are dropped or anonymised, not resolved.",
)

PRIVACY_AUDIT = Table(
    "privacy_audit",
    (
        _c("request_id", T.STRING, False),
        _c("action", T.LOW_CARD, False, "export or erase"),
        _c("subject_id", T.STRING, False, "the profile id the request named: a random token, not personal data "
           "(not called profile_id, so that erasing the person keeps the record of the erasure)"),
        _c("mode", T.LOW_CARD, doc="erase: drop or anonymise (Settings.erased_events)"),
        _c("identifiers", T.INT, False, "how many identifiers the person had (their values are not kept)"),
        _c("counts", T.JSON, doc="rows per table: exported, or removed / anonymised / scrubbed"),
        _c("requested_by", T.STRING, doc="the admin key id, or 'local'"),
        _c("at", T.TIMESTAMP, False),
    ),
    order_by=("at",),
    doc="Exports and erasures of personal data, without the personal data.",
)

# -- computed traits and segments ------------------------------------------------
COMPUTED_TRAIT_DEFINITIONS = Table(
    "computed_trait_definitions",
    (
        _c("name", T.STRING, False, "the trait's name (ComputedTrait.name)"),
        _c("definition", T.JSON, False, "ComputedTrait.to_dict() as JSON"),
        _c("created_at", T.TIMESTAMP, False),
        _c("updated_at", T.TIMESTAMP, False),
        _c("deleted", T.BOOL, False, "removed: no longer computed"),
    ),
    order_by=("name",),
    key=("name",),
    version="updated_at",
    doc="Computed traits declared through the API (those of computed_traits_file live in the file).",
)

SEGMENTS = Table(
    "segments",
    (
        _c("segment_id", T.STRING, False, "a slug: letters, digits, '_' and '-'"),
        _c("name", T.STRING, False, "what marketers see"),
        _c("description", T.STRING),
        _c("definition", T.STRING, False, "the segment in the text form of the segment language"),
        _c("tree", T.JSON, False, "the same definition as the JSON tree"),
        _c("kind", T.LOW_CARD, False, "dynamic (kept up to date), static (a frozen list) or uploaded"),
        _c("status", T.LOW_CARD, False, "active, or broken: it references a segment or trait that is gone"),
        _c("problem", T.STRING, doc="why it is broken"),
        _c("alerts", T.JSON, doc="size alerts: [{min_size?, drop_percent?, webhook?}]"),
        _c("created_at", T.TIMESTAMP, False),
        _c("updated_at", T.TIMESTAMP, False),
        _c("deleted", T.BOOL, False),
    ),
    order_by=("segment_id",),
    key=("segment_id",),
    version="updated_at",
    doc="Segment definitions.",
)

SEGMENT_MEMBERS = Table(
    "segment_members",
    (
        _c("segment_id", T.STRING, False),
        _c("profile_id", T.STRING, False, "a canonical profile id"),
        _c("member", T.BOOL, False, "in the segment now; false once the profile left it"),
        _c("since", T.TIMESTAMP, False, "when it last entered (or left, when member is false)"),
        _c("updated_at", T.TIMESTAMP, False),
    ),
    order_by=("segment_id", "profile_id"),
    key=("segment_id", "profile_id"),
    version="updated_at",
    indexes=("profile_id",),  # the memberships of the profiles a real-time tick evaluates
    doc="Current membership of every segment; changes are also written as Segment Entered/Exited events.",
)

SEGMENT_SIZES = Table(
    "segment_sizes",
    (
        _c("segment_id", T.STRING, False),
        _c("at", T.TIMESTAMP, False),
        _c("size", T.INT, False),
        _c("entered", T.INT, False),
        _c("exited", T.INT, False),
        _c("trigger", T.LOW_CARD, False, "refresh (scheduled or full), realtime, create"),
    ),
    order_by=("segment_id", "at"),
    doc="Size history of each segment.",
)

# -- stored scores (profiles/scores.py) ---------------------------------------------------------
PROFILE_SCORES = Table(
    "profile_scores",
    (
        _c("name", T.LOW_CARD, False, "the score, e.g. rfm_cell, churn_probability, clv"),
        _c("model_version", T.STRING, False, "the run that wrote it; readers use the version score_models names"),
        _c("profile_id", T.STRING, False, "a canonical profile id at the time of the run"),
        _c("number", T.FLOAT, doc="the value of a number score"),
        _c("text", T.STRING, doc="the value of a text score"),
    ),
    order_by=("name", "model_version", "profile_id"),
    doc="Per-profile values computed in bulk by models and reports (RFM cells, predictions), one version per name.",
)

SCORE_MODELS = Table(
    "score_models",
    (
        _c("name", T.STRING, False),
        _c("kind", T.LOW_CARD, False, "number or text"),
        _c("model_version", T.STRING, False, "the current version of the score"),
        _c("computed_at", T.TIMESTAMP, False),
        _c("profiles", T.INT, False, "profiles with a value"),
        _c("description", T.STRING),
        _c("metrics", T.JSON, doc="fit metrics, cut points, parameters of the run"),
    ),
    order_by=("name",),
    key=("name",),
    version="computed_at",
    doc="The registry of stored scores: which version of each is current, with its metrics.",
)

# -- analytics (issue 5: RFM, cohorts, reports, BI export) --------------------------------------
RFM_RUNS = Table(
    "rfm_runs",
    (
        _c("kind", T.LOW_CARD, False, "orders (RFM) or engagement"),
        _c("at", T.TIMESTAMP, False, "the time the run scored as of"),
        _c("model_version", T.STRING, False, "the version of the rfm_* scores it wrote"),
        _c("profiles", T.INT, False),
        _c("cells", T.JSON, False, "profiles per cell: {cell: count}"),
        _c("cuts", T.JSON, False, "the cut points used: {r: [...], f: [...], m: [...]}"),
        _c("changes", T.INT, False, "profiles that changed cell (Cell Changed events written)"),
        _c("changed_to", T.JSON, doc="changes by the cell entered: {cell: count}"),
    ),
    order_by=("kind", "at"),
    doc="One row per RFM scoring run: the cell sizes over time (the lifecycle report's history).",
)
ANALYTICS_TABLES: tuple[Table, ...] = (RFM_RUNS,)

# -- predictions (issue 5: BG/NBD, Gamma-Gamma, classifiers) ------------------------------------
PREDICTION_FITS = Table(
    "prediction_fits",
    (
        _c("model", T.LOW_CARD, False, "clv, purchase, churn, next_order, replenishment, vip"),
        _c("model_version", T.STRING, False, "the fit; the scores it wrote carry the same version"),
        _c("status", T.LOW_CARD, False, "fitted, or failed (nothing was written; message says why)"),
        _c("fitted_at", T.TIMESTAMP, False, "wall clock of the fit"),
        _c("data_until", T.TIMESTAMP, False, "the history the model saw ends here (the fit's now)"),
        _c("seconds", T.FLOAT, doc="how long the fit and scoring took"),
        _c("params", T.JSON, doc="fitted parameters and settings (BG/NBD r, alpha, a, b; horizons; features)"),
        _c("metrics", T.JSON, doc="fit quality: log-likelihood, backtest AUC, lift, against the baseline"),
        _c("scores", T.JSON, doc="names of the scores written, with the profiles each has"),
        _c("message", T.STRING, doc="why a fit failed"),
        _c("artifact", T.STRING, doc="the fitted model, pickled and base64-encoded (for rescoring without a refit)"),
    ),
    order_by=("model", "fitted_at"),
    doc="Model registry: every fit of a prediction model, its parameters and figures (append-only).",
)

PREDICTION_TABLES: tuple[Table, ...] = (PREDICTION_FITS,)

# -- recommendations (issue 6) --------------------------------------------------------------------
RECOMMENDATION_BLOCKS = Table(
    "recommendation_blocks",
    (
        _c("block_id", T.STRING, False, "a slug: letters, digits, '_' and '-'"),
        _c("name", T.STRING, False),
        _c("definition", T.JSON, False, "Block.to_dict(): algorithm, size, rules, A/B variants"),
        _c("created_at", T.TIMESTAMP, False),
        _c("updated_at", T.TIMESTAMP, False),
        _c("deleted", T.BOOL, False),
    ),
    order_by=("block_id",),
    key=("block_id",),
    version="updated_at",
    doc="Named recommendation blocks (algorithm + business rules + size), served by GET /api/v1/recommendations/{block}.",
)

RECOMMENDATION_MODELS = Table(
    "recommendation_models",
    (
        _c("version", T.STRING, False, "the model file's version (<data_dir>/models/recs-<version>.npz)"),
        _c("trained_at", T.TIMESTAMP, False),
        _c("personal", T.LOW_CARD, False, "als or item_knn"),
        _c("stats", T.JSON, doc="users, items, interactions, seconds per training step"),
    ),
    order_by=("trained_at",),
    doc="History of trained recommendation models.",
)

RECOMMENDATION_TABLES: tuple[Table, ...] = (RECOMMENDATION_BLOCKS, RECOMMENDATION_MODELS)

# -- campaigns (issue 7: channels, templates, campaigns, scenarios) ------------------------------
CAMPAIGN_DEFINITIONS = Table(
    "campaign_definitions",
    (
        _c("kind", T.LOW_CARD, False, "template, campaign or scenario"),
        _c("id", T.STRING, False, "a slug: letters, digits, '_' and '-'"),
        _c("name", T.STRING, False),
        _c("definition", T.JSON, False, "the object as JSON (opencdp.campaigns.definitions)"),
        _c("status", T.LOW_CARD, False, "draft, active, paused or done (templates: active)"),
        _c("created_at", T.TIMESTAMP, False),
        _c("updated_at", T.TIMESTAMP, False),
        _c("deleted", T.BOOL, False),
    ),
    order_by=("kind", "id"),
    key=("kind", "id"),
    version="updated_at",
    doc="Message templates, campaigns and trigger scenarios, validated when saved and activated.",
)

OUTBOX = Table(
    "outbox",
    (
        _c("campaign_id", T.STRING, False),
        _c("step_id", T.STRING, False, "the scenario step (with ~run for re-entries); 'send' for broadcasts"),
        _c("profile_id", T.STRING, False, "canonical profile id when planned"),
        _c("message_id", T.STRING, False, "deterministic from the key: the provider's idempotency key"),
        _c("variant", T.STRING, False, "A/B variant name; 'control' rows are holdouts never sent"),
        _c("channel", T.LOW_CARD, False, "the channel name of the campaign's configuration"),
        _c("template_id", T.STRING, False),
        _c("topic", T.LOW_CARD, False, "consent topic checked at send time"),
        _c("transactional", T.BOOL, False, "bypasses frequency caps and quiet hours (consent still applies)"),
        _c("params", T.JSON, doc="values bound from the entering event, for the template"),
        _c("state", T.LOW_CARD, False, "planned, sending, sent, delivered, failed, skipped, held_out"),
        _c("reason", T.STRING, doc="why skipped or failed (no_consent, suppressed, frequency_cap, ...)"),
        _c("attempts", T.INT, False),
        _c("not_before", T.TIMESTAMP, False, "earliest send time: schedule, local window, quiet hours, backoff"),
        _c("address", T.STRING, doc="where it was sent"),
        _c("provider_message_id", T.STRING),
        _c("created_at", T.TIMESTAMP, False),
        _c("sent_at", T.TIMESTAMP),
        _c("updated_at", T.TIMESTAMP, False),
    ),
    order_by=("campaign_id", "step_id", "profile_id"),
    key=("campaign_id", "step_id", "profile_id"),
    version="updated_at",
    doc="Every message to send, written before it is sent: exactly one per (campaign, step, profile).",
)

JOURNEYS = Table(
    "journeys",
    (
        _c("scenario_id", T.STRING, False),
        _c("profile_id", T.STRING, False, "canonical profile id at entry"),
        _c("run", T.INT, False, "1 for the first entry, then 2, 3 ... (re-entry rules)"),
        _c("state", T.LOW_CARD, False, "active, done or exited"),
        _c("step_id", T.STRING, doc="the step to run next"),
        _c("wake_at", T.TIMESTAMP, False, "when the step is due"),
        _c("entered_at", T.TIMESTAMP, False),
        _c("trigger_message_id", T.STRING, doc="the entering event"),
        _c("params", T.JSON, doc="values bound from the entering event"),
        _c("path", T.JSON, doc="split decisions so far: {step_id: branch}"),
        _c("reason", T.STRING, doc="why it ended: goal event, exit, done"),
        _c("updated_at", T.TIMESTAMP, False),
    ),
    order_by=("scenario_id", "profile_id", "run"),
    key=("scenario_id", "profile_id", "run"),
    version="updated_at",
    doc="Where each profile is in each trigger scenario.",
)

INBOX = Table(
    "inbox",
    (
        _c("profile_id", T.STRING, False, "the canonical profile the message is for"),
        _c("message_id", T.STRING, False, "the campaign message id (one per campaign, step and profile)"),
        _c("campaign_id", T.STRING),
        _c("subject", T.STRING),
        _c("text", T.STRING, False),
        _c("html", T.STRING),
        _c("data", T.JSON, doc="extra fields for the app: image, link, buttons"),
        _c("created_at", T.TIMESTAMP, False),
        _c("expires_at", T.TIMESTAMP, doc="hidden from the inbox after this time"),
        _c("read_at", T.TIMESTAMP, doc="when the profile first opened it; null while unread"),
        _c("deleted", T.BOOL, False, "the profile removed it from the inbox"),
        _c("updated_at", T.TIMESTAMP, False),
    ),
    order_by=("profile_id", "message_id"),
    key=("profile_id", "message_id"),
    version="updated_at",
    doc="In-app inbox messages (channel inbox), per profile.",
)

MESSAGE_RECEIPTS = Table(
    "message_receipts",
    (
        _c("provider_message_id", T.STRING, False, "the id the provider gave the message (SMS sid, Viber token, Message-ID)"),
        _c("status", T.LOW_CARD, False, "sent, delivered, read, deferred, failed or complained"),
        _c("permanent", T.BOOL, False, "a failure that says the address is dead"),
        _c("error", T.STRING),
        _c("recipient", T.STRING),
        _c("provider_at", T.FLOAT, doc="unix seconds the provider gave, when it gave one"),
        _c("received_at", T.TIMESTAMP, False, "when the receipt arrived"),
        _c("version", T.TIMESTAMP, False,
           "received_at, a year later for final statuses: a late 'sent' never replaces a 'delivered'"),
    ),
    order_by=("provider_message_id",),
    key=("provider_message_id",),
    version="version",
    doc="The latest delivery receipt per provider message id, shared by every worker (cascades wait on it).",
)

CAMPAIGN_TABLES: tuple[Table, ...] = (CAMPAIGN_DEFINITIONS, OUTBOX, JOURNEYS, INBOX, MESSAGE_RECEIPTS)

# -- profiles (issue 3): the events' index by profile, kept by Backend.load (storage/profile_summary.py) --
PROFILE_SUMMARY = Table(
    "profile_summary",
    (
        _c("profile_id", T.STRING, False, "a profile id as events carry it (merged ids keep their own row)"),
        _c("events", T.INT, False, "events stored with this profile id; grows with every update (the version)"),
        _c("first_seen", T.TIMESTAMP, False, "earliest event time"),
        _c("last_seen", T.TIMESTAMP, False, "latest event time"),
        _c("traits", T.JSON, doc='latest value of each trait by event time: {"name": [value, time_ms, message_id, source]}'),
        _c("updated_at", T.TIMESTAMP, False),
    ),
    order_by=("profile_id",),
    key=("profile_id",),
    version="events",
    doc="Per profile id: event count, first and last event time, latest traits (last write wins), kept with the "
    "events so that a profile is read by key instead of by a scan of every event.",
)

PROFILE_TABLES: tuple[Table, ...] = (PROFILE_SUMMARY,)

CORE_TABLES: tuple[Table, ...] = (
    EVENTS, ORDER_LINES, PRODUCTS, PRODUCT_CHANGES, QUARANTINE, CHECKPOINTS, API_KEYS,
    IDENTITIES, PROFILE_MAP, PROFILE_MERGES, IDENTITY_CONFLICTS, SUPPRESSIONS, MATCH_CANDIDATES,
    ERASED_IDENTIFIERS, PRIVACY_AUDIT, COMPUTED_TRAIT_DEFINITIONS, SEGMENTS, SEGMENT_MEMBERS, SEGMENT_SIZES,
    PROFILE_SCORES, SCORE_MODELS,
)

TABLES: tuple[Table, ...] = (
    CORE_TABLES + PROFILE_TABLES + ANALYTICS_TABLES + PREDICTION_TABLES + RECOMMENDATION_TABLES + CAMPAIGN_TABLES
)
