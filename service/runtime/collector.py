"""Prometheus metrics read from the workers when /metrics is scraped (registered by the engine)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .worker import Worker


class WorkerCollector:
    """The workers' queues, liveness, style caches and tiled passes, lanes' backlog, GPU memory, the memory held
    for admitted requests' images, and readiness."""

    def __init__(self, workers: Sequence[Worker], ready: Callable[[], bool], held_bytes: Callable[[], int]) -> None:
        self.workers, self.ready, self.held_bytes = workers, ready, held_bytes

    def describe(self) -> list[Metric]:
        return []  # collected on demand only

    def collect(self) -> Iterator[Metric]:
        workers = self.workers
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
        ready.add_metric([], float(self.ready()))
        held = GaugeMetricFamily("adain_work_bytes", "Bytes reserved for the images of admitted requests "
                                 "(at most --max-work-bytes)")
        held.add_metric([], float(self.held_bytes()))
        yield from (depth, up, hits, misses, tiled, backlog, gpu, ready, held)
