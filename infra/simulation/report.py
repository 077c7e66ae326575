"""The report of a simulation (or of a live run): metrics.json, timeline.csv, PNG plots and a
self-contained report.html (plots embedded as data URIs).

metrics.json and timeline.csv hold only what the run computed (no wall-clock time, no paths),
so the same scenario and seed give the same bytes.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from streams import elasticity  # noqa: E402
from streams.simulation import ClusterTrack  # noqa: E402

PLOTTED_CLUSTERS = 6
"""Plots show the first clusters (by id); the figures and the timeline hold every cluster."""
TABLE_FIGURES = (
    "accuracy_U",
    "accuracy_O",
    "timeshare_U",
    "timeshare_O",
    "instability",
    "jitter",
    "scaling_actions",
    "slo_violation_share",
    "cost_member_seconds",
    "cost_member_hours",
    "reaction_time_mean_s",
    "reaction_time_max_s",
)


@dataclass
class PolicyRun:
    name: str
    clusters: dict[str, ClusterTrack]
    extra: dict
    """commands, rejections, dead letters, or what a live run observed."""


def series_of(result) -> dict[str, ClusterTrack]:
    """A simulation's tracks (``streams.simulation.RunResult``) by cluster id."""
    return {t.cluster_id: t for t in sorted(result.clusters.values(), key=lambda t: t.cluster_id)}


def metrics(scenario: dict, runs: Sequence[PolicyRun], step: float) -> dict:
    policies = {}
    for run in runs:
        per_cluster = {cid: c.figures(step) for cid, c in sorted(run.clusters.items())}
        policies[run.name] = {
            "total": elasticity.combine(list(per_cluster.values())),
            "clusters": per_cluster,
            **run.extra,
        }
    totals = {name: p["total"] for name, p in policies.items()}
    return {
        "scenario": scenario,
        "policies": policies,
        "ranking": elasticity.ranking(totals) if totals else [],
        "pareto_front": elasticity.pareto_front(totals) if totals else [],
        "pairwise_wins": elasticity.pairwise_wins(totals),
    }


def write_timeline(path: Path, runs: Sequence[PolicyRun], step: float) -> None:
    with path.open("w", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["time_s", "cluster", "demand", "supply", "pending", "terminating", "decision", "policy"])
        for run in runs:
            for cid, c in sorted(run.clusters.items()):
                for k in range(len(c.supply)):
                    writer.writerow(
                        [
                            f"{k * step:g}",
                            cid,
                            c.demand[k],
                            c.supply[k],
                            c.pending[k],
                            c.terminating[k],
                            ";".join(c.decisions.get(k, ())),
                            run.name,
                        ]
                    )


# --- plots --------------------------------------------------------------------------------


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def _shown(run: PolicyRun) -> list[ClusterTrack]:
    return [run.clusters[c] for c in sorted(run.clusters)][:PLOTTED_CLUSTERS]


def _per_cluster(run: PolicyRun, step: float, title: str, ylabel: str, draw) -> bytes:
    """One panel per shown cluster, minutes on the x axis; ``draw(ax, cluster, minutes)``."""
    shown = _shown(run)
    fig, axes = plt.subplots(len(shown), 1, figsize=(10, 2.6 * len(shown)), squeeze=False, sharex=True)
    for ax, c in zip(axes[:, 0], shown, strict=True):
        draw(ax, c, [k * step / 60 for k in range(len(c.supply))])
        ax.set_title(c.cluster_id, fontsize=9)
        ax.set_ylabel(ylabel)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("minutes")
    fig.suptitle(f"{title}: {run.name}")
    fig.tight_layout()
    return _png(fig)


def _draw_load(ax, c: ClusterTrack, minutes: list[float]) -> None:
    for metric, model, values in c.loads:
        (line,) = ax.plot(minutes, values[: len(minutes)], lw=1, label=f"{metric} ({model})")
        if metric in c.thresholds:
            ax.axhline(c.thresholds[metric], ls="--", lw=0.8, color=line.get_color(), label=f"{metric} threshold")


def _draw_members(ax, c: ClusterTrack, minutes: list[float]) -> None:
    ax.stackplot(
        minutes,
        c.supply,
        c.pending,
        c.terminating,
        step="post",
        labels=["Active (supply)", "pending", "terminating"],
        colors=["#4c9f70", "#f2c14e", "#d1495b"],
        alpha=0.8,
    )
    ax.step(minutes, c.demand, where="post", color="black", lw=1.2, label="demand")


def plot_load(run: PolicyRun, step: float) -> bytes:
    return _per_cluster(run, step, "load and thresholds", "value", _draw_load)


def plot_members(run: PolicyRun, step: float) -> bytes:
    return _per_cluster(run, step, "members by status", "members", _draw_members)


def plot_decisions(run: PolicyRun, step: float) -> bytes:
    shown = _shown(run)
    fig, ax = plt.subplots(figsize=(10, 0.6 * len(shown) + 1.6))
    for row, c in enumerate(shown):
        for k, words in sorted(c.decisions.items()):
            for word in words:
                if ":+" in word:
                    style = dict(marker="^", color="#4c9f70")
                elif ":-" in word:
                    style = dict(marker="v", color="#d1495b")
                else:
                    style = dict(marker=".", color="#999999")
                ax.plot(k * step / 60, row, ls="none", markersize=7, **style)  # type: ignore[arg-type]
    ax.set_yticks(range(len(shown)), [c.cluster_id for c in shown], fontsize=7)
    ax.set_xlabel("minutes")
    ax.set_title(f"scaling decisions: {run.name} (▲ scale up, ▼ scale down, · no change)", fontsize=9)
    fig.tight_layout()
    return _png(fig)


