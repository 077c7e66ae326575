"""Basic auth is checked with bcrypt once and then remembered: the memory must never let a
changed password or a removed user back in."""

from __future__ import annotations

import pytest

from tests.test_api_platform import platform, tenant  # noqa: F401  (fixtures)

pytestmark = pytest.mark.integration


def test_a_changed_password_ends_the_remembered_login_at_once(platform, tenant):  # noqa: F811
    domain = tenant.get("/whoami").json()["tenant"]
    user = {"userName": "carol", "credential": "first-pw", "role": "user"}
    assert tenant.post("/users", json=user).status_code == 201
    with platform.client(f"carol@{domain}", "first-pw") as carol:
        assert carol.get("/cartridges").status_code == 200  # checked once, now remembered
        assert carol.get("/cartridges").status_code == 200
        changed = tenant.put("/users", json={**user, "credential": "second-pw"})
        assert changed.status_code == 200, changed.text
        refused = carol.get("/cartridges")
        assert refused.status_code == 401 and refused.json()["message"] == "wrong user name or password"
    with platform.client(f"carol@{domain}", "second-pw") as carol:
        assert carol.get("/cartridges").status_code == 200


def test_a_removed_user_cannot_log_in_with_a_remembered_password(platform, tenant):  # noqa: F811
    domain = tenant.get("/whoami").json()["tenant"]
    assert tenant.post("/users", json={"userName": "dave", "credential": "dave-pw", "role": "user"}).status_code == 201
    with platform.client(f"dave@{domain}", "dave-pw") as dave:
        assert dave.get("/cartridges").status_code == 200
        assert tenant.delete("/users/dave").status_code == 200
        assert dave.get("/cartridges").status_code == 401
