"""The metadata service's rules (actors/metadata.py) and its member tokens, as pure functions."""

from __future__ import annotations

import stat

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors import metadata as M
from actors.application import ApplicationState, apply
from actors.base import Rejection
from infra.api.metadata_token import MemberTokens, load_key
from schemas import events as E
from schemas.domain import ApplicationStatus
from schemas.metadata import (
    AddMetadataProperties,
    MetadataCleared,
    MetadataProperty,
    MetadataPropertyRemoved,
    MetadataPropertySet,
    RemoveMetadataProperties,
    RemoveMetadataProperty,
)

DEPLOYED = ApplicationStatus.DEPLOYED
ALIASES = {"php1", "mysql1"}


def run(metadata, command, status=DEPLOYED):
    events = M.decide("app", status, ALIASES, metadata, command)
    for event in events:
        metadata = M.apply(metadata, event)
    return events, metadata


def add(key, *values, alias=None):
    return AddMetadataProperties(alias=alias, properties=[MetadataProperty(key=key, values=list(values))])


def test_an_application_property_gains_the_values_it_lacks_in_first_published_order():
    _, md = run({}, add("wka", "10.0.0.1"))
    events, md = run(md, add("wka", "10.0.0.2", "10.0.0.1"))
    assert events == [MetadataPropertySet(key="wka", values=["10.0.0.1", "10.0.0.2"])]
    assert M.properties(md, None) == [{"key": "wka", "values": ["10.0.0.1", "10.0.0.2"]}]


def test_a_cluster_property_is_set_to_exactly_the_values_given():
    _, md = run({}, add("port", "3306", alias="mysql1"))
    _, md = run(md, add("port", "3307", alias="mysql1"))
    assert M.properties(md, "mysql1") == [{"key": "port", "values": ["3307"]}]
    assert M.properties(md, None) == []  # the scopes are apart


def test_publishing_what_is_there_already_writes_nothing():
    _, md = run({}, add("k", "v"))
    assert run(md, add("k", "v"))[0] == []


def test_removing_a_value_then_the_last_value_removes_the_property():
    _, md = run({}, add("restart", "m1", "m2"))
    events, md = run(md, RemoveMetadataProperty(key="restart", value="m1"))
    assert events == [MetadataPropertySet(key="restart", values=["m2"])]
    events, md = run(md, RemoveMetadataProperty(key="restart", value="m2"))
    assert events == [MetadataPropertyRemoved(key="restart")] and md == {}


@pytest.mark.parametrize(
    "command",
    [
        RemoveMetadataProperty(key="nope"),
        RemoveMetadataProperty(key="k", value="x"),
        RemoveMetadataProperties(alias="php1"),
    ],
    ids=["unknown property", "unknown value", "empty cluster"],
)
def test_removing_what_is_not_there_is_accepted_and_writes_nothing(command):
    """Stratos answered 200: an agent's clean-up hook that removes its value twice must not fail."""
    _, md = run({}, add("k", "v"))
    assert run(md, command)[0] == []


def test_removing_the_application_properties_removes_its_clusters_too_as_stratos_registry_did():
    _, md = run({}, add("k", "v"))
    _, md = run(md, add("port", "1", alias="php1"))
    events, md = run(md, RemoveMetadataProperties())
    assert events == [MetadataCleared(everything=True)] and md == {}


@pytest.mark.parametrize(
    "status", [ApplicationStatus.CREATED, ApplicationStatus.DEPLOYING, ApplicationStatus.UNDEPLOYING]
)
def test_publishing_needs_a_deployed_application(status):
    with pytest.raises(Rejection, match="its metadata exists only while it is deployed"):
        M.decide("app", status, ALIASES, {}, add("k", "v"))


def test_instances_shutting_down_may_still_withdraw_their_values():
    _, md = run({}, add("wka", "m1"))
    events, _ = run(md, RemoveMetadataProperty(key="wka", value="m1"), status=ApplicationStatus.UNDEPLOYING)
    assert events == [MetadataPropertyRemoved(key="wka")]


