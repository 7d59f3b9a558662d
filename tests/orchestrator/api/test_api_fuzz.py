"""Property-based fuzzing of the whole API against its own OpenAPI document (schemathesis):
inputs generated from the schema - valid ones and deliberately invalid ones - sent with
working keys so they reach the handlers, must never produce a 5xx.

Operations are driven one by one with ``operation.as_strategy`` rather than
``schemathesis.pytest.from_fixture``, whose subtests do not run on this pytest version;
15 examples per operation and mode keep the run to seconds."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from tests.orchestrator.api.support import ADMIN, SITE, WRITE

MAX_EXAMPLES = 15


def auth_for(path: str) -> dict[str, str]:
    if path.startswith("/v1/admin"):
        return dict(ADMIN)
    if path.startswith("/v1/site"):
        return dict(SITE)
    return dict(WRITE)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_generated_request_makes_a_server_error(app: FastAPI, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    failures: list[str] = []
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            headers = {**(case.headers or {}), **auth_for(case.path)}
            response = case.call(headers=headers)
            case.validate_response(response, checks=[not_a_server_error])

        try:
            run()
        except Unsatisfiable:  # nothing can be invalid about e.g. a free-form token path
            continue
        except Exception as exc:  # collect every operation's failure, then report all
            failures.append(f"{operation.label}: {exc}")
    assert failures == [], "\n".join(failures)
