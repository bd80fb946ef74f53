"""How each read command shows central's JSON to a person (``--json`` skips all of this)."""

from __future__ import annotations

from typing import Any

from acefleetctl.tables import age, cell, short, table, when


def status(fleet: dict[str, Any], url: str) -> str:
    hosts = fleet.get("hosts", {})
    lines = [
        (
            "central",
            url
            + ("  (warming up: live state still being rebuilt)" if fleet.get("warming_up") else ""),
        ),
        ("up since", f"{fleet.get('started_at')} ({age(fleet.get('started_at'))})"),
        ("hosts", ", ".join(f"{hosts.get(s, 0)} {s}" for s in ("live", "stale", "lost"))),
        (
            "engines",
            f"{fleet.get('engines')} ({fleet.get('engines_placeable')} placeable, "
            f"{fleet.get('slots_free')} free slots)",
        ),
        (
            "claims",
            f"{fleet.get('claims_pending')} pending, {fleet.get('claims_confirmed')} confirmed",
        ),
        (
            "streams",
            f"{fleet.get('streams')} with {fleet.get('viewers')} viewers{_standbys(fleet)}",
        ),
        (
            "buffer",
            f"{fleet.get('warm_buffer_per_edge')} free engines per edge, fleet max "
            f"{_fleet_max(fleet.get('fleet_max_engines'))}",
        ),
    ]
    return pairs(lines)


def _standbys(fleet: dict[str, Any]) -> str:
    """ ", N warm standbys" when there are any (a second session kept ready per channel)."""
    n = fleet.get("standby_streams") or 0
    return f", {n} warm standby" + ("s" if n != 1 else "") if n else ""


def pairs(lines: list[tuple[str, Any]]) -> str:
    width = max(len(k) for k, _ in lines)
    return "\n".join(f"{k.ljust(width)}  {cell(v)}" for k, v in lines)


def _fleet_max(value: Any) -> str:
    return "none" if value == 0 else cell(value)


def _drain(host: dict[str, Any]) -> str:
    who = [
        w
        for w, on in (
            ("operator", host.get("operator_drain")),
            ("agent", host.get("agent_draining")),
        )
        if on
    ]
    return ",".join(who) if who else "no"


def hosts(items: list[dict[str, Any]]) -> str:
    rows = [
        [
            h["name"],
            h["status"],
            age(h.get("last_heartbeat_at")),
            f"{h['engines_healthy']}/{h['engines']}/{h['max_engines']}",
            f"{h['streams']}/{h['stream_cap']}",
            _drain(h),
            h.get("provisioning", {}).get("state"),
        ]
        for h in items
    ]
    headers = ["HOST", "STATUS", "BEAT", "ENGINES ok/all/max", "STREAMS", "DRAIN", "PROVISIONING"]
    return table(headers, rows, empty="(no host has heartbeated)")


def host(h: dict[str, Any]) -> str:
    vpn = h.get("vpn", {})
    prov = h.get("provisioning", {})
    return pairs(
        [
            ("host", h["name"]),
            ("status", f"{h['status']} (last heartbeat {age(h.get('last_heartbeat_at'))} ago)"),
            ("agent", h.get("agent_url")),
            ("proxy", h.get("proxy_url")),
            (
                "engines",
                f"{h['engines_healthy']} healthy of {h['engines']}, max {h['max_engines']}",
            ),
            ("streams", f"{h['streams']} of {h['stream_cap']}"),
            ("draining", _drain(h)),
            ("vpn", _vpn(vpn)),
            ("tunnels", _tunnel_states(h.get("tunnels") or [])),
            (
                "provisioning",
                prov.get("state") + (f" ({prov['reason']})" if prov.get("reason") else ""),
            ),
        ]
    )


def _tunnel_states(items: list[dict[str, Any]]) -> str:
    if not items:
        return "none"
    return ", ".join(f"{t['name']} {t['state']}" for t in sorted(items, key=lambda t: t["name"]))


def tunnels(hosts: list[dict[str, Any]]) -> str:
    """One row per tunnel of every host, hosts and tunnels by name."""
    rows = [
        [
            h["name"],
            t["name"],
            t["state"],
            t.get("public_ip"),
            t.get("forwarded_port"),
            f"{t['engines']}/{t['engine_cap']}",
            t.get("generation"),
            age(t.get("created_at")),
            age(t.get("state_since")),
            t.get("reason"),
        ]
        for h in sorted(hosts, key=lambda h: str(h["name"]))
        for t in sorted(h.get("tunnels") or [], key=lambda t: str(t["name"]))
    ]
    headers = [
        "HOST",
        "TUNNEL",
        "STATE",
        "PUBLIC IP",
        "FWD PORT",
        "ENGINES",
        "GEN",
        "AGE",
        "IN STATE",
        "REASON",
    ]
    return table(headers, rows, empty="(no edge reports VPN tunnels)")


def _vpn(vpn: dict[str, Any]) -> str:
    if not vpn.get("enabled"):
        return "off"
    return f"connected={cell(vpn.get('connected'))} port={cell(vpn.get('forwarded_port'))}"


def engine_stats(e: dict[str, Any]) -> dict[str, Any]:
    """The latest engine stats: central's top-level ``stats``, else the agent's report's."""
    return e.get("stats") or e.get("report", {}).get("stats") or {}


