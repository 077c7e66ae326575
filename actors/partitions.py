"""Where members go and where they leave from: the partition algorithms of a deployment policy
(docs/operators/autoscaler.md), and which member leaves first. Pure functions over counts.

A partition's members, for placement, are its active plus pending ones: a pending member
already holds its slot (it is being created), a terminating one no longer does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

ONE_AFTER_ANOTHER = "one-after-another"
ROUND_ROBIN = "round-robin"
ALGORITHMS = (ONE_AFTER_ANOTHER, ROUND_ROBIN)


@dataclass(frozen=True, slots=True)
class PartitionState:
    """One partition of the cluster's network partition, in deployment-policy order."""

    id: str
    max: int
    active: int = 0
    pending: int = 0
    terminating: int = 0
    tier: int = 0
    """The place of its network partition in the application's bursting order: members go to
    the lowest tier with room and leave the highest tier first (one-after-another across
    network partitions, whatever the algorithm inside one)."""

    @property
    def members(self) -> int:
        return self.active + self.pending


def _check(algorithm: str) -> None:
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown partition algorithm {algorithm!r}; expected one of {ALGORITHMS}")


def _spawn_index(algorithm: str, maxima: list[int], counts: list[int], tiers: list[int]) -> int | None:
    open_ = [i for i, n in enumerate(counts) if n < maxima[i]]
    if not open_:
        return None
    lowest = min(tiers[i] for i in open_)
    open_ = [i for i in open_ if tiers[i] == lowest]
    if algorithm == ONE_AFTER_ANOTHER:
        return open_[0]
    # round-robin: the emptiest partition *that has room*; Stratos asked only the emptiest and
    # gave up when it was full, even with room elsewhere. Ties go to the earlier partition.
    return min(open_, key=lambda i: counts[i])


def _removal_index(algorithm: str, counts: list[int], tiers: list[int]) -> int | None:
    used = [i for i, n in enumerate(counts) if n > 0]
    if not used:
        return None
    highest = max(tiers[i] for i in used)
    used = [i for i in used if tiers[i] == highest]
    if algorithm == ONE_AFTER_ANOTHER:
        return used[-1]
    # round-robin: the fullest; ties go to the later partition (spawn's ties go to the
    # earlier one), so the partitions listed first, the preferred ones, are kept longest.
    return max(reversed(used), key=lambda i: counts[i])


def choose_partitions_for_spawn(
    algorithm: str, partitions: Sequence[PartitionState], count: int
) -> list[str]:
    """One partition id per member to create, in order. Shorter than ``count`` when every
    partition is full: no partition ever goes past its ``max``."""
    _check(algorithm)
    maxima = [p.max for p in partitions]
    counts = [p.members for p in partitions]
    tiers = [p.tier for p in partitions]
    chosen: list[str] = []
    for _ in range(max(0, count)):
        i = _spawn_index(algorithm, maxima, counts, tiers)
        if i is None:
            break
        counts[i] += 1
        chosen.append(partitions[i].id)
    return chosen


def choose_partitions_for_removal(
    algorithm: str, partitions: Sequence[PartitionState], count: int
) -> list[str]:
    """One partition id per member to remove: one-after-another empties the last used
    partition first, round-robin the fullest. Shorter than ``count`` when all are empty."""
    _check(algorithm)
    counts = [p.members for p in partitions]
    tiers = [p.tier for p in partitions]
    chosen: list[str] = []
    for _ in range(max(0, count)):
        i = _removal_index(algorithm, counts, tiers)
        if i is None:
            break
        counts[i] -= 1
        chosen.append(partitions[i].id)
    return chosen


def choose_member_to_remove(
    candidates: Sequence[tuple[str, float | None, float | None]],
) -> str:
    """The member to let go on a scale-down: the lowest ``(predicted load + predicted
    memory) / 2`` (as Stratos 4.1), ties to the smallest member id so replays agree.

    A missing figure counts as 0, as in Stratos, so a member with no figures is the first to
    go: it serves no load anyone has seen (just started, or silent and likely faulty), and
    removing it loses no observed work.
    """
    if not candidates:
        raise ValueError("no member to remove")

    def key(c: tuple[str, float | None, float | None]) -> tuple[float, str]:
        member_id, load, memory = c
        return ((load or 0.0) + (memory or 0.0)) / 2.0, member_id

    return min(candidates, key=key)[0]
