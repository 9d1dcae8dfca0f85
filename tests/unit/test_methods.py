"""The methods seam: config sections per method (validation, did-you-mean, conflicts, explain), hooks
called by the one loop in order, layer-wise learning rates, and exact resume with methods on (the attacks: test_adversarial.py)."""

import json
import os
import signal
from typing import ClassVar

import pytest
import torch
from typer.testing import CliRunner

from transferkit import methods as registry
from transferkit.cli import app
from transferkit.config import explain, load_config
from transferkit.errors import ConfigError
from transferkit.methods.base import Method, MethodConfig, StepContext
from transferkit.methods.stack import MethodStack

from conftest import make_rows, tiny_config, write_config, write_csv

BASE = {"data": {"source": "rotten_tomatoes"}}


def test_method_sections_are_validated_with_locations():
    cfg = load_config(raw={**BASE, "methods": {"fgm": {"epsilon": 0.5}, "layerwise_lr": {}}})
    assert cfg.methods["fgm"].epsilon == 0.5 and cfg.methods["layerwise_lr"].decay == 0.9
    rows = {k: (v, d) for k, v, _, d in explain(cfg)}
    assert rows["methods.fgm.epsilon"][0] == 0.5 and rows["methods.layerwise_lr.head_lr_scale"][0] == 1.0
    assert rows["methods.fgm"] == ("on", "fast gradient method: one adversarial step on the word embeddings per batch")
    with pytest.raises(ConfigError) as e:
        load_config(raw={**BASE, "methods": {"fmg": {}, "pgd": {"steps": 0, "alpah": 1}}, "train": {"epochs": -1}})
    msg = str(e.value)
    assert "methods -> fmg: unknown method. Did you mean 'fgm'?" in msg
    assert "methods -> pgd -> steps: Input should be greater than or equal to 1" in msg
    assert "methods -> pgd -> alpah: unknown key. Did you mean 'alpha'?" in msg
    assert "train -> epochs" in msg and len(e.value.problems) == 4  # every problem at once
    with pytest.raises(ConfigError, match="methods: fgm and pgd cannot be combined"):
        load_config(raw={**BASE, "methods": {"fgm": {}, "pgd": {}}})
    with pytest.raises(ConfigError, match="methods: a mapping of method names"):
        load_config(raw={**BASE, "methods": ["fgm"]})


def test_a_method_from_outside_the_package_plugs_in_and_hooks_run_in_order(tiny_model, tmp_path):
    calls = []

    class RecorderConfig(MethodConfig):
        method: ClassVar[str] = "recorder"
        reverse: bool = False

    @registry.register
    class Recorder(Method):
        Config = RecorderConfig
        order = 5  # before every built-in stage

        def train_examples(self, examples, *, seed):
            calls.append(("train_examples", len(examples)))
            return examples

        def epoch_batches(self, batches, *, epoch, seed, train):
            calls.append(("epoch_batches", epoch))
            return batches[::-1] if self.cfg.reverse else batches

        def prepare_model(self, model, *, task):
            calls.append(("prepare_model", type(model).__name__))
            return model

        def param_groups(self, model, groups, *, lr):
            calls.append(("param_groups", lr))
            return groups

        def train_step(self, ctx, inner):
            calls.append(("train_step", ctx.step))
            return inner()

        def on_step_end(self, *, step, model, optimizer):
            calls.append(("step_end", step))

        def on_evaluation(self, *, step, metrics):
            calls.append(("evaluation", step, "accuracy" in metrics))

        def on_train_end(self, *, model, result):
            calls.append(("end", result.steps))

    from transferkit.recipes.finetune import run

    data = write_csv(tmp_path / "d.csv", make_rows(80))
    cfg = load_config(raw=tiny_config(tiny_model, data, tmp_path, train={"max_steps": 3, "eval_every": 3},
                                      methods={"recorder": {}}))
    summary = run(cfg, progress=False)
    names = [c[0] for c in calls]
    assert names[:2] == ["train_examples", "prepare_model"]
    first_step = names.index("train_step")
    assert set(names[2:first_step]) == {"epoch_batches", "param_groups"}
    assert calls[-1] == ("end", 3)
    assert [c for c in calls if c[0] == "train_step"] == [("train_step", s) for s in (0, 1, 2)]
    assert [c for c in calls if c[0] == "step_end"] == [("step_end", s) for s in (1, 2, 3)]
    assert ("evaluation", 3, True) in calls
    assert summary["methods"] == [{"method": "recorder", "reverse": False}]


