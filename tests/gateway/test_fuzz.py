"""Fuzz: schemathesis generates requests from the gateway's own OpenAPI document and
sends them to the app (in-process, its lifespan started, real Redis). Bounded in
examples per operation. No answer may be a 5xx other than the documented 503 (Redis is
up here, so none), and every answer must be one the document lists for the operation.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.fuzz]

MAX_EXAMPLES = 30  # per operation


def _fuzz(operation: Any, problems: list[str], answers: Counter[str]) -> None:
    """Send ``MAX_EXAMPLES`` generated requests to one operation; note what is wrong."""
    documented = operation.definition.raw.get("responses", {})

    @given(case=operation.as_strategy())
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        response = case.call()
        status = response.status_code
        answers[f"{case.method} {operation.path} {status}"] += 1
        where = f"{case.method} {case.formatted_path} -> {status}"
        if status >= 500 and status != 503:
            problems.append(f"{where}: {response.text[:200]}")
        if str(status) not in documented and "default" not in documented:
            problems.append(f"{where}: not in the documented {sorted(documented)}")

    run()


def test_generated_requests_get_no_server_errors(make_settings) -> None:
    from gateway.app import create_app

    app = create_app(make_settings(rate_limit_per_hour=0, rate_limit_analyze_per_hour=0))
    problems: list[str] = []
    answers: Counter[str] = Counter()
    with TestClient(app):  # runs the lifespan: Redis, limiter, queue
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        for result in schema.get_all_operations():
            _fuzz(result.ok(), problems, answers)
    print(f"fuzz: {sum(answers.values())} requests, {len(problems)} problems: {dict(answers)}")
    assert sum(answers.values()) > 3 * MAX_EXAMPLES  # it reached the operations
    assert not problems, "\n".join(sorted(set(problems))[:40])
