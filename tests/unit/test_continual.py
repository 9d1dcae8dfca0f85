"""Continual updates: the kept replay sample (stratified, stored), the grown head (old rows exact), L2-SP and EWC
(zero at the parent's weights, equal to a hand computation, added to the gradients), `transferkit update`
end to end (lineage, before/after on both test splits) and its config errors."""

import json
from collections import Counter

import pytest
import torch
from typer.testing import CliRunner

from transferkit.cli import app
from transferkit.config import load_config
from transferkit.errors import ConfigError
from transferkit.recipes.finetune import run
from transferkit.recipes import update as upd

from conftest import make_rows, tiny_config, write_csv

THREE = ("positive", "negative", "neutral")


@pytest.fixture
def parent(tiny_model, tmp_path):
    """A finished two-label run that kept 40 of its training examples."""
    data = write_csv(tmp_path / "old.csv", make_rows(200, seed=1))
    cfg = tiny_config(tiny_model, data, tmp_path, name="old", output={"replay_sample": 40}, train={"epochs": 2})
    summary = run(load_config(raw=cfg), progress=False)
    return tmp_path / "old", summary


def test_the_replay_sample_is_stratified_and_stored(parent):
    run_dir, summary = parent
    rows = [json.loads(line) for line in (run_dir / "replay.jsonl").read_text().splitlines()]
    assert len(rows) == summary["replay_sample"] == 40
    counts = Counter(r["label"] for r in rows)
    assert abs(counts["positive"] - counts["negative"]) <= 1, counts
    # every kept example is a training example of the parent
    from transferkit.data.prepare import load_splits

    cfg = upd.parent_config(run_dir)
    train_texts = set(load_splits(cfg.data).train.texts)
    assert {r["text"] for r in rows} <= train_texts


def test_a_grown_head_keeps_the_old_rows_exactly(parent):
    from safetensors.torch import load_file

    from transferkit.modeling.grow import GROWN_ROWS, silence_new_rows
    from transferkit.modeling.load import load_tokenizer
    from transferkit.tasks.classification import ClassificationTask

    run_dir, summary = parent
    old_labels = summary["labels"]
    saved = load_file(str(run_dir / "model" / "model.safetensors"))
    task = ClassificationTask(labels=["neutral", *reversed(old_labels)])  # a new label, and the order changed
    model = task.build_model(str(run_dir / "model"), init="pretrained", size=None, dropout=None,
                             tokenizer=load_tokenizer(str(run_dir / "model")))
    w, b = model.classifier.weight.detach(), model.classifier.bias.detach()
    assert w.shape[0] == 3
    for i, label in enumerate(task.labels[1:], 1):
        j = old_labels.index(label)
        assert torch.equal(w[i], saved["classifier.weight"][j].float())
        assert torch.equal(b[i], saved["classifier.bias"][j].float())
    assert getattr(model, GROWN_ROWS) == {"classifier.weight": [0], "classifier.bias": [0]}
    # the encoder is the parent's
    assert torch.equal(model.bert.embeddings.word_embeddings.weight.detach(),
                       saved["bert.embeddings.word_embeddings.weight"].float())
    silence_new_rows(model)
    assert float(model.classifier.bias[0].detach()) < -1e3 and float(model.classifier.weight[0].detach().abs().sum()) == 0.0


def _anchor(method, cfg_section, parent_dir=None):
    from transferkit.methods import method_class

    m = method_class(method)(method_class(method).Config(**cfg_section))
    m.parent = parent_dir
    return m


def test_l2sp_is_zero_at_the_start_and_adds_alpha_times_the_distance(tiny_model):
    from transferkit.modeling.load import load_tokenizer
    from transferkit.tasks.classification import ClassificationTask

    task = ClassificationTask(labels=["negative", "positive"])
    model = task.build_model(str(tiny_model), init="pretrained", size=None, dropout=None,
                             tokenizer=load_tokenizer(str(tiny_model)))
    m = _anchor("l2sp", {"strength": 0.5})
    m.prepare_model(model, task=task)
    assert m.penalty() == 0.0
    p = model.classifier.weight
    with torch.no_grad():
        p.add_(0.1)
    assert m.penalty() == pytest.approx(0.5 * 0.5 * 0.01 * p.numel(), rel=1e-5)
    for q in model.parameters():
        q.grad = torch.zeros_like(q)
    m.before_optimizer_step(model=model)
    assert torch.allclose(p.grad, torch.full_like(p, 0.05))
    assert float(model.bert.embeddings.word_embeddings.weight.grad.abs().sum()) == 0.0  # not moved: no pull


