"""Prometheus metrics of one service instance (its own registry, so several apps can live in one process)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from .engine import Engine

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)


class Metrics:
    """The instruments the service updates, and the collector that reads the engine's state at scrape time."""

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
                               "queue_full, deadline, given_up, abandoned, shutting_down (see docs/service.md)",
                               ["reason"], registry=r)
        self.oom = Counter("adain_oom", "Device out-of-memory events: batch split, or a single request rejected",
                           ["outcome"], registry=r)

    def watch(self, engine: Engine) -> None:
        """Report the engine's queues, workers, style caches and GPU memory."""
        self.registry.register(_EngineCollector(engine))

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one HTTP request."""
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def exposition(self) -> bytes:
        """The text format for /metrics."""
        return generate_latest(self.registry)


class _EngineCollector:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def describe(self) -> list[Metric]:
        return []  # collected on demand only

    def collect(self) -> Iterator[Metric]:
        import torch

        workers = self.engine.workers
        depth = GaugeMetricFamily("adain_queue_depth", "Requests waiting in a worker's queue", labels=["worker"])
        up = GaugeMetricFamily("adain_worker_up", "1 while the worker is alive", labels=["worker"])
        hits = CounterMetricFamily("adain_style_cache_hits", "Style statistics found in the cache", labels=["worker"])
        misses = CounterMetricFamily("adain_style_cache_misses", "Style statistics computed (cache misses)",
                                     labels=["worker"])
        tiled = CounterMetricFamily("adain_tiled_passes", "Encoder/decoder passes run in tiles (large images)",
                                    labels=["worker"])
        backlog = GaugeMetricFamily("adain_backlog_seconds", "Estimated seconds of work queued or running, by worker "
                                    "and lane", labels=["worker", "lane"])
        gpu = GaugeMetricFamily("adain_gpu_memory_bytes", "GPU memory held by PyTorch", labels=["device", "kind"])
        for w in workers:
            depth.add_metric([w.name], w.depth)
            up.add_metric([w.name], float(w.alive))
            hits.add_metric([w.name], w.stylizer.cache.hits)
            misses.add_metric([w.name], w.stylizer.cache.misses)
            tiled.add_metric([w.name], w.stylizer.tiled_passes)
            for lane in w.lanes:
                backlog.add_metric([w.name, lane.kind], lane.backlog_s)
        for dev in sorted({str(w.stylizer.device) for w in workers if w.stylizer.device.type == "cuda"}):
            gpu.add_metric([dev, "allocated"], torch.cuda.memory_allocated(dev))
            gpu.add_metric([dev, "reserved"], torch.cuda.memory_reserved(dev))
            gpu.add_metric([dev, "peak_allocated"], torch.cuda.max_memory_allocated(dev))
        ready = GaugeMetricFamily("adain_ready", "1 when the model is loaded and warmed up")
        ready.add_metric([], float(self.engine.ready))
        yield from (depth, up, hits, misses, tiled, backlog, gpu, ready)
