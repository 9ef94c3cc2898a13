"""The served OpenAPI document against the real master, by schemathesis.

A real master process and two authorised workers, in each mode: secure (the default:
HTTPS, every call but /health and the join needs a token; the test uses the master's
admin token from its data dir) and ``--insecure`` (plain HTTP, the historic rule, with
CLOUDAI_ADMIN_TOKEN so that POST and DELETE are exercised too). Schemathesis loads
``GET /api/openapi.json`` as served and runs its engine, every phase (examples,
coverage, fuzzing, stateful) and every default check, on every operation: no server
error, status codes, content types, response bodies and headers as documented, invalid
data refused, 405 with ``Allow`` for undocumented methods, 401 without the token or with
a wrong one. The master is a throwaway: generated calls may authorise and unregister
workers, make and revoke tokens (the one the test uses is shielded, below); submitted
tasks find no worker process (they are answered 404 or 503), so nothing is run; joins
carry no valid token (403).

The engine is driven directly rather than through schemathesis's pytest plugin, whose
lazily loaded schemas (needed to test a server a fixture starts) do not run under the
pytest this project uses.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import schemathesis.hooks
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, from_schema
from schemathesis.engine.events import (
    EngineFinished,
    FatalError,
    NonFatalError,
    ScenarioFinished,
)
from schemathesis.hooks import HookContext
from schemathesis.schemas import BaseSchema

from cloudai.master.admin_api import OPERATIONS
from tests.harness import Process, admin_client, start_master

TOKEN = "schemathesis-token"
"""The insecure master's CLOUDAI_ADMIN_TOKEN (a secure one's comes from its data dir)."""
MAX_EXAMPLES = 40
"""Per operation and phase; operations without inputs stop early (nothing new to try)."""


@pytest.fixture(params=["secure", "insecure"])
def master(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Process]:
    secure = request.param == "secure"
    env = {} if secure else {"CLOUDAI_ADMIN_TOKEN": TOKEN}
    process = start_master(tmp_path, secure=secure, **env)
    try:
        api = admin_client(process, None if secure else TOKEN)
        api.register("w1", "127.0.0.1:9")  # nothing listens there: it stays "waiting"
        api.register("w2")
        process.extra["token"] = api.token
        yield process
    finally:
        process.kill()


def _shield(token: str) -> Callable[..., None]:
    """A ``before_call`` hook that keeps generated calls from revoking ``token``, the one
    the test authenticates with (the stateful phase reuses ids from GET /api/tokens)."""
    token_id = token.split(".")[1] if token.count(".") == 2 else None

    def before_call(context: HookContext, case: Any, **kwargs: Any) -> None:
        parameters = case.path_parameters
        if token_id is not None and parameters and parameters.get("token_id") == token_id:
            case.path_parameters = {**parameters, "token_id": "0" * 12}

    return before_call


@pytest.mark.timeout(240)
def test_the_master_honours_its_served_document(master: Process) -> None:
    token = master.extra["token"]
    ca_file = master.extra.get("ca_file")
    auth = {"Authorization": f"Bearer {token}"}
    config = SchemathesisConfig.from_dict(
        {
            "base-url": master.extra["http"],
            "headers": auth,
            "tls-verify": ca_file or True,
            "request-timeout": 10,
            # 503 is a documented answer, not a fault of the master: the target worker is
            # authorised but not connected (w1, w2 here). Every other 5xx still fails.
            "checks": {
                "not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "503"]},
                # 422: a join whose certificate request is well-formed JSON but no CSR (the
                # stateful phase can pass a real join token to POST /api/join).
                "positive_data_acceptance": {
                    "expected-statuses": [
                        "2xx",
                        "3xx",
                        "401",
                        "403",
                        "404",
                        "409",
                        "422",
                        "429",
                        "5xx",
                    ]
                },
            },
            "generation": {
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "database": "none",
            },
        }
    )
    schema = schemathesis.openapi.from_url(
        f"{master.extra['http']}/api/openapi.json",
        config=config,
        headers=auth,
        verify=ca_file or True,
    )

    shield = schemathesis.hook("before_call")(_shield(token))  # a global hook: undone below
    try:
        _run(schema)
    finally:
        schemathesis.hooks.unregister(shield)


def _run(schema: BaseSchema) -> None:
    failures: list[str] = []
    errors: list[str] = []
    tested: set[str] = set()
    cases: Counter[str] = Counter()
    finished = None
    for event in from_schema(schema).execute():
        if isinstance(event, ScenarioFinished) and event.label:
            if event.status != Status.SKIP:
                tested.add(event.label)
            cases[event.label] += len(event.recorder.cases)
            for checks in event.recorder.checks.values():
                for check in checks:
                    if check.status == Status.FAILURE and check.failure_info is not None:
                        failure = check.failure_info.failure
                        failures.append(
                            f"{event.phase} {event.label}: {check.name}: {failure.title}\n"
                            f"{failure.message}\n{check.failure_info.code_sample}"
                        )
        elif isinstance(event, NonFatalError | FatalError):
            errors.append(str(getattr(event, "info", event)))
        elif isinstance(event, EngineFinished):
            finished = event

    assert finished is not None
    print(f"schemathesis: {sum(cases.values())} calls in {finished.running_time:.1f} s", cases)
    assert not errors, "\n\n".join(errors)
    assert not failures, f"{len(failures)} failures:\n\n" + "\n\n".join(dict.fromkeys(failures))
    # Every operation served but the document itself (schemathesis leaves it out).
    served = {f"{method.upper()} {path}" for path, item in schema.raw_schema["paths"].items()
              for method in item}  # fmt: skip
    assert served <= {f"{op.method} {op.path}" for op in OPERATIONS}
    documented = served - {"GET /api/openapi.json"}
    assert tested == documented, f"not tested: {documented - tested}"
    assert all(cases[label] > 0 for label in documented), cases