def _tiny_classifier(tiny_model):
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2)


def test_layerwise_learning_rates_per_group(tiny_model):
    from transferkit.config import OptimizerConfig
    from transferkit.training.optim import build_optimizer

    model = _tiny_classifier(tiny_model)  # 2 encoder layers
    stack = MethodStack.from_config(load_config(raw={**BASE, "methods": {"layerwise_lr": {
        "decay": 0.5, "head_lr_scale": 10}}}).methods)
    opt = build_optimizer(model, OptimizerConfig(lr=1e-3), groups_hook=stack.param_groups)
    lr_of = {}
    names = {id(p): n for n, p in model.named_parameters()}
    for g in opt.param_groups:
        for p in g["params"]:
            lr_of[names[id(p)]] = (g["lr"], g["weight_decay"])
    assert lr_of["bert.embeddings.word_embeddings.weight"] == (pytest.approx(1e-3 * 0.25), 0.01)
    assert lr_of["bert.encoder.layer.0.attention.self.query.weight"] == (pytest.approx(1e-3 * 0.5), 0.01)
    assert lr_of["bert.encoder.layer.0.attention.self.query.bias"] == (pytest.approx(1e-3 * 0.5), 0.0)
    assert lr_of["bert.encoder.layer.1.output.dense.weight"] == (pytest.approx(1e-3), 0.01)
    assert lr_of["classifier.weight"] == (pytest.approx(1e-2), 0.01)
    assert lr_of["bert.pooler.dense.weight"] == (pytest.approx(1e-2), 0.01)
    assert len(lr_of) == sum(1 for _ in model.parameters())  # every parameter in exactly one group


@pytest.mark.parametrize("methods", [{"layerwise_lr": {"decay": 0.8}, "fgm": {"epsilon": 0.5}},
                                     {"lora": {"r": 4}, "layerwise_lr": {"decay": 0.8}},
                                     {"lora": {"r": 4}, "fgm": {"epsilon": 0.5}},
                                     {"adalora": {"init_r": 6, "target_r": 3}, "freelb": {"steps": 2}}],
                         ids=["llrd+fgm", "lora+llrd", "lora+fgm", "adalora+freelb"])
def test_resume_equals_uninterrupted_with_methods_on(tiny_model, tmp_path, methods):
    """Ctrl-C at step 5 (a signal the process sends itself from a hook), then --resume: the same model as a
    run that was never interrupted, with layer-wise rates and FGM on."""
    class InterruptConfig(MethodConfig):
        method: ClassVar[str] = "interrupt_at"
        affects_results: ClassVar[bool] = False
        step: int = 0

    @registry.register
    class InterruptAt(Method):
        Config = InterruptConfig

        def on_step_end(self, *, step, model, optimizer):
            if step == self.cfg.step:
                os.kill(os.getpid(), signal.SIGINT)

    data = write_csv(tmp_path / "d.csv", make_rows(120))
    cfg = write_config(tmp_path / "run.yaml", tiny_config(tiny_model, data, tmp_path / "runs", methods=methods,
                                                          train={"max_steps": 12, "checkpoint_every": 4,
                                                                 "eval_every": 6}))
    runner = CliRunner()
    full = runner.invoke(app, ["finetune", str(cfg), "name=full", "-q"])
    assert full.exit_code == 0, full.stderr
    stopped = runner.invoke(app, ["finetune", str(cfg), "name=cut", "-q", "methods.interrupt_at.step=5"])
    assert stopped.exit_code == 130 and "stopped after step 5 of 12" in stopped.stderr, stopped.stderr
    resumed = runner.invoke(app, ["finetune", str(cfg), "name=cut", "-q", "--resume"])
    assert resumed.exit_code == 0, resumed.stderr
    a = json.loads((tmp_path / "runs/full/metrics.json").read_text())
    b = json.loads((tmp_path / "runs/cut/metrics.json").read_text())
    assert b["test"]["loss"] == pytest.approx(a["test"]["loss"], abs=1e-6)
    order = {"lora": 0, "adalora": 0, "layerwise_lr": 1, "fgm": 2, "freelb": 2}  # model, optimisation, step
    assert [m["method"] for m in b["methods"]] == sorted(methods, key=order.get)


