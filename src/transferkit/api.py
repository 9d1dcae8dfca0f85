"""The Python API, for notebooks and scripts; the CLI is a thin layer over the same functions.

    import transferkit as tk
    cfg = tk.load_config(raw={"data": {"source": "rotten_tomatoes"}, "methods": {"lora": {"r": 8}}})
    result = tk.finetune(cfg)
    result.test["accuracy"], result.run_dir
    tk.Predictor.load(result.run_dir).predict(["a moving film"])

A config is a file path, a dict (validated like YAML, every problem at once) or a RunConfig/PretrainConfig
object; overrides are the CLI's dotted strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from transferkit.config import PretrainConfig, RunConfig, load_config


def _config(config: str | Path | dict[str, Any] | BaseModel, overrides: list[str] | None,
            schema: type[BaseModel]) -> Any:
    if isinstance(config, BaseModel):
        # re-validated, so that a config built or changed in code gets the same checks as a YAML file
        return load_config(raw=config.model_dump(mode="json"), overrides=overrides, schema=schema)
    if isinstance(config, dict):
        return load_config(raw=config, overrides=overrides, schema=schema)
    return load_config(config, overrides, schema=schema)


@dataclass
class RunResult:
    """What a fine-tuning run produced: its folder and its summary (also in run_dir/metrics.json)."""

    run_dir: Path
    summary: dict[str, Any] = field(repr=False)

    @property
    def test(self) -> dict[str, Any]:
        """Test-split metrics of the fine-tuned model."""
        return self.summary.get("test", {})

    @property
    def transfer(self) -> dict[str, dict[str, Any]]:
        """The transfer table: majority, linear probe, fine-tuned (, scratch) -> their test metrics."""
        return self.summary.get("transfer", {})

    @property
    def metric(self) -> str:
        return self.summary.get("metric", "")

    def predictor(self, **kw: Any) -> Any:
        from transferkit.deploy.predictor import Predictor

        return Predictor.load(self.run_dir, **kw)


@dataclass
class PretrainResult:
    run_dir: Path
    summary: dict[str, Any] = field(repr=False)

    @property
    def heldout(self) -> dict[str, dict[str, Any]]:
        """Held-out masked-LM metrics before and after pretraining."""
        return {"before": self.summary.get("heldout_before", {}), "after": self.summary.get("heldout_after", {})}

    @property
    def model_dir(self) -> Path:
        """A model folder for model.path of a fine-tuning config."""
        return self.run_dir / "model"


def finetune(config: str | Path | dict[str, Any] | RunConfig, overrides: list[str] | None = None, *,
             resume: bool = False, overwrite: bool = False, progress: bool = True) -> RunResult:
    """Fine-tune, test and ship a run (the `transferkit finetune` command)."""
    from transferkit.recipes.finetune import run

    cfg = _config(config, overrides, RunConfig)
    return RunResult(cfg.run_dir, run(cfg, resume=resume, overwrite=overwrite, progress=progress))


def pretrain(config: str | Path | dict[str, Any] | PretrainConfig, overrides: list[str] | None = None, *,
             resume: bool = False, overwrite: bool = False, progress: bool = True) -> PretrainResult:
    """Pretrain or continue pretraining a masked LM (the `transferkit pretrain` command)."""
    from transferkit.recipes.pretrain import run

    cfg = _config(config, overrides, PretrainConfig)
    return PretrainResult(cfg.run_dir, run(cfg, resume=resume, overwrite=overwrite, progress=progress))
