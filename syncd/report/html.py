"""The activation report as one self-contained HTML page with inline SVG charts.

Hand-written SVG rather than a charting library: three simple charts (a line, sorted
bars, paired columns) take less code than adapting a library's styling, and the page
stays one file that opens offline: no script, no stylesheet link, no font, no image
URL. Every text from the data is escaped.
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape

from syncd.report.compute import ActivationReport, Counts

__all__ = ["DEFINITIONS", "render_html"]

DEFINITIONS = (
    ("eligible on day d", "active_from ≤ d and (no active_to, or d ≤ active_to)."),
    (
        "eligible in a period",
        "eligible on at least one of its days (periods clipped to the range).",
    ),
    (
        "active in a period",
        "the analytics API reports the user in that bucket (any billing event).",
    ),
    ("active_eligible", "active and eligible in the same period."),
    ("activation_rate", "active_eligible / eligible (empty when nobody is eligible)."),
    ("active_not_eligible", "active, but not eligible in that period."),
    (
        "total",
        "each user once over the whole range: eligible on some day, active in some period, "
        "active_eligible in some period in which they were eligible.",
    ),
    ("leakage", "active, but never while eligible (total active − total active_eligible)."),
    ("never active", "eligible in the range, never active while eligible."),
)

_W, _H = 720, 240
_PAD_L, _PAD_R, _PAD_T, _PAD_B = 48, 16, 16, 40
_BLUE, _GREY, _GREEN = "#2563eb", "#9ca3af", "#16a34a"

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:780px;
color:#111827;padding:0 1rem}
h1{font-size:1.4rem;margin-bottom:.2rem}h2{font-size:1.1rem;margin-top:2rem}
.sub{color:#6b7280;margin-top:0}.kpis{display:flex;gap:1rem;flex-wrap:wrap}
.kpi{border:1px solid #e5e7eb;border-radius:8px;padding:.6rem 1rem;min-width:120px}
.kpi b{display:block;font-size:1.5rem}.kpi span{color:#6b7280;font-size:.85rem}
svg{max-width:100%;height:auto}svg text{font-size:11px;fill:#374151}
table{border-collapse:collapse;font-size:.9rem}td,th{padding:.2rem .6rem;text-align:right}
th:first-child,td:first-child{text-align:left}tr:nth-child(even){background:#f9fafb}
details{margin:.5rem 0}summary{cursor:pointer;font-weight:600}
dl{font-size:.9rem}dt{font-weight:600}dd{margin:0 0 .4rem 1rem;color:#374151}
.legend span{margin-right:1rem;font-size:.85rem}.sw{display:inline-block;width:10px;height:10px;
margin-right:4px}
"""


_LABEL_HALF_W = 32.0
"""Half the width of a ``YYYY-MM-DD`` label at 11 px (about 62 px), with a margin."""

_GROUP_LABEL_CHARS = 28