def plot_pareto(doc: dict) -> bytes:
    fig, ax = plt.subplots(figsize=(6, 4.5))
    front = set(doc["pareto_front"])
    points = []
    for name, p in doc["policies"].items():
        x, y = p["total"]["cost_member_hours"], p["total"]["slo_violation_share"]
        points.append((x, y, name))
        ax.plot(x, y, "o", color="#d1495b" if name in front else "#888888", markersize=8)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
    line = sorted((x, y) for x, y, n in points if n in front)
    if len(line) > 1:
        ax.plot([x for x, _ in line], [y for _, y in line], "-", color="#d1495b", lw=1, label="Pareto front")
        ax.legend(fontsize=8)
    ax.set_xlabel("cost (member-hours)")
    ax.set_ylabel("SLO violation share")
    ax.set_title("cost against SLO violation (lower left is better)", fontsize=9)
    fig.tight_layout()
    return _png(fig)


# --- html ---------------------------------------------------------------------------------


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def _table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def write_report(out: Path, scenario: dict, runs: Sequence[PolicyRun], step: float) -> dict:
    """Write every file of the report into ``out``; returns the metrics document."""
    out.mkdir(parents=True, exist_ok=True)
    doc = metrics(scenario, runs, step)
    (out / "metrics.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    write_timeline(out / "timeline.csv", runs, step)
    images: dict[str, list[tuple[str, bytes]]] = {}
    for run in runs:
        slug = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in run.name)
        pngs = [
            (f"load-{slug}.png", plot_load(run, step)),
            (f"members-{slug}.png", plot_members(run, step)),
            (f"decisions-{slug}.png", plot_decisions(run, step)),
        ]
        for name, png in pngs:
            (out / name).write_bytes(png)
        images[run.name] = pngs
    pareto = plot_pareto(doc) if len(runs) > 1 else None
    if pareto is not None:
        (out / "pareto.png").write_bytes(pareto)
    (out / "report.html").write_text(_html(doc, images, pareto, runs))
    return doc


def _html(doc: dict, images: dict, pareto: bytes | None, runs: Sequence[PolicyRun]) -> str:
    s = doc["scenario"]
    parts = [
        f"<h1>{html.escape(str(s.get('name')))}</h1>",
        f"<p>{html.escape(str(s.get('description') or ''))}</p>",
        f"<p>mode {html.escape(str(s.get('mode', 'simulated')))}, seed {s.get('seed')}, "
        f"{_fmt(s.get('duration_s'))} s at {_fmt(s.get('step_s'))} s steps; "
        f"demand = fewest members keeping the metric within its threshold, supply = Active members.</p>",
    ]
    totals = [(name, *[doc["policies"][name]["total"].get(f) for f in TABLE_FIGURES]) for name in doc["ranking"]]
    parts += [
        "<h2>Policies, best first</h2>",
        "<p>Ranked by Pareto layer on cost against SLO violation, then by pairwise wins. "
        f"Pareto front: {html.escape(', '.join(doc['pareto_front']))}.</p>",
        _table(["policy", *TABLE_FIGURES], totals),
    ]
    if len(doc["policies"]) > 1:
        wins = doc["pairwise_wins"]
        names = doc["ranking"]
        parts += [
            "<h2>Pairwise wins</h2>",
            "<p>Row beats column on that many of: "
            + html.escape(", ".join(elasticity.FIGURES_LOWER_IS_BETTER))
            + ".</p>",
            _table(["", *names], [(a, *[("" if a == b else wins[a][b]) for b in names]) for a in names]),
        ]
        if pareto is not None:
            parts.append(_img(pareto, "Pareto front"))
    for run in runs:
        policy = doc["policies"][run.name]
        rows = [(cid, *[f.get(x) for x in TABLE_FIGURES]) for cid, f in policy["clusters"].items()]
        parts += [f"<h2>{html.escape(run.name)}: clusters</h2>", _table(["cluster", *TABLE_FIGURES], rows)]
        extra = {k: v for k, v in policy.items() if k not in ("total", "clusters")}
        if extra:
            parts.append(f"<pre>{html.escape(json.dumps(extra, indent=1, sort_keys=True))}</pre>")
        if len(run.clusters) > PLOTTED_CLUSTERS:
            parts.append(f"<p>Plots show the first {PLOTTED_CLUSTERS} of {len(run.clusters)} clusters.</p>")
        parts += [_img(png, name) for name, png in images[run.name]]
    return page(str(s.get("name")), parts)


STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;"
    "font-size:12px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
    "th{background:#f3f3f3}td:first-child{text-align:left}img{max-width:100%;display:block;margin:1em 0}"
)


def page(title: str, parts: Sequence[str]) -> str:
    """A self-contained HTML page of the reports' style (`stratos tune` writes one too)."""
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>\n"
    )
