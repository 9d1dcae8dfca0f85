import pytest

from transferkit.config import RunConfig, apply_overrides, explain, load_config, parse_override
from transferkit.errors import ConfigError

BASE = {"data": {"source": "rotten_tomatoes"}}


def test_defaults_and_override_types():
    cfg = load_config(raw=dict(BASE), overrides=["train.optimizer.lr=3e-5", "train.epochs=2",
                                                  "task.pooling=mean", "train.eval_every=50"])
    assert cfg.train.optimizer.lr == pytest.approx(3e-5)
    assert cfg.train.epochs == 2
    assert cfg.task.pooling == "mean"
    assert cfg.train.eval_every == 50
    assert cfg.train.batch_size == 32  # default from the schema
    assert str(cfg.run_dir) == "runs/run"


def test_all_errors_reported_at_once_with_locations():
    raw = {"data": {"source": "x"}, "train": {"optimizer": {"lr": -1, "nmae": "adamw"}, "batch_size": 0},
           "task": {"pooling": "max"}}
    with pytest.raises(ConfigError) as e:
        load_config(raw=raw)
    msg = str(e.value)
    assert len(e.value.problems) == 4, msg
    assert "train -> optimizer -> lr: Input should be greater than 0 (got -1)" in msg
    assert "train -> optimizer -> nmae: unknown key. Did you mean 'name'?" in msg
    assert "train -> batch_size" in msg
    assert "task -> pooling" in msg and "'cls' or 'mean'" in msg


def test_unknown_top_level_section_suggests():
    with pytest.raises(ConfigError, match=r"trian: unknown key. Did you mean 'train'\?"):
        load_config(raw={**BASE, "trian": {}})


def test_data_needs_exactly_one_source():
    with pytest.raises(ConfigError, match="data: no data"):
        load_config(raw={"data": {}})
    with pytest.raises(ConfigError, match="not both"):
        load_config(raw={"data": {"source": "a", "train": "b.csv"}})


def test_unreadable_yaml_names_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\ntrain:\n  epochs: [1, 2\n", encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "unreadable YAML at line" in str(e.value)
    assert str(p) in str(e.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_parse_override_and_nesting():
    assert parse_override("a.b.c=[1, 2]") == (["a", "b", "c"], [1, 2])
    assert parse_override("x=null") == (["x"], None)
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("train.lr")
    assert apply_overrides({}, ["a.b=1"]) == {"a": {"b": 1}}


def test_explain_lists_every_leaf_with_description():
    cfg = RunConfig.model_validate(BASE)
    rows = {key: (value, default, desc) for key, value, default, desc in explain(cfg)}
    assert rows["train.optimizer.lr"][1] == 5e-5
    assert "Peak learning rate" in rows["train.optimizer.lr"][2]
    assert all(desc for _, _, desc in rows.values()), [k for k, v in rows.items() if not v[2]]
    assert "data.split.seed" in rows


@pytest.mark.parametrize("path", sorted(__import__("pathlib").Path(__file__).parents[2].glob("configs/*.yaml")),
                         ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    from transferkit.apps import config_schema
    from transferkit.config import load_any_config, load_config, read_yaml

    app = config_schema(read_yaml(path))
    if app is not None:  # an application's config (monitor, bot, recommend)
        cfg = load_config(path, schema=app[1])
        assert cfg.name and cfg.folder.name == cfg.name
        return
    cfg = load_any_config(path)
    assert cfg.name and cfg.run_dir.name == cfg.name


def test_resolved_config_of_every_task_reloads():
    """config.resolved.yaml lists every field; the cross-section rules must accept it back (resume reads it)."""
    import yaml

    from transferkit.config import dump_config

    for kind in ("text_classification", "token_classification", "relation_extraction", "question_answering",
                 "seq2seq", "causal_lm"):
        cfg = load_config(raw={**BASE, "task": {"type": kind}})
        assert load_config(raw=yaml.safe_load(dump_config(cfg))) == cfg


def test_import_transferkit_is_light_and_exports_the_api():
    import subprocess
    import sys

    code = ("import sys, transferkit as tk; assert 'torch' not in sys.modules; "
            "assert callable(tk.finetune) and callable(tk.load_config) and tk.Predictor.load; "
            "print(sorted(n for n in tk.__all__ if not n.startswith('_')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for name in ("finetune", "pretrain", "load_config", "Predictor", "RunConfig", "register_method"):
        assert name in out


def test_generation_task_settings_belong_to_their_task():
    from transferkit.config import load_pretrain_config

    ok = load_config(raw={**BASE, "task": {"type": "causal_lm", "generation": {"max_new_tokens": 8},
                                           "causal_lm": {"max_turns": 2}}})
    assert ok.task.causal_lm.max_turns == 2 and ok.task.generation.max_new_tokens == 8
    with pytest.raises(ConfigError, match=r"task -> causal_lm: settings of causal_lm, but task.type is seq2seq"):
        load_config(raw={**BASE, "task": {"type": "seq2seq", "causal_lm": {"max_turns": 2}}})
    with pytest.raises(ConfigError, match=r"task -> seq2seq: settings of seq2seq, but task.type is causal_lm"):
        load_config(raw={**BASE, "task": {"type": "causal_lm", "seq2seq": {"max_target_length": 9}}})
    with pytest.raises(ConfigError, match=r"task -> generation: settings of seq2seq or causal_lm, but "
                                          r"task.type is text_classification"):
        load_config(raw={**BASE, "task": {"generation": {"max_new_tokens": 9}}})
    with pytest.raises(ConfigError, match=r"early_stopping -> mode: 'max' would keep the model with the largest "
                                          r"perplexity"):
        load_config(raw={**BASE, "task": {"type": "causal_lm"}, "early_stopping": {"metric": "perplexity",
                                                                                   "mode": "max"}})
    with pytest.raises(ConfigError, match=r"'max' would keep the model with the largest lm_loss"):
        load_config(raw={**BASE, "task": {"type": "causal_lm"}, "early_stopping": {"mode": "max"}})
    with pytest.raises(ConfigError, match=r"objective.*pair: 'nsp' is a sentence-pair head of masked-LM"):
        load_pretrain_config(raw={"corpus": {"sources": ["x.txt"]}, "objective": {"kind": "causal", "pair": "nsp"}})
    # the default early-stopping section watches the objective's own loss (mlm_loss stays for older runs' resume)
    assert load_pretrain_config(raw={"corpus": {"sources": ["x.txt"]}}).early_stopping.metric == "mlm_loss"
    causal = load_pretrain_config(raw={"corpus": {"sources": ["x.txt"]}, "objective": {"kind": "causal"}})
    assert causal.early_stopping.metric == "lm_loss"
