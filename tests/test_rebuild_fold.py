"""A rebuild's fold, in place, equals the validated copy-on-write fold (pure, property-based).

Node recovery, time travel and the replay benchmark rebuild aggregates through
`infra.log.recovery.fold_history`: signed records verified, decoded, fenced, and each commit
folded into a state the rebuild owns, in place (members and the cluster's tally changed where
they are, no copy: docs/adr/0016-rebuild-folds-in-place.md). Over generated histories of several
aggregates (clusters driven through every cluster, member and scaling event with rejections
among them, and a definition added, used, released, updated and removed, refused on the way),
interleaved in one partition as nodes write them, with a commit repeated and a rebuild starting
from snapshots taken at any point, the rebuild must give each aggregate exactly the state,
handled commands, snapshot and problems of the validated fold of its own commits, one by one,
copying every state (`decode_log`, `Tracked.fold_commit()` as every other reader folds).
"""

from __future__ import annotations

import itertools
from datetime import timedelta

from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from actors.base import Context
from actors.runtime import Tracked, handle
from infra.log.eventlog import decode_log
from infra.log.kafka import envelope
from infra.log.recovery import Recovered, fold_history
from schemas import commands as C
from schemas.records import CommandRecord
from tests.examples import definition
from tests.signed_history import history, signed
from tests.test_fast_fold import CLUSTER, START, histories, run_live

CARTRIDGE = definition("cartridge")
DEFINITION = f"carbon.super/cartridge/{CARTRIDGE.definition_id}"
OTHER_CLUSTER = CLUSTER.replace("app.php1", "app.php2")

definition_steps = st.lists(st.sampled_from(["add", "update", "use", "release", "remove", "add_other"]), max_size=12)
"""What happens to the cartridge: `add_other` adds one under another id (rejected)."""


def run_definition(steps: list[str]) -> list[bytes]:
    """The cartridge's commits as the node appends them, rejections included."""
    ids, tracked, log, clock = itertools.count(), Tracked.new(DEFINITION), [], START
    renamed = CARTRIDGE.model_copy(update={"type": "other"})
    commands = {
        "add": lambda: C.AddCartridge(definition=CARTRIDGE),
        "update": lambda: C.UpdateCartridge(definition=CARTRIDGE.model_copy(update={"description": "updated"})),
        "use": lambda: C.MarkDefinitionUsed(kind="cartridge", id=CARTRIDGE.definition_id, by="app"),
        "release": lambda: C.ReleaseDefinition(kind="cartridge", id=CARTRIDGE.definition_id, by="app"),
        "remove": lambda: C.RemoveCartridge(id=CARTRIDGE.definition_id),
        "add_other": lambda: C.AddCartridge(definition=renamed),
    }
    for step in steps:
        clock += timedelta(seconds=7)
        outcome = handle(
            tracked,
            envelope(CommandRecord, commands[step](), DEFINITION, record_id=f"def{next(ids)}"),
            Context(now=clock, new_id=lambda: f"d{next(ids):031x}"),
        )
        assert outcome.encoded is not None
        log.append(outcome.encoded)
    return log


def interleaved(logs: list[list[bytes]]) -> list[bytes]:
    """The aggregates' commits in one partition, round robin, as several would be written."""
    merged = []
    for row in itertools.zip_longest(*logs):
        merged += [value for value in row if value is not None]
    return merged


def validated_folds(values: list[bytes]) -> tuple[dict[str, Tracked], list[str]]:
    """Each aggregate folded commit by commit from validated records, copying every state."""
    folded: dict[str, Tracked] = {}
    problems = []
    for offset, value in enumerate(values):
        record = decode_log(value)
        tracked = folded.setdefault(record.aggregate_id, Tracked.new(record.aggregate_id))
        if problem := tracked.fold_commit(record):
            problems.append(f"offset {offset}: {problem}")
    return folded, problems


@hsettings(max_examples=60)
@given(histories, histories, definition_steps, st.floats(0, 1), st.floats(0, 1), st.booleans())
def test_a_rebuild_in_place_equals_the_validated_fold(first, second, steps, cut, repeat_at, repeat):
    one = run_live(first)[1]
    other = [value.replace(b"app.php1.", b"app.php2.") for value in run_live(second)[1]]
    values = interleaved([one, other, run_definition(steps)])
    if repeat:  # a commit appended twice (a retried send): skipped both ways, and reported
        at = int(repeat_at * (len(values) - 1))
        values.insert(at + 1 + (len(values) - at - 1) // 2, values[at])
    start = int(cut * len(values))
    # a rebuild from snapshots taken at `start` (each aggregate's last commit before it), then the tail
    before, _ = validated_folds(values[:start])
    covered = {}
    for offset, value in enumerate(values[:start]):
        covered[decode_log(value).aggregate_id] = offset
    recovered = Recovered(0)
    recovered.aggregates = {a: Tracked.from_snapshot(a, t.snapshot()) for a, t in before.items()}
    fold_history(recovered, history(), [signed(0, offset, values[offset]) for offset in range(len(values))], covered)
    expected, problems = validated_folds(values)
    assert set(recovered.aggregates) == set(expected) == {CLUSTER, OTHER_CLUSTER} | ({DEFINITION} if steps else set())
    for aggregate_id, tracked in expected.items():
        rebuilt = recovered.aggregates[aggregate_id]
        assert rebuilt.state == tracked.state
        assert rebuilt.handled == tracked.handled
        assert rebuilt.stopped == tracked.stopped
        assert rebuilt.snapshot() == tracked.snapshot()
    assert recovered.problems == [p for p in problems if int(p.split()[1].rstrip(":")) >= start]
    assert recovered.next_offset == len(values)
