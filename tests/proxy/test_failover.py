"""The failover rule (proxy/failover.py) on its own; the end-to-end failover is in tests/fleet."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from proxy.failover import FailoverBudget


def _budget(failovers: int) -> tuple[FailoverBudget, CollectorRegistry]:
    registry = CollectorRegistry()
    counter = Counter("failovers", "test", registry=registry)
    return FailoverBudget(failovers, counter), registry


def _count(registry: CollectorRegistry) -> float:
    value = registry.get_sample_value("failovers_total")
    assert value is not None
    return value


def test_a_watched_channel_fails_over_until_the_budget_is_spent() -> None:
    budget, registry = _budget(2)
    assert budget.take(engine_fault=True, watched=True)
    assert budget.take(engine_fault=True, watched=True)
    assert not budget.take(engine_fault=True, watched=True)
    assert _count(registry) == 2


def test_no_failover_without_viewers_or_for_the_content_itself() -> None:
    budget, registry = _budget(2)
    assert not budget.take(engine_fault=True, watched=False)
    assert not budget.take(engine_fault=False, watched=True)
    assert _count(registry) == 0
    assert budget.left == 2


def test_a_live_upstream_refills_the_budget() -> None:
    budget, _ = _budget(1)
    assert budget.take(engine_fault=True, watched=True)
    assert not budget.take(engine_fault=True, watched=True)
    budget.upstream_live()
    assert budget.take(engine_fault=True, watched=True)
