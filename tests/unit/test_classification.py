import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from transferkit.data.sources import Examples
from transferkit.errors import DataError
from transferkit.tasks.classification import ClassificationTask

from conftest import assert_declared_metrics


def _ex(texts, labels, pairs=None, name="train"):
    return Examples(texts=texts, labels=labels, origin=[f"f.csv row {i + 1}" for i in range(len(texts))],
                    text_pairs=pairs, name=name)


def test_encode_collate_dynamic_padding(tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    task = ClassificationTask(max_length=8)
    train = _ex(["great movie", "the plot was dull and the cast was weak overall really"], ["pos", "neg"])
    task.fit_labels(train)
    assert task.labels == ["neg", "pos"]
    enc = task.encode(tok, train)
    assert enc.lengths[0] == 4 and enc.lengths[1] == 8  # [CLS] great movie [SEP]; truncated to max_length
    batch = task.collate(enc.features)
    assert batch["input_ids"].shape == (2, 8)
    assert batch["attention_mask"].tolist()[0] == [1, 1, 1, 1, 0, 0, 0, 0]
    assert (batch["input_ids"][0, 4:] == tok.pad_token_id).all()
    assert batch["labels"].tolist() == [1, 0]
    assert "token_type_ids" not in batch


def test_pairs_get_token_types(tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    task = ClassificationTask(max_length=16)
    ex = _ex(["great movie"], ["a"], pairs=["dull plot"])
    task.labels = ["a", "b"]
    batch = task.collate(task.encode(tok, ex).features)
    assert batch["token_type_ids"].tolist()[0] == [0, 0, 0, 0, 1, 1, 1]


def test_multilabel_targets_and_metrics(tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    task = ClassificationTask(multilabel=True, label_separator="|")
    train = _ex(["a", "b", "c"], ["x|y", "y", "z"])
    task.fit_labels(train)
    assert task.labels == ["x", "y", "z"] and task.primary_metric == "micro_f1"
    batch = task.collate(task.encode(tok, train).features)
    assert batch["labels"].tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    m = task.metrics(np.array([[0.9, 0.8, 0.1], [0.1, 0.2, 0.1], [0.1, 0.1, 0.7]]), batch["labels"].numpy())
    assert m["subset_accuracy"] == pytest.approx(2 / 3)
    assert m["micro_f1"] == pytest.approx(2 * 3 / (2 * 3 + 1))  # tp=3, fn=1
    assert_declared_metrics({**m, "loss": 0.0}, "text_classification", multilabel=True)  # evaluate() adds loss


def test_unknown_label_in_validation_names_row():
    task = ClassificationTask()
    task.fit_labels(_ex(["a", "b"], ["pos", "neg"]))
    with pytest.raises(DataError) as e:
        task.check(_ex(["c", "d"], ["pos", "neutral"], name="validation"))
    assert "validation split" in str(e.value) and "f.csv row 2 ('neutral')" in str(e.value)


def test_metrics_on_known_example():
    task = ClassificationTask(labels=["a", "b", "c"])
    scores = np.eye(3)[[0, 1, 2, 2, 0]]
    m = task.metrics(scores, np.array([0, 1, 2, 1, 1]))
    assert m["accuracy"] == pytest.approx(0.6)
    assert m["confusion_matrix"] == [[1, 0, 0], [1, 1, 1], [0, 0, 1]]
    assert m["per_class"]["b"] == {"precision": 1.0, "recall": pytest.approx(1 / 3), "f1": 0.5, "support": 3}


def test_mean_head_loads_encoder_weights(tiny_model):
    from transformers import BertModel

    tok = AutoTokenizer.from_pretrained(tiny_model)
    task = ClassificationTask(labels=["a", "b"], pooling="mean")
    model = task.build_model(str(tiny_model), init="pretrained", size=None, dropout=0.0, tokenizer=tok)
    ref = BertModel.from_pretrained(tiny_model)
    assert torch.equal(model.bert.encoder.layer[1].output.dense.weight, ref.encoder.layer[1].output.dense.weight)
    assert model.config.hidden_dropout_prob == 0.0
    scratch = task.build_model(str(tiny_model), init="scratch", size=None, dropout=None, tokenizer=tok)
    assert not torch.equal(scratch.bert.encoder.layer[1].output.dense.weight, ref.encoder.layer[1].output.dense.weight)
