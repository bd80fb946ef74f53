"""Prometheus metrics ``acefleet_agent_*`` (one registry per agent instance)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class AgentMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.engines = Gauge("acefleet_agent_engines", "Engines by health", ["health"], registry=r)
        self.engines_free = Gauge(
            "acefleet_agent_engines_free", "Healthy engines without a session", registry=r
        )
        self.streams = Gauge("acefleet_agent_streams", "Sessions known on engines", registry=r)
        self.sessions_reported = Gauge(
            "acefleet_agent_sessions_reported",
            "Sessions the proxy reported (central's claims, static list) whose stats are polled",
            registry=r,
        )
        self.provisions = Counter(
            "acefleet_agent_provisions_total", "Provisioning attempts", ["result"], registry=r
        )
        self.time_to_ready = Histogram(
            "acefleet_agent_engine_time_to_ready_seconds",
            "Container create to get_status answering",
            buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120),
            registry=r,
        )
        self.removed = Counter(
            "acefleet_agent_engines_removed_total", "Engines removed", ["reason"], registry=r
        )
        self.recycled = Counter(
            "acefleet_agent_engines_recycled_total",
            "Engines marked for recycling (drained, replaced once idle)",
            ["reason"],
            registry=r,
        )
        self.recycling = Gauge(
            "acefleet_agent_engines_recycling",
            "Engines draining to be recycled (still carrying sessions)",
            registry=r,
        )
        self.replaced = Counter(
            "acefleet_agent_engines_replaced_total", "Unhealthy engines replaced", registry=r
        )
        self.adopted = Counter(
            "acefleet_agent_engines_adopted_total", "Engines adopted from labels", registry=r
        )
        self.probe_failures = Counter(
            "acefleet_agent_probe_failures_total", "Failed health probes", registry=r
        )
        self.breaker_open = Gauge(
            "acefleet_agent_breaker_open", "1 when provisioning's breaker is open", registry=r
        )
        self.provisioning_blocked = Gauge(
            "acefleet_agent_provisioning_blocked",
            "1 while provisioning is refused for a standing reason (Docker unreachable, VPN down)",
            registry=r,
        )
        self.claims = Counter(
            "acefleet_agent_claims_total", "Local claim requests", ["result"], registry=r
        )
        self.vpn_connected = Gauge(
            "acefleet_agent_vpn_connected", "1 when the VPN is up (0 also when unused)", registry=r
        )
        self.tunnel_up = Gauge(
            "acefleet_agent_tunnel_up",
            "1 when the VPN tunnel's current generation is healthy, 0 otherwise",
            ["tunnel"],
            registry=r,
        )
        self.tunnel_forwarded_port = Gauge(
            "acefleet_agent_tunnel_forwarded_port",
            "Port the VPN provider forwards to the tunnel (0: none)",
            ["tunnel"],
            registry=r,
        )
        self.tunnel_engines = Gauge(
            "acefleet_agent_tunnel_engines",
            "Engines running in the tunnel's network namespace (every generation)",
            ["tunnel"],
            registry=r,
        )
        self.tunnel_rotations = Counter(
            "acefleet_agent_tunnel_rotations_total",
            "Blue/green rotations of a tunnel started, by reason (operator, schedule)",
            ["tunnel", "reason"],
            registry=r,
        )
        self.tunnel_rotation_aborts = Counter(
            "acefleet_agent_tunnel_rotation_aborts_total",
            "Rotations given up on: the new generation was not healthy within "
            "vpn_rotation_timeout_s, the old one stays current",
            ["tunnel"],
            registry=r,
        )
        self.tunnel_drains = Counter(
            "acefleet_agent_tunnel_engine_drains_total",
            "Engines drained off their tunnel, by reason (down, no_port, port_changed, rotation, "
            "restarted)",
            ["reason"],
            registry=r,
        )
        self.heartbeats = Counter(
            "acefleet_agent_heartbeats_total", "Heartbeats to central", ["result"], registry=r
        )
