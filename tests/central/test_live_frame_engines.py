"""The dashboard frame's engines agree with the operator API's.

The live feed builds its engine list straight from the live state (``views.engine_states``)
instead of through ten thousand ``EngineView`` models (the big-fleet benchmark measured those
models at ~0.2 s of event loop per frame at 500 edges x 20 engines). Every field the frame
shows must still read what ``GET /v1/engines`` says: load with pending claims, placeable, the
agent's and the operator's drain, health and cap.
"""

from __future__ import annotations

import json

import httpx
from websockets.sync.client import connect

from tests.central.conftest import Running
from tests.central.fleetsim import VIEWER_KEY, Agent, claim_body


def test_frame_engines_read_what_the_engine_api_reads(
    central: Running, service: httpx.Client, operator: httpx.Client
) -> None:
    e0, e1 = Agent("edge0", 3, cap=2), Agent("edge1", 2)
    e0.engines[1].draining = True  # drained by its agent
    e1.engines[0].streams = 1  # a session the agent counts
    for a in (e0, e1):
        a.beat(service)
    assert operator.post("/v1/engines/edge0-eng2/drain").status_code == 200
    grant = service.post("/v1/claims", json=claim_body("id:a", "edge0")).json()
    assert grant["kind"] == "engine"
    api = {e["id"]: e for e in operator.get("/v1/engines").json()["items"]}
    with connect(
        f"ws://127.0.0.1:{central.port}/v1/live/ws",
        additional_headers={"X-API-Key": VIEWER_KEY},
        open_timeout=10,
    ) as ws:
        snapshot = json.loads(ws.recv(10))
    assert snapshot["type"] == "snapshot"
    frame = {e["id"]: e for e in snapshot["fleet"]["engines"]}
    assert list(frame) == list(api)  # same engines, same order
    for eid, e in api.items():
        report = e["report"]
        assert frame[eid] == {
            "id": eid,
            "host": e["host"],
            "health": report["health"],
            "load": e["load"],
            "stream_cap": report["stream_cap"],
            "draining": report["draining"] or e["operator_drain"],
            "operator_drain": e["operator_drain"],
            "agent_drain": report["draining"],
            "placeable": e["placeable"],
            "vpn_forwarded": report["vpn_forwarded"],
        }
    # the cases above are all there: a claim's load, both drains, a counted session
    assert frame[grant["engine"]["id"]]["load"] == 1
    assert frame["edge0-eng1"]["agent_drain"]
    assert not frame["edge0-eng1"]["placeable"]
    assert frame["edge0-eng2"]["operator_drain"]
    assert frame["edge0-eng2"]["draining"]
    assert frame["edge1-eng0"]["load"] == 1
    assert not frame["edge1-eng0"]["placeable"]