def test_ewc_penalty_equals_a_hand_computation(parent):
    from transferkit.continual.store import read_sample
    from transferkit.modeling.load import load_tokenizer
    from transferkit.tasks.classification import ClassificationTask

    run_dir, summary = parent
    tok = load_tokenizer(str(run_dir / "model"))
    task = ClassificationTask(labels=summary["labels"])
    model = task.build_model(str(run_dir / "model"), init="pretrained", size=None, dropout=None, tokenizer=tok)
    m = _anchor("ewc", {"strength": 2.0, "fisher_examples": 8}, run_dir)
    m.prepare_model(model, task=task)
    assert m.penalty() == 0.0
    # the Fisher by hand: per-example squared gradients of the loss, averaged, scaled to mean 1
    kept = read_sample(run_dir)
    enc = task.encode(tok, kept.subset(list(range(8))))
    params = [p for p in model.parameters() if p.requires_grad]
    model.eval()
    fisher = [torch.zeros_like(p) for p in params]
    for f in enc.features:
        batch = task.collate([f])
        grads = torch.autograd.grad(task.loss(task.forward(model, batch), batch), params, allow_unused=True)
        for acc, g in zip(fisher, grads):
            if g is not None:
                acc += g ** 2
    mean = sum(float(f.sum()) for f in fisher) / sum(f.numel() for f in fisher)
    fisher = [f / mean for f in fisher]  # (the 1/8 cancels in the scaling)
    k = [n for n, _ in model.named_parameters()].index("classifier.weight")
    with torch.no_grad():
        params[k].add_(0.1)
    hand = 0.5 * 2.0 * float((fisher[k] * 0.01).sum())
    assert m.penalty() == pytest.approx(hand, rel=1e-4)
    assert hand > 0


