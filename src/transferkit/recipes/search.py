"""search: hyperparameter search with Optuna over any config field, each trial one fine-tuning run of the one loop.

The run config carries a `search:` section (the space, the number of trials, the pruner); every trial is the
config with the sampled values, trained in RUN_ROOT/<study>/trials/trial_NNN. Optuna's TPE sampler proposes,
its median pruner stops a trial whose validation metric (reported at every evaluation of the loop, through an
observer of its `on_evaluation` event) falls below the median of the earlier trials at the same step. The study
lives in SQLite (RUN_ROOT/<study>/study.db by default): a killed search continues with `transferkit search` again
(finished trials kept; the trial that was running when it died is retried once, after its heartbeat goes stale),
and several processes, or machines sharing a database URL, work on one study (Optuna's distributed mode) until
the total number of finished trials reaches `trials`. Settings are chosen on the validation split only.

Outputs: best.yaml (the config with the best trial's values, no `search` section), trials.csv and trials.md
(every trial: values, state, validation metric, steps), and plots (history, parameter importances, intermediate
values).
"""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from transferkit.errors import ConfigError
from transferkit.methods.base import Method, MethodConfig

log = logging.getLogger(__name__)


class ParamSpace(BaseModel):
    """One field's range: `low`/`high` (floats or ints, `log` for a log scale, `step` for ints) or `choices`."""

    model_config = ConfigDict(extra="forbid")
    low: float | None = Field(None, description="Smallest value.")
    high: float | None = Field(None, description="Largest value.")
    log: bool = Field(False, description="Sample on a log scale (learning rates).")
    int: bool = Field(False, description="Integer values (low, high inclusive).")
    step: float | None = Field(None, description="Spacing of the values (optional).")
    choices: list[Any] | None = Field(None, description="A list of values to choose from (instead of low/high).")

    @model_validator(mode="after")
    def _shape(self) -> ParamSpace:
        if self.choices is not None:
            if self.low is not None or self.high is not None:
                raise ValueError("give either choices or low/high, not both")
            if not self.choices:
                raise ValueError("choices is empty")
        elif self.low is None or self.high is None:
            raise ValueError("give low and high (or choices)")
        elif self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be smaller than high ({self.high})")
        elif self.log and self.low <= 0:
            raise ValueError("a log scale needs low > 0")
        return self


class SearchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    space: dict[str, ParamSpace] = Field(description="Dotted config field -> its range, e.g. "
                                         "{train.optimizer.lr: {low: 1.0e-5, high: 1.0e-3, log: true}}.")
    trials: int = Field(20, ge=1, description="Finished trials (complete or pruned) the study stops at, over all "
                        "workers.")
    metric: str | None = Field(None, description="Validation metric to optimise (default: the early-stopping "
                               "metric, else the task's own).")
    study: str | None = Field(None, description="Study name (default: <name>_search); also its folder's name.")
    storage: str | None = Field(None, description="Optuna storage URL (default: sqlite:///<folder>/study.db); a "
                                "shared database URL lets several machines work on one study.")
    seed: int = Field(0, description="Seed of the TPE sampler.")
    pruner: Literal["median", "none"] = Field("median", description="Stop unpromising trials early (median rule).")
    startup_trials: int = Field(5, ge=0, description="Trials that finish before the pruner may stop any.")
    warmup_steps: int = Field(0, ge=0, description="Optimizer steps of a trial before it may be pruned.")
    enqueue: list[dict[str, Any]] = Field(default_factory=list, description="Values tried first, in order (e.g. "
                                          "the config's own defaults), each a {field: value} mapping.")
    heartbeat_s: int = Field(30, ge=1, description="How often a running trial tells the storage it is alive; one "
                             "silent for twice as long is taken as dead and retried once.")


class PruningConfig(MethodConfig):
    method: ClassVar[str] = "optuna_pruning"
    summary: ClassVar[str] = "report validation metrics to an Optuna trial and stop it when pruned"
    affects_results: ClassVar[bool] = False


class OptunaPruning(Method):
    """An observer: the loop's evaluation event goes to the trial; a pruned trial stops the loop."""

    Config = PruningConfig

    def __init__(self, trial: Any, metric: str, total_steps_hint: int = 0) -> None:
        super().__init__(PruningConfig())
        self.trial, self.metric = trial, metric
        self.evaluations = 0
        self.last_step = 0

    def on_evaluation(self, *, step: int, metrics: dict[str, Any]) -> None:
        import optuna

        value = metrics.get(self.metric)
        if value is None:
            return
        self.evaluations += 1
        self.last_step = step
        self.trial.report(float(value), step)
        self.trial.set_user_attr("last_step", step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"validation {self.metric} {value:.4f} at step {step}")


