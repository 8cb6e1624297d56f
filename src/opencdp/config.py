"""One settings class for the whole of opencdp.

Values come, in order of precedence, from keyword arguments, ``OPENCDP_*``
environment variables, and an optional TOML file (``opencdp.toml`` in the working
directory, or the path in ``OPENCDP_CONFIG``). Every setting has a default that
works on a laptop.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


def _toml_path() -> Path:
    return Path(os.environ.get("OPENCDP_CONFIG", "opencdp.toml"))


class Settings(BaseSettings):
    """opencdp configuration. Environment variables are ``OPENCDP_`` + the upper-case name."""

    model_config = SettingsConfigDict(env_prefix="OPENCDP_", extra="forbid")

    data_dir: Path = Field(Path("data"), description="Where the embedded store, the write-ahead log and server state live.")
    backend: Literal["duckdb", "clickhouse", "chdb"] = Field(
        "duckdb",
        description="Storage engine: `duckdb` (embedded file, the default), `clickhouse` (a server, via clickhouse-connect) or `chdb` (embedded ClickHouse).",
    )
    clickhouse_url: str = Field(
        "http://default:@localhost:8123/opencdp",
        description="ClickHouse server URL `http://user:password@host:port/database`, used when backend is `clickhouse`.",
    )
    clickhouse_database: str = Field(
        "opencdp", description="Database holding the tables on ClickHouse engines (chdb; clickhouse when the URL names none)."
    )
    duckdb_memory_limit: str = Field(
        "1GB",
        description="Most memory the embedded DuckDB store may use for its buffers (DuckDB size syntax, e.g. 512MB, 4GB). "
        "Indexes count against it and stay in memory once used: about 360 bytes per profile (identities and profile_map), "
        "so 1M profiles take ~360MB; a larger store needs a larger limit (or ClickHouse).",
    )
    host: str = Field("127.0.0.1", description="Address the HTTP server binds to.")
    port: int = Field(8000, description="Port the HTTP server listens on.")
    default_region: str = Field("RU", description="Region used to read phone numbers written without a country code (ISO 3166 alpha-2).")
    max_event_bytes: int = Field(32 * 1024, description="Largest accepted single event, as Segment: 32 KB.")
    max_batch_bytes: int = Field(500 * 1024, description="Largest accepted batch request body, as Segment: 500 KB.")
    max_batch_events: int = Field(2500, description="Most events in one batch, as Segment: 2500.")
    max_future_skew_s: float = Field(
        24 * 3600.0, description="Events timestamped further than this in the future are rejected (seconds)."
    )
    ingest_processes: int = Field(
        0,
        ge=0,
        description="Worker processes that validate tracking requests beside the server's event loop "
        "(0: validate in the server process). When not set, `opencdp serve` uses 2 on a machine with 2+ cores.",
    )
    max_pending_bytes: int = Field(
        64 * 1024 * 1024, description="Bytes waiting for the write-ahead log before the API answers 429."
    )
    max_inflight_bytes: int = Field(
        16 * 1024 * 1024,
        description="Request bytes the tracking API works on at once; beyond it, new requests get 429 at once.",
    )
    max_lag_bytes: int = Field(
        512 * 1024 * 1024, description="Write-ahead log bytes not yet loaded into the store before the API answers 503."
    )
    max_import_bytes: int = Field(
        1024**3, description="Largest file accepted by POST /api/v1/imports (bytes); import bigger files with `opencdp import` on the server."
    )
    wal_segment_bytes: int = Field(64 * 1024 * 1024, description="Size at which the write-ahead log starts a new file.")
    loader_batch_events: int = Field(50_000, description="Most events the loader moves into the store in one transaction.")
    loader_interval_s: float = Field(0.2, description="How often the loader looks for new write-ahead log entries (seconds).")
    segment_realtime_interval_s: float = Field(
        0.5,
        description="How often the server re-evaluates, for the profiles that just had events, the segments those events "
        "can change (seconds); 0 turns real-time segments off (memberships then change on refresh only).",
    )
    segment_refresh_short_s: float = Field(
        300.0, description="How often segments with windows shorter than a day (`12h`, `ago(30m)`) are refreshed whole (seconds)."
    )
    segment_refresh_long_s: float = Field(
        3600.0, description="How often other segments relative to now (`30d` windows, `ago(365d)`, ages) are refreshed whole (seconds)."
    )
    computed_traits_file: Path | None = Field(
        None,
        description="TOML or JSON file of computed traits (`[[traits]]` tables, see `opencdp.profiles.computed`), "
        "shown on every profile beside the built-in ones.",
    )
    loader_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="CPU priority of loading below request handling (a nice increment; 0: the same priority). The "
        "loader and the store's native worker threads run at it, so a burst of events is acknowledged first and "
        "loaded with the spare CPU; `max_lag_bytes` bounds how far the store may fall behind. Linux only.",
    )
    dedupe_window_days: int = Field(
        7,
        ge=0,
        description="Tracking API: a retried messageId is recognised if first received within this many days "
        "(the check's cost stays flat as the store grows); 0 checks all history. Imports always check all history.",
    )
    cors_origins: list[str] = Field(["*"], description="Origins allowed to call the tracking API from a browser.")
    erased_events: Literal["drop", "anonymise"] = Field(
        "drop",
        description="Events of an erased person (DELETE /api/v1/profiles/{id}), and later events carrying one of "
        "their erased identifiers: `drop` deletes them; `anonymise` keeps them without identifiers, traits and "
        "IP address (so revenue and product statistics stay right) and with no profile.",
    )

    # -- analytics (issue 5) --
    analytics_rfm_method: Literal["quantile", "fixed"] = Field(
        "quantile",
        description="How RFM scores 1-5 are cut: `quantile` (20/40/60/80 % of this run's customers) or `fixed` "
        "(the shop's own `analytics_rfm_thresholds`).",
    )
    analytics_rfm_thresholds: dict[str, list[float]] = Field(
        default_factory=dict,
        description='Fixed RFM cut points, 4 ascending values per measure: {"r": [30, 90, 180, 365] (days since the '
        'last order), "f": [1, 2, 3, 5] (orders), "m": [5000, 15000, 40000, 100000] (revenue)}; missing ones use these.',
    )
    analytics_rfm_window_days: int | None = Field(
        None, ge=1, description="Score RFM on the orders of the last so many days only; unset: all history."
    )
    analytics_interest_half_life_days: float = Field(
        30.0, gt=0, description="Current interest: a signal this many days old counts half as much as one today."
    )
    analytics_interest_window_days: int = Field(180, ge=1, description="Current interest looks at this many days back.")
    analytics_core_categories: dict[str, list[str]] = Field(
        default_factory=dict,
        description='Core categories per room, e.g. {"Kitchen": ["Kitchen > Kitchen sets", "Kitchen > Tables"]}: a '
        "room is finished once all were bought. Unset: products whose attributes.core is true.",
    )

    # -- predictions (issue 5) --
    predictions_refit_interval_s: float = Field(
        0.0,
        ge=0,
        description="How often the server refits the prediction models and rewrites their scores (seconds, e.g. 86400 "
        "for daily); 0: only when asked (`opencdp predict fit`, POST /api/v1/predictions/fit).",
    )
    predictions_models: list[str] = Field(
        ["clv", "purchase", "churn", "next_order", "replenishment", "vip"],
        description="Models a scheduled refit (and a fit that names none) runs: clv (BG/NBD + Gamma-Gamma), purchase, "
        "churn, next_order, replenishment, vip.",
    )
    predictions_horizon_days: int = Field(
        30, ge=1, le=365, description="Horizon of expected purchases and purchase probability (score names end `_<N>d`)."
    )
    predictions_churn_days: int = Field(
        90, ge=1, le=365, description="A customer has churned when they do not order within this many days."
    )
    predictions_clv_months: int = Field(12, ge=1, le=120, description="Horizon of the customer lifetime value (months).")
    predictions_clv_monthly_discount: float = Field(
        0.01, ge=0, le=1, description="Monthly discount rate applied to future value in the CLV (0.01: 1% a month)."
    )
    predictions_vip_window_days: int = Field(
        7, ge=1, le=60, description="Potential VIP: newcomers are scored this many days after their first order at most."
    )
    predictions_vip_horizon_days: int = Field(
        90, ge=7, le=730, description="Potential VIP: top-decile spend measured over this many days from the first order."
    )
    predictions_min_customers: int = Field(
        200, ge=10, description="Fewest customers with orders a model is fitted on; with fewer, the fit is refused "
        "(a clear message, nothing written) rather than a garbage model stored."
    )
    predictions_replenishment_lapse_days: int = Field(
        30, ge=0, description="A consumable overdue by more than this many days no longer counts as due for replenishment."
    )

    # -- recommendations (issue 6) --
    recs_personal_algorithm: Literal["als", "item_knn"] = Field(
        "als",
        description="Collaborative filtering behind the personal block: `als` (implicit ALS) or `item_knn`; "
        "`opencdp recs evaluate` compares both against popularity on this store.",
    )
    recs_half_life_days: float = Field(
        90.0, ge=0, description="Interaction weights halve at this age (personal and popularity); 0: no decay."
    )
    recs_retrain_interval_s: float = Field(
        6 * 3600.0, ge=0,
        description="How often the server retrains the recommendation models in the background and swaps them in "
        "(seconds); 0: only at startup (when no saved model exists) and on `opencdp recs train`.",
    )
    recs_catalogue_refresh_s: float = Field(
        60.0, ge=0, description="How often the server re-reads stock, prices, images and URLs of the catalogue (seconds)."
    )
    recs_train_threads: int = Field(2, ge=1, description="Threads the ALS training uses.")
    recs_als_factors: int = Field(
        32, ge=4, le=512, description="ALS latent factors. 32 won the demo shop's offline evaluation (NDCG@10 above 16 "
        "and 64, 128 far below); `opencdp recs evaluate --factors N` compares on your store.",
    )
    recs_als_iterations: int = Field(
        10, ge=1, le=100, description="ALS iterations (10 scored as 15 on the demo shop in two thirds of the time)."
    )
    recs_train_in_subprocess: bool = Field(
        True, description="The server trains in a child process (requests do not wait behind training on the GIL) "
        "and loads the saved model; false trains in the server's own process.",
    )
    recs_record_impressions: bool = Field(
        True, description="Record every served block as a `Recommendation Shown` event (batched, off the request path), "
        "so block reports have impressions without the site sending them.",
    )
    recs_identity_refresh_s: float = Field(
        600.0, ge=0, description="How often the server rebuilds its in-memory index of profile ids and identifiers "
        "(seconds; also after each retrain). Ids newer than it are learned from events as they arrive.",
    )
    recs_session_ttl_s: float = Field(
        3600.0, ge=0, description="How long a visitor's recent views, cart and searches steer the personal block (seconds)."
    )
    recs_public_rate_per_s: float = Field(
        20.0, ge=0,
        description="Recommendation requests per second one client address may make with a public write key "
        "(bursts of twice as many); 0: no limit. Admin keys are not limited.",
    )

    # -- campaigns (issue 7) --
    campaign_channels: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Channels campaigns may use, by name: `{\"email\": {\"kind\": \"email\", \"host\": ..., "
        "\"port\": 25, \"from\": ...}}`; `kind` is an adapter of opencdp.campaigns.channels, the other keys its "
        "settings. A campaign naming a channel not listed here is refused at activation.",
    )
    campaign_base_url: str = Field(
        "http://localhost:8000",
        description="Public URL of this server, used in tracking links (click redirect, open pixel, unsubscribe).",
    )
    campaign_secret: str = Field(
        "", description="Key signing message links; empty: a random one kept in <data_dir>/campaign_secret."
    )
    campaign_caps: dict[str, list[int]] = Field(
        default_factory=lambda: {"all": [3, 10]},
        description="Frequency caps for non-transactional messages per profile: `{channel name or \"all\": "
        "[per day, per week]}`; a message over a cap is skipped (reason frequency_cap).",
    )
    campaign_quiet_hours: list[str] = Field(
        ["21:00", "09:00"],
        description="No non-transactional message is sent between these local times of the recipient (their "
        "`timezone` trait, else campaign_timezone); such sends wait for the end. [] turns quiet hours off.",
    )
    campaign_timezone: str = Field("Europe/Moscow", description="Time zone of profiles without a `timezone` trait.")
    campaign_rate_limits: dict[str, float] = Field(
        default_factory=dict, description="Messages per second per channel name (a provider's limit); none: unlimited."
    )
    campaign_max_attempts: int = Field(6, ge=1, description="Send attempts on transient errors before a message fails.")
    campaign_retry_base_s: float = Field(
        30.0, gt=0, description="First retry delay; doubles per attempt (capped at 1 h), or the provider's Retry-After."
    )
    campaign_global_control_percent: float = Field(
        0.0, ge=0, le=50, description="Share of all profiles that receive no marketing message (global control group)."
    )
    campaign_global_control_redraw_days: int = Field(
        90, ge=1, description="The global control group is redrawn every this many days (counted from 1970-01-01)."
    )
    campaign_attribution_hours: float = Field(
        72.0, gt=0, description="Conversions within this many hours of an open or click are attributed to the message."
    )
    campaign_conversion_event: str = Field("Order Completed", description="The event counted as a conversion.")
    campaign_sender_batch: int = Field(500, ge=1, description="Outbox rows the sender claims per step.")
    campaign_sender_threads: int = Field(4, ge=1, description="Concurrent hand-offs to channels per sender step.")
    campaign_webhook_allowed_networks: list[str] = Field(
        default_factory=list,
        description="Networks (CIDRs, e.g. 10.1.2.0/24) webhook steps and channels may call although they are internal: "
        "by default loopback, private, link-local and cloud-metadata targets are refused (SSRF guard).",
    )
    campaign_render_processes: int = Field(
        0, ge=0, description="Worker processes that render large sender batches (a broadcast) beside the server's; "
        "0 renders in the server's process. Worth it with cores to spare (4+): on 2 shared cores it measured slower.",
    )
    campaign_interval_s: float = Field(
        0.2, ge=0, description="How often the sender and the scenario engine look for work; 0: not started with the server."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=_toml_path()))

    @property
    def store_path(self) -> Path:
        return self.data_dir / "opencdp.duckdb"

    @property
    def wal_dir(self) -> Path:
        return self.data_dir / "wal"

    @property
    def chdb_path(self) -> Path:
        return self.data_dir / "chdb"
