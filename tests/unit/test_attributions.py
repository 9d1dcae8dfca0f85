"""Token attributions: integrated gradients are complete (they add up to the logit difference from the
baseline), rollout is a distribution over the input, the CLI and the HTML show them, bad requests are refused."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from transferkit.cli import app
from transferkit.config import load_config
from transferkit.errors import ConfigError
from transferkit.recipes.finetune import run

from conftest import make_rows, tiny_config, write_csv


@pytest.fixture(scope="module")
def trained(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("attr")
    data = write_csv(root / "reviews.csv", make_rows(240, seed=1))
    m = run(load_config(raw=tiny_config(tiny_model, data, root, train={"epochs": 6})), progress=False)
    assert m["test"]["accuracy"] >= 0.9  # a model that learned the words: attributions have something to find
    return root / "tiny"


def test_integrated_gradients_add_up_to_the_logit_difference(trained):
    from transferkit.deploy.predictor import Predictor
    from transferkit.evaluation.attributions import explain

    pred = Predictor.load(trained)
    texts = ["a great and wonderful film", "the plot was awful and terrible", "delightful cast"]
    out = explain(pred, texts, steps=256)
    for e, text in zip(out, texts):
        total = sum(w["attribution"] for w in e["words"])
        assert abs(e["logit_difference"]) > 1e-3
        # Captum's delta is exactly the completeness gap; with enough integration points it is small
        assert total == pytest.approx(e["logit_difference"] + e["delta"], abs=1e-4)
        assert total == pytest.approx(e["logit_difference"], abs=0.02 * abs(e["logit_difference"]) + 1e-3)
        assert [w["word"] for w in e["words"]] == text.split()  # whole words, no [CLS] / [SEP]
    probs = pred.predict_scores(texts)
    assert [e["label"] for e in out] == [pred.task.labels[int(i)] for i in probs.argmax(1)]
    other = explain(pred, texts[:1], target=pred.task.labels[0], steps=32)[0]
    assert other["explained"] == pred.task.labels[0]
    assert other["probability"] == pytest.approx(float(probs[0, 0]), abs=1e-5)


def test_attention_rollout_is_a_distribution_over_the_input(trained):
    from transferkit.deploy.predictor import Predictor
    from transferkit.evaluation.attributions import _batch, _rollout

    pred = Predictor.load(trained)
    batch = _batch(pred.task, pred.tokenizer, ["a great film", "a very long and very dull film indeed"], None, "cpu")
    rel = _rollout(pred.task, pred.model, batch)
    assert rel.shape == tuple(batch["input_ids"].shape)
    assert np.all(rel >= 0)
    assert rel.sum(1) == pytest.approx([1.0, 1.0], abs=1e-5)
    # a hand computation for one layer of uniform attention over 3 real tokens: (0.5 A + 0.5 I)[CLS] row
    import torch

    from transferkit.evaluation import attributions as at

    class OneLayer:  # an encoder whose one layer attends uniformly to the 3 real tokens
        base_model_prefix = "enc"

        def __init__(self):
            self.enc = self
            self.config = type("C", (), {"_attn_implementation": "eager"})()

        def set_attn_implementation(self, name):
            self.config._attn_implementation = name

        def __call__(self, input_ids, attention_mask=None, output_attentions=False, **kw):
            att = torch.full((1, 2, 4, 4), 1 / 3)
            att[..., 3] = 0.0  # the 4th position is padding
            return type("O", (), {"attentions": (att,)})()

    b = {"input_ids": torch.zeros((1, 4), dtype=torch.long), "attention_mask": torch.tensor([[1, 1, 1, 0]])}
    got = at._rollout(type("T", (), {"pooling": "cls"})(), OneLayer(), b)
    assert got[0] == pytest.approx([0.5 + 0.5 / 3, 0.5 / 3, 0.5 / 3, 0.0], abs=1e-6)
    assert rel[0, int(batch["attention_mask"][0].sum()):].sum() == 0.0  # nothing on padding


def test_explain_cli_writes_html_and_refuses_bad_requests(trained, tmp_path):
    page = tmp_path / "e.html"
    res = CliRunner().invoke(app, ["explain", str(trained), "a great film", "an awful film", "--html", str(page),
                                   "--steps", "16", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert len(rows) == 2 and {w["word"] for w in rows[0]["words"]} == {"a", "great", "film"}
    text = page.read_text()
    assert text.count("<p>") == 2 and ">great</span>" in text and "rgba(" in text
    res = CliRunner().invoke(app, ["explain", str(trained), "x", "--method", "rollout"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["explain", str(trained), "x", "--method", "saliency"])
    assert res.exit_code == 2 and "unknown method 'saliency'" in res.output
    res = CliRunner().invoke(app, ["explain", str(trained), "x", "--target", "neutral"])
    assert res.exit_code == 2 and "'neutral' is not a label of this model" in res.output


def test_explain_refuses_token_tasks():
    from types import SimpleNamespace

    from transferkit.evaluation.attributions import explain

    fake = SimpleNamespace(task=SimpleNamespace(name="token_classification", token_level=True, labels=["O"]),
                           model=None, tokenizer=None, backend="torch", device="cpu")
    with pytest.raises(ConfigError, match="explain: for single-label text classification"):
        explain(fake, ["x"])


def test_predict_explain_adds_attributions_to_each_line(trained, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("a great film\n\nan awful plot\n")
    res = CliRunner().invoke(app, ["predict", str(trained), "-i", str(src), "--explain", "ig"])
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in res.stdout.splitlines() if x.startswith("{")]
    assert len(lines) == 3 and "error" in lines[1] and "explanation" not in lines[1]
    assert [w["word"] for w in lines[2]["explanation"]["words"]] == ["an", "awful", "plot"]
    assert lines[0]["explanation"]["explained"] == lines[0]["label"]
    res = CliRunner().invoke(app, ["predict", str(trained), "-i", str(src), "--explain", "lime"])
    assert res.exit_code == 2 and "unknown method 'lime'" in res.output


def test_finetune_report_explains_errors_and_runs_the_trust_suites(tiny_model, tmp_path):
    data = write_csv(tmp_path / "r.csv", make_rows(240, seed=2))
    cfg = tiny_config(tiny_model, data, tmp_path, train={"epochs": 2}, report={"explain": 2, "trust": True})
    m = run(load_config(raw=cfg), progress=False)
    run_dir = tmp_path / "tiny"
    e = m["explanations"]
    assert e["file"] == "explanations.html" and e["errors"] + e["correct"] <= 4 and e["correct"] >= 1
    page = (run_dir / "explanations.html").read_text()
    assert page.count("<p>") == e["errors"] + e["correct"] + 1 and "gold " in page
    report = (run_dir / "report.md").read_text()
    assert "## Explanations" in report and "## Trust checks" in report and "(trust/trust.md)" in report
    assert (run_dir / "trust/trust.md").is_file() and (run_dir / "trust/reliability.png").is_file()
    assert set(m["trust"]["bias_max_gap_points"]) == {"gender (first names)", "nationality", "religion"}
    with pytest.raises(ConfigError, match="report -> explain: for single-label text_classification runs, not "
                                          "token_classification"):
        load_config(raw={"data": {"source": "x"}, "task": {"type": "token_classification"}, "report": {"explain": 3}})
    with pytest.raises(ConfigError, match="output.keep: metrics does not keep"):
        load_config(raw={"data": {"source": "x"}, "report": {"trust": True}, "output": {"keep": "metrics"}})


def test_explanations_page_renders_in_a_headless_browser(trained, tmp_path):
    """Debian's chromium (installed by .ci/run) loads the page: the DOM holds one shaded span per word."""
    import shutil
    import subprocess

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run installs it)")
    from transferkit.deploy.predictor import Predictor
    from transferkit.evaluation.attributions import explain, to_html

    rows = explain(Predictor.load(trained), ["a great and wonderful film", "an awful plot"], steps=16)
    page = tmp_path / "e.html"
    page.write_text(to_html(rows, "check"), encoding="utf-8")
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert dom.count("<span") == 5 + 3 and dom.count("rgba(") == 8 and "<h2>check</h2>" in dom
    shot = tmp_path / "e.png"
    subprocess.run([*flags, "--window-size=800,300", f"--screenshot={shot}", page.as_uri()], capture_output=True,
                   timeout=120)
    assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 2000


