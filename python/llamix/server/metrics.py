"""``GET /metrics``: the server's state in Prometheus' text format (prometheus_client).

- ``llamix_requests_total{endpoint, status}``: answered requests.
- ``llamix_request_duration_seconds`` / ``llamix_time_to_first_token_seconds``: histograms of
  generation requests (wall time from arrival; to the first sampled token).
- ``llamix_prompt_tokens_total`` / ``llamix_tokens_generated_total``: tokens evaluated from
  prompts and tokens sampled, by the batch engine.
- ``llamix_tokens_per_second``: tokens sampled per second of engine work (all slots together).
- ``llamix_queue_depth``, ``llamix_slots_busy``, ``llamix_slots``: waiting requests, busy and
  total KV cache slots.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ..model import BatchEngine

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _EngineCollector:
    """The engine's counters and gauges, read at scrape time."""

    def __init__(self, engine: BatchEngine):
        self.engine = engine

    def collect(self):
        e = self.engine
        yield CounterMetricFamily("llamix_prompt_tokens", "prompt tokens evaluated", value=e.n_prompt_tokens)
        yield CounterMetricFamily("llamix_tokens_generated", "tokens sampled", value=e.n_generated)
        yield GaugeMetricFamily("llamix_tokens_per_second", "tokens sampled per second of engine work",
                                value=e.n_generated / e.busy_s if e.busy_s else 0.0)
        yield GaugeMetricFamily("llamix_queue_depth", "requests waiting for a slot", value=e.queue_depth)
        yield GaugeMetricFamily("llamix_slots_busy", "KV cache slots running a request", value=e.slots_busy)
        yield GaugeMetricFamily("llamix_slots", "KV cache slots", value=e.n_parallel)


class Metrics:
    """One server's registry (not the process-wide default: several servers may run in a process)."""

    def __init__(self, engine: BatchEngine):
        self.registry = CollectorRegistry()
        self.registry.register(_EngineCollector(engine))
        self.requests = Counter("llamix_requests", "answered requests", ["endpoint", "status"], registry=self.registry)
        self.duration = Histogram("llamix_request_duration_seconds", "generation requests' wall time",
                                  registry=self.registry)
        self.ttft = Histogram("llamix_time_to_first_token_seconds", "time from arrival to the first sampled token",
                              registry=self.registry)

    def text(self) -> bytes:
        return generate_latest(self.registry)
