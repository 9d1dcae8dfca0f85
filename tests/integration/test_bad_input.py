"""Each bad input stops before training with exit code 2 and a message naming the file/row or config
location; nothing is written and nothing the user had is changed or deleted (every file under the test
folder is hashed before and after)."""

import json
import os

import pytest
from typer.testing import CliRunner

from transferkit.cli import app

from conftest import make_rows, tiny_config, tree_snapshot, write_config, write_csv, write_jsonl

runner = CliRunner()


def _invoke(tmp_path, args, input=None):
    before = tree_snapshot(tmp_path)
    result = runner.invoke(app, [str(a) for a in args], input=input)
    return result, before, tree_snapshot(tmp_path)


def _finetune(tmp_path, cfg, *extra):
    path = write_config(tmp_path / "run.yaml", cfg)
    return _invoke(tmp_path, ["finetune", path, *extra])


def _assert_rejected(outcome, *needles, code=2):
    result, before, after = outcome
    stderr = result.stderr
    assert result.exit_code == code, (result.exit_code, stderr, result.stdout)
    for n in needles:
        assert n in stderr, (n, stderr)
    assert "Traceback" not in stderr + result.stdout
    assert after == before, f"files changed: {set(after) ^ set(before) or 'contents'}"
    return stderr


# ------------------------------------------------------------------ data and config errors (already handled)


def test_missing_column_suggests(tiny_model, tmp_path):
    data = write_csv(tmp_path / "d.csv", [{"review": r["text"], "label": r["label"]} for r in make_rows(40)])
    cfg = tiny_config(tiny_model, {"source": str(data), "text_column": "reveiw"}, tmp_path / "runs")
    _assert_rejected(_finetune(tmp_path, cfg), "no column 'reveiw'", "Did you mean 'review'?",
                     "Columns found: review, label")


def test_unknown_label_in_test_file(tiny_model, tmp_path):
    train = write_csv(tmp_path / "train.csv", make_rows(60))
    test_rows = make_rows(20, seed=9)
    test_rows[3]["label"] = "neutral"
    test = write_csv(tmp_path / "test.csv", test_rows)
    cfg = tiny_config(tiny_model, {"train": str(train), "test": str(test)}, tmp_path / "runs")
    _assert_rejected(_finetune(tmp_path, cfg), "test split", "row 4 ('neutral')", "Known labels")


def test_empty_text_names_row(tiny_model, tmp_path):
    rows = make_rows(40)
    rows[6]["text"] = "   "
    data = write_csv(tmp_path / "d.csv", rows)
    _assert_rejected(_finetune(tmp_path, tiny_config(tiny_model, data, tmp_path / "runs")),
                     "1 empty text(s)", "d.csv row 7")


def test_empty_text_in_jsonl_names_line(tiny_model, tmp_path):
    rows = make_rows(40)
    rows[0]["text"] = ""
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    _assert_rejected(_finetune(tmp_path, tiny_config(tiny_model, data, tmp_path / "runs")), "d.jsonl line 1")


def test_non_utf8_file(tiny_model, tmp_path):
    data = write_csv(tmp_path / "d.csv", make_rows(40))
    raw = data.read_bytes().replace(b"great", "gr\u00e9at".encode("latin-1"), 1)
    data.write_bytes(raw)
    line = raw[: raw.index(b"gr\xe9at")].count(b"\n") + 1
    _assert_rejected(_finetune(tmp_path, tiny_config(tiny_model, data, tmp_path / "runs")),
                     f"line {line} is not valid UTF-8", "iconv")


