"""Property-based requests from the OpenAPI document against a real central: no 5xx, ever, and
no status the document does not list.

Bounded: a few examples per operation, one pass of the fuzzing and examples phases per role
(no --max-time: with it schemathesis repeats its phases until the time is used up). /v1/live is
excluded (an endless event stream), and the 503 of POST /v1/claims is its documented "nothing
fits" answer rather than a failure.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.central.conftest import StartCentral
from tests.central.fleetsim import OPERATOR_KEY, SERVICE_KEY, Agent

ST = Path(sys.executable).parent / "schemathesis"


# "Nothing fits" is a documented 503 of POST /v1/claims, not a server error.
CONFIG = """
[[operations]]
include-path = "/v1/claims"
include-method = "POST"
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "503"]
"""


def _run(url: str, key: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    config = tmp / "schemathesis.toml"
    config.write_text(CONFIG, encoding="utf-8")
    return subprocess.run(
        [
            str(ST),
            "--config-file",
            str(config),
            "run",
            f"{url}/openapi.json",
            "--checks",
            # every status central answers is one the committed OpenAPI documents
            "not_a_server_error,status_code_conformance",
            "--phases",
            "examples,fuzzing",
            "--max-examples",
            "4",
            "--request-timeout",
            "10",
            "--exclude-path",
            "/v1/live",
            "--header",
            f"X-API-Key: {key}",
            "--seed",
            "5",
            "--no-color",
            "--generation-database",
            ":memory:",
            "--workers",
            "1",
            "--no-shrink",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        cwd=tmp,
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
    )


def test_no_server_errors_under_generated_requests(
    start_central: StartCentral, tmp_path: Path
) -> None:
    svc = start_central(subprocess=True, rate_limit_rps="100000")
    with httpx.Client(base_url=svc.url, headers={"X-API-Key": SERVICE_KEY}) as service:
        Agent("edge0", 2).beat(service)  # some state for the generated requests to hit
    for key in (SERVICE_KEY, OPERATOR_KEY):
        result = _run(svc.url, key, tmp_path)
        report = result.stdout[-4000:] + result.stderr[-2000:]
        assert result.returncode == 0, report
        assert "Fuzzing" in result.stdout, report
    assert svc.alive()
    assert "Traceback" not in svc.log()
