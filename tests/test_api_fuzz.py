"""Fuzzing the API from its own OpenAPI document (schemathesis): whatever is sent, no 5xx.

Hypothesis drives each operation's strategy directly (schemathesis's pytest plugin does not
run under this pytest), a few examples per operation, as the super-admin.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.test_api_platform import ADMIN_PASSWORD, platform  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration
EXAMPLES_PER_OPERATION = 5


def test_no_input_makes_the_api_fail_with_a_server_error(platform):
    schema = schemathesis.openapi.from_url(f"{platform.url}/api/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 30  # every route is in the document
    # a server-sent event stream never ends: its parameters are checked by tests of their own
    operations = [o for o in operations if not o.path.endswith("/stream")]
    # the mock IaaS's routes proxy to its own part, not run here (503 naming its URL); its
    # answers to bad input are tested against the running part in tests/test_mock_iaas*.py
    operations = [o for o in operations if not o.path.startswith("/mock-iaas/")]
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES_PER_OPERATION, database=None, suppress_health_check=list(HealthCheck))
        def no_server_error(case) -> None:
            case.call_and_validate(auth=("admin", ADMIN_PASSWORD), checks=[not_a_server_error], timeout=60)

        no_server_error()