def test_the_method_written_in_the_docs_plugs_in(tiny_model, tmp_path, capsys):
    import re
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs/methods.md").read_text(encoding="utf-8")
    block = re.findall(r"```python\n(.*?)```", doc, re.S)[0]
    exec(compile(block, "docs/methods.md", "exec"), {})
    from transferkit.recipes.finetune import run

    data = write_csv(tmp_path / "d.csv", make_rows(80))
    cfg = load_config(raw=tiny_config(tiny_model, data, tmp_path, train={"max_steps": 4, "log_every": 1},
                                      methods={"print_loss": {"every": 2}}))
    run(cfg, progress=False)
    printed = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line[:1].isdigit()]
    assert printed == ["2", "4"]


def test_gradual_unfreezing_flips_requires_grad_at_the_configured_steps(tiny_model, tmp_path):
    seen = {}

    class WatchConfig(MethodConfig):
        method: ClassVar[str] = "watch_grad"
        affects_results: ClassVar[bool] = False

    @registry.register
    class Watch(Method):
        Config = WatchConfig  # EVENTS stage: runs after gradual_unfreezing in every hook

        def on_train_start(self, *, model, total_steps, steps_per_epoch):
            seen[0] = self._state(model)

        def on_step_end(self, *, step, model, optimizer):
            seen[step] = self._state(model)
            if step == 1:  # every parameter is in the optimizer from the start
                in_opt = {id(p) for g in optimizer.param_groups for p in g["params"]}
                assert all(id(p) in in_opt for p in model.parameters())

        @staticmethod
        def _state(model):
            named = dict(model.named_parameters())
            return tuple(named[n].requires_grad for n in (
                "bert.embeddings.word_embeddings.weight", "bert.encoder.layer.0.output.dense.weight",
                "bert.encoder.layer.1.output.dense.weight", "classifier.weight"))

    from transferkit.recipes.finetune import run

    data = write_csv(tmp_path / "d.csv", make_rows(80))
    cfg = load_config(raw=tiny_config(tiny_model, data, tmp_path, train={"max_steps": 7},
                                      methods={"gradual_unfreezing": {"every": 2}, "watch_grad": {}}))
    summary = run(cfg, progress=False)
    # (embeddings, layer 0, layer 1 (top), head)
    assert seen[0] == seen[1] == (False, False, False, True)
    assert seen[2] == seen[3] == (False, False, True, True)
    assert seen[4] == seen[5] == (False, True, True, True)
    assert seen[6] == seen[7] == (True, True, True, True)
    # every parameter trained by the end (the count covers what a schedule thawed, not only the start)
    assert summary["train"]["trainable_params"] == summary["train"]["total_params"]
    with pytest.raises(ConfigError, match="gradual_unfreezing and lora cannot be combined"):
        load_config(raw={**BASE, "methods": {"gradual_unfreezing": {}, "lora": {}}})


def test_every_built_in_method_is_documented_and_explained():
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs/methods.md").read_text(encoding="utf-8")
    for name in registry.BUILTIN:
        assert f"| `{name}` |" in doc, f"docs/methods.md has no row for {name}"
        cls = registry.config_class(name)
        assert cls.summary, name
        for field, info in cls.model_fields.items():  # every field described (config explain shows it)
            assert info.description, f"{name}.{field} has no description"