def split_search(raw: dict[str, Any], source: str) -> tuple[dict[str, Any], SearchConfig]:
    from pydantic import ValidationError

    from transferkit.config import _problems

    raw = dict(raw)
    section = raw.pop("search", None)
    if section is None:
        raise ConfigError(["search: the config has no `search:` section; add one, e.g.\n"
                           "search:\n  trials: 20\n  space:\n    train.optimizer.lr: {low: 1.0e-5, high: 1.0e-3, log: true}"],
                          source=source)
    try:
        return raw, SearchConfig.model_validate(section)
    except ValidationError as e:
        raise ConfigError([f"search -> {p}" for p in _problems(e, SearchConfig)], source=source) from None


def _value(trial: Any, key: str, spec: ParamSpace) -> Any:
    if spec.choices is not None:
        return trial.suggest_categorical(key, spec.choices)
    assert spec.low is not None and spec.high is not None
    if spec.int:
        return trial.suggest_int(key, int(spec.low), int(spec.high), step=int(spec.step or 1), log=spec.log)
    return trial.suggest_float(key, spec.low, spec.high, log=spec.log, step=spec.step)


def _trial_config(raw: dict[str, Any], values: dict[str, Any], name: str, trials_dir: Path, source: str,
                  metric: str) -> Any:
    """The trial's run config; its best checkpoint (and so its value) is chosen by the searched metric."""
    from transferkit.config import _validate, apply_overrides

    over = [f"{k}={json.dumps(v)}" for k, v in values.items()]
    r = apply_overrides(raw, [*over, f"name={name}", f"output.dir={trials_dir}/{{name}}", "registry.enabled=false",
                              "compare.scratch=false", "compare.linear_probe=false", f"early_stopping.metric={metric}",
                              "early_stopping.mode=null"])
    return _validate(r, _run_schema(), source)


def _run_schema() -> Any:
    from transferkit.config import RunConfig

    return RunConfig


def check_space(raw: dict[str, Any], search: SearchConfig, source: str) -> str:
    """Every field of the space exists and accepts its values (the lowest, highest and each choice): checked
    before a trial runs. Returns the metric optimised."""
    from transferkit.config import _validate, apply_overrides, validation_metrics

    problems: list[str] = []
    for key, spec in search.space.items():
        probes = spec.choices if spec.choices is not None else [spec.low, spec.high]
        for v in probes:
            if spec.int and v is not None:
                v = int(v)
            try:
                _validate(apply_overrides(raw, [f"{key}={json.dumps(v)}"]), _run_schema(), source)
            except ConfigError as e:
                problems += [f"search -> space -> {key} = {v!r}: {p}" for p in e.problems]
                break
    if problems:
        raise ConfigError(problems, source=source)
    cfg = _validate(raw, _run_schema(), source)
    kind = cfg.task.type
    allowed = validation_metrics(kind, multilabel=cfg.task.multilabel and kind == "text_classification")
    metric = search.metric or cfg.early_stopping.metric or allowed[0]
    if metric not in allowed:
        from transferkit.errors import did_you_mean

        raise ConfigError([f"search -> metric: '{metric}' is not a validation metric of {kind}."
                           f"{did_you_mean(metric, allowed)} It reports: {', '.join(allowed)}."], source=source)
    return metric


def run(config: Path, overrides: list[str] | None = None, *, trials: int | None = None,
        progress: bool = False) -> dict[str, Any]:
    import optuna
    from optuna.storages import RDBStorage, RetryFailedTrialCallback
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    from transferkit.config import apply_overrides, minimized, read_yaml
    from transferkit.recipes import finetune

    source = str(config)
    raw, search = split_search(apply_overrides(read_yaml(config), list(overrides or [])), source)
    if trials is not None:
        search = search.model_copy(update={"trials": trials})
    metric = check_space(raw, search, source)
    base_name = str(raw.get("name", "run"))
    study_name = search.study or f"{base_name}_search"
    out_template = str((raw.get("output") or {}).get("dir", "runs/{name}"))
    folder = Path(out_template.format(name=study_name)).expanduser()
    if "{name}" not in out_template:  # one folder for every run of the config: the study gets its own below it
        folder = Path(out_template).expanduser() / study_name
    folder.mkdir(parents=True, exist_ok=True)
    trials_dir = folder / "trials"
    url = search.storage or f"sqlite:///{(folder / 'study.db').resolve()}"
    storage = RDBStorage(url, heartbeat_interval=search.heartbeat_s, grace_period=2 * search.heartbeat_s,
                         heartbeat_stale_trial_callback=RetryFailedTrialCallback(max_retry=1))
    direction: Literal["minimize", "maximize"] = "minimize" if minimized(metric) else "maximize"
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=search.startup_trials,
                                          n_warmup_steps=search.warmup_steps, interval_steps=1)
              if search.pruner == "median" else optuna.pruners.NopPruner())
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=storage, sampler=optuna.samplers.TPESampler(seed=search.seed), pruner=pruner,
                                study_name=study_name, direction=direction, load_if_exists=True)
    if study.user_attrs.get("space") not in (None, search.model_dump(mode="json")["space"]):
        raise ConfigError([f"search -> space: differs from the space study '{study_name}' in {url} was started "
                           "with; give another search.study name (or delete the study folder to start over)"],
                          source=source)
    study.set_user_attr("space", search.model_dump(mode="json")["space"])
    study.set_user_attr("metric", metric)
    if not study.trials:
        for values in search.enqueue:
            study.enqueue_trial(values)

    def objective(trial: Any) -> float:
        values = {k: _value(trial, k, spec) for k, spec in search.space.items()}
        name = f"trial_{trial.number:03d}"
        cfg = _trial_config(raw, values, name, trials_dir, source, metric)
        watcher = OptunaPruning(trial, metric)
        trial.set_user_attr("run_dir", str(cfg.run_dir))
        s = finetune.run(cfg, overwrite=True, progress=progress, observers=[watcher])
        best = s["train"]["best_validation"]
        trial.set_user_attr("steps", s["train"]["steps"])
        trial.set_user_attr("seconds", s["train"]["seconds"])
        if best is None or (isinstance(best, float) and math.isnan(best)):
            raise ValueError(f"trial {trial.number}: no validation {metric}")
        return float(best)

    done_states = (TrialState.COMPLETE, TrialState.PRUNED)
    finished = len(study.get_trials(deepcopy=False, states=done_states))
    if finished < search.trials:
        log.info("study %s: %d of %d trials finished; running the rest", study_name, finished, search.trials)
        study.optimize(objective, n_trials=search.trials - finished, catch=(),
                       callbacks=[MaxTrialsCallback(search.trials, states=done_states)])
    return write_outputs(study, raw, folder, metric, search)


