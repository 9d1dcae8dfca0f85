"""Relation extraction: markers, marker-position pooling, long-text windows, metrics, bad input, end to end."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from conftest import ORGS, PEOPLE, re_rows, tiny_config, write_config, write_jsonl, assert_declared_metrics
from transferkit.data.sources import Examples
from transferkit.errors import DataError
from transferkit.tasks.relation import RelationExtractionTask, parse_inline

TEXT = "Angela Merkel leads the CDU in Berlin."
H = {"start": 0, "end": 13, "type": "PER"}
T = {"start": 24, "end": 27, "type": "ORG"}


def task_with(types=("ORG", "PER"), **kw) -> RelationExtractionTask:
    t = RelationExtractionTask(labels=["no_relation", "per:leader_of"], **kw)
    t.entity_types = list(types)
    return t


def test_marker_insertion_typed_and_plain():
    inp = {"text": TEXT, "head": H, "tail": T}
    assert task_with().marked(inp) == " <e1:PER> Angela Merkel </e1:PER>  leads the  <e2:ORG> CDU </e2:ORG>  in Berlin."
    assert task_with(markers="plain").marked(inp) == " <e1> Angela Merkel </e1>  leads the  <e2> CDU </e2>  in Berlin."
    # a type never seen in training falls back to the plain marker
    odd = {"text": TEXT, "head": {**H, "type": "ANIMAL"}, "tail": T}
    assert task_with().marked(odd).startswith(" <e1> Angela Merkel </e1> ")
    # tail before head in the text
    rev = {"text": TEXT, "head": T, "tail": H}
    assert task_with().marked(rev).startswith(" <e2:PER> Angela Merkel </e2:PER>  leads the  <e1:ORG> CDU")


def test_inline_markers_are_parsed():
    text, h, t = parse_inline("The <e1>fire</e1> was caused by <e2>lightning</e2>.", "x")
    assert text == "The fire was caused by lightning."
    assert text[h["start"]:h["end"]] == "fire" and text[t["start"]:t["end"]] == "lightning"
    with pytest.raises(DataError, match="x: expected head/tail fields or inline markers"):
        parse_inline("no markers here", "x")


def test_markers_are_single_tokens_and_pooling_reads_their_states(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    n0 = len(tok)
    task = task_with(max_length=64)
    ex = Examples(texts=["k"], labels=["per:leader_of"], origin=["r"], inputs=[{"text": TEXT, "head": H, "tail": T}])
    enc = task.encode(tok, ex)
    assert len(tok) == n0 + len(task.marker_tokens())
    ids = enc.features[0]["input_ids"]
    pieces = tok.convert_ids_to_tokens(ids)
    assert pieces.count("<e1:PER>") == 1 and pieces.count("</e2:ORG>") == 1
    model = task.build_model(str(tiny_model), init="pretrained", size=None, dropout=0.0, tokenizer=tok).eval()
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    batch = task.collate(enc.features)
    h, t = model.marker_positions(batch["input_ids"])
    assert (h.item(), t.item()) == (pieces.index("<e1:PER>"), pieces.index("<e2:ORG>"))
    with torch.no_grad():
        hidden = model.bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        want = model.classifier(torch.cat([hidden[0, h.item()], hidden[0, t.item()]]))
        got = task.forward(model, batch)[0]
    assert torch.allclose(got, want, atol=1e-5)


def test_long_text_window_keeps_both_markers(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    task = task_with(max_length=24)
    filler = "the movie was quite dull " * 20
    text = filler + "Angela Merkel and " + filler + "the CDU" + filler
    h = {"start": len(filler), "end": len(filler) + 13, "type": "PER"}
    s = text.index("the CDU") + 4
    ex = Examples(texts=["k"], labels=[None], origin=["r"],
                  inputs=[{"text": text, "head": h, "tail": {"start": s, "end": s + 3, "type": "ORG"}}])
    ids = task.encode(tok, ex).features[0]["input_ids"]
    assert len(ids) == 24
    pieces = tok.convert_ids_to_tokens(ids)
    assert "<e1:PER>" in pieces and "<e2:ORG>" in pieces


def test_micro_f1_excludes_no_relation():
    task = RelationExtractionTask(labels=["no_relation", "a", "b"])
    gold = np.array([0, 1, 1, 2, 0])
    pred = np.array([0, 1, 0, 1, 2])  # correct: one 'a'; wrong positives: 'a' for b, 'b' for none
    m = task.metrics(np.eye(3)[pred], gold)
    assert m["precision"] == pytest.approx(1 / 3)  # 3 relation predictions, 1 right
    assert m["recall"] == pytest.approx(1 / 3)  # 3 gold relations, 1 found
    assert m["f1"] == pytest.approx(1 / 3)
    assert m["accuracy"] == pytest.approx(2 / 5)  # the no_relation hit counts for accuracy only
    assert set(m["per_class"]) == {"no_relation", "a", "b"}


def test_bad_relation_records_name_the_line(tmp_path):
    task = RelationExtractionTask()
    p = tmp_path / "re.jsonl"
    p.write_text(json.dumps({"text": "abc def", "head": {"start": 0, "end": 3}, "tail": {"start": 4, "end": 7},
                             "label": "x"}) + "\n"
                 + json.dumps({"text": "abc def", "head": {"start": 0, "end": 3}, "tail": {"start": 4, "end": 12},
                               "label": "x"}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"re.jsonl line 2: tail span 4-12 lies outside the text \(length 7\)"):
        task.read(str(p), None)
    p.write_text(json.dumps({"text": "abc def", "head": {"start": 0, "end": 5}, "tail": {"start": 4, "end": 7},
                             "label": "x"}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"re.jsonl line 1: the head \(0-5\) and tail \(4-7\) spans overlap"):
        task.read(str(p), None)


def test_relation_extraction_end_to_end(tiny_model, tmp_path):
    from typer.testing import CliRunner

    from transferkit.cli import app
    from transferkit.config import load_config
    from transferkit.deploy.predictor import Predictor
    from transferkit.recipes.finetune import run

    data = write_jsonl(tmp_path / "re.jsonl", re_rows(400, seed=5))
    raw = tiny_config(tiny_model, data, tmp_path, name="re", task={"type": "relation_extraction"},
                      train={"optimizer": {"lr": 5e-3}, "epochs": 8, "batch_size": 16, "seed": 7})
    summary = run(load_config(write_config(tmp_path / "re.yaml", raw)), progress=False)
    assert summary["metric"] == "f1" and summary["test"]["f1"] > 0.9
    assert_declared_metrics(summary["test"], "relation_extraction")
    # the synthetic data is balanced within each type pair, so the types alone find no relation
    assert summary["transfer"]["majority"]["f1"] == 0.0
    assert "| Majority label per entity-type pair |" in (tmp_path / "re" / "report.md").read_text()
    desc = json.loads((tmp_path / "re" / "model" / "task.json").read_text())
    assert desc["entity_types"] == ["ORG", "PER"] and desc["pooling"] == "markers"

    pred = Predictor.load(tmp_path / "re")
    text = "the movie says Ivan works for Hooli today"
    out = pred.predict([{"text": text, "head": {"start": 15, "end": 19, "type": "PER"},
                         "tail": {"start": 30, "end": 35, "type": "ORG"}},
                        "the movie says <e2>Ivan</e2> works for <e1>Hooli</e1> today"])
    assert out[0]["label"] == "per:employee_of" and (out[0]["head"], out[0]["tail"]) == ("Ivan", "Hooli")
    assert out[1]["label"] == "no_relation"

    src = write_jsonl(tmp_path / "in.jsonl", [{"text": "the movie says <e1>Carla</e1> works for <e2>Acme</e2> today"}])
    res = CliRunner().invoke(app, ["predict", str(tmp_path / "re"), "-i", str(src), "-o", str(tmp_path / "o.jsonl")])
    assert res.exit_code == 0, res.output
    rec = json.loads((tmp_path / "o.jsonl").read_text())
    assert rec["label"] == "per:employee_of" and rec["head"] == "Carla"


def test_builtin_bbc_relations_spans_match_the_corpus():
    ex = RelationExtractionTask().read("bbc_relations", None)["train"]
    assert len(ex) == 506 and ex.labels.count("no_relation") == 177
    for inp in ex.inputs:
        for s in (inp["head"], inp["tail"]):
            span = inp["text"][s["start"]:s["end"]]
            assert span and span == span.strip() and s["type"] in ("PER", "ORG", "LOC")


def test_majority_baseline_is_per_entity_type_pair(tiny_model):
    from transformers import AutoTokenizer

    from transferkit.evaluation.compare import majority_baseline

    tok = AutoTokenizer.from_pretrained(tiny_model)
    task = RelationExtractionTask(labels=["no_relation", "per:employee_of", "org:based_in"], max_length=64)
    per_org = {"text": TEXT, "head": H, "tail": T}
    org_loc = {"text": TEXT, "head": T, "tail": {"start": 31, "end": 37, "type": "LOC"}}
    train = Examples(texts=list("abcde"), labels=["per:employee_of", "per:employee_of", "no_relation",
                                                  "org:based_in", "no_relation"], origin=list("abcde"),
                     inputs=[per_org, per_org, per_org, org_loc, {**per_org, "head": T, "tail": H}])
    task.fit_labels(train)
    test = Examples(texts=["x", "y"], labels=["per:employee_of", "no_relation"], origin=["x", "y"],
                    inputs=[per_org, org_loc])
    m = majority_baseline(task, task.encode(tok, train), task.encode(tok, test))
    assert m["accuracy"] == 0.5  # PER->ORG: employee_of (right); ORG->LOC: based_in (wrong, gold none)
    assert (m["precision"], m["recall"]) == (0.5, 1.0)
