"""The compatibility rule of tunnels on the wire: an agent without tunnels sends exactly the keys
it sent before tunnels existed (no ``tunnels`` in a heartbeat, no ``tunnel`` in an engine
report), so a central or proxy older than tunnels (``extra="forbid"``) still accepts it during a
rolling upgrade. An agent with tunnels sends both, always."""

from __future__ import annotations

from typing import Any

from acefleet.wire import EngineReport, Heartbeat, Wire

NO_TUNNEL_KEYS_ENGINE: dict[str, Any] = {"tunnel": True}


def heartbeat_body(heartbeat: Heartbeat, *, tunnels: bool) -> dict[str, Any]:
    if tunnels:
        return heartbeat.model_dump(mode="json")
    return heartbeat.model_dump(
        mode="json", exclude={"tunnels": True, "engines": {"__all__": NO_TUNNEL_KEYS_ENGINE}}
    )


def engine_body(report: EngineReport, *, tunnels: bool) -> dict[str, Any]:
    if tunnels:
        return report.model_dump(mode="json")
    return report.model_dump(mode="json", exclude=NO_TUNNEL_KEYS_ENGINE)


def with_engines(model: Wire, field: str, *, tunnels: bool) -> dict[str, Any]:
    """A response holding engine reports under ``field`` (a list, or one report)."""
    if tunnels:
        return model.model_dump(mode="json")
    value = getattr(model, field)
    rule: Any = NO_TUNNEL_KEYS_ENGINE
    if isinstance(value, list):
        rule = {"__all__": NO_TUNNEL_KEYS_ENGINE}
    return model.model_dump(mode="json", exclude={field: rule})
