"""Prometheus metrics of one service instance (its own registry, so several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)


class Metrics:
    """The instruments the service updates (runtime.collector adds what the workers report at scrape time)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("adain_http_requests", "HTTP requests by method, route and status",
                                ["method", "route", "status"], registry=r)
        self.latency = Histogram("adain_http_request_duration_seconds", "HTTP request latency by route", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.stage = Histogram("adain_stage_duration_seconds", "Time per stage of a stylize request "
                               "(decode, queue, model, encode)", ["stage"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("adain_batch_size", "Requests per model run, by worker", ["worker"],
                                    buckets=BATCH_BUCKETS, registry=r)
        self.dropped = Counter("adain_dropped", "Requests refused or dropped, by reason: overloaded, too_slow, "
                               "queue_full, memory, shed, deadline, given_up, abandoned, shutting_down "
                               "(see docs/service.md)",
                               ["reason"], registry=r)
        self.oom = Counter("adain_oom", "Device out-of-memory events: batch split, or a single request rejected",
                           ["outcome"], registry=r)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one HTTP request."""
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def exposition(self) -> bytes:
        """The text format for /metrics."""
        return generate_latest(self.registry)