def write_outputs(study: Any, raw: dict[str, Any], folder: Path, metric: str, search: SearchConfig) -> dict[str, Any]:
    import yaml
    from optuna.trial import TrialState

    from transferkit.config import apply_overrides
    from transferkit.training.checkpoint import atomic_write_text

    trials = study.get_trials(deepcopy=False)
    keys = list(search.space)
    rows = []
    for t in trials:
        last = max(t.intermediate_values) if t.intermediate_values else None
        rows.append({"trial": t.number, "state": t.state.name.lower(), metric: t.value,
                     **{k: t.params.get(k) for k in keys}, "last_step": last, "steps": t.user_attrs.get("steps"),
                     "seconds": t.user_attrs.get("seconds")})
    with (folder / "trials.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["trial"])
        w.writeheader()
        w.writerows(rows)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    summary: dict[str, Any] = {"study": study.study_name, "metric": metric, "direction": study.direction.name.lower(),
                               "trials": {s: sum(r["state"] == s for r in rows) for s in
                                          ("complete", "pruned", "fail", "running")}}
    lines = [f"# Search {study.study_name}", "", f"Optimised: validation {metric} ({summary['direction']}). "
             f"Trials: {summary['trials']}.", ""]
    if complete:
        best = study.best_trial
        summary.update(best_trial=best.number, best_value=best.value, best_params=best.params)
        best_raw = apply_overrides(raw, [f"{k}={json.dumps(v)}" for k, v in best.params.items()])
        best_raw["name"] = f"{raw.get('name', 'run')}_best"
        atomic_write_text(folder / "best.yaml", f"# the best trial ({best.number}) of study {study.study_name}: "
                          f"validation {metric} {best.value:.4f}\n" + yaml.safe_dump(best_raw, sort_keys=False,
                                                                                  allow_unicode=True))
        lines += [f"Best: trial {best.number}, validation {metric} **{best.value:.4f}**, "
                  + ", ".join(f"`{k}` = {v}" for k, v in best.params.items()) + " (best.yaml).", ""]
    lines += ["| trial | state | " + " | ".join(keys) + f" | validation {metric} | steps |",
              "|---|---|" + "---|" * len(keys) + "---|---|"]
    for r in rows:
        val = "" if r[metric] is None else f"{r[metric]:.4f}"
        lines.append(f"| {r['trial']} | {r['state']} | " + " | ".join(_fmt(r[k]) for k in keys)
                     + f" | {val} | {r['steps'] or r['last_step'] or ''} |")
    summary["plots"] = _plots(study, folder) if complete else []
    lines += [""] + [f"![{p}]({p})" for p in summary["plots"]]
    atomic_write_text(folder / "trials.md", "\n".join(lines) + "\n")
    atomic_write_text(folder / "search.json", json.dumps(summary, indent=2, default=str))
    return summary


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _plots(study: Any, folder: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import warnings

    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    made = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna marks its matplotlib plots experimental
        for name, fn in (("history.png", ovm.plot_optimization_history),
                         ("intermediate.png", ovm.plot_intermediate_values),
                         ("importance.png", ovm.plot_param_importances)):
            try:
                ax: Any = fn(study)
                fig: Any = ax.figure if hasattr(ax, "figure") else ax[0].figure
                fig.set_size_inches(7, 4.5)
                fig.tight_layout()
                fig.savefig(folder / name, dpi=110)
                plt.close(fig)
                made.append(name)
            except Exception as e:  # noqa: BLE001 - e.g. importances need 2 complete trials
                log.info("plot %s skipped: %s", name, e)
    return made
