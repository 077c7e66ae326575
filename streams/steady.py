"""Steady clusters for the simulator's discrete-event mode: proven fixed points, skipped exactly.

A cluster is steady when one 15 s step changed nothing about it but time: the same aggregate
state, the same serving members, the same load, and health windows that are the previous
step's moved by one step (same values, same running totals, same times relative to the
clock), with a verdict the cluster decides to no event (Stable or AtMin, not sent). Every rule
the health book applies reads times only as differences, and a quiet verdict does not read
the clock, so while its inputs stay the same each further step would again only move the
windows in time: the simulator takes the cluster's windows out of the book instead of
re-deciding it (as CloudSim Plus skips to the next event), and puts them back, moved by the
steps it slept, as soon as an input changes. The result is byte-identical to stepping every
cluster (tests/test_simulation_steady.py compares metrics.json on every shipped scenario).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from pydantic import BaseModel

from streams.health_state import ClusterWindows, Decision, MemberWindows
from streams.windows import SlidingWindow

UNDERSTOOD = {f.name for f in fields(ClusterWindows)} == {
    "tenant",
    "cluster_id",
    "partition",
    "requests",
    "members",
    "newest",
    "decided",
    "last_record_id",
    "forecaster",
    "settled",
} and {f.name for f in fields(MemberWindows)} == {"windows", "heard_at", "faulted"}
"""The health book's per-cluster state is what `fingerprint` and `woken` know of, field for
field. A field added there is not in the fingerprint, so nothing sleeps (stepping, still exact)
until this module learns it."""


@dataclass(frozen=True)
class Inputs:
    """What a cluster's step reads from outside its health windows."""

    state: BaseModel
    serving: tuple[str, ...]
    load: tuple[float, ...]

    def same(self, other: Inputs | None) -> bool:
        return (
            other is not None
            and other.state is self.state
            and other.serving == self.serving
            and other.load == self.load
        )


@dataclass
class Parked:
    """A steady cluster's windows, out of the book since the end of step `step`."""

    windows: ClusterWindows
    step: int
    inputs: Inputs
    verdict: Decision
    last_record_id: str | None
    records: int
    """Health records the cluster publishes per step (the ids they draw are drawn still)."""


def _window(window: SlidingWindow, now: float) -> tuple[Any, ...]:
    # the running total too: it is what the next average is computed from, bit for bit
    return [(ts - now, value) for ts, value in window._samples], window._total


def fingerprint(book: ClusterWindows, now: float, t: float) -> tuple[Any, ...]:
    """The book of one cluster with every time made relative to the clock (`now`: epoch
    seconds of samples; `t`: simulated seconds, the members' `heard_at`); compared, never
    kept as a key (lists: cheaper to build than tuples from generators)."""
    return (
        [(np, _window(w, now)) for np, w in book.requests.items()],
        [
            (
                member_id,
                None if member.heard_at is None else member.heard_at - t,
                member.faulted,
                [(metric, _window(w, now)) for metric, w in member.windows.items()],
            )
            for member_id, member in book.members.items()
        ],
        [(metric, ts - now) for metric, ts in book.newest.items()],
        [(metric, ts - now) for metric, ts in book.decided.items()],
        book.settled,
        book.partition,
        book.forecaster is None,
    )


def quiet(book: ClusterWindows, verdict: Decision | None) -> bool:
    """This step's verdict was made now, changes nothing and was kept (not sent); no forecast
    (a forecaster learns from every hop)."""
    return (
        UNDERSTOOD
        and verdict is not None
        and verdict.causation_id == book.last_record_id
        and not verdict.send
        and book.settled
        and book.forecaster is None
    )


def woken(parked: Parked, steps: int, at: Any, last_record_id: str | None) -> tuple[ClusterWindows, Decision]:
    """The parked windows and verdict as stepping would have left them `steps` steps later:
    every time moved on (`at(ts, steps)` moves a sample's epoch time, `at(t, steps, False)` a
    simulated time), the running totals kept, the newest record id the one drawn last."""
    book = parked.windows
    for window in book.requests.values():
        _move(window, steps, at)
    for member in book.members.values():
        for window in member.windows.values():
            _move(window, steps, at)
        if member.heard_at is not None:
            member.heard_at = at(member.heard_at, steps, False)
    book.newest = {metric: at(ts, steps) for metric, ts in book.newest.items()}
    book.decided = {metric: at(ts, steps) for metric, ts in book.decided.items()}
    book.last_record_id = last_record_id
    return book, replace(parked.verdict, causation_id=last_record_id)


def _move(window: SlidingWindow, steps: int, at: Any) -> None:
    samples = window._samples
    moved = [(at(ts, steps), value) for ts, value in samples]
    samples.clear()
    samples.extend(moved)
    window._figures = None