def engines(items: list[dict[str, Any]]) -> str:
    rows = []
    for e in items:
        report, stats = e.get("report", {}), engine_stats(e)
        rows.append(
            [
                e["id"],
                e["host"],
                report.get("health"),
                f"{e['load']}/{report.get('stream_cap')}",
                e["claims"],
                e["placeable"],
                "operator"
                if e.get("operator_drain")
                else "agent"
                if report.get("draining")
                else "no",
                stats.get("peers"),
                stats.get("speed_down_kbps"),
                stats.get("speed_up_kbps"),
                _stream_state(e),
            ]
        )
    headers = [
        "ENGINE",
        "HOST",
        "HEALTH",
        "LOAD",
        "CLAIMS",
        "PLACEABLE",
        "DRAIN",
        "PEERS",
        "DOWN kbps",
        "UP kbps",
        "STATE",
    ]
    return table(headers, rows, empty="(no engines)")


def engine(e: dict[str, Any]) -> str:
    report, stats = e.get("report", {}), engine_stats(e)
    return pairs(
        [
            ("engine", e["id"]),
            ("host", f"{e['host']} ({e['host_status']})"),
            ("endpoint", report.get("endpoint")),
            ("health", report.get("health")),
            ("load", f"{e['load']} of {report.get('stream_cap')} ({e['claims']} claims)"),
            ("placeable", e["placeable"]),
            (
                "draining",
                "operator"
                if e.get("operator_drain")
                else "agent"
                if report.get("draining")
                else "no",
            ),
            ("state", _stream_state(e)),
            ("peers", stats.get("peers")),
            (
                "speed",
                f"down {cell(stats.get('speed_down_kbps'))} kbps, "
                f"up {cell(stats.get('speed_up_kbps'))} kbps",
            ),
        ]
    )


def _stream_state(s: dict[str, Any]) -> str:
    if s.get("degraded"):
        return f"degraded ({s.get('degraded_reason') or '?'})"
    return "ok"


def streams(items: list[dict[str, Any]]) -> str:
    rows = [
        [
            short(s["stream_id"], 20),
            s["host"],
            short(s["content_key"]),
            s.get("engine_id"),
            f"{s.get('source')} (standby)" if s.get("standby") else s.get("source"),
            s["viewers"],
            s.get("peers"),
            s.get("speed_down_kbps"),
            _stream_state(s),
            age(s.get("started_at")),
        ]
        for s in items
    ]
    headers = [
        "STREAM",
        "HOST",
        "CONTENT",
        "ENGINE",
        "SOURCE",
        "VIEWERS",
        "PEERS",
        "DOWN kbps",
        "STATE",
        "AGE",
    ]
    return table(headers, rows, empty="(no live streams)")


def claims(items: list[dict[str, Any]]) -> str:
    rows = [
        [
            c["claim_id"],
            c["kind"],
            short(c["content_key"]),
            c["host"],
            c.get("engine_id") or c.get("relay_from"),
            "confirmed" if c["confirmed"] else "pending",
            short(c.get("stream_id"), 20),
            age(c.get("created_at")),
        ]
        for c in items
    ]
    headers = ["CLAIM", "KIND", "CONTENT", "HOST", "ENGINE/RELAY", "STATE", "STREAM", "AGE"]
    # Central lists only the claims a key may release: all for operators, none for viewers.
    return table(headers, rows, empty="(no claims this key may see: operators see all)")


def audit(items: list[dict[str, Any]]) -> str:
    rows = [
        [
            when(e.get("at")),
            e["actor"],
            e["action"],
            short(e["target"], 34),
            short(_detail(e.get("detail") or {}), 60),
            e.get("client"),
        ]
        for e in items
    ]
    headers = ["AT", "ACTOR", "ACTION", "TARGET", "DETAIL", "CLIENT"]
    return table(headers, rows, empty="(no audit entries)")


def _detail(detail: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in detail.items()) or "-"


def history(items: list[dict[str, Any]]) -> str:
    rows = [
        [
            short(s["stream_id"], 20),
            s["host"],
            short(s["content_key"]),
            s.get("engine_id"),
            when(s.get("started_at")),
            when(s.get("ended_at")) if s.get("ended_at") else "live",
            s.get("end_reason"),
            s.get("peak_viewers"),
        ]
        for s in items
    ]
    headers = ["STREAM", "HOST", "CONTENT", "ENGINE", "STARTED", "ENDED", "REASON", "PEAK"]
    return table(headers, rows, empty="(no sessions recorded)")


def buffer(p: dict[str, Any]) -> str:
    head = (
        f"warm buffer {p['warm_buffer_per_edge']} free engines per edge; fleet max "
        f"{_fleet_max(p['fleet_max_engines'])}, {p['fleet_engines']} engines now"
    )
    rows = [
        [
            h["host"],
            h["status"],
            h["target"],
            h["free"],
            h["outstanding"],
            f"{h['engines']}/{h['max_engines']}",
            h.get("blocked_reason"),
        ]
        for h in p.get("hosts", [])
    ]
    headers = ["HOST", "STATUS", "TARGET", "FREE", "ASKED", "ENGINES", "BLOCKED"]
    return head + "\n" + table(headers, rows, empty="(no hosts)")
