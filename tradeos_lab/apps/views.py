"""HTML for the apps' tables and banners: every value escaped, every empty table saying why."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Final, Literal

Tone = Literal["ok", "info", "warn", "down"]

_TONES: Final = {
    "ok": ("#e8f5e9", "#1b5e20"),
    "info": ("#eef3fb", "#1f3b63"),
    "warn": ("#fff8e1", "#7a4f00"),
    "down": ("#fdecea", "#8b1a1a"),
}
STYLE: Final = """
<style>
.tl-table { border-collapse: collapse; font-size: 12px; width: 100%; }
.tl-table th { text-align: left; border-bottom: 1px solid #bbb; padding: 2px 8px; }
.tl-table td { border-bottom: 1px solid #eee; padding: 2px 8px; }
.tl-empty { color: #666; font-style: italic; font-size: 12px; padding: 4px 0; }
.tl-banner { padding: 6px 10px; border-radius: 4px; margin: 4px 0; font-size: 13px; }
.tl-title { font-size: 14px; font-weight: 600; margin: 10px 0 2px 0; }
</style>
"""


def table(
    rows: Sequence[Mapping[str, object]],
    columns: Sequence[str] | None = None,
    *,
    empty: str,
    css_class: str = "",
) -> str:
    """An HTML table of `rows` (one dict each) in `columns` (default: the first row's keys);
    `empty` when there is no row."""
    if not rows:
        return f'<div class="tl-empty {html.escape(css_class)}">{html.escape(empty)}</div>'
    if columns is None:
        columns = list(rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell(row.get(c)))}</td>" for c in columns) + "</tr>"
        for row in rows
    )
    return (
        f'<table class="tl-table {html.escape(css_class)}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )


def banner(text: str, tone: Tone = "info") -> str:
    background, color = _TONES[tone]
    return (
        f'<div class="tl-banner tl-{tone}" style="background:{background};color:{color}">'
        f"{html.escape(text)}</div>"
    )


def title(text: str) -> str:
    return f'<div class="tl-title">{html.escape(text)}</div>'


def cell(value: object) -> str:
    """One value as a trader reads it: times in UTC, numbers with separators, '-' for none."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "-"
        return f"{value:,.2f}" if abs(value) >= 1 else f"{value:.6g}"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%H:%M:%S")
    return str(value)


def clock(epoch_s: float | None) -> str:
    """`2026-12-06 17:05:01 UTC` from epoch seconds."""
    if epoch_s is None:
        return "-"
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: float | None) -> str:
    """`4 s`, `2 min 5 s`, `3 h 2 min`: a TTL counting down."""
    if seconds is None:
        return "-"
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"
