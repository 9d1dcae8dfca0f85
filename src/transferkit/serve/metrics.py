"""Prometheus metrics of one service, in a registry of its own (several apps in one process stay apart)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info


class ServiceMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("transferkit_requests", "HTTP requests by route and status", ["route", "status"],
                                registry=r)
        self.latency = Histogram("transferkit_request_seconds", "Request latency (seconds) by route", ["route"],
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30), registry=r)
        self.batch_inputs = Histogram("transferkit_batch_inputs", "Inputs per model batch",
                                      buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512), registry=r)
        self.batch_requests = Histogram("transferkit_batch_requests", "Requests merged into one model batch",
                                        buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r)
        self.queue = Gauge("transferkit_queue_inputs", "Inputs waiting to be batched", registry=r)
        self.labels = Counter("transferkit_predicted_labels", "Predicted labels (classification, relations)",
                              ["label"], registry=r)
        self.rejected = Counter("transferkit_rejected", "Requests refused before the model ran, by reason",
                                ["reason"], registry=r)
        self.model = Info("transferkit_model", "The model being served", registry=r)
        self.model_version = Gauge("transferkit_model_loaded", "1 for the version being served", ["version"],
                                   registry=r)
        self.swaps = Counter("transferkit_model_swaps", "Model versions swapped in", registry=r)

    def set_model(self, version: str, info: dict[str, str], previous: str | None) -> None:
        if previous is not None:
            self.model_version.labels(version=previous).set(0)
        self.model_version.labels(version=version).set(1)
        self.model.info({"version": version, **info})
