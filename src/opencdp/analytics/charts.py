"""Draw a report as one self-contained HTML file: inline SVG, no script, no external asset.

matplotlib is not a dependency, so there is no PNG: the HTML opens in any browser,
can be mailed as an attachment and printed to PDF. Time series (x is an ISO date)
become line charts, labelled series bar charts; the RFM report adds its R x F grid as
a heat map and the cohort report its retention triangle. The report's table follows.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from typing import Any

WIDTH, HEIGHT, PAD = 860, 300, 48
COLOURS = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563", "#ca8a04")


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _is_time(series: Sequence[dict[str, Any]]) -> bool:
    xs = [p[0] for s in series for p in s["points"]]
    return bool(xs) and all(isinstance(x, str) and len(x) == 10 and x[4] == "-" and x[7] == "-" for x in xs)


def _axes(top: float) -> str:
    lines = []
    for i in range(5):
        y = HEIGHT - PAD - i * (HEIGHT - 2 * PAD) / 4
        lines.append(f'<line x1="{PAD}" y1="{y:.1f}" x2="{WIDTH - 10}" y2="{y:.1f}" stroke="#e5e7eb"/>')
        lines.append(f'<text x="{PAD - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" fill="#6b7280">{_short(top * i / 4)}</text>')
    return "".join(lines)


def _short(value: float) -> str:
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.1f}{suffix}"
    return f"{value:.0f}" if value == int(value) else f"{value:.2f}"


def line_chart(series: Sequence[dict[str, Any]]) -> str:
    xs = sorted({p[0] for s in series for p in s["points"]})
    if not xs:
        return "<p><em>No data in this range.</em></p>"
    top = max([_number(p[1]) for s in series for p in s["points"]] + [1.0])
    step = (WIDTH - PAD - 10) / max(len(xs) - 1, 1)
    where = {x: PAD + i * step for i, x in enumerate(xs)}
    parts = [_axes(top)]
    for i, s in enumerate(series):
        colour = COLOURS[i % len(COLOURS)]
        points = " ".join(
            f"{where[x]:.1f},{HEIGHT - PAD - _number(y) / top * (HEIGHT - 2 * PAD):.1f}" for x, y in s["points"]
        )
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"><title>{_esc(s["name"])}</title></polyline>')
    for x in xs[:: max(1, len(xs) // 8)]:
        parts.append(f'<text x="{where[x]:.1f}" y="{HEIGHT - PAD + 16}" text-anchor="middle" font-size="11" fill="#6b7280">{_esc(x)}</text>')
    return _svg(parts) + _legend(series)


def bar_chart(series: Sequence[dict[str, Any]]) -> str:
    labels: list[Any] = []
    for s in series:
        for x, _ in s["points"]:
            if x not in labels:
                labels.append(x)
    if not labels:
        return "<p><em>No data in this range.</em></p>"
    out = []
    for i, s in enumerate(series):  # one chart per series: their units differ (profiles, revenue, rates)
        values = dict((x, _number(y)) for x, y in s["points"])
        top = max([*values.values(), 1e-9])
        band = (WIDTH - PAD - 10) / len(labels)
        parts = [_axes(top)]
        for j, label in enumerate(labels):
            h = values.get(label, 0.0) / top * (HEIGHT - 2 * PAD)
            x = PAD + j * band + band * 0.15
            parts.append(f'<rect x="{x:.1f}" y="{HEIGHT - PAD - h:.1f}" width="{band * 0.7:.1f}" height="{h:.1f}" '
                         f'fill="{COLOURS[i % len(COLOURS)]}"><title>{_esc(label)}: {_esc(values.get(label, 0))}</title></rect>')  # fmt: skip
            parts.append(f'<text x="{x + band * 0.35:.1f}" y="{HEIGHT - PAD + 16}" text-anchor="middle" font-size="10" '
                         f'fill="#6b7280">{_esc(str(label)[:14])}</text>')  # fmt: skip
        out.append(f"<h3>{_esc(s['name'])}</h3>" + _svg(parts))
    return "".join(out)


def heat_grid(grid: Sequence[dict[str, Any]]) -> str:
    """The RFM R x F grid: rows R 5..1, columns F 1..5, shade by profiles."""
    top = max([c["profiles"] for c in grid] + [1])
    cells = []
    for c in grid:
        x, y = PAD + (c["f"] - 1) * 110, 20 + (5 - c["r"]) * 56
        shade = 0.1 + 0.85 * c["profiles"] / top
        cells.append(f'<rect x="{x}" y="{y}" width="106" height="52" fill="rgba(37,99,235,{shade:.2f})"/>'
                     f'<text x="{x + 53}" y="{y + 22}" text-anchor="middle" font-size="11">{_esc(c["cell"])}</text>'
                     f'<text x="{x + 53}" y="{y + 40}" text-anchor="middle" font-size="11">{c["profiles"]:,} · {_short(c["value"])}</text>')  # fmt: skip
    for i in range(5):
        cells.append(f'<text x="{PAD - 8}" y="{20 + i * 56 + 30}" text-anchor="end" font-size="12">R{5 - i}</text>')
        cells.append(f'<text x="{PAD + i * 110 + 53}" y="{20 + 5 * 56 + 16}" text-anchor="middle" font-size="12">F{i + 1}</text>')
    return f'<svg xmlns="http://www.w3.org/2000/svg" width="{PAD + 560}" height="330" role="img">{"".join(cells)}</svg>'


def _svg(parts: Sequence[str]) -> str:
    return f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" role="img">{"".join(parts)}</svg>'


def _legend(series: Sequence[dict[str, Any]]) -> str:
    items = "".join(
        f'<span style="margin-right:16px"><span style="display:inline-block;width:12px;height:12px;background:{COLOURS[i % len(COLOURS)]}"></span> '
        f"{_esc(s['name'])}</span>"
        for i, s in enumerate(series)
    )
    return f'<p style="font-size:13px">{items}</p>'


def table_html(rows: Any) -> str:
    if not isinstance(rows, list) or not rows or not isinstance(rows[0], dict):
        return ""
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    head = "".join(f"<th>{_esc(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_esc(_cell(row.get(c)))}</td>" for c in columns) + "</tr>" for row in rows[:500]
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def render_html(report: dict[str, Any]) -> str:
    """The whole page for one report answer."""
    series = report.get("series") or []
    chart = line_chart(series) if _is_time(series) else bar_chart(series)
    extra = heat_grid(report["grid"]) if report.get("report") == "rfm" and report.get("grid") else ""
    params = ", ".join(f"{k}={v}" for k, v in (report.get("params") or {}).items() if v not in (None, "", [], {}))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>opencdp report: {_esc(report.get("report"))}</title>
<style>body{{font-family:system-ui,sans-serif;margin:24px;color:#111827}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #e5e7eb;padding:4px 8px;text-align:right}}th{{background:#f3f4f6}}</style></head>
<body><h1>{_esc(report.get("report"))}</h1><p style="color:#6b7280">{_esc(params)}</p>
{extra}{chart}{table_html(report.get("table"))}</body></html>
"""