def test_ner_entities_are_explained_one_by_one_and_completely(tiny_model, tmp_path):
    from conftest import ner_rows, write_jsonl
    from transferkit.deploy.predictor import Predictor
    from transferkit.evaluation.attributions import explain, to_html

    data = write_jsonl(tmp_path / "ner.jsonl", ner_rows(200))
    raw = tiny_config(tiny_model, data, tmp_path, name="ner", task={"type": "token_classification"},
                      train={"optimizer": {"lr": 5e-3}, "epochs": 6, "batch_size": 16, "seed": 7})
    run(load_config(raw=raw), progress=False)
    pred = Predictor.load(tmp_path / "ner")
    out = explain(pred, ["Maria joined Acme today", "today"], steps=128)
    assert out[0]["words"] == ["Maria", "joined", "Acme", "today"]
    found = {(e["type"], e["text"]) for e in out[0]["entities"]}
    assert found == {(e["type"], e["text"]) for e in pred.predict(["Maria joined Acme today"])[0]["entities"]}
    assert found, "the tiny NER model found no entity"
    for e in out[0]["entities"]:
        assert [w["word"] for w in e["words"]] == out[0]["words"]
        total = sum(w["attribution"] for w in e["words"])
        assert total == pytest.approx(e["logit_difference"] + e["delta"], abs=1e-4)
        assert total == pytest.approx(e["logit_difference"], abs=0.03 * abs(e["logit_difference"]) + 1e-3)
    assert "<b>" in to_html(out) and to_html(out).count("<p>") == len(out[0]["entities"]) + len(out[1]["entities"])
    with pytest.raises(ConfigError, match="per entity by integrated gradients"):
        explain(pred, ["Maria"], method="attention_rollout")
    res = CliRunner().invoke(app, ["explain", str(tmp_path / "ner"), "Maria joined Acme today", "--steps", "8"])
    assert res.exit_code == 0 and any(f"{t}: {x}" in res.output for t, x in found), res.output