def test_unreadable_yaml(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data:\n  source: x\n train: {\n", encoding="utf-8")
    _assert_rejected(_invoke(tmp_path, ["finetune", path]), "unreadable YAML at line", "run.yaml")


def test_unknown_config_key(tiny_model, sentiment_csv, tmp_path):
    cfg = tiny_config(tiny_model, sentiment_csv, tmp_path / "runs", train={"epocs": 2})
    _assert_rejected(_finetune(tmp_path, cfg), "train -> epocs: unknown key. Did you mean 'epochs'?")


def test_bad_override_value(tiny_model, sentiment_csv, tmp_path):
    cfg = tiny_config(tiny_model, sentiment_csv, tmp_path / "runs")
    _assert_rejected(_finetune(tmp_path, cfg, "train.optimizer.lr=-3"),
                     "train -> optimizer -> lr: Input should be greater than 0 (got -3)")


def test_model_path_missing(sentiment_csv, tmp_path):
    cfg = tiny_config(tmp_path / "models/nope", sentiment_csv, tmp_path / "runs")
    _assert_rejected(_finetune(tmp_path, cfg), "model path", "does not exist")


def test_data_file_missing(tiny_model, tmp_path):
    cfg = tiny_config(tiny_model, tmp_path / "nothere.csv", tmp_path / "runs")
    _assert_rejected(_finetune(tmp_path, cfg), "nothere.csv' does not exist")


def test_unknown_builtin_suggests(tiny_model, tmp_path):
    cfg = tiny_config(tiny_model, {"source": "roten_tomatoes"}, tmp_path / "runs")
    _assert_rejected(_finetune(tmp_path, cfg), "Did you mean 'rotten_tomatoes'?")


def test_config_validate_exit_codes(tiny_model, sentiment_csv, tmp_path):
    good = write_config(tmp_path / "good.yaml", tiny_config(tiny_model, sentiment_csv, tmp_path / "runs"))
    ok = runner.invoke(app, ["config", "validate", str(good)])
    assert ok.exit_code == 0 and "valid" in ok.stdout
    bad = runner.invoke(app, ["config", "validate", str(good), "train.batch_size=0", "task.pooling=max"])
    assert bad.exit_code == 2
    assert "2 problem(s)" in bad.stderr and "train -> batch_size" in bad.stderr and "task -> pooling" in bad.stderr
    explained = runner.invoke(app, ["config", "explain", str(good), "train.seed=3"])
    assert explained.exit_code == 0 and "train.seed" in explained.stdout


def test_structured_task_bad_records_stop_the_run(tiny_model, tmp_path):
    """NER tags that do not align, a relation span outside its text, a QA answer not in its context."""
    ner = write_jsonl(tmp_path / "ner.jsonl", [{"tokens": ["a", "b"], "tags": ["O", "B-X"]}] * 5
                      + [{"tokens": ["a", "b", "c"], "tags": ["O", "O"]}])
    cfg = tiny_config(tiny_model, ner, tmp_path / "runs", task={"type": "token_classification"})
    _assert_rejected(_finetune(tmp_path, cfg), "ner.jsonl line 6: 3 tokens but 2 tags")

    rel = write_jsonl(tmp_path / "rel.jsonl", [{"text": "ab cd", "head": {"start": 0, "end": 2},
                                                "tail": {"start": 3, "end": 9}, "label": "r"}])
    cfg = tiny_config(tiny_model, rel, tmp_path / "runs", task={"type": "relation_extraction"})
    _assert_rejected(_finetune(tmp_path, cfg), "rel.jsonl line 1: tail span 3-9 lies outside the text")

    qa = write_jsonl(tmp_path / "qa.jsonl", [{"question": "who?", "context": "Ada wrote it.",
                                              "answers": [{"text": "Grace", "answer_start": 0}]}])
    cfg = tiny_config(tiny_model, qa, tmp_path / "runs", task={"type": "question_answering"})
    _assert_rejected(_finetune(tmp_path, cfg), "qa.jsonl line 1: the answer 'Grace' is not in the context")


# ------------------------------------------------------------------ tracebacks that became messages


def test_header_only_csv_as_source_and_as_train(tiny_model, tmp_path):
    data = tmp_path / "empty.csv"
    data.write_text("text,label\n", encoding="utf-8")
    _assert_rejected(_finetune(tmp_path, tiny_config(tiny_model, data, tmp_path / "runs")),
                     "empty.csv: the file has a header (text, label) but no rows")
    cfg = tiny_config(tiny_model, {"train": str(data)}, tmp_path / "runs")
    _assert_rejected(_finetune(tmp_path, cfg), "empty.csv: the file has a header (text, label) but no rows")


@pytest.mark.parametrize("rows", [1, 2])
def test_too_few_rows_to_split(tiny_model, tmp_path, rows):
    data = write_csv(tmp_path / "few.csv", make_rows(rows))
    _assert_rejected(_finetune(tmp_path, tiny_config(tiny_model, data, tmp_path / "runs")),
                     f"few.csv: {rows} example(s) in the train split", "at least 3 are needed")


def test_tiny_data_splits_without_stratifying(tiny_model, tmp_path):
    """4 rows of 2 classes: sklearn cannot stratify a 1-example test split; the split is made at random."""
    from transferkit.config import load_config
    from transferkit.data.prepare import load_splits

    data = write_csv(tmp_path / "four.csv", make_rows(4))
    splits = load_splits(load_config(raw={"data": {"source": str(data)}}).data)
    assert [len(s) for s in splits] == [2, 1, 1]


def test_a_folder_as_data(tiny_model, tmp_path):
    folder = tmp_path / "mydata"
    folder.mkdir()
    write_csv(folder / "train.csv", make_rows(40))
    for data in ({"source": str(folder)}, {"train": str(folder)}):
        cfg = tiny_config(tiny_model, data, tmp_path / "runs")
        _assert_rejected(_finetune(tmp_path, cfg), "is a folder", "not a saved `datasets` folder",
                         "it holds train.csv")


def test_output_dir_unknown_placeholder(tiny_model, sentiment_csv, tmp_path):
    cfg = tiny_config(tiny_model, sentiment_csv, tmp_path / "runs", output={"dir": str(tmp_path / "runs/{foo}")})
    needle = "output -> dir: unknown placeholder {foo}"
    _assert_rejected(_finetune(tmp_path, cfg), needle)
    path = write_config(tmp_path / "run.yaml", cfg)
    _assert_rejected(_invoke(tmp_path, ["config", "validate", path]), needle)


def test_output_dir_unwritable(tiny_model, sentiment_csv, tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("mine")
    for where, needle in (("/proc/transferkit-x/runs/{name}", "'/proc' is not writable"),
                          (str(blocker / "{name}"), "is a file, not a folder")):
        cfg = tiny_config(tiny_model, sentiment_csv, tmp_path / "runs", output={"dir": where})
        _assert_rejected(_finetune(tmp_path, cfg), "output -> dir: cannot create the run folder", needle)


# ------------------------------------------------------------------ messages that misled


def test_malformed_jsonl_names_the_line_once(tiny_model, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", make_rows(60))
    lines = data.read_text().splitlines()
    lines[50] = lines[50][:-3]  # line 51: truncated JSON
    data.write_text("\n".join(lines) + "\n")
    err = _assert_rejected(_finetune(tmp_path, tiny_config(tiny_model, data, tmp_path / "runs")),
                           "d.jsonl line 51: not valid JSON")
    assert err.count("line 51") == 1 and "row 50" not in err and "JSON parse error" not in err


def test_blank_lines_in_jsonl_do_not_shift_line_numbers(tiny_model, tmp_path):
    rows = make_rows(40)
    rows[10]["text"] = ""
    data = tmp_path / "d.jsonl"
    data.write_text("\n\n" + "".join(json.dumps(r) + "\n" for r in rows))  # two blank lines first
    _assert_rejected(_finetune(tmp_path, tiny_config(tiny_model, data, tmp_path / "runs")), "d.jsonl line 13")


def test_source_path_that_does_not_exist(tiny_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    cfg = tiny_config(tiny_model, {"source": "data/nope"}, tmp_path / "runs")
    err = _assert_rejected(_finetune(tmp_path, cfg), "data source 'data/nope' does not exist",
                           "no such file or folder", "need an internet connection")
    assert "are you online" not in err


def test_model_alias_typo_suggests(sentiment_csv, tmp_path):
    cfg = tiny_config("minlm", sentiment_csv, tmp_path / "runs")
    _assert_rejected(_finetune(tmp_path, cfg), "model path 'minlm'", "Did you mean 'minilm'?")


def test_labels_mixing_numbers_and_words(tiny_model, tmp_path):
    rows = make_rows(80)
    for i, r in enumerate(rows):
        if i % 4 >= 2:  # half the file says 1/0, the other half positive/negative
            r["label"] = "1" if r["label"] == "positive" else "0"
    data = write_csv(tmp_path / "mixed.csv", rows)
    err = _assert_rejected(_finetune(tmp_path, tiny_config(tiny_model, data, tmp_path / "runs")),
                           "the training labels mix numbers ['0', '1'] and words ['negative', 'positive']",
                           "trained as 4 separate classes", "task.labels")
    assert "mixed.csv row" in err
    # the same in JSONL with real integers
    jrows = [{**r, "label": int(r["label"])} if r["label"] in ("0", "1") else r for r in rows]
    data = write_jsonl(tmp_path / "mixed.jsonl", jrows)
    _assert_rejected(_finetune(tmp_path, tiny_config(tiny_model, data, tmp_path / "runs")),
                     "the training labels mix numbers", "mixed.jsonl line")


# ------------------------------------------------------------------ checks before the run folder exists


def test_model_folder_without_weights(sentiment_csv, tmp_path, tiny_model):
    import shutil

    broken = tmp_path / "broken_model"
    shutil.copytree(tiny_model, broken)
    (broken / "model.safetensors").unlink()
    cfg = tiny_config(broken, sentiment_csv, tmp_path / "runs")
    _assert_rejected(_finetune(tmp_path, cfg), "has a config.json but no weights", "model.init: scratch")


def test_early_stopping_metric_the_task_does_not_report(tiny_model, sentiment_csv, tmp_path):
    cfg = tiny_config(tiny_model, sentiment_csv, tmp_path / "runs",
                      early_stopping={"enabled": True, "metric": "acuracy"})
    needle = "early_stopping -> metric: 'acuracy' is not a validation metric of this task. Did you mean 'accuracy'?"
    _assert_rejected(_finetune(tmp_path, cfg), needle)
    path = write_config(tmp_path / "run.yaml", cfg)
    _assert_rejected(_invoke(tmp_path, ["config", "validate", path]), needle)
    # the metric names follow the task: NER reports f1, not accuracy
    ner = tiny_config(tiny_model, sentiment_csv, tmp_path / "runs", task={"type": "token_classification"},
                      early_stopping={"metric": "accuracy"})
    _assert_rejected(_invoke(tmp_path, ["config", "validate", write_config(tmp_path / "ner.yaml", ner)]),
                     "'accuracy' is not a validation metric", "It reports: f1, precision, recall, macro_f1, loss")


def test_cross_section_rules(tiny_model, sentiment_csv, tmp_path):
    cfg = tiny_config(tiny_model, sentiment_csv, tmp_path / "runs",
                      task={"type": "token_classification", "pooling": "mean", "multilabel": True,
                            "qa": {"n_best": 5}},
                      freeze={"mode": "embeddings", "layers": 2})
    path = write_config(tmp_path / "run.yaml", cfg)
    _assert_rejected(_invoke(tmp_path, ["config", "validate", path]), "4 problem(s)",
                     "task -> pooling: applies to text_classification only",
                     "task -> multilabel: applies to text_classification only",
                     "task -> qa: settings of question_answering",
                     "freeze -> layers: only used with freeze.mode: bottom")


def test_window_strides_checked_by_config_validate(tiny_model, sentiment_csv, tmp_path):
    for task, needle in (({"type": "token_classification", "ner": {"stride": 40}},
                          "task -> ner -> stride: 40 must be smaller than model.max_length - 2 (30)"),
                         ({"type": "question_answering", "qa": {"doc_stride": 16}},
                          "task -> qa -> doc_stride: 16 must be less than half of model.max_length (32)")):
        cfg = write_config(tmp_path / "run.yaml", tiny_config(tiny_model, sentiment_csv, tmp_path / "runs", task=task))
        _assert_rejected(_invoke(tmp_path, ["config", "validate", cfg]), needle)


def test_freeze_more_layers_than_the_model_has(tiny_model, sentiment_csv, tmp_path):
    cfg = tiny_config(tiny_model, sentiment_csv, tmp_path / "runs", freeze={"mode": "bottom", "layers": 5})
    _assert_rejected(_finetune(tmp_path, cfg), "freeze -> layers: 5 exceeds the model's 2 layers")


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../x"])
def test_run_name_must_be_a_plain_folder_name(tiny_model, sentiment_csv, tmp_path, name):
    (tmp_path / "runs/other").mkdir(parents=True)
    (tmp_path / "runs/other/notes.txt").write_text("keep me")
    cfg = tiny_config(tiny_model, sentiment_csv, tmp_path / "runs", name=name)
    _assert_rejected(_finetune(tmp_path, cfg, "--overwrite"), "name: must be a plain folder name")


# ------------------------------------------------------------------ predict


@pytest.fixture(scope="module")
def run_dir(tiny_model, tmp_path_factory):
    from transferkit.config import load_config
    from transferkit.recipes.finetune import run

    root = tmp_path_factory.mktemp("predict_run")
    data = write_csv(root / "reviews.csv", make_rows(120, seed=1))
    run(load_config(raw=tiny_config(tiny_model, data, root, train={"epochs": 2})), progress=False)
    return root / "tiny"


@pytest.mark.parametrize("value", ["-1", "0", "many"])
def test_predict_rejects_bad_batch_size(run_dir, tmp_path, value):
    result, before, after = _invoke(tmp_path, ["predict", run_dir, "--batch-size", value, "-o", tmp_path / "o.jsonl"],
                                    input="great film\n")
    assert result.exit_code == 2 and "--batch-size" in result.stderr, result.stderr
    assert not (tmp_path / "o.jsonl").exists() and after == before


def test_predict_keeps_one_output_per_input_line(run_dir, tmp_path):
    lines = ["a great film", "", "a dull film", "   ", "wonderful"]
    result = runner.invoke(app, ["predict", str(run_dir)], input="\n".join(lines) + "\n")
    assert result.exit_code == 0, result.stderr
    out = [json.loads(x) for x in result.stdout.splitlines()]
    assert len(out) == len(lines)
    assert [o.get("text") for o in out] == ["a great film", None, "a dull film", None, "wonderful"]
    assert "stdin line 2" in out[1]["error"] and "stdin line 4" in out[3]["error"]
    assert all("label" in out[i] for i in (0, 2, 4))
    assert "2 of 5 inputs were empty" in result.stderr
    # the same from a .txt file and a csv column
    txt = tmp_path / "in.txt"
    txt.write_text("\n".join(lines) + "\n")
    csv_in = write_csv(tmp_path / "in.csv", [{"text": t} for t in lines])
    for path in (txt, csv_in):
        result = runner.invoke(app, ["predict", str(run_dir), "-i", str(path), "-o", str(tmp_path / "o.jsonl")])
        assert result.exit_code == 0, result.stderr
        got = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
        assert len(got) == 5 and "error" in got[1] and "error" in got[3] and got[4]["text"] == "wonderful"


def test_predict_binary_stdin(run_dir, tmp_path):
    for data, needle in ((b"fine text\n\x89PNG\r\n\x1a\n\xff\xfe", "stdin line 2 is not UTF-8 text"),
                         (b"ok\nbin\x00ary\n", "stdin line 2 holds a NUL byte")):
        result, before, after = _invoke(tmp_path, ["predict", run_dir], input=data)
        assert result.exit_code == 2 and needle in result.stderr, result.stderr
        assert result.stdout == "" and after == before


def test_predict_output_checked_before_predicting(run_dir, tmp_path, monkeypatch):
    from transferkit.deploy import predictor

    def never(*a, **k):
        raise AssertionError("predicted before checking the output path")

    monkeypatch.setattr(predictor.Predictor, "load", never)
    folder = tmp_path / "outdir"
    folder.mkdir()
    for target, needle in ((folder, "is a folder: give a file name"),
                           (tmp_path / "missing/sub/o.jsonl", "does not exist. Create it first"),
                           ("/proc/o.jsonl", "cannot write in '/proc'")):
        result, before, after = _invoke(tmp_path, ["predict", run_dir, "-o", target], input="great\n")
        assert result.exit_code == 2 and needle in result.stderr, result.stderr
        assert after == before


def test_unexpected_error_is_one_line_and_a_saved_traceback(run_dir, tmp_path, monkeypatch):
    from transferkit.deploy import predictor

    def boom(*a, **k):
        raise ZeroDivisionError("something inside broke")

    monkeypatch.setattr(predictor.Predictor, "load", boom)
    result = runner.invoke(app, ["predict", str(run_dir)], input="great\n")
    assert result.exit_code == 1
    assert "internal error: ZeroDivisionError: something inside broke" in result.stderr
    assert "Traceback" not in result.stderr
    path = result.stderr.split("The traceback is in ")[1].split(";")[0].strip()
    assert "ZeroDivisionError" in open(path).read()
    os.remove(path)


def test_damaged_model_weights(run_dir, tmp_path, sentiment_csv, tiny_model):
    """A model folder whose weights file is cut short: predict and finetune (model.path) say so."""
    import shutil

    broken = tmp_path / "broken_run"
    shutil.copytree(run_dir, broken)
    weights = broken / "model/model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    result = runner.invoke(app, ["predict", str(broken)], input="great\n")
    assert result.exit_code == 2 and "cannot be loaded (damaged or incomplete?)" in result.stderr, result.stderr
    cfg = tiny_config(broken / "model", sentiment_csv, tmp_path / "runs")
    _assert_rejected(_finetune(tmp_path, cfg), "could not load the weights of", "damaged or incomplete?")


# ------------------------------------------------------------------ found by a careless-user pass


def test_predict_never_overwrites_its_input_or_the_run(run_dir, tmp_path):
    src = write_csv(tmp_path / "victim.csv", [{"text": "a great film", "label": "positive"}])
    for target, needle in ((src, "is the input file"), (run_dir / "config.resolved.yaml", "inside the run folder")):
        result, before, after = _invoke(tmp_path, ["predict", run_dir, "-i", src, "-o", target])
        assert result.exit_code == 2 and needle in result.stderr, result.stderr
        assert after == before and "config.resolved.yaml" in {p.name for p in run_dir.iterdir()}


def test_predict_jsonl_blank_lines_keep_their_place(run_dir, tmp_path):
    src = tmp_path / "b.jsonl"
    src.write_text('{"text": "a"}\n\n{"text": ""}\n{"text": "b"}\n')
    result = runner.invoke(app, ["predict", str(run_dir), "-i", str(src)])
    out = [json.loads(x) for x in result.stdout.splitlines()]
    assert result.exit_code == 0 and len(out) == 4, result.stdout
    assert out[0]["text"] == "a" and "error" in out[1] and "error" in out[2] and out[3]["text"] == "b"


def test_model_folder_without_a_vocabulary(run_dir, tiny_model, sentiment_csv, tmp_path):
    import shutil

    notok = tmp_path / "notok"
    notok.mkdir()
    for f in ("config.json", "model.safetensors", "tokenizer_config.json"):
        shutil.copy(tiny_model / f, notok / f)
    cfg = tiny_config(notok, sentiment_csv, tmp_path / "runs")
    _assert_rejected(_finetune(tmp_path, cfg), "has no tokenizer vocabulary", "[UNK]")
    broken = tmp_path / "run_copy"
    shutil.copytree(run_dir, broken)
    (broken / "model/tokenizer.json").unlink()
    result = runner.invoke(app, ["predict", str(broken)], input="great\n")
    assert result.exit_code == 2 and "has no tokenizer vocabulary" in result.stderr


def test_max_length_beyond_the_models_positions(tiny_model, sentiment_csv, tmp_path):
    cfg = tiny_config(tiny_model, sentiment_csv, tmp_path / "runs", model={"path": str(tiny_model), "max_length": 100})
    needle = "model.max_length: 100 exceeds the 64 positions"
    _assert_rejected(_finetune(tmp_path, cfg), needle)
    _assert_rejected(_invoke(tmp_path, ["config", "validate", write_config(tmp_path / "run.yaml", cfg)]), needle)


def test_config_validate_checks_paths_without_loading_anything(tiny_model, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    (broken / "model.safetensors").unlink()
    cfg = tiny_config(broken, {"source": str(tmp_path / "data/nope.csv")}, tmp_path / "runs",
                      output={"dir": "/proc/x/{name}"})
    _assert_rejected(_invoke(tmp_path, ["config", "validate", write_config(tmp_path / "run.yaml", cfg)]),
                     "3 problem(s)", "has a config.json but no weights", "data -> source:", "nope.csv' does not exist",
                     "'/proc' is not writable")


def test_config_rules_found_by_the_careless_pass(tiny_model, sentiment_csv, tmp_path, monkeypatch):
    from transferkit.config import load_config

    base = tiny_config(tiny_model, sentiment_csv, tmp_path / "runs")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert str(load_config(raw={**base, "output": {"dir": "~/tk/{name}"}}).run_dir) == str(tmp_path / "home/tk/tiny")
    assert load_config(raw={**base, "name": 123}).name == "123"
    cases = [({"output": {"dir": "runs/{name!r}"}}, "without a conversion or format"),
             ({"name": None}, "got nothing"),
             ({"early_stopping": {"metric": "loss", "mode": "max"}}, "losses are minimised"),
             ({"corpus": {"sources": ["x"]}}, "looks like a pretraining config: run it with `transferkit pretrain`")]
    for extra, needle in cases:
        with pytest.raises(Exception) as e:
            load_config(raw={**base, **extra})
        assert needle in str(e.value), (extra, str(e.value))
    folder = tmp_path / "configs"
    folder.mkdir()
    _assert_rejected(_invoke(tmp_path, ["finetune", folder]), "is a folder, not a config file")


def test_label_column_pointing_at_the_text(tiny_model, sentiment_csv, tmp_path):
    cfg = tiny_config(tiny_model, {"source": str(sentiment_csv), "label_column": "text"}, tmp_path / "runs")
    err = _assert_rejected(_finetune(tmp_path, cfg), "is data.label_column the text column?")
    assert len(err) < 1500


def test_too_small_to_hold_both_labels_after_splitting(tiny_model, tmp_path):
    data = write_csv(tmp_path / "three.csv", make_rows(3))
    _assert_rejected(_finetune(tmp_path, tiny_config(tiny_model, data, tmp_path / "runs")),
                     "the training split has only one label")


def test_builtin_names_known_to_config_validate():
    from transferkit.data.builtin import BUILTIN
    from transferkit.preflight import BUILTIN_NAMES

    assert set(BUILTIN) <= set(BUILTIN_NAMES)
