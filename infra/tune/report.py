"""What `stratos tune` writes: tune.json, recommended-policy.json, pareto.png, report.html and,
per scenario, the `stratos simulate` report of the policy in force against the recommended one
(infra/simulation/report.py, same files and style)."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from actors.topology_plan import scaling_settings
from infra.simulation.cli import scenario_info
from infra.simulation.report import PolicyRun, _img, _png, _table, page, series_of, write_report
from infra.simulation.scenario import load_scenario
from infra.tune.search import COST, SLO, Outcome, Trial, against
from streams.simulation import Simulation

IN_FORCE, RECOMMENDED = "in-force", "recommended"


def trial_json(trial: Trial) -> dict[str, Any]:
    return {
        "trial": trial.number,
        "values": trial.values,
        COST: trial.figures[COST],
        SLO: trial.figures[SLO],
        "scenarios": {Path(p).stem: {COST: f[COST], SLO: f[SLO]} for p, f in trial.figures["scenarios"].items()},
        "policy": trial.policy,
    }


def plot_front(outcome: Outcome) -> bytes:
    """Every trial (grey), the front (red), the policy in force (blue) and the recommended one."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.plot([t.figures[COST] for t in outcome.trials], [t.figures[SLO] for t in outcome.trials], "o", color="#bbbbbb")
    front = [(t.figures[COST], t.figures[SLO]) for t in outcome.front]
    ax.plot([x for x, _ in front], [y for _, y in front], "o-", color="#d1495b", lw=1, label="Pareto front")
    f = outcome.in_force.figures
    ax.plot(f[COST], f[SLO], "s", color="#2e86ab", markersize=9, label="policy in force")
    if outcome.recommended is not None:
        r = outcome.recommended.figures
        ax.plot(r[COST], r[SLO], "*", color="#edae49", markersize=14, label="recommended")
    ax.set_xlabel("cost (member-hours, all scenarios)")
    ax.set_ylabel("SLO violation share (mean of scenarios)")
    ax.set_title(f"{len(outcome.trials)} trials: cost against SLO violation (lower left is better)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def scenario_reports(out: Path, paths: Sequence[str], outcome: Outcome) -> dict[str, dict]:
    """Per scenario, `stratos simulate`'s report of the policy in force and the recommended one,
    both measured against the demand of the policy in force (``search.against``)."""
    docs = {}
    reference = scaling_settings(outcome.in_force.policy)["thresholds"]
    policies = [(IN_FORCE, outcome.in_force.policy)]
    if outcome.recommended is not None:
        policies.append((RECOMMENDED, outcome.recommended.policy))
    for path in paths:
        scenario = load_scenario(Path(path))
        runs = []
        for name, body in policies:
            result = Simulation(scenario.with_policy(body), policy=name).run()
            for track in result.clusters.values():
                against(track, reference)
            runs.append(PolicyRun(name, series_of(result), {"commands": result.commands}))
        docs[Path(path).stem] = write_report(
            out / Path(path).stem, scenario_info(scenario, "simulated"), runs, scenario.setup.step
        )
    return docs


def write_tuning(out: Path, summary: dict[str, Any], outcome: Outcome, paths: Sequence[str]) -> Path:
    """Every file of the run into ``out``; returns report.html's path."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "tune.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    chosen = outcome.recommended.policy if outcome.recommended is not None else outcome.in_force.policy
    (out / "recommended-policy.json").write_text(json.dumps(chosen, indent=2) + "\n")
    front_png = plot_front(outcome)
    (out / "pareto.png").write_bytes(front_png)
    scenario_reports(out, paths, outcome)
    rows = [(IN_FORCE, outcome.in_force)] + ([(RECOMMENDED, outcome.recommended)] if outcome.recommended else [])
    names = [Path(p).stem for p in paths]
    table = _table(
        ["policy", COST, SLO, *[f"{n} {k}" for n in names for k in ("cost h", "SLO")]],
        [
            (
                label,
                t.figures[COST],
                t.figures[SLO],
                *[t.figures["scenarios"][p][k] for p in paths for k in (COST, SLO)],
            )
            for label, t in rows
        ],
    )
    front = _table(
        ["trial", COST, SLO, *summary["parameters"]],
        [
            (t.number, t.figures[COST], t.figures[SLO], *[t.values.get(p) for p in summary["parameters"]])
            for t in outcome.front
        ],
    )
    links = "".join(f'<li><a href="{html.escape(n)}/report.html">{html.escape(n)}</a></li>' for n in names)
    parts = [
        f"<h1>stratos tune {html.escape(summary['run'])}</h1>",
        f"<p>{len(outcome.trials)} trials, seed {summary['seed']}, sampler {html.escape(summary['sampler'])}; "
        f"scenarios: {html.escape(', '.join(names))}. {html.escape(outcome.why)}.</p>",
        "<h2>Policy in force against the recommended one</h2>",
        table,
        _img(front_png, "Pareto front"),
        "<h2>Pareto front</h2>",
        front,
        "<h2>Recommended policy (Stratos JSON)</h2>",
        f"<pre>{html.escape(json.dumps(chosen, indent=2))}</pre>",
        f"<h2>Per scenario</h2><ul>{links}</ul>",
    ]
    report = out / "report.html"
    report.write_text(page(f"stratos tune {summary['run']}", parts))
    return report
