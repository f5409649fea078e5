"""``/analytics``: the HTML report (admin grant), plots drawn as inline SVG on the server.

No JavaScript and no CDN: the page is one HTML document that renders anywhere, including a
locked-down operator's browser. ``/analytics/data`` returns the same figures as JSON.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import html
from typing import Any

from fastapi import APIRouter, Header, HTTPException, Query
from fastapi.responses import HTMLResponse

from parley import tokens
from parley.analytics.series import Series, last_24h, last_30d, totals
from parley.analytics.state import State

W, H, PAD_L, PAD_B, PAD_T = 720, 180, 48, 22, 10
COLORS = ("#2563eb", "#dc2626", "#16a34a", "#9333ea")


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1
    for m in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000,
              100_000, 200_000, 500_000, 1_000_000):
        if v <= m:
            return m
    return v


def svg_plot(title: str, starts: list[dt.datetime], lines: dict[str, list[float]],
             fmt: str) -> str:
    """One line chart: polylines over a time axis with a y scale and labelled ticks."""
    n = max(len(starts), 2)
    top = _nice_max(max((max(v) for v in lines.values() if v), default=0))
    x = lambda i: PAD_L + (W - PAD_L - 8) * i / (n - 1)  # noqa: E731
    y = lambda v: PAD_T + (H - PAD_T - PAD_B) * (1 - v / top)  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {W} {H}" '
             f'width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
             f"<title>{html.escape(title)}</title>",
             f'<rect x="{PAD_L}" y="{PAD_T}" width="{W - PAD_L - 8}" '
             f'height="{H - PAD_T - PAD_B}" fill="#f8fafc" stroke="#cbd5e1"/>']
    for frac in (0, 0.5, 1):
        v = top * frac
        parts.append(f'<text x="{PAD_L - 4}" y="{y(v) + 4:.1f}" text-anchor="end">'
                     f"{v:g}</text>")
    for i in range(0, len(starts), max(len(starts) // 6, 1)):
        parts.append(f'<text x="{x(i):.1f}" y="{H - 6}" text-anchor="middle">'
                     f"{starts[i].strftime(fmt)}</text>")
    for (name, values), color in zip(lines.items(), COLORS, strict=False):
        pts = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" '
                     f'points="{pts}"><title>{html.escape(name)}</title></polyline>')
    legend = "".join(f'<text x="{PAD_L + 6 + 150 * k}" y="{PAD_T + 12}" fill="{c}">'
                     f"{html.escape(name)}</text>"
                     for k, (name, c) in enumerate(zip(lines, COLORS, strict=False)))
    parts += [legend, "</svg>"]
    return "".join(parts)


def _rate(num: list[int], den: list[int]) -> list[float]:
    return [round(100 * a / b, 1) if b else 0.0 for a, b in zip(num, den, strict=True)]


def plots(series: Series, fmt: str) -> list[str]:
    s = series
    joined = s.get("joined")
    return [
        svg_plot(f"Usage: concurrent participants per {s.step}", s.starts,
                 {"participants": s.get("participants")}, fmt),
        svg_plot(f"Joins and starts per {s.step}", s.starts,
                 {"joined": joined, "meetings started": s.get("meetings_started"),
                  "calls started": s.get("calls_started")}, fmt),
        svg_plot(f"Drops per {s.step} (drop rate % = dropped / joined)", s.starts,
                 {"dropped": s.get("dropped"), "drop rate %": _rate(s.get("dropped"), joined)},
                 fmt),
        svg_plot(f"Recordings and broadcasts started per {s.step}", s.starts,
                 {"recordings": s.get("recordings_started"),
                  "recordings ready": s.get("recordings_ready"),
                  "broadcasts": s.get("broadcasts_started")}, fmt),
        svg_plot(f"Media time in HD / SD / transcoded per {s.step} (minutes)", s.starts,
                 {k: [v / 60000 for v in s.get(f"media_ms_{k}")]
                  for k in ("hd", "sd", "transcoded")}, fmt),
    ]


def _quality(m: dict[str, int]) -> dict[str, Any]:
    """Share of sampled media time in HD / SD / transcoded, and freezes per media minute."""
    media = {k: m.get(f"media_ms_{k}", 0) for k in ("hd", "sd", "transcoded")}
    total = sum(media.values())
    return {"mediaShare": {k: round(v / total, 4) for k, v in media.items()} if total else None,
            "freezesPerMinute": round(m.get("freezes", 0) * 60_000 / total, 3)
            if total else None}


def summary(state: State) -> dict[str, Any]:
    """All-time figures by region and device class (the table under the plots)."""
    rows: dict[tuple[str, str], dict[str, int]] = {}
    for (metric, region, device), v in totals(state).items():
        rows.setdefault((region, device), {})[metric] = v
    out = []
    for (region, device), m in sorted(rows.items()):
        joined, dropped = m.get("joined", 0), m.get("dropped", 0)
        calls = m.get("calls_started", 0) + m.get("meetings_started", 0)
        out.append({
            "region": region, "device": device, "joined": joined, "dropped": dropped,
            "dropRate": round(dropped / joined, 4) if joined else 0.0,
            "participantsNow": joined - m.get("left", 0) - dropped,
            "callsStarted": m.get("calls_started", 0),
            "meetingsStarted": m.get("meetings_started", 0),
            "outcomes": {k.removeprefix("outcome."): v for k, v in m.items()
                         if k.startswith("outcome.")},
            "joinMsMean": round(m["join_ms_sum"] / m["join_ms_count"])
            if m.get("join_ms_count") else None,
            "configChangesPerCall": round(m.get("config_changes", 0) / calls, 2)
            if calls else None,
            "recordingsStarted": m.get("recordings_started", 0),
            "recordingsReady": m.get("recordings_ready", 0),
            "recordingsFailed": m.get("recordings_failed", 0),
            "recordedMs": m.get("recording_ms", 0),
            "broadcastsStarted": m.get("broadcasts_started", 0),
            "broadcastSources": m.get("broadcast_sources", 0),
            "broadcastMs": m.get("broadcast_ms", 0),
            "qualitySamples": m.get("quality_samples", 0),
            **_quality(m),
            "events": {k.removeprefix("events."): v for k, v in m.items()
                       if k.startswith("events.")},
        })
    return {"byLabels": out, "engine": state.stats()}


def page(state: State, now: dt.datetime | None = None) -> str:
    day, month = last_24h(state, now), last_30d(state, now)
    data = summary(state)
    rows = "".join(
        f"<tr><td>{html.escape(r['region'])}</td><td>{html.escape(r['device'])}</td>"
        f"<td>{r['participantsNow']}</td><td>{r['joined']}</td><td>{r['dropped']}</td>"
        f"<td>{100 * r['dropRate']:.1f} %</td><td>{r['callsStarted']}</td>"
        f"<td>{r['meetingsStarted']}</td>"
        f"<td>{html.escape(', '.join(f'{k}: {v}' for k, v in sorted(r['outcomes'].items())))}"
        f"</td><td>{r['joinMsMean'] if r['joinMsMean'] is not None else '-'}</td>"
        f"<td>{r['configChangesPerCall'] if r['configChangesPerCall'] is not None else '-'}"
        f"</td></tr>" for r in data["byLabels"])
    engine = ", ".join(f"{k}: {v}" for k, v in sorted(data["engine"].items()))
    return (
        "<!doctype html><html><head><meta charset=utf-8><title>Parley analytics</title>"
        "<style>body{font-family:sans-serif;margin:1.5em;color:#0f172a}"
        "table{border-collapse:collapse}td,th{border:1px solid #cbd5e1;padding:2px 8px}"
        "section{margin-bottom:1.5em}</style></head><body><h1>Parley analytics</h1>"
        f"<p>Engine: {html.escape(engine) or 'no events counted yet'}.</p>"
        "<h2>All time, by region and device class</h2><table><tr><th>region</th>"
        "<th>device</th><th>present now</th><th>joined</th><th>dropped</th><th>drop rate</th>"
        "<th>calls</th><th>meetings</th><th>call outcomes</th><th>join ms (mean)</th>"
        f"<th>config changes / call</th></tr>{rows}</table>"
        "<section id=day><h2>Last 24 hours (per minute, UTC)</h2>"
        + "".join(plots(day, "%H:%M")) + "</section>"
        "<section id=month><h2>Last 30 days (per hour, UTC)</h2>"
        + "".join(plots(month, "%m-%d")) + "</section></body></html>")


def router(state: State, token_secret: str) -> APIRouter:
    """Mounted by signaling (and so by `parley up`); every route needs the admin grant."""
    api = APIRouter()

    def admin(authorization: str | None, token: str | None) -> None:
        raw = token or (authorization or "").removeprefix("Bearer ").strip()
        try:
            tokens.verify(token_secret, raw).require("admin")
        except tokens.TokenError as exc:
            raise HTTPException(401 if exc.code != "grant_missing" else 403,
                                {"code": exc.code, "message": str(exc)}) from None

    @api.get("/analytics", response_class=HTMLResponse)
    async def report(authorization: str | None = Header(None),
                     token: str | None = Query(None)) -> HTMLResponse:
        """``?token=`` too, so an admin can open the page from a link in a browser."""
        admin(authorization, token)
        return HTMLResponse(await asyncio.to_thread(page, state))

    @api.get("/analytics/data")
    async def report_data(authorization: str | None = Header(None),
                          token: str | None = Query(None)) -> dict[str, Any]:
        admin(authorization, token)
        return await asyncio.to_thread(summary, state)

    return api


def router_for(settings: Any) -> APIRouter:
    """The report over the state the engine writes for this deployment (engine.py's default)."""
    import os

    from parley.analytics.engine import default_state_url
    from parley.analytics.state import open_state

    url = default_state_url(settings.data_dir, settings.redis_url,
                            kafka=bool(settings.kafka_bootstrap))
    return router(open_state(url, os.environ.get("PARLEY_ANALYTICS_PREFIX", "analytics:")),
                  settings.token_secret)
