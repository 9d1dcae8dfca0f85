"""Extractive QA: SQuAD metric, readers and bad input, windows and answer positions, v2 null answers,
an overfit run whose decoded answers equal the gold spans, and the saved folder read by transformers alone."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import tiny_config, write_config, write_jsonl, assert_declared_metrics
from transferkit.errors import DataError
from transferkit.tasks.qa import QuestionAnsweringTask, checked_answers, squad_scores


def test_squad_metric_on_known_pairs():
    s = squad_scores([["the Eiffel Tower"], ["Denver Broncos"], ["1998", "in 1998"]],
                     ["Eiffel tower.", "Broncos", "1999"])
    assert s["exact_match"] == pytest.approx(1 / 3)
    assert s["f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)  # Broncos: precision 1, recall 1/2
    assert "HasAns_exact" not in s
    # v2: an empty gold list is unanswerable; only the empty prediction is right
    v2 = squad_scores([[], [], ["Paris"], ["Paris"]], ["", "Lyon", "", "Paris"])
    assert (v2["exact_match"], v2["f1"]) == (0.5, 0.5)
    assert (v2["HasAns_exact"], v2["HasAns_total"], v2["NoAns_exact"], v2["NoAns_total"]) == (0.5, 2, 0.5, 2)
    # Chinese answers are scored per character
    assert squad_scores([["北京大学"]], ["北京"])["f1"] == pytest.approx(2 * 1 * 0.5 / 1.5)


def test_answers_are_checked_against_the_context():
    ctx = "Paris is the capital of France."
    assert checked_answers(ctx, [{"text": "France", "answer_start": 23}], "r") == [{"text": "France", "answer_start": 24}]
    with pytest.raises(DataError, match=r"q.jsonl line 3: the answer 'Spain' is not in the context"):
        checked_answers(ctx, [{"text": "Spain", "answer_start": 0}], "q.jsonl line 3")


def test_squad_json_v2_and_jsonl_readers(tmp_path):
    doc = {"version": "v2.0", "data": [{"title": "t", "paragraphs": [{"context": "Ada wrote the first program.", "qas": [
        {"id": "a1", "question": "Who wrote it?", "answers": [{"text": "Ada", "answer_start": 0}], "is_impossible": False},
        {"id": "a2", "question": "When?", "answers": [], "plausible_answers": [{"text": "Ada", "answer_start": 0}],
         "is_impossible": True}]}]}]}
    p = tmp_path / "squad.json"
    p.write_text(json.dumps(doc), encoding="utf-8")
    ex = QuestionAnsweringTask().read(str(p), None)["train"]
    assert ex.texts == ["Who wrote it?", "When?"] and ex.labels == [[{"text": "Ada", "answer_start": 0}], []]
    q = write_jsonl(tmp_path / "q.jsonl", [{"id": "x", "question": "Who?", "context": "Ada wrote it.",
                                            "answers": {"text": ["Ada"], "answer_start": [0]}}])
    ex = QuestionAnsweringTask().read(str(q), None)["train"]
    assert ex.inputs[0]["id"] == "x" and ex.labels[0][0]["text"] == "Ada"
    task = QuestionAnsweringTask()
    task.fit_labels(ex)
    with pytest.raises(DataError, match=r"unanswerable question\(s\) in the test split.*version_2"):
        bad = QuestionAnsweringTask().read(str(p), None)["train"]
        bad.name = "test"
        task.check(bad)


def test_windows_cover_every_context_token_and_hold_the_answer(tiny_model):
    from transformers import AutoTokenizer

    from transferkit.data.sources import Examples

    tok = AutoTokenizer.from_pretrained(tiny_model)
    context = " ".join(["the movie was great and the plot was dull"] * 8) + " the ending was superb"
    start = context.index("superb")
    ex = Examples(texts=["how was the ending"], text_pairs=[context], labels=[[{"text": "superb", "answer_start": start}]],
                  origin=["r"], inputs=[{"id": "1", "question": "how was the ending", "context": context}], stratify=False)
    task = QuestionAnsweringTask(max_length=24, doc_stride=6)
    enc = task.encode(tok, ex)
    assert len(enc) > 4 and max(enc.lengths) <= 24
    covered = set()
    for f in enc.features:
        for o in f["offsets"]:
            if o is not None:
                covered.update(range(*o))
    assert covered >= {i for i, c in enumerate(context) if not c.isspace()}
    holding = [f for f in enc.features if f["start_positions"] != 0]
    assert holding, "some window holds the answer"
    for f in holding:
        a, b = f["offsets"][f["start_positions"]][0], f["offsets"][f["end_positions"]][1]
        assert context[a:b] == "superb"
    assert all(f["start_positions"] == f["end_positions"] == 0 for f in enc.features if f not in holding)


def test_decoding_and_the_null_threshold():
    task = QuestionAnsweringTask(max_answer_length=3, version_2=True)
    offsets = [None, None, (0, 3), (4, 9), (10, 13), None]  # [CLS] q [ctx ctx ctx] [SEP]
    logits = np.zeros((6, 2))
    logits[2, 0], logits[3, 1] = 5.0, 5.0  # best span: tokens 2..3 -> "Ada wrote"
    logits[0] = [4.0, 4.0]  # null score 8 < 10
    feats = [{"offsets": offsets, "example": 0}]

    class Enc:
        features = feats
        meta = {"inputs": [{"context": "Ada wrote it"}]}

    p = task.postprocess([logits], Enc())[0]
    assert (p["answer"], p["start"], p["end"], p["score"]) == ("Ada wrote", 0, 9, 10.0)
    logits[0] = [6.0, 6.0]  # null 12 beats 10 by 2 > threshold 0
    assert task.postprocess([logits], Enc())[0]["answer"] == ""
    task.null_threshold = 3.0
    assert task.postprocess([logits], Enc())[0]["answer"] == "Ada wrote"


QA_ROWS = [
    ("who made the movie", "the movie was made by maria and the plot was great", "maria"),
    ("how was the plot", "the acting was dull but the plot was superb at times", "superb"),
    ("what was charming", "overall the cast was charming and the script was weak", "the cast"),
    ("when was the ending moving", "the ending was moving at times and the story was bland", "at times"),
]


def test_overfit_answers_equal_gold_and_transformers_agrees(tiny_model, tmp_path):
    from transferkit.config import load_config
    from transferkit.deploy.predictor import Predictor
    from transferkit.recipes.finetune import run

    rows = [{"id": str(i), "question": q, "context": c, "answers": [{"text": a, "answer_start": c.index(a)}]}
            for i, (q, c, a) in enumerate(QA_ROWS)]
    data = write_jsonl(tmp_path / "qa.jsonl", rows)
    raw = tiny_config(tiny_model, {"train": str(data), "validation": str(data), "test": str(data), "dedupe": False},
                      tmp_path, name="qa", model={"path": str(tiny_model), "max_length": 48},
                      task={"type": "question_answering", "qa": {"doc_stride": 8, "max_answer_length": 5}},
                      train={"optimizer": {"lr": 1e-2}, "max_steps": 120, "batch_size": 4, "seed": 3,
                             "eval_every": 120, "schedule": {"name": "constant", "warmup_ratio": 0.0}})
    summary = run(load_config(write_config(tmp_path / "qa.yaml", raw)), progress=False)
    assert summary["test"]["exact_match"] == 1.0 and summary["test"]["f1"] == 1.0
    assert_declared_metrics(summary["test"], "question_answering")

    pred = Predictor.load(tmp_path / "qa")
    ours = pred.predict([{"question": q, "context": c} for q, c, _ in QA_ROWS])
    for o, (_, c, a) in zip(ours, QA_ROWS):
        assert o["answer"] == a and c[o["start"]:o["end"]] == a
    # transformers 5 removed pipeline("question-answering") (KeyError pointing to its migration guide), so
    # the folder is checked the way that pipeline read it: Auto classes alone, best valid span by logits
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    folder = tmp_path / "qa" / "model"
    tok, model = AutoTokenizer.from_pretrained(folder), AutoModelForQuestionAnswering.from_pretrained(folder).eval()
    for o, (q, c, _) in zip(ours, QA_ROWS):
        enc = tok(q, c, return_offsets_mapping=True, return_tensors="pt")
        offsets = enc.pop("offset_mapping")[0].tolist()
        ctx = [i for i, sid in enumerate(enc.sequence_ids(0)) if sid == 1]
        with torch.no_grad():
            out = model(**enc)
        s, e = out.start_logits[0], out.end_logits[0]
        best = max(((s[i] + e[j]).item(), i, j) for i in ctx for j in ctx if 0 <= j - i < 5)
        assert (offsets[best[1]][0], offsets[best[2]][1]) == (o["start"], o["end"])


def test_builtin_bbc_qa_answers_sit_in_their_paragraphs():
    ex = QuestionAnsweringTask().read("bbc_qa", None)["train"]
    assert len(ex) == 436 and sum(1 for a in ex.labels if not a) == 85
    for ctx, answers in zip(ex.text_pairs, ex.labels):
        for a in answers:
            assert ctx[a["answer_start"]:a["answer_start"] + len(a["text"])] == a["text"]