def test_an_unknown_cluster_alias_is_404_naming_it_and_the_aliases():
    with pytest.raises(Rejection) as caught:
        M.decide("app", DEPLOYED, ALIASES, {}, add("k", "v", alias="tomcat9"))
    assert caught.value.code == 404 and "'tomcat9'" in caught.value.reason and "mysql1, php1" in caught.value.reason


def test_undeploying_removes_the_metadata_in_the_application_fold():
    state = ApplicationState(
        aggregate_id="carbon.super/application/app",
        kind="application",
        status=ApplicationStatus.UNDEPLOYING,
        metadata={"": {"k": ["v"]}},
    )
    assert apply(state, E.ApplicationUndeployed(release=[])).metadata == {}


def test_a_scope_holds_a_bounded_number_of_properties():
    full = {"": {f"k{n}": ["v"] for n in range(M.MAX_KEYS)}}
    assert run(full, add("k1", "w"))[0] == [MetadataPropertySet(key="k1", values=["v", "w"])]  # not a new key
    with pytest.raises(Rejection, match=f"more than {M.MAX_KEYS} properties") as caught:
        M.decide("app", DEPLOYED, ALIASES, full, add("one-more", "v"))
    assert caught.value.code == 413


def test_stratos_agents_bare_string_values_are_one_value():
    assert MetadataProperty.model_validate({"key": "wka", "values": "10.0.0.1"}).values == ["10.0.0.1"]
    assert MetadataProperty.model_validate({"key": "n", "values": [1, "b"]}).values == ["1", "b"]


ops = st.lists(st.tuples(st.sampled_from(["a", "b"]), st.lists(st.sampled_from("xyz"), max_size=3)), max_size=8)


@given(ops)
def test_application_properties_are_the_union_of_everything_published(published):
    md: dict = {}
    for key, values in published:
        _, md = run(md, add(key, *values))
    expected: dict[str, set] = {}
    for key, values in published:
        expected.setdefault(key, set()).update(values)
    assert {p["key"]: set(p["values"]) for p in M.properties(md, None)} == expected


@given(st.lists(st.sampled_from("xyz"), min_size=1, max_size=5), st.lists(st.sampled_from("xyz"), max_size=5))
def test_removing_values_leaves_the_others_in_order(values, removed):
    _, md = run({}, add("k", *values))
    for value in removed:
        _, md = run(md, RemoveMetadataProperty(key="k", value=value))
    left = [v for v in dict.fromkeys(values) if v not in removed]
    assert M.properties(md, None) == ([{"key": "k", "values": left}] if left else [])


def test_a_token_names_its_member_and_any_change_breaks_it(tmp_path):
    tokens = MemberTokens.in_state_dir(tmp_path)
    token = tokens.token("example.org", "app", "php1.abc")
    claim = tokens.check(token)
    assert (claim.tenant, claim.application_id, claim.member_id) == ("example.org", "app", "php1.abc")
    body, mac = token[len("stm1.") :].split(".")
    other = tokens.token("example.org", "other-app", "php1.abc")
    assert tokens.check(f"stm1.{other.split('.')[1]}.{mac}") is None  # another body under this mac
    assert tokens.check(token[:-2] + ("AA" if token[-2:] != "AA" else "BB")) is None
    assert tokens.check("stm1.garbage") is None and tokens.check("") is None
    assert MemberTokens(b"another platform's secret").check(token) is None


def test_the_secret_is_made_once_owner_only_and_shared(tmp_path):
    key = load_key(tmp_path)
    path = tmp_path / "keys" / "metadata-token.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_key(tmp_path) == key and len(key) == 32
    path.chmod(0o644)
    assert load_key(tmp_path) == key and stat.S_IMODE(path.stat().st_mode) == 0o600
