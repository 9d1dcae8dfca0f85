"""NER end to end on the tiny model: config -> fit -> report -> model folder -> Predictor, CLI and the
transformers pipeline, which must agree with our predictions."""

from __future__ import annotations

import json
import random

import pytest
from typer.testing import CliRunner

from conftest import FILL, tiny_config, write_config, write_jsonl, assert_declared_metrics

PEOPLE = ["Maria", "Pedro", "Carla", "Tomas", "Sofia"]
PLACES = ["London", "Berlin", "Milan", "Oslo", "Lima"]


def ner_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.sample(FILL, 2), rng.sample(FILL, 2)
        person, place = rng.choice(PEOPLE), rng.choice(PLACES)
        text = f"{' '.join(a)} {person} visited {place} {' '.join(b)}"
        s1 = len(" ".join(a)) + 1
        s2 = s1 + len(person) + len(" visited ")
        rows.append({"text": text, "entities": [{"start": s1, "end": s1 + len(person), "label": "PER"},
                                                {"start": s2, "end": s2 + len(place), "label": "LOC"}]})
    return rows


@pytest.fixture(scope="module")
def ner_run(tiny_model, tmp_path_factory):
    from transferkit.config import load_config
    from transferkit.recipes.finetune import run

    tmp = tmp_path_factory.mktemp("ner")
    data = write_jsonl(tmp / "ner.jsonl", ner_rows(300, seed=3))
    raw = tiny_config(tiny_model, data, tmp, name="ner", task={"type": "token_classification"},
                      train={"optimizer": {"lr": 5e-3}, "epochs": 6, "batch_size": 16, "seed": 7})
    cfg_path = write_config(tmp / "ner.yaml", raw)
    summary = run(load_config(cfg_path), progress=False)
    return tmp / "ner", summary, cfg_path


def test_ner_learns_and_reports(ner_run):
    run_dir, summary, _ = ner_run
    assert summary["task"] == "token_classification" and summary["labels"] == ["LOC", "PER"]
    assert summary["test"]["f1"] > 0.9
    assert_declared_metrics(summary["test"], "token_classification")
    assert set(summary["test"]["per_class"]) == {"LOC", "PER"}
    assert summary["test"]["confusion_labels"] == ["O", "LOC", "PER"]
    assert (run_dir / "report.md").read_text().count("| PER |") == 1
    assert (run_dir / "confusion.png").stat().st_size > 0
    task = json.loads((run_dir / "model" / "task.json").read_text())
    assert task["task"] == "token_classification" and task["scheme"] == "bio"


def test_predictor_and_pipeline_agree(ner_run):
    from transformers import pipeline

    from transferkit.deploy.predictor import Predictor

    run_dir, _, _ = ner_run
    texts = [r["text"] for r in ner_rows(12, seed=99)] + ["Sofia and Tomas visited Oslo, then Lima."]
    ours = Predictor.load(run_dir).predict(texts)
    pipe = pipeline("token-classification", model=str(run_dir / "model"), aggregation_strategy="first",
                    device="cpu")
    theirs = pipe(texts)
    n_ents = 0
    for o, t, text in zip(ours, theirs, texts):
        a = [(e["start"], e["end"], e["type"]) for e in o["entities"]]
        b = [(e["start"], e["end"], e["entity_group"]) for e in t]
        assert a == b, text
        n_ents += len(a)
        for e in o["entities"]:
            assert e["text"] == text[e["start"]:e["end"]]
    assert n_ents >= 24  # the model finds the entities, so agreement is not vacuous


def test_predict_cli_writes_entities(ner_run, tmp_path):
    from transferkit.cli import app

    run_dir, _, _ = ner_run
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": "the movie Maria visited Berlin"}])
    out = tmp_path / "out.jsonl"
    res = CliRunner().invoke(app, ["predict", str(run_dir), "-i", str(src), "-o", str(out)])
    assert res.exit_code == 0, res.output
    rec = json.loads(out.read_text().splitlines()[0])
    assert [(e["text"], e["type"]) for e in rec["entities"]] == [("Maria", "PER"), ("Berlin", "LOC")]
    assert rec["tokens"] == ["the", "movie", "Maria", "visited", "Berlin"]


def test_predict_cli_keeps_line_numbers_of_structured_input(ner_run, tmp_path):
    """A blank line in a JSONL input gets an error record in its place; the records after it keep their lines."""
    from transferkit.cli import app

    run_dir, _, _ = ner_run
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "Maria visited Berlin"}\n\n{"text": "Berlin"}\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    res = CliRunner().invoke(app, ["predict", str(run_dir), "-i", str(src), "-o", str(out)])
    assert res.exit_code == 0, res.output
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(recs) == 3 and f"{src} line 2" in recs[1]["error"] and "entities" not in recs[1]
    assert recs[0]["text"] == "Maria visited Berlin" and recs[2]["text"] == "Berlin"
