"""Live experiment tracking to MLflow (`tracking.mlflow: true`): an observer of the loop's events.

Training log lines and validations go to an MLflow run as they happen (step-indexed metrics such as
`train/loss`, `validation/accuracy`), in the registry's tracking URI and experiment, so a long run can be watched
in `mlflow ui` while it trains. The run id is kept in RUN/tracking.json: a resumed run continues the same MLflow run,
and the registry logs the params, final metrics and artifacts into it and points the model version at it.
TensorBoard (`tracking.tensorboard`) is written by the loop's metrics logger itself.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, ClassVar

from transferkit.methods.base import Method, MethodConfig

log = logging.getLogger(__name__)
FILE = "tracking.json"


class MLflowTrackerConfig(MethodConfig):
    method: ClassVar[str] = "mlflow_tracker"
    summary: ClassVar[str] = "live metrics to MLflow"
    affects_results: ClassVar[bool] = False


class MLflowTracker(Method):
    Config = MLflowTrackerConfig

    def __init__(self, run_dir: Path, name: str, uri: str) -> None:
        super().__init__(MLflowTrackerConfig())
        self.run_dir, self.run_name, self.uri = Path(run_dir), name, uri
        self.client: Any = None
        self.run_id: str | None = None

    def _start(self) -> None:
        from transferkit.registry import _client, _experiment

        self.client = _client(self.uri)
        saved = self.run_dir / FILE
        if saved.is_file():  # a resumed run: the same MLflow run
            self.run_id = json.loads(saved.read_text())["mlflow_run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            return
        exp = _experiment(self.client, self.uri)
        self.run_id = self.client.create_run(exp, run_name=self.run_name, tags={"transferkit.run_dir":
                                                                                 str(self.run_dir.resolve())}).info.run_id
        saved.write_text(json.dumps({"uri": self.uri, "mlflow_run_id": self.run_id}))

    def _log(self, split: str, step: int, values: dict[str, Any]) -> None:
        if self.client is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(f"{split}/{k}", float(v), now, step) for k, v in values.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "epoch"]
        try:
            self.client.log_batch(self.run_id, metrics=metrics)
        except Exception as e:  # noqa: BLE001 - tracking must never stop training
            log.warning("MLflow tracking stopped (%s); training goes on, metrics.jsonl has every value", e)
            self.client = None

    def on_train_start(self, *, model: Any, total_steps: int, steps_per_epoch: int) -> None:
        if self.client is None and self.run_id is None:
            try:
                self._start()
            except Exception as e:  # noqa: BLE001
                log.warning("MLflow tracking is off for this run (%s)", e)
                self.client = None

    def on_log(self, *, step: int, values: dict[str, Any]) -> None:
        self._log("train", step, values)

    def on_evaluation(self, *, step: int, metrics: dict[str, Any]) -> None:
        self._log("validation", step, metrics)


def observers(cfg: Any, run_dir: Path) -> list[Method]:
    """The tracking observers a run config asks for (empty unless tracking.mlflow)."""
    tracking = getattr(cfg, "tracking", None)
    if tracking is None or not tracking.mlflow:
        return []
    import os

    from transferkit.registry import resolve_uri

    uri = resolve_uri(cfg.registry.uri)
    if uri is None:  # TRANSFERKIT_REGISTRY=off and no registry.uri
        log.warning("tracking.mlflow: the registry is off (TRANSFERKIT_REGISTRY=off) and no registry.uri is set; "
                    "not tracking")
        return []
    if int(os.environ.get("RANK", "0")) != 0:  # DDP: the main process tracks (its losses are its shard's)
        return []
    return [MLflowTracker(run_dir, cfg.name, uri)]
