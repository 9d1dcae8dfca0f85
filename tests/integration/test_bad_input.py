"""Each bad input stops before training with exit code 2, a message naming the file/row or config
location, and no run folder left behind."""

from typer.testing import CliRunner

from transferkit.cli import app

from conftest import make_rows, tiny_config, write_config, write_csv, write_jsonl

runner = CliRunner()


def _finetune(tmp_path, cfg, *extra):
    path = write_config(tmp_path / "run.yaml", cfg)
    result = runner.invoke(app, ["finetune", str(path), *extra])
    return result, result.stderr


def _assert_rejected(tmp_path, result, stderr, *needles):
    assert result.exit_code == 2, (result.exit_code, stderr, result.stdout)
    for n in needles:
        assert n in stderr, (n, stderr)
    assert not (tmp_path / "runs").exists(), "a run folder was written for bad input"


def test_missing_column_suggests(tiny_model, tmp_path):
    data = write_csv(tmp_path / "d.csv", [{"review": r["text"], "label": r["label"]} for r in make_rows(40)])
    cfg = tiny_config(tiny_model, {"source": str(data), "text_column": "reveiw"}, tmp_path / "runs")
    result, err = _finetune(tmp_path, cfg)
    _assert_rejected(tmp_path, result, err, "no column 'reveiw'", "Did you mean 'review'?", "Columns found: review, label")


def test_unknown_label_in_test_file(tiny_model, tmp_path):
    train = write_csv(tmp_path / "train.csv", make_rows(60))
    test_rows = make_rows(20, seed=9)
    test_rows[3]["label"] = "neutral"
    test = write_csv(tmp_path / "test.csv", test_rows)
    cfg = tiny_config(tiny_model, {"train": str(train), "test": str(test)}, tmp_path / "runs")
    result, err = _finetune(tmp_path, cfg)
    _assert_rejected(tmp_path, result, err, "test split", "row 4 ('neutral')", "Known labels")


def test_empty_text_names_row(tiny_model, tmp_path):
    rows = make_rows(40)
    rows[6]["text"] = "   "
    data = write_csv(tmp_path / "d.csv", rows)
    result, err = _finetune(tmp_path, tiny_config(tiny_model, data, tmp_path / "runs"))
    _assert_rejected(tmp_path, result, err, "1 empty text(s)", "d.csv row 7")


def test_empty_text_in_jsonl_names_line(tiny_model, tmp_path):
    rows = make_rows(40)
    rows[0]["text"] = ""
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    result, err = _finetune(tmp_path, tiny_config(tiny_model, data, tmp_path / "runs"))
    _assert_rejected(tmp_path, result, err, "d.jsonl line 1")


def test_non_utf8_file(tiny_model, tmp_path):
    data = write_csv(tmp_path / "d.csv", make_rows(40))
    raw = data.read_bytes().replace(b"great", "gr\u00e9at".encode("latin-1"), 1)
    data.write_bytes(raw)
    line = raw[: raw.index(b"gr\xe9at")].count(b"\n") + 1
    result, err = _finetune(tmp_path, tiny_config(tiny_model, data, tmp_path / "runs"))
    _assert_rejected(tmp_path, result, err, f"line {line} is not valid UTF-8", "iconv")


def test_unreadable_yaml(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data:\n  source: x\n train: {\n", encoding="utf-8")
    result = runner.invoke(app, ["finetune", str(path)])
    _assert_rejected(tmp_path, result, result.stderr, "unreadable YAML at line", "run.yaml")


def test_unknown_config_key(tiny_model, sentiment_csv, tmp_path):
    cfg = tiny_config(tiny_model, sentiment_csv, tmp_path / "runs", train={"epocs": 2})
    result, err = _finetune(tmp_path, cfg)
    _assert_rejected(tmp_path, result, err, "train -> epocs: unknown key. Did you mean 'epochs'?")


def test_bad_override_value(tiny_model, sentiment_csv, tmp_path):
    cfg = tiny_config(tiny_model, sentiment_csv, tmp_path / "runs")
    result, err = _finetune(tmp_path, cfg, "train.optimizer.lr=-3")
    _assert_rejected(tmp_path, result, err, "train -> optimizer -> lr: Input should be greater than 0 (got -3)")


def test_model_path_missing(sentiment_csv, tmp_path):
    cfg = tiny_config(tmp_path / "models/nope", sentiment_csv, tmp_path / "runs")
    result, err = _finetune(tmp_path, cfg)
    _assert_rejected(tmp_path, result, err, "model path", "does not exist")


def test_data_file_missing(tiny_model, tmp_path):
    cfg = tiny_config(tiny_model, tmp_path / "nothere.csv", tmp_path / "runs")
    result, err = _finetune(tmp_path, cfg)
    _assert_rejected(tmp_path, result, err, "nothere.csv' does not exist")


def test_unknown_builtin_suggests(tiny_model, tmp_path):
    cfg = tiny_config(tiny_model, {"source": "roten_tomatoes"}, tmp_path / "runs")
    result, err = _finetune(tmp_path, cfg)
    _assert_rejected(tmp_path, result, err, "Did you mean 'rotten_tomatoes'?")


def test_existing_run_folder_needs_resume_or_overwrite(tiny_model, sentiment_csv, tmp_path):
    run_dir = tmp_path / "runs" / "tiny"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.json").write_text("{}")
    result, err = _finetune(tmp_path, tiny_config(tiny_model, sentiment_csv, tmp_path / "runs"))
    assert result.exit_code == 2 and "--resume" in err and "--overwrite" in err
    assert (run_dir / "metrics.json").read_text() == "{}"


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
    _assert_rejected(tmp_path, *_finetune(tmp_path, cfg), "ner.jsonl line 6: 3 tokens but 2 tags")

    rel = write_jsonl(tmp_path / "rel.jsonl", [{"text": "ab cd", "head": {"start": 0, "end": 2},
                                                "tail": {"start": 3, "end": 9}, "label": "r"}])
    cfg = tiny_config(tiny_model, rel, tmp_path / "runs", task={"type": "relation_extraction"})
    _assert_rejected(tmp_path, *_finetune(tmp_path, cfg), "rel.jsonl line 1: tail span 3-9 lies outside the text")

    qa = write_jsonl(tmp_path / "qa.jsonl", [{"question": "who?", "context": "Ada wrote it.",
                                              "answers": [{"text": "Grace", "answer_start": 0}]}])
    cfg = tiny_config(tiny_model, qa, tmp_path / "runs", task={"type": "question_answering"})
    _assert_rejected(tmp_path, *_finetune(tmp_path, cfg), "qa.jsonl line 1: the answer 'Grace' is not in the context")
