"""The OpenAPI document is the whole truth about bodies central cannot read.

A body that is not even UTF-8 is answered 400 by the framework before any validation (a JSON that
does not parse, or does not fit the schema, is a 422). Every operation that takes a body must
document that 400 with the error body, or a client generated from the document (and schemathesis)
meets a status it was never told about.
"""

from __future__ import annotations

from typing import Any

import httpx

from tests.central.conftest import Running
from tests.central.fleetsim import OPERATOR_KEY, SERVICE_KEY

UNREADABLE = b'{"key": "\x80"}'  # not UTF-8: the JSON decoder cannot even start
# The operations the review named: the claim fast path hands an unreadable body on to FastAPI.
NAMED = {
    ("post", "/v1/claims"),
    ("post", "/v1/events"),
    ("post", "/v1/hosts/{host}/heartbeat"),
    ("put", "/v1/proxies/{proxy_id}/streams"),
}


def _send(svc: Running, method: str, path: str, key: str) -> httpx.Response:
    url = path.replace("{", "").replace("}", "")  # every path parameter gets its own name
    headers = {"X-API-Key": key, "content-type": "application/json"}
    with httpx.Client(base_url=svc.url, timeout=10) as client:
        return client.request(method.upper(), url, content=UNREADABLE, headers=headers)


def test_every_status_for_an_unreadable_body_is_documented(central: Running) -> None:
    doc: dict[str, Any] = httpx.get(f"{central.url}/openapi.json", timeout=10).json()
    with_body = [
        (method, path, op)
        for path, ops in doc["paths"].items()
        for method, op in ops.items()
        if "requestBody" in op
    ]
    assert NAMED.issubset((m, p) for m, p, _ in with_body)
    answered: dict[tuple[str, str], int] = {}
    for method, path, op in with_body:
        r = _send(central, method, path, OPERATOR_KEY)
        if r.status_code == 403:  # a service operation
            r = _send(central, method, path, SERVICE_KEY)
        answered[(method, path)] = r.status_code
        documented = op["responses"].get(str(r.status_code))
        assert documented is not None, (method, path, r.status_code, r.text)
        schema = documented["content"]["application/json"]["schema"]
        if schema == {"$ref": "#/components/schemas/ErrorBody"}:
            assert r.json()["error"]["code"], (method, path, r.text)
        else:  # the import's 422 lists bad lines in its own report
            assert r.status_code != 400, (method, path, schema)
    for op_key in NAMED:
        assert answered[op_key] == 400, (op_key, answered[op_key])