def test_update_end_to_end_with_a_new_label(parent, tmp_path):
    run_dir, summary = parent
    new = write_csv(tmp_path / "new.csv", make_rows(150, seed=5, labels=THREE))
    result = CliRunner().invoke(app, ["update", str(run_dir), "--data", str(new), "--name", "new", "-q",
                                      "methods.replay.size=30", "methods.ewc.strength=1.0", "train.epochs=2"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "new"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["parent"] == str(run_dir)
    assert metrics["labels"] == [*summary["labels"], "neutral"]  # old order kept, the new label appended
    replay = next(m for m in metrics["methods"] if m["method"] == "replay")
    assert replay["replayed"] == 30 and replay["kept_by_parent"] == 40
    u = json.loads((out / "update.json").read_text())
    assert u["parent_test"]["examples"] == summary["data"]["sizes"]["test"]
    # "before" on the parent's test split is the parent's own test accuracy: the silenced row changes nothing
    assert u["parent_test"]["before"] == pytest.approx(summary["test"]["accuracy"], abs=1e-9)
    assert u["forgetting"] == pytest.approx(u["parent_test"]["before"] - u["parent_test"]["after"])
    # the parent never predicts the new label: its recall there is 0 before
    assert u["new_test"]["per_class"]["neutral"]["before"] == 0.0
    assert "Update: before vs after" in (out / "report.md").read_text()
    assert "before" in result.output and "forgetting" in result.output


def test_update_config_errors(parent, tmp_path, tiny_model):
    run_dir, _ = parent
    with pytest.raises(ConfigError, match="not a finished fine-tuning run"):
        upd.plan(tmp_path / "nothing", "x.csv")
    data = write_csv(tmp_path / "d.csv", make_rows(60, seed=2))
    # ewc and replay need a parent; ewc and l2sp cannot be combined
    with pytest.raises(ConfigError, match="methods -> ewc: estimates the Fisher"):
        load_config(raw=tiny_config(tiny_model, data, tmp_path, methods={"ewc": {}}))
    with pytest.raises(ConfigError, match="methods -> replay: replays the examples"):
        load_config(raw=tiny_config(tiny_model, data, tmp_path, methods={"replay": {}}))
    with pytest.raises(ConfigError, match="ewc and l2sp cannot be combined"):
        upd.plan(run_dir, str(data), overrides=["methods.ewc.strength=1", "methods.l2sp.strength=1"])
    with pytest.raises(ConfigError, match=r"methods -> l2sp -> strenght.*strength"):
        upd.plan(run_dir, str(data), overrides=["methods.l2sp.strenght=1"])


def test_drift_flags_other_text_and_not_the_same_distribution(parent, tmp_path):
    from transferkit.continual.drift import check

    run_dir, _ = parent
    same = [r["text"] for r in make_rows(120, seed=11)]
    report = check(run_dir, same)
    assert not report["drift"], report["flags"]
    assert report["embedding"]["domain_auc"] < 0.75
    assert abs(report["vocabulary"]["excess"]) < 0.05
    assert report["predicted_labels"]["tvd"] < 0.5
    # headlines about markets: words the run never saw
    rng = __import__("random").Random(3)
    market = ["shares", "fell", "bank", "rates", "profit", "oil", "prices", "markets", "investors", "quarter"]
    other = [" ".join(rng.sample(market, 6)) for _ in range(120)]
    shifted = check(run_dir, other)
    assert shifted["drift"]
    assert shifted["embedding"]["domain_auc"] > 0.9
    assert shifted["vocabulary"]["excess"] > 0.5
    assert any(f.startswith("vocabulary") for f in shifted["flags"])


def test_drift_cli_gates_with_its_exit_status(parent, tmp_path):
    run_dir, _ = parent
    rows = [{"text": " ".join(["shares", "fell", "bank", "rates", "oil"][: 3 + i % 3]) + f" {i}", "label": "positive"}
            for i in range(60)]
    data = write_csv(tmp_path / "new.csv", rows)
    res = CliRunner().invoke(app, ["drift", str(run_dir), "--data", str(data), "--label-column", "label",
                                   "--json", str(tmp_path / "d.json"), "--fail-on-drift"])
    assert res.exit_code == 3, res.output
    saved = json.loads((tmp_path / "d.json").read_text())
    assert saved["drift"] and saved["labels"]["new"] == {"positive": 40}  # sampled to the 40 the run kept
    assert "an update is due" in res.output
    few = write_csv(tmp_path / "few.csv", rows[:5])
    res = CliRunner().invoke(app, ["drift", str(run_dir), "--data", str(few)])
    assert res.exit_code == 2 and "at least 20" in res.output


def test_a_finished_run_is_replaced_with_overwrite_and_an_update_of_an_update_keeps_every_label(parent, tmp_path):
    run_dir, summary = parent
    cfg = upd.parent_config(run_dir)
    again = run(cfg, overwrite=True, progress=False)  # replay.jsonl and the other new files are transferkit's own
    assert again["replay_sample"] == 40
    first = write_csv(tmp_path / "n1.csv", make_rows(90, seed=5, labels=THREE))
    child = upd.plan(run_dir, str(first), name="child", overrides=["train.epochs=1"])
    assert child.task.labels == [*summary["labels"], "neutral"]
    upd.run(child, progress=False)
    second = write_csv(tmp_path / "n2.csv", make_rows(90, seed=6, labels=("positive", "mixed")))
    grandchild = upd.plan(tmp_path / "child", str(second), name="grandchild", overrides=["train.epochs=1"])
    assert grandchild.task.labels == [*summary["labels"], "neutral", "mixed"]
    assert grandchild.update.parent == str((tmp_path / "child").resolve())


def test_update_data_overrides_replace_the_parents_data(parent, tmp_path):
    run_dir, _ = parent
    files = {s: write_csv(tmp_path / f"{s}.csv", make_rows(40, seed=i)) for i, s in enumerate(("train", "validation",
                                                                                                  "test"))}
    cfg = upd.plan(run_dir, None, overrides=[f"data.{s}={p}" for s, p in files.items()])
    assert cfg.data.source is None and cfg.data.train == str(files["train"]) and cfg.data.test == str(files["test"])
    with pytest.raises(ConfigError, match="the update's run folder would be its parent's"):
        upd.plan(run_dir, str(files["train"]), overrides=[f"output.dir={run_dir}"])
