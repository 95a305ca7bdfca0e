"""The status page for people (``/``): one self-contained HTML document (pure).

No external assets and no script: inline CSS, and a meta refresh so an open tab stays
current. Built from the same redacted data as ``/status``, so it shows no user id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from html import escape
from typing import Any

__all__ = ["render_page"]

REFRESH_S = 15

_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#1d2329;background:#f7f8fa}
h1{font-size:1.4rem;margin:0 0 .2rem}
.meta{color:#5b6670;margin-bottom:1.5rem}
section{background:#fff;border:1px solid #d9dee3;border-radius:6px;padding:1rem 1.2rem;
margin-bottom:1.2rem}
h2{font-size:1.15rem;margin:0 0 .6rem}
table{border-collapse:collapse;font-size:.9rem}
td,th{padding:.25rem .7rem .25rem 0;text-align:left;vertical-align:top}
th{color:#5b6670;font-weight:600}
.badge{display:inline-block;padding:.05rem .5rem;border-radius:1rem;font-size:.85rem;
font-weight:600;color:#fff;background:#6b7785}
.applied{background:#1f8a4c}.held{background:#c77700}.failed{background:#c62828}
.partial{background:#8e44ad}.busy{background:#3c6e9f}
.interrupted{background:#c62828}.running{background:#3c6e9f}
.cmd{background:#eef1f4;padding:.5rem .7rem;border-radius:3px;font-size:.85rem;
overflow-x:auto;margin:.3rem 0 .8rem}
ul{margin:.3rem 0 .6rem 1.2rem;padding:0}
"""


def _seconds(value: object) -> str:
    return f"{value:.1f} s" if isinstance(value, int | float) else "—"


def _when(value: object) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    if isinstance(value, str):
        try:
            return _when(datetime.fromisoformat(value))
        except ValueError:
            return escape(value)
    return "—"


def _badge(status: str | None) -> str:
    if not status:
        return '<span class="badge">no run yet</span>'
    return f'<span class="badge {escape(status)}">{escape(status)}</span>'


def _counts(counts: Mapping[str, Any]) -> str:
    shown = [f"{escape(name)} {value}" for name, value in counts.items() if value]
    return ", ".join(shown) or "no change"


def _job(job: Mapping[str, Any], history: Sequence[Mapping[str, Any]]) -> str:
    last = job.get("last_run") or {}
    parts = [f"<section><h2>{escape(job['name'])} {_badge(last.get('status'))}</h2><table>"]
    rows = [
        ("schedule", escape(job["schedule"])),
        ("running", "yes, since " + _when(job["running_since"]) if job["running"] else "no"),
        ("last run", _when(last.get("finished_at"))),
        ("next run", _when(job.get("next_run"))),
    ]
    if last:
        sources = ", ".join(f"{name} {users}" for name, users in last["source_users"].items())
        listed = last["platform_users"]
        rows += [
            ("duration", f"{last['duration_s']:.1f} s"),
            ("plan", _counts({k: v for k, v in last["counts"].items() if k != "unchanged"})),
            ("unchanged", str(last["counts"].get("unchanged", 0))),
            ("source users", escape(sources) or "—"),
            ("platform users", "—" if listed is None else str(listed)),
            ("write calls", str(last["write_calls"])),
            ("not confirmed", str(last["failures"])),
        ]
        if job["held_cycles"]:
            rows.append(("held for", f"{job['held_cycles']} consecutive run(s)"))
    parts += [f"<tr><th>{name}</th><td>{value}</td></tr>" for name, value in rows]
    parts.append("</table>")
    if last.get("reasons"):
        parts.append("<p><strong>Held because:</strong></p><ul>")
        parts += [f"<li>{escape(reason)}</li>" for reason in last["reasons"]]
        parts.append("</ul>")
        if last.get("apply_command"):
            parts.append(
                "<p>To accept this plan once, run:</p>"
                f'<pre class="cmd">{escape(last["apply_command"])}</pre>'
            )
        else:
            parts.append("<p>Fix the source and wait for the next run; this cannot be forced.</p>")
    if last.get("error"):
        parts.append(f"<p><strong>Error:</strong> {escape(last['error'])}</p>")
    if history:
        parts.append(
            "<p><strong>Last runs</strong></p><table><tr><th>started</th><th>status</th>"
            "<th>duration</th><th>plan</th><th>calls</th><th>not confirmed</th></tr>"
        )
        for row in history:
            parts.append(
                f"<tr><td>{_when(row['started_at'])}</td><td>{_badge(row['status'])}</td>"
                f"<td>{_seconds(row['duration_s'])}</td><td>{_counts(row['counts'])}</td>"
                f"<td>{escape(str(row['write_calls']))}</td>"
                f"<td>{escape(str(row['failures']))}</td></tr>"
            )
        parts.append("</table>")
    parts.append("</section>")
    return "".join(parts)


def render_page(
    status: Mapping[str, Any], history: Mapping[str, Sequence[Mapping[str, Any]]]
) -> str:
    """The HTML page from the ``/status`` document and each job's recorded runs."""
    jobs = "".join(_job(job, history.get(job["name"], ())) for job in status["jobs"])
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{REFRESH_S}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>syncd status</title><style>{_CSS}</style></head><body>"
        f'<h1>syncd</h1><div class="meta">version {escape(status["version"])} · up since '
        f"{_when(status['started_at'])} · page generated {_when(status['now'])}</div>"
        f"{jobs}</body></html>"
    )
