"""Prometheus metrics of the HTTP service (names agreed with the deployment's dashboards and alerts).

Every metric is `heed_`-prefixed and labelled by `model` (except `heed_ready`). Each app owns its
registry, so that two apps in one process (tests, tools) do not collide; the registry also holds
prometheus-client's process, platform and GC collectors, under their standard names (the
process's resident memory is `process_resident_memory_bytes`, as for any Prometheus target).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from service.manifest import Manifest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
STEP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)

        self.requests = Counter(
            "heed_requests", "HTTP requests answered", ["model", "route", "status"], registry=registry
        )
        self.request_duration = Histogram(
            "heed_request_duration_seconds",
            "time from request arrival to the end of the response",
            ["model", "route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.time_to_first_token = Histogram(
            "heed_time_to_first_token_seconds",
            "time from request arrival to its first decoded token (queueing and encoder included)",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.time_per_output_token = Histogram(
            "heed_time_per_output_token_seconds",
            "decoding time per generated token after the first, per sequence",
            ["model"],
            buckets=STEP_BUCKETS,
            registry=registry,
        )
        self.queue_depth = Gauge("heed_queue_depth", "requests waiting for admission", ["model"], registry=registry)
        self.decode_batch_size = Histogram(
            "heed_decode_batch_size",
            "rows in each decoder step",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.kv_slots_used = Gauge("heed_kv_slots_used", "KV-cache rows in use", ["model"], registry=registry)
        self.kv_slots_total = Gauge("heed_kv_slots_total", "KV-cache rows available", ["model"], registry=registry)
        self.kv_cache_bytes = Gauge(
            "heed_kv_cache_bytes",
            "bytes the KV cache's buffers have allocated (their grown capacity; 0 when no row is in use)",
            ["model"],
            registry=registry,
        )
        self.input_tokens = Counter("heed_input_tokens", "input tokens admitted", ["model"], registry=registry)
        self.output_tokens = Counter("heed_output_tokens", "tokens generated", ["model"], registry=registry)
        self.encoder_duration = Histogram(
            "heed_encoder_duration_seconds",
            "one encoder pass (an admitted group)",
            ["model"],
            buckets=STEP_BUCKETS,
            registry=registry,
        )
        self.decoder_step_duration = Histogram(
            "heed_decoder_step_duration_seconds",
            "one decoder step for the whole running batch",
            ["model"],
            buckets=STEP_BUCKETS,
            registry=registry,
        )
        self.model_info = Gauge(
            "heed_model_info",
            "served models (value 1)",
            ["model", "task", "architecture", "quantization"],
            registry=registry,
        )
        self.ready = Gauge("heed_ready", "1 when every model is loaded and warmed", registry=registry)

    def add_model(self, manifest: Manifest, kv_rows: int) -> None:
        """Create the model's series up front, so dashboards see zeros rather than gaps."""
        name = manifest.name
        self.model_info.labels(name, manifest.task, manifest.architecture, manifest.quantization).set(1)
        self.kv_slots_total.labels(name).set(kv_rows)
        self.kv_slots_used.labels(name).set(0)
        self.kv_cache_bytes.labels(name).set(0)
        self.queue_depth.labels(name).set(0)
        self.input_tokens.labels(name)
        self.output_tokens.labels(name)

    def render(self) -> bytes:
        return generate_latest(self.registry)
