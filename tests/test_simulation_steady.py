"""The event-driven simulator (steady clusters sleep, streams/steady.py) gives what stepping
every cluster gives, byte for byte: metrics.json and timeline.csv of every shipped scenario, and
on generated runs whose loads hold and move (with start failures and crashes) the whole event
log, ids included, and every figure. Pure (no broker)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from typer.testing import CliRunner

from infra.cli.main import app
from streams.load_shapes import Steps
from streams.simulation import InstanceModel, LoadSpec, SeededIds, Simulation, SimulationSetup

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DEFINITIONS = EXAMPLES / "definitions"
runner = CliRunner()


@pytest.mark.parametrize("scenario", sorted((EXAMPLES / "scenarios").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_scenario_gives_the_same_metrics_and_timeline_event_driven_and_stepped(scenario, tmp_path):
    for mode, extra in (("event", []), ("stepped", ["--stepped"])):
        result = runner.invoke(app, ["simulate", str(scenario), "--out", str(tmp_path / mode), "--json", *extra])
        assert result.exit_code == 0, result.output
    for name in ("metrics.json", "timeline.csv"):
        assert (tmp_path / "event" / name).read_bytes() == (tmp_path / "stepped" / name).read_bytes(), name


def setup_for(levels: list[list[tuple[int, int]]], crashes: float, failures: float, seed: int) -> SimulationSetup:
    """One application per entry of `levels` (min 1, max 4, load average threshold 25), whose
    load holds each level from its minute on."""

    def j(name: str) -> dict:
        return json.loads((DEFINITIONS / name).read_text())

    definitions = [
        ("networkPartition", j("network-partition.json")),
        ("cartridge", j("php.json")),
        ("autoscalingPolicy", {"id": "p", "loadThresholds": {"loadAverage": {"threshold": 25}}}),
        ("deploymentPolicy", j("deployment-policy-large.json")),
        ("applicationPolicy", j("application-policy.json")),
    ]
    for n in range(len(levels)):
        cartridge = {
            "type": "php",
            "cartridgeMin": 1,
            "cartridgeMax": 4,
            "subscribableInfo": {
                "alias": f"c{n}",
                "autoscalingPolicy": "p",
                "deploymentPolicy": "deployment-policy-large",
            },
        }
        definitions.append(("application", {"applicationId": f"a{n}", "components": {"cartridges": [cartridge]}}))
    loads = tuple(
        LoadSpec(f"c{n}", "load_average", "per-member", (Steps(tuple((60.0 * m, float(v)) for m, v in points)),))
        for n, points in enumerate(levels)
    )
    return SimulationSetup(
        seed=seed,
        duration=3 * 3600,
        step=15,
        definitions=tuple(definitions),
        deploy=tuple((f"a{n}", "application-policy-1") for n in range(len(levels))),
        loads=loads,
        instances=InstanceModel(
            startup_delay=60, startup_jitter=20, crash_rate_per_hour=crashes, start_failure_rate=failures
        ),
    )


level_changes = st.lists(st.tuples(st.integers(0, 179), st.sampled_from([5, 20, 40, 60, 95])), min_size=1, max_size=5)


@hsettings(max_examples=12)
@given(
    st.lists(level_changes, min_size=1, max_size=3),
    st.sampled_from([0.0, 0.5]),
    st.sampled_from([0.0, 0.2]),
    st.integers(0, 99),
)
def test_a_run_event_driven_is_the_stepped_run_event_for_event(levels, crashes, failures, seed):
    setup = setup_for([sorted(points) for points in levels], crashes, failures, seed)
    stepped = Simulation(setup, keep_log=True, event_driven=False)
    event = Simulation(setup, keep_log=True)
    a, b = stepped.run(), event.run()
    assert b.log == a.log  # every event, with its id and time, in the same order
    assert (b.commands, b.rejected, b.dead_letters) == (a.commands, a.rejected, a.dead_letters)
    assert b.figures() == a.figures()
    for key, track in a.clusters.items():
        other = b.clusters[key]
        assert (other.supply, other.pending, other.terminating, other.need) == (
            track.supply,
            track.pending,
            track.terminating,
            track.need,
        )
        assert other.decisions == track.decisions
    assert stepped.slept == 0
    assert event.slept > 0  # held loads: clusters did sleep, and woke


@given(st.integers(0, 2**32), st.lists(st.integers(0, 40), max_size=6))
def test_ids_drawn_in_blocks_are_the_ids_drawn_one_by_one(seed, blocks):
    """A step's health records take their ids from one block (sleeping clusters' included):
    every id, and every id drawn after a block, is the one a call per record would give."""
    one_by_one, in_blocks = SeededIds(seed), SeededIds(seed)
    for n in blocks:
        block = in_blocks.block(n)
        assert [SeededIds.in_block(block, j) for j in range(n)] == [one_by_one() for _ in range(n)]
        assert in_blocks() == one_by_one()
