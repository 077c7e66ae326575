"""The events topic read as far as its envelope (infra/log/eventlog.py `decode_head`, `History.head`):
it accepts and rejects what the pydantic envelope does, and a head's record is the full decode."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import msgspec
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from pydantic import Field

from actors.history import Fence
from infra.log.eventlog import EnvelopeHead, LogHead, _envelope_head, decode_head, decode_log, head_of
from infra.log.kafka import envelope
from schemas.events import Event
from schemas.records import Claim, Commit, LogRecord
from tests.examples import EXAMPLES
from tests.signed_history import history, signed

EVENTS = [e for e in EXAMPLES if isinstance(e, Event.__origin__.__args__)]
FIELDS = [name for name in LogRecord.model_fields if name != "payload"]


def record_bytes(
    n: int, events: int = 1, claim: str | None = None, entry: str = "Commit", at: datetime | None = None
) -> bytes:
    payload = (
        Claim(partition=n % 4, writer="w", generation=n)
        if entry == "Claim"
        else Commit(
            command_type="Report",
            outcome="accepted",
            claim=claim,
            writer="w",
            events=[EVENTS[(n + i) % len(EVENTS)] for i in range(events)],
        )
    )
    record = envelope(
        LogRecord,
        payload,
        f"carbon.super/cluster/c{n % 7}",
        aggregate_seq=n,
        correlation_id=None if n % 2 else f"corr{n}",
        causation_id=f"cmd{n}",
    )
    if at is not None:
        record = record.model_copy(update={"occurred_at": at})
    return record.model_dump_json().encode()


def fields_of(head: LogHead) -> dict:
    """What a reader sees of a head: its envelope fields, the time as a datetime and its offset."""
    data = {name: getattr(head.envelope, name) for name in FIELDS if name != "occurred_at"}
    return data | {
        "occurred_at": head.occurred_at,
        "utcoffset": head.occurred_at.utcoffset(),
        "entry": (head.envelope.payload.type, head.envelope.payload.claim),
    }


def outcome(decode, value):
    try:
        return decode(value), None
    except ValueError as exc:
        return None, exc


class _Span(msgspec.Struct):
    payload: msgspec.Raw


def in_payload(value: bytes, error: dict) -> bool:
    """Is this pydantic error about the payload: a field of it, or its bytes (a JSON error whose
    column lies inside it, as pydantic's parser limits on nesting and integer length)?"""
    if error["loc"][:1] == ("payload",):
        return True
    if error["type"] != "json_invalid" or b"\n" in value:
        return False
    column = int(error["msg"].rsplit("column ", 1)[1])
    payload = bytes(msgspec.json.decode(value, type=_Span).payload)
    start = value.find(payload)
    return start >= 0 and start < column <= start + len(payload) + 1


def assert_same_acceptance(value) -> None:
    """decode_head accepts every record decode_log accepts, with the same envelope; where the
    full decode fails only in the payload the head may accept; otherwise both reject, with
    pydantic's error (the same text)."""
    full, full_error = outcome(decode_log, value)
    head, head_error = outcome(decode_head, value)
    if value is not None:  # decode_log is the model's own validator (its wrapper skipped)
        reference, reference_error = outcome(LogRecord.model_validate_json, value)
        assert (reference, str(reference_error)) == (full, str(full_error))
    if full is not None:
        assert head is not None, head_error
        assert fields_of(head) == fields_of(head_of(full))
        assert head.record() == full
    elif head is not None:
        assert head_error is None
        assert all(in_payload(value, error) for error in full_error.errors()), full_error
        with pytest.raises(ValueError) as raised:
            head.record()
        assert str(raised.value) == str(full_error)
    else:
        assert str(head_error) == str(full_error)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.sampled_from(
        [
            "",
            "Commit",
            "Claim",
            "2026-12-01T18:33:05Z",
            "2026-12-01T18:33:05.1234567Z",
            "2026-12-01 18:33:05+02:00",
            "2026-12-01t18:33:05z",
            "2026-12-01",
            "1764613985",
            "2026-13-01T00:00:00Z",
            "2026-12-01T18:33:05+0200",
            "-1",
            "0",
        ]
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


@st.composite
def mutated(draw) -> bytes:
    """A valid record, then a few changes: a field dropped, set to another JSON value, a key
    added, in the envelope or its payload; or its bytes cut or spoilt."""
    value = record_bytes(
        draw(st.integers(0, 50)),
        draw(st.integers(0, 3)),
        draw(st.none() | st.sampled_from(["c1", "c2"])),
        draw(st.sampled_from(["Commit", "Commit", "Claim"])),
    )
    data = json.loads(value)
    for _ in range(draw(st.integers(0, 3))):
        target = draw(st.sampled_from([data, data, data.get("payload")]))
        if not isinstance(target, dict):
            break
        action = draw(st.sampled_from(["drop", "set", "set", "add"]))
        keys = sorted(target) or ["id"]
        if action == "drop":
            target.pop(draw(st.sampled_from(keys)), None)
        elif action == "set":
            target[draw(st.sampled_from(keys))] = draw(json_values)
        else:
            target[draw(st.text(min_size=1, max_size=6))] = draw(json_values)
    text = json.dumps(data).encode()
    spoil = draw(st.sampled_from(["none"] * 6 + ["cut", "byte", "utf8", "dup"]))
    if spoil == "cut":
        text = text[: draw(st.integers(0, len(text)))]
    elif spoil == "byte":
        at = draw(st.integers(0, len(text) - 1))
        text = text[:at] + bytes([draw(st.integers(0, 255))]) + text[at + 1 :]
    elif spoil == "utf8":
        text = text.replace(b'"carbon.super"', b'"carbon\xff.super"', 1)
    elif spoil == "dup":
        text = text[:1] + b'"aggregate_seq": -1, ' + text[1:]
    return text


@hsettings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_the_head_accepts_and_rejects_what_the_pydantic_envelope_does(value):
    assert_same_acceptance(value)


@pytest.mark.parametrize(
    "value",
    [
        None,
        b"",
        b"null",
        b"[]",
        b"1",
        b'"x"',
        b"\xff\xfe",
        b"{}",
        record_bytes(1).replace(b'"id":"', b'"id":"', 1).replace(b'"aggregate_seq":1', b'"aggregate_seq":-1'),
        record_bytes(1).replace(b'"aggregate_seq":1', b'"aggregate_seq":"1"'),  # lax: pydantic reads it
        record_bytes(1).replace(b'"aggregate_seq":1', b'"aggregate_seq":1.0'),
        record_bytes(1).replace(b'"aggregate_seq":1', b'"aggregate_seq":true'),
        record_bytes(1).replace(b'"tenant"', b'"extra":1,"tenant"'),
        record_bytes(1).replace(b'"type":"Commit"', b'"type":"Claim"', 1),
        record_bytes(1).replace(b'"command_type":"Report"', b'"command_type":5'),  # payload only
        record_bytes(1).replace(b'"claim":null', b'"claim":7'),
        record_bytes(1, at=datetime(2026, 12, 1, 18, 33, 5, 123456, tzinfo=timezone(timedelta(hours=-5)))),
        record_bytes(1).replace(b'Z","tenant"', b'789Z","tenant"'),  # 9 fractional digits: truncated
        record_bytes(1).replace(b'"writer":"w"', b'"writer":"w\x80"'),  # bad UTF-8 where msgspec skips
        record_bytes(1).replace(b'"tenant":"carbon.super"', '"tenant":"carbon.süper"'.encode()),
        record_bytes(1).replace(b'"writer":"w"', b'"writer":' + b"[" * 300 + b"]" * 300),  # too deep
        record_bytes(1).replace(b'"writer":"w"', b'"writer":' + b"[" * 198 + b"]" * 198),
        record_bytes(1).replace(b'"code":null', b'"code":' + b"7" * 4301),  # longer than pydantic reads
        record_bytes(1).replace(b'"writer":"w"', b'"writer":"' + b"w" * 5000 + b'"'),
        record_bytes(1).replace(b'"aggregate_seq":1', b'"aggregate_seq":' + b"7" * 4301),
        record_bytes(1).replace(b'"aggregate_seq":1', b'"aggregate_seq":' + b"7" * 30),  # beyond int64
    ],
)
def test_edge_cases_are_read_as_pydantic_reads_them(value):
    assert_same_acceptance(value)


def test_an_empty_id_is_refused_naming_the_field():
    value = json.loads(record_bytes(3))
    value["id"] = ""
    with pytest.raises(ValueError, match=r"(?s)^1 validation error for LogRecord\nid\n.*at least 1 character"):
        decode_head(json.dumps(value).encode())


def test_the_head_is_derived_from_the_envelope_fields():
    fields = msgspec.structs.fields(EnvelopeHead)
    assert [f.name for f in fields] == list(LogRecord.model_fields)
    assert {f.name: f.default for f in fields if not f.required} == {
        n: i.default for n, i in LogRecord.model_fields.items() if not i.is_required()
    }
    assert EnvelopeHead.__struct_config__.forbid_unknown_fields


def test_a_constraint_the_head_cannot_mirror_stops_it_being_built():
    class Stricter(LogRecord):
        tenant: str = Field("carbon.super", max_length=20)

    with pytest.raises(TypeError, match="Stricter.tenant: constraint MaxLen"):
        _envelope_head(Stricter)


log_entries = st.lists(
    st.tuples(
        st.sampled_from(["Commit", "Commit", "Claim", "bad envelope", "bad payload"]),
        st.sampled_from([None, "first", "last"]),
    ),
    max_size=25,
)


@hsettings(max_examples=150)
@given(log_entries)
def test_history_head_keeps_the_same_fences_and_commits_as_history_commit(entries):
    """The same partition read by `commit` (full decode) and by `head`: the same commits are
    history, with equal records; fences move alike; a payload error shows when it is read."""
    claims: list[str] = []
    values = []
    for n, (kind, claim) in enumerate(entries):
        if kind == "Claim":
            value = record_bytes(n, entry="Claim")
            claims.append(json.loads(value)["id"])
        else:
            chosen = {None: None, "first": claims[0] if claims else "x", "last": claims[-1] if claims else "y"}[claim]
            value = record_bytes(n, claim=chosen)
            if kind == "bad envelope":
                value = value.replace(b'"aggregate_seq":', b'"aggregate_seq":-1', 1)
            elif kind == "bad payload":
                value = value.replace(b'"outcome":"accepted"', b'"outcome":"maybe"')
        values.append(value)
    full, lazy = history(), history()
    for offset, value in enumerate(values):
        record, error = outcome(lambda v, offset=offset: full.commit(signed(0, offset, v)), value)
        head, head_error = outcome(lambda v, offset=offset: lazy.head(signed(0, offset, v)), value)
        if record is not None:
            assert head is not None and head.record() == record
        elif error is None:
            assert head is None and head_error is None
        elif head is not None:  # an error in the payload only: raised when it is read
            with pytest.raises(ValueError):
                head.record()
        elif head_error is None:  # a fenced commit whose payload is invalid: never read
            assert all(e["loc"][:1] == ("payload",) for e in error.errors()), error
        else:
            assert str(head_error) == str(error)
        assert full.fences[0].claim == lazy.fences[0].claim


def test_a_claim_with_an_invalid_payload_does_not_move_the_fence():
    value = record_bytes(1, entry="Claim").replace(b'"writer":"w"', b'"writer":null')
    reader = history(lambda _p, _o: Fence("before"))
    with pytest.raises(ValueError, match="payload.Claim.writer"):
        reader.head(signed(0, 5, value))
    assert reader.fences[0].claim == "before"


def test_a_tombstone_is_refused_as_decode_log_refuses_it():
    with pytest.raises(ValueError, match="null value"):
        decode_head(None)


def test_lazily_read_payloads_equal_the_full_decode_for_every_event_type():
    for n in range(len(EVENTS)):
        value = record_bytes(n, events=3)
        head = decode_head(value)
        assert head.record() == decode_log(value)
        assert head.record().payload.events == decode_log(value).payload.events
        assert msgspec.structs.asdict(head.envelope)["aggregate_seq"] == n


def commit_of(aggregate_id: str, seq: int, event) -> bytes:
    record = envelope(
        LogRecord,
        Commit(command_type="Report", outcome="accepted", events=[event]),
        aggregate_id,
        aggregate_seq=seq,
        causation_id=f"cmd-{aggregate_id}-{seq}",
    )
    return record.model_dump_json().encode()


@pytest.mark.integration
def test_history_and_state_decode_only_their_aggregates_commits(settings):
    """`stratos history` (timeline) and `stratos state` (state_at) read heads: they give what the
    full decode gives; a commit of another aggregate whose payload is invalid is not theirs to
    report, a record whose envelope is invalid is reported as before."""
    from infra.log.eventlog import read_history
    from infra.log.kafka import Appender
    from infra.node.node import partition_for
    from infra.replay.inspect_log import state_at
    from infra.replay.timetravel import timeline
    from schemas.events import MemberActivated

    mine = "carbon.super/cluster/app.php1"
    other = next(
        f"carbon.super/cluster/other{n}"
        for n in range(200)
        if partition_for(f"carbon.super/cluster/other{n}", 4) == partition_for(mine, 4)
    )
    bad_payload = commit_of(other, 2, MemberActivated(member_id="m", cluster_id="o")).replace(
        b'"outcome":"accepted"', b'"outcome":"maybe"'
    )
    bad_envelope = commit_of(mine, 9, MemberActivated(member_id="m", cluster_id="c")).replace(
        b'"aggregate_seq":9', b'"aggregate_seq":-9'
    )
    values = [
        (mine, commit_of(mine, 1, MemberActivated(member_id="m1", cluster_id="c"))),
        (other, commit_of(other, 1, MemberActivated(member_id="o1", cluster_id="o"))),
        (other, bad_payload),
        (mine, bad_envelope),
        (mine, commit_of(mine, 2, MemberActivated(member_id="m2", cluster_id="c"))),
    ]
    appender = Appender(settings)
    for key, value in values:
        appender.send_raw(settings.topic("events"), key.encode(), value)
    appender.flush(30)
    appender.close()
    with pytest.raises(ValueError, match="payload.Commit.outcome"):
        decode_log(bad_payload)

    full = [c for _p, _o, c in read_history(settings) if c.aggregate_id == mine]
    assert [c.aggregate_seq for c in full] == [1, 2]
    problems: list[str] = []
    entries = timeline(settings, mine, problems=problems)
    assert [(e.id, e.type, e.seq) for e in entries] == [(f"{c.id}.0", "MemberActivated", c.aggregate_seq) for c in full]
    assert len(problems) == 1 and "aggregate_seq" in problems[0], problems
    tracked, seen = state_at(settings, mine)
    assert [e.id for e in seen] == [e.id for e in entries]
    assert tracked.state.seq == 2