def _x_labels(labels: list[str], xs: list[float]) -> str:
    step = max(1, len(labels) // 8)  # at most ~8 labels, so they never overlap
    parts = []
    for i in range(0, len(labels), step):
        # A label centred near an edge would be cut off: it is aligned to the edge instead.
        x, anchor = xs[i], "middle"
        if x + _LABEL_HALF_W > _W:
            x, anchor = _W - 2.0, "end"
        elif x - _LABEL_HALF_W < 0:
            x, anchor = 2.0, "start"
        parts.append(
            f'<text x="{x:.1f}" y="{_H - _PAD_B + 16}" text-anchor="{anchor}">'
            f"{escape(labels[i])}</text>"
        )
    return "".join(parts)


def _short(value: str) -> str:
    """A group label that fits its column: longer ones end with an ellipsis."""
    if len(value) <= _GROUP_LABEL_CHARS:
        return value
    return value[: _GROUP_LABEL_CHARS - 1] + "…"


def _frame(y_ticks: list[tuple[float, str]]) -> str:
    parts = [
        f'<line x1="{_PAD_L}" y1="{_H - _PAD_B}" x2="{_W - _PAD_R}" y2="{_H - _PAD_B}" '
        'stroke="#d1d5db"/>'
    ]
    for y, text in y_ticks:
        parts.append(
            f'<line x1="{_PAD_L}" y1="{y:.1f}" x2="{_W - _PAD_R}" y2="{y:.1f}" stroke="#f3f4f6"/>'
            f'<text x="{_PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(text)}</text>'
        )
    return "".join(parts)


def _xs(count: int) -> list[float]:
    # Centred in equal slots, like the columns: the end labels are never cut off.
    width = _W - _PAD_L - _PAD_R
    return [_PAD_L + width * (i + 0.5) / count for i in range(count)]


def rate_chart(labels: list[str], rates: list[float | None]) -> str:
    """A line of the activation rate per period (gaps where nobody was eligible)."""
    height = _H - _PAD_T - _PAD_B
    xs = _xs(len(labels))

    def y(value: float) -> float:
        return _PAD_T + height * (1 - value)

    ticks = [(y(v / 4), f"{v * 25}%") for v in range(5)]
    segments: list[list[tuple[float, float]]] = [[]]
    for x, value in zip(xs, rates, strict=True):
        if value is None:
            segments.append([])
        else:
            segments[-1].append((x, y(value)))
    lines = []
    for segment in segments:
        if len(segment) > 1:
            points = " ".join(f"{px:.1f},{py:.1f}" for px, py in segment)
            lines.append(
                f'<polyline fill="none" stroke="{_BLUE}" stroke-width="2" points="{points}"/>'
            )
        for px, py in segment if len(segment) <= 40 else []:
            lines.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{_BLUE}"/>')
    return (
        f'<svg viewBox="0 0 {_W} {_H}" role="img" aria-label="activation rate per period">'
        f"{_frame(ticks)}{''.join(lines)}{_x_labels(labels, xs)}</svg>"
    )


def counts_chart(labels: list[str], eligible: list[int], active: list[int]) -> str:
    """Paired columns per period: eligible (grey) and active & eligible (green); past
    40 periods (daily reports) two filled areas, which stay readable."""
    height = _H - _PAD_T - _PAD_B
    top = max([*eligible, *active, 1])
    if len(labels) > 40:
        return _areas(labels, [(eligible, _GREY), (active, _GREEN)], top)
    width = (_W - _PAD_L - _PAD_R) / len(labels)
    bar = max(1.0, width * 0.4)
    ticks = [(_PAD_T + height * (1 - i / 4), f"{round(top * i / 4)}") for i in range(5)]
    parts = []
    xs = []
    for i, (e, a) in enumerate(zip(eligible, active, strict=True)):
        x = _PAD_L + width * i + width * 0.1
        xs.append(x + bar)
        for offset, value, colour in ((0.0, e, _GREY), (bar, a, _GREEN)):
            h = height * value / top
            parts.append(
                f'<rect x="{x + offset:.1f}" y="{_PAD_T + height - h:.1f}" width="{bar:.1f}" '
                f'height="{h:.1f}" fill="{colour}">'
                f"<title>{escape(labels[i])}: {value}</title></rect>"
            )
    return (
        f'<svg viewBox="0 0 {_W} {_H}" role="img" aria-label="eligible and active per period">'
        f"{_frame(ticks)}{''.join(parts)}{_x_labels(labels, xs)}</svg>"
    )


def _areas(labels: list[str], series: list[tuple[list[int], str]], top: int) -> str:
    height = _H - _PAD_T - _PAD_B
    xs = _xs(len(labels))
    base = _PAD_T + height
    ticks = [(_PAD_T + height * (1 - i / 4), f"{round(top * i / 4)}") for i in range(5)]
    shapes = []
    for values, colour in series:
        points = " ".join(
            f"{x:.1f},{base - height * v / top:.1f}" for x, v in zip(xs, values, strict=True)
        )
        edge = f"{xs[-1]:.1f},{base:.1f} {xs[0]:.1f},{base:.1f}"
        shapes.append(f'<polygon points="{points} {edge}" fill="{colour}" fill-opacity="0.85"/>')
    return (
        f'<svg viewBox="0 0 {_W} {_H}" role="img" aria-label="eligible and active per period">'
        f"{_frame(ticks)}{''.join(shapes)}{_x_labels(labels, xs)}</svg>"
    )


def group_chart(groups: list[tuple[str, Counts]]) -> str:
    """Horizontal bars of the activation rate per tag value, highest first."""
    ordered = sorted(groups, key=lambda item: (-(item[1].activation_rate or 0.0), item[0]))
    row, label_w = 24, 170
    height = row * len(ordered) + 8
    span = _W - label_w - 110
    parts = []
    for i, (value, counts) in enumerate(ordered):
        y = 4 + i * row
        share = counts.activation_rate or 0.0
        text = f"{counts.percent} ({counts.active_eligible}/{counts.eligible})"
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end">'
            f"<title>{escape(value)}</title>{escape(_short(value))}</text>"
            f'<rect x="{label_w}" y="{y + 3}" width="{span:.1f}" height="{row - 8}" '
            'fill="#f3f4f6"/>'
            f'<rect x="{label_w}" y="{y + 3}" width="{span * share:.1f}" height="{row - 8}" '
            f'fill="{_BLUE}"/><text x="{label_w + span + 6}" y="{y + 15}">{escape(text)}</text>'
        )
    return (
        f'<svg viewBox="0 0 {_W} {height}" role="img" aria-label="activation by group">'
        f"{''.join(parts)}</svg>"
    )