def test_qa_answers_are_explained_over_question_and_context(tiny_model, tmp_path):
    from conftest import qa_rows, write_jsonl
    from transferkit.deploy.predictor import Predictor
    from transferkit.evaluation.attributions import explain, to_html

    data = write_jsonl(tmp_path / "qa.jsonl", qa_rows(120))
    raw = tiny_config(tiny_model, data, tmp_path, name="qa", model={"path": str(tiny_model), "max_length": 48},
                      task={"type": "question_answering"},
                      train={"optimizer": {"lr": 5e-3}, "epochs": 4, "batch_size": 8, "seed": 3})
    run(load_config(raw=raw), progress=False)
    pred = Predictor.load(tmp_path / "qa")
    item = {"question": "Who founded Acme?", "context": "Maria founded Acme in the spring."}
    (e,) = explain(pred, [item], steps=128)
    assert e["answer"] == pred.predict([item])[0]["answer"] and e["start"] is not None
    # words (pieces merged; "?" and "." are [UNK] to the tiny vocabulary), question and context apart
    assert [w["word"] for w in e["question_words"]][:3] == ["who", "founded", "acme"]
    assert len(e["question_words"]) == 4 and len(e["context_words"]) == 7
    assert [w["word"] for w in e["context_words"]][:6] == ["maria", "founded", "acme", "in", "the", "spring"]
    total = sum(w["attribution"] for w in e["question_words"] + e["context_words"])
    assert total == pytest.approx(e["logit_difference"] + e["delta"], abs=1e-4)
    assert total == pytest.approx(e["logit_difference"], abs=0.03 * abs(e["logit_difference"]) + 1e-3)
    assert "answer: " in to_html([e])
    with pytest.raises(ConfigError, match="per answer by integrated gradients"):
        explain(pred, [item], method="attention_rollout")
