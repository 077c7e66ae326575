"""Application sign-ups and domain mappings as pure rules of the application aggregate: given
events, when a command, then events or a rejection. Each case says what would break without it."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest

from actors import application
from actors.base import Context, Rejection
from actors.reactions import react
from infra.log.kafka import envelope
from schemas import commands as C
from schemas import events as E
from schemas.definitions import ApplicationSignup, DomainMappings
from schemas.records import EventRecord
from schemas.status import ArtifactUpdated
from tests.conftest import sample
from tests.examples import SPEC, definition

OWNER = "carbon.super"
APP = "app"
AGGREGATE = f"{OWNER}/application/{APP}"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
IDS = itertools.count(1)


def ctx() -> Context:
    return Context(now=NOW, new_id=lambda: f"e{next(IDS)}")


def app_state(multi_tenant: bool = True, deployed: bool = True) -> application.ApplicationState:
    """The sample application (alias php1) as `app`, deployed with one cluster for php1."""
    body = definition("application").model_copy(update={"applicationId": APP, "multiTenant": multi_tenant})
    events = [E.ApplicationAdded(definition=body)]
    if deployed:
        events += [
            E.ApplicationDeploymentRequested(application_policy_id="ap", needs=[]),
            E.ApplicationDeployed(application_policy_id="ap", clusters=[SPEC]),
        ]
    state = application.initial(AGGREGATE)
    for event in events:
        state = application.apply(state, event)
    return state


def run(state, *commands):
    """Decide and apply each command in turn; the events of the last one and the final state."""
    events: list = []
    for command in commands:
        events = application.decide(state, command, ctx())
        for event in events:
            state = application.apply(state, event)
    return events, state


def signup(tenant: str = "a.org", **repo) -> C.AddApplicationSignup:
    repository = {"alias": "php1", "repoUrl": "https://git.example.org/a.git", **repo}
    return C.AddApplicationSignup(tenant=tenant, signup=ApplicationSignup(artifactRepositories=[repository]))


def mappings(tenant: str = "a.org", *names: str, alias: str = "php1") -> C.AddDomainMappings:
    return C.AddDomainMappings(
        tenant=tenant,
        mappings=DomainMappings(
            domainMappings=[
                {"cartridgeAlias": alias, "domainName": name, "contextPath": "/shop"} for name in names or ("a.com",)
            ]
        ),
    )


def rejected(state, command) -> Rejection:
    with pytest.raises(Rejection) as caught:
        application.decide(state, command, ctx())
    return caught.value


def test_signup_resolves_each_repository_to_its_cluster():
    (added,), state = run(app_state(), signup())
    # without the cluster id the instances of php1 would never hear of the tenant's repository
    assert added == E.ApplicationSignupAdded(
        tenant="a.org",
        clusters={"php1": SPEC.cluster_id},
        artifact_repositories=[
            {
                "alias": "php1",
                "privateRepo": False,
                "repoUrl": "https://git.example.org/a.git",
                "repoUsername": "",
                "repoPassword": "",
            }
        ],
    )
    assert list(state.signups) == ["a.org"]


def test_the_stratos_sample_signup_is_refused_for_its_unknown_alias():
    sample_signup = ApplicationSignup.model_validate(sample("application-signup.json"))
    problem = rejected(app_state(), C.AddApplicationSignup(tenant="a.org", signup=sample_signup))
    # a repository for an alias the application lacks would be stored and never checked out
    assert problem.code == 400 and "'my-tomcat'" in problem.reason and problem.field == "artifactRepositories.alias"


@pytest.mark.parametrize(
    "state, code, words",
    [
        (app_state(multi_tenant=False), 400, "single-tenant"),
        (app_state(deployed=False), 400, "has not been deployed"),
        (application.initial(AGGREGATE), 404, "not found"),
    ],
    ids=["single-tenant application", "application not deployed", "unknown application"],
)
def test_signup_needs_an_existing_deployed_multi_tenant_application(state, code, words):
    problem = rejected(state, signup())
    assert problem.code == code and words in problem.reason


def test_one_signup_per_tenant_and_application():
    _, state = run(app_state(), signup("a.org"))
    problem = rejected(state, signup("a.org"))
    assert problem.code == 409 and "'a.org' has already signed up" in problem.reason
    (added,), _ = run(state, signup("b.org"))  # another tenant may still sign up
    assert added.tenant == "b.org"


def test_removing_a_signup_removes_that_tenants_mappings_only():
    _, state = run(
        app_state(), signup("a.org"), signup("b.org"), mappings("a.org", "a.com"), mappings("b.org", "b.com")
    )
    events, state = run(state, C.RemoveApplicationSignup(tenant="a.org"))
    # a mapping left behind would keep routing a domain to a tenant that left
    assert events == [
        E.DomainMappingRemoved(tenant="a.org", domain_name="a.com", cluster_id=SPEC.cluster_id),
        E.ApplicationSignupRemoved(tenant="a.org"),
    ]
    assert list(state.signups) == ["b.org"] and list(state.domain_mappings) == ["b.com"]
    assert rejected(state, C.RemoveApplicationSignup(tenant="a.org")).code == 404


def test_mapping_routes_the_domain_to_the_aliases_cluster():
    (added,), state = run(app_state(), signup(), mappings("a.org", "a.com"))
    assert added.mappings == [
        {"cartridgeAlias": "php1", "domainName": "a.com", "contextPath": "/shop", "clusterId": SPEC.cluster_id}
    ]
    assert state.domain_mappings["a.com"]["tenant"] == "a.org"


@pytest.mark.parametrize(
    "given, command, code, words",
    [
        ([signup()], mappings("a.org", "a.com", alias="tomcat9"), 400, "'tomcat9' is not a cartridge alias"),
        ([signup(), mappings("a.org", "a.com")], mappings("a.org", "a.com"), 409, "'a.com' is already mapped"),
        (
            [signup("a.org"), signup("b.org"), mappings("a.org", "a.com")],
            mappings("b.org", "a.com"),
            409,
            "'a.com' is already mapped",
        ),
        ([signup()], mappings("a.org", "x.com", "x.com"), 409, "'x.com' is already mapped"),
        ([], mappings("a.org", "a.com"), 400, "has not signed up"),
    ],
    ids=[
        "alias not in the application",
        "domain mapped twice",
        "domain taken by another tenant",
        "domain twice in one request",
        "multi-tenant mapping without a signup",
    ],
)
def test_mapping_rules(given, command, code, words):
    _, state = run(app_state(), *given)
    problem = rejected(state, command)
    assert problem.code == code and words in problem.reason


def test_a_single_tenant_application_maps_domains_without_signup_and_undeploy_unmaps_them():
    _, state = run(app_state(multi_tenant=False), mappings(OWNER, "shop.com"))
    events, _ = run(state, C.UndeployApplication())
    # the clusters go away with the undeployment: a load balancer must stop routing the domain
    assert events[0] == E.DomainMappingRemoved(tenant=OWNER, domain_name="shop.com", cluster_id=SPEC.cluster_id)
    assert isinstance(events[1], E.ApplicationUndeploying)


def test_undeploy_is_refused_while_tenants_are_signed_up():
    _, state = run(app_state(), signup("a.org"))
    problem = rejected(state, C.UndeployApplication(force=True))
    assert problem.code == 400 and "sign-ups by a.org" in problem.reason


def test_removing_mappings_of_another_tenant_is_404_and_removes_nothing():
    _, state = run(app_state(), signup("a.org"), signup("b.org"), mappings("a.org", "a.com", "www.a.com"))
    problem = rejected(state, C.RemoveDomainMappings(tenant="b.org", domain_names=["a.com"]))
    assert problem.code == 404 and "'a.com'" in problem.reason
    events, state = run(state, C.RemoveDomainMappings(tenant="a.org", domain_names=["www.a.com"]))
    assert [e.domain_name for e in events] == ["www.a.com"] and list(state.domain_mappings) == ["a.com"]


def test_signup_reacts_with_artifact_updated_for_each_repository_cluster():
    (added,), _ = run(app_state(), signup(repoUsername="git", repoPassword="pw"))
    record = envelope(EventRecord, added, AGGREGATE, tenant=OWNER)
    ((target, notice),) = react(record)
    assert target == f"{OWNER}/cluster/{SPEC.cluster_id}"
    assert notice == ArtifactUpdated(
        cluster_id=SPEC.cluster_id,
        repo_url="https://git.example.org/a.git",
        repo_username="git",
        repo_password="pw",
        tenant="a.org",
    )