def _user_list(title: str, users: list[str], note: str) -> str:
    items = "".join(f"<li>{escape(user)}</li>" for user in users)
    body = f"<ul>{items}</ul>" if users else "<p>None.</p>"
    summary = f"<summary>{escape(title)} ({len(users)})</summary>"
    return f"<details>{summary}<p>{escape(note)}</p>{body}</details>"


def _table(report: ActivationReport) -> str:
    columns = (
        "period",
        "eligible",
        "active",
        "active &amp; eligible",
        "rate",
        "active, not eligible",
    )
    head = "<tr>" + "".join(f"<th>{c}</th>" for c in columns) + "</tr>"
    rows = []
    for entry in [*((p.period.label, p.counts) for p in report.periods), ("total", report.total)]:
        label, c = entry
        rows.append(
            f"<tr><td>{escape(label)}</td><td>{c.eligible}</td><td>{c.active}</td>"
            f"<td>{c.active_eligible}</td><td>{c.percent}</td>"
            f"<td>{c.active_not_eligible}</td></tr>"
        )
    return f"<details><summary>All numbers</summary><table>{head}{''.join(rows)}</table></details>"


def render_html(report: ActivationReport, *, generated_at: datetime | None = None) -> str:
    """The whole page (UTF-8 text)."""
    generated = (generated_at or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC")
    labels = [p.period.label for p in report.periods]
    total = report.total
    freshness = escape(report.data_freshness or "not reported")
    kpis = "".join(
        f'<div class="kpi"><b>{escape(value)}</b><span>{escape(name)}</span></div>'
        for name, value in (
            ("activation rate", total.percent),
            ("eligible", str(total.eligible)),
            ("active & eligible", str(total.active_eligible)),
            ("never active", str(total.never_active)),
            ("leakage", str(total.active_not_eligible)),
        )
    )
    sections = [
        f'<h1>Activation report</h1><p class="sub">{report.start} to {report.end}, '
        f"{report.granularity.value}. Activity data as of {freshness}; "
        f"page generated {generated}.</p>",
        f'<div class="kpis">{kpis}</div>',
        "<h2>Activation rate over time</h2>",
        rate_chart(labels, [p.counts.activation_rate for p in report.periods]),
        "<h2>Eligible and active users</h2>",
        f'<p class="legend"><span><i class="sw" style="background:{_GREY}"></i>eligible</span>'
        f'<span><i class="sw" style="background:{_GREEN}"></i>active &amp; eligible</span></p>',
        counts_chart(
            labels,
            [p.counts.eligible for p in report.periods],
            [p.counts.active_eligible for p in report.periods],
        ),
    ]
    for tag, values in report.total_by.items():
        sections.append(f"<h2>Activation by {escape(tag)} (whole range)</h2>")
        sections.append(group_chart(list(values.items())))
    sections.append("<h2>Who</h2>")
    sections.append(
        _user_list(
            "Active but never eligible (licence leakage)",
            report.active_not_eligible_users,
            "Used the tool in the range, but never while on the platform-user list.",
        )
    )
    sections.append(
        _user_list(
            "Eligible but never active",
            report.never_active_users,
            "Had access in the range, never used the tool while they had it.",
        )
    )
    sections.append(_table(report))
    definitions = "".join(f"<dt>{escape(t)}</dt><dd>{escape(d)}</dd>" for t, d in DEFINITIONS)
    sections.append(f"<h2>Definitions</h2><dl>{definitions}</dl>")
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Activation report {report.start} to {report.end}</title>"
        f"<style>{_CSS}</style></head><body>{''.join(sections)}</body></html>\n"
    )
