"""Prometheus metrics of one service instance (its own registry, so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

# Request latencies of an inspection service: milliseconds to a few seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "defectkit_requests",
            "HTTP requests by route template, method and status code",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "defectkit_request_latency_seconds",
            "HTTP request latency by route template",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.verdicts = Counter(
            "defectkit_verdicts", "Inspections by the model's verdict", ["verdict"], registry=self.registry
        )
        self.unknown_alerts = Counter(
            "defectkit_unknown_alerts",
            "Inspections judged unknown (routed to a person)",
            registry=self.registry,
        )
        self.rejected = Counter(
            "defectkit_rejected_inputs", "Inputs refused, by reason", ["reason"], registry=self.registry
        )
        self.batch_size = Histogram(
            "defectkit_inference_batch_size",
            "Images per model call (dynamic micro-batching)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )
        self.reviews = Counter(
            "defectkit_reviews",
            "Operator reviews by agreement with the model",
            ["agreement"],
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
