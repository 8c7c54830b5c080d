"""Schemathesis against the OpenAPI document of the running frontend (`/docs/openapi.json`).

Every operation gets generated requests, valid and invalid by the document, and every response is
checked: no 5xx, the status is documented, the content type and the body match the documented
schema (OpenAI's error shape for every 4xx), invalid data is refused.

Left out on purpose:
- `positive_data_acceptance`: the document cannot say "decodable audio" or "a served model id", so
  requests it calls valid are rightly refused (400 invalid_audio, 404 model_not_found).
- `allow_header_conformance`: Litestar's automatic OPTIONS handler lists only the methods of the
  first handler registered on a path shared by two (GET and POST /v1/speakers, GET / and POST /).

Nothing is excluded for cost: requests with generated audio fail at decoding in milliseconds, and
task routes only queue work for audio that cannot be decoded or URLs that cannot be fetched.
A few examples per operation in `make test`; HYPOTHESIS_PROFILE=fuzz (`make fuzz`) runs many.
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from frontend.app import create_app
from frontend.settings import FrontendSettings
from harness.profiles import load_profile
from harness.stack import Served

load_profile()
EXAMPLES = 300 if os.environ.get("HYPOTHESIS_PROFILE") == "fuzz" else 8
EXCLUDED = ("positive_data_acceptance", "allow_header_conformance")


def operations() -> list[tuple[str, str]]:
    """(operation id, path) of every documented operation, from the app itself (no server needed)."""
    document = create_app(FrontendSettings(models=["tiny.en"])).openapi_schema.to_schema()
    return sorted((op["operationId"], path) for path, item in document["paths"].items()
                  for method, op in item.items() if isinstance(op, dict) and "operationId" in op)


@pytest.fixture(scope="module")
def api_schema(served: Served) -> schemathesis.BaseSchema:
    config = schemathesis.Config.from_dict({"checks": {name: {"enabled": False} for name in EXCLUDED}})
    return schemathesis.openapi.from_url(f"{served.base_url}/docs/openapi.json", config=config)


# (pytest-based collection, `schemathesis.pytest.from_fixture`, fails on pytest 9: one test per operation here.)
@pytest.mark.parametrize(("operation_id", "path"), operations(), ids=[op for op, _ in operations()])
def test_operation_keeps_to_the_document(api_schema: schemathesis.BaseSchema, served: Served, operation_id: str,
                                         path: str) -> None:
    operation = api_schema.find_operation_by_id(operation_id)
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE))

    @given(case=cases)
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case: schemathesis.Case) -> None:
        case.call_and_validate(base_url=served.base_url, timeout=120)

    check()
