"""The agent checks out private repositories with their own credentials, each tenant's sign-up
into its own directory, against a real git server (`git http-backend` behind HTTP basic auth);
tenant input never becomes an option or a shell word, and no password reaches a log."""

from __future__ import annotations

import subprocess

import pytest

from infra.agent.agent import ArtifactError, checkout, tenant_workdir
from infra.auth.secrets import secret_box
from infra.log.kafka import read_to_end
from schemas.records import TOPIC_RECORDS
from schemas.status import ArtifactUpdated
from tests.conftest import wait_until
from tests.git_server import GitServer
from tests.test_agent import CLUSTER, KEY, RunningAgent

pytestmark = pytest.mark.integration
PASSWORDS = {"member": "m3mber-pw", "a.org": "tenant-a-pw", "b.org": "tenant-b-pw"}


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "git"
    root.mkdir()
    made = GitServer(root)
    yield made
    made.stop()


def raw_bytes(settings) -> bytes:
    """Every record of every topic of the test, keys and values, as the broker holds them."""
    out = []
    for kind in TOPIC_RECORDS:
        for raw in read_to_end(settings, kind, decode_records=False):
            out += [raw.key or b"", raw.value or b""]
    return b"\n".join(out)


def test_private_repositories_check_out_with_their_credentials_each_tenant_in_its_own_directory(
    settings, server, tmp_path
):
    box = secret_box(settings)
    member_url, _ = server.repository("member", "deployer", PASSWORDS["member"], "member site")
    a_url, a_work = server.repository("tenant-a", "alice", PASSWORDS["a.org"], "site of a")
    b_url, _ = server.repository("tenant-b", "bob", PASSWORDS["b.org"], "site of b")
    for_us = lambda password: box.for_instances(box.seal(password), KEY)  # noqa: E731 - what the platform sends
    workdir = tmp_path / "app"
    agent = RunningAgent(
        settings,
        workdir,
        repo_url=member_url,
        repo_username="deployer",
        repo_password=for_us(PASSWORDS["member"]),
        cartridge_key=box.cartridge_key(KEY),
    )
    try:
        wait_until(
            lambda: any(s == "InstanceActivated" and r for s, r in agent.statuses()),
            timeout=30,
            message="the member's private repository checked out",
        )
        assert (workdir / "index.html").read_text() == "member site"
        for tenant, url, user in (("a.org", a_url, "alice"), ("b.org", b_url, "bob")):
            agent.notify(
                ArtifactUpdated(
                    cluster_id=CLUSTER,
                    repo_url=url,
                    repo_username=user,
                    repo_password=for_us(PASSWORDS[tenant]),
                    tenant=tenant,
                )
            )
        a_dir, b_dir = tenant_workdir(workdir, "a.org"), tenant_workdir(workdir, "b.org")
        wait_until(  # checked out whole: git creates a file before it writes its content
            lambda: all((d / "index.html").exists() and (d / "index.html").read_text() for d in (a_dir, b_dir)),
            timeout=30,
            message="both tenants' sign-ups checked out",
        )
        assert [(d / "index.html").read_text() for d in (workdir, a_dir, b_dir)] == [
            "member site",
            "site of a",
            "site of b",
        ]  # nobody overwrote anybody

        newer = server.commit(a_work, "site of a, v2")
        agent.notify(
            ArtifactUpdated(
                cluster_id=CLUSTER,
                repo_url=a_url,
                repo_username="alice",
                repo_password=for_us(PASSWORDS["a.org"]),
                tenant="a.org",
            )
        )
        wait_until(lambda: agent.agent.tenant_revisions.get("a.org") == newer, timeout=30, message="tenant a's update")
        assert (a_dir / "index.html").read_text() == "site of a, v2"
        assert (b_dir / "index.html").read_text() == "site of b"

        # another tenant's password does not open tenant b's repository: refused by the server
        refused = len(server.refused)
        agent.notify(
            ArtifactUpdated(
                cluster_id=CLUSTER,
                repo_url=b_url,
                repo_username="bob",
                repo_password=for_us(PASSWORDS["a.org"]),
                tenant="b.org",
            )
        )
        wait_until(
            lambda: "tenant-b.git bob" in server.refused[refused:], timeout=30, message="the wrong password refused"
        )
        # a password sealed for another cluster does not open here at all
        other = box.for_instances(box.seal(PASSWORDS["b.org"]), KEY.replace(CLUSTER, "other.domain"))
        agent.notify(
            ArtifactUpdated(
                cluster_id=CLUSTER, repo_url=b_url, repo_username="bob", repo_password=other, tenant="b.org"
            )
        )
        agent.notify(ArtifactUpdated(cluster_id=CLUSTER, repo_url=b_url, tenant="../escape"))
        wait_until(
            lambda: b"not a domain name" in raw_bytes(settings), timeout=30, message="the bad tenant name refused"
        )
    finally:
        agent.stop()
    logged = raw_bytes(settings)
    assert b"another cluster" in logged or b"does not open" in logged or b"no part" in logged
    for password in PASSWORDS.values():
        assert password.encode() not in logged
        for checkout_dir in (workdir, a_dir, b_dir):
            assert password not in (checkout_dir / ".git" / "config").read_text()
    assert (b_dir / "index.html").read_text() == "site of b"
    assert not (tmp_path / "escape").exists()


@pytest.mark.parametrize(
    "url, commit",
    [
        ("--upload-pack=touch {marker}", None),
        ("ext::sh -c touch% {marker}", None),
        ("{origin}", "--output={marker}"),
    ],
    ids=["url-as-option", "ext-transport-runs-commands", "commit-as-option"],
)
def test_tenant_input_is_data_never_an_option_or_a_command(tmp_path, url, commit):
    origin = tmp_path / "origin"
    origin.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main", str(origin)], check=True)
    marker = tmp_path / "marker"
    with pytest.raises(ArtifactError):
        checkout(
            url.format(marker=marker, origin=origin),
            tmp_path / "work",
            commit.format(marker=marker) if commit else None,
        )
    assert not marker.exists()


def test_a_password_written_into_a_url_is_masked_in_what_git_logs(tmp_path):
    lines = []
    with pytest.raises(ArtifactError) as caught:
        checkout(
            "http://user:hunter2@127.0.0.1:9/repo.git", tmp_path / "work", output=lambda level, text: lines.append(text)
        )
    assert lines and not any("hunter2" in line for line in lines)
    assert "hunter2" not in str(caught.value)
