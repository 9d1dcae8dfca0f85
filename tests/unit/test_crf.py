"""The CRF for NER: Viterbi equals brute force, constrained decoding never emits an invalid BIO/BIOES sequence,
and pytorch-crf's loss with the constraints equals the hand-computed negative log-likelihood."""

import itertools
import math

import numpy as np
import pytest
import torch

from transferkit.modeling.crf import FORBIDDEN, allowed, constrained_crf, crf_scores, viterbi

TAGS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG"]
BIOES = ["O", "B-PER", "I-PER", "E-PER", "S-PER"]


def path_score(path, em, start, end, trans):
    return start[path[0]] + sum(em[t, k] for t, k in enumerate(path)) + end[path[-1]] + sum(
        trans[a, b] for a, b in zip(path, path[1:]))


def valid(path, tags, scheme):
    s, e, tr = allowed(tags, scheme)
    return s[path[0]] and e[path[-1]] and all(tr[a, b] for a, b in zip(path, path[1:]))


def test_allowed_transitions_of_bio_and_bioes():
    s, _, tr = allowed(TAGS, "BIO")
    assert not s[2] and s[1] and s[0]  # a sequence never starts inside an entity
    assert not tr[0, 2] and tr[1, 2] and tr[2, 2] and not tr[1, 4] and not tr[2, 4] and tr[3, 4]
    s, e, tr = allowed(BIOES, "BIOES")
    assert not s[2] and not s[3] and not e[1] and not e[2] and e[3] and e[4]
    assert tr[1, 2] and tr[1, 3] and not tr[1, 0] and tr[3, 0] and tr[4, 1] and not tr[0, 3]


@pytest.mark.parametrize("tags,scheme", [(TAGS, "BIO"), (BIOES, "BIOES")])
def test_constrained_viterbi_equals_brute_force_and_is_always_valid(tags, scheme):
    rng = np.random.default_rng(0)
    ok_s, ok_e, ok_t = allowed(tags, scheme)
    for trial in range(40):
        n = int(rng.integers(1, 5))
        em = rng.normal(size=(n, len(tags))) * 3
        start, end, trans = rng.normal(size=len(tags)), rng.normal(size=len(tags)), rng.normal(size=(len(tags),) * 2)
        start, end = np.where(ok_s, start, FORBIDDEN), np.where(ok_e, end, FORBIDDEN)
        trans = np.where(ok_t, trans, FORBIDDEN)
        best = max(itertools.product(range(len(tags)), repeat=n), key=lambda p: path_score(p, em, start, end, trans))
        got = viterbi(em, start, end, trans)
        assert tuple(got) == best
        assert valid(got, tags, scheme), [tags[k] for k in got]
    # even when the emissions alone point at an invalid sequence (O then I-PER)
    em = np.array([[5.0, 0, 0, 0, 0], [0, 0, 5.0, 0, 0]])
    got = viterbi(em, *(np.where(ok, 0.0, FORBIDDEN) for ok in (ok_s, ok_e, ok_t))) if scheme == "BIO" else None
    if got is not None:
        assert valid(got, tags, scheme) and [tags[k] for k in got] != ["O", "I-PER"]


def test_crf_loss_equals_hand_computed_nll_and_constraints_hold_after_training():
    torch.manual_seed(0)
    crf = constrained_crf(TAGS, "BIO")
    em = torch.randn(1, 3, len(TAGS))
    gold = torch.tensor([[1, 2, 0]])  # B-PER I-PER O
    sc = {k: np.array(v) for k, v in crf_scores(crf).items()}
    e = em[0].numpy()
    scores = [path_score(p, e, sc["start_transitions"], sc["end_transitions"], sc["transitions"])
              for p in itertools.product(range(len(TAGS)), repeat=3)]
    log_z = max(scores) + math.log(sum(math.exp(s - max(scores)) for s in scores))
    nll = log_z - path_score((1, 2, 0), e, sc["start_transitions"], sc["end_transitions"], sc["transitions"])
    mask = torch.ones(1, 3, dtype=torch.bool)
    assert float(-crf(em, gold, mask, reduction="sum").detach()) == pytest.approx(nll, rel=1e-5)
    # a few optimizer steps on data that "wants" O -> I-PER: the forbidden transition stays forbidden
    opt = torch.optim.SGD(crf.parameters(), lr=1.0)
    bad = torch.tensor([[0, 2, 2]])
    for _ in range(5):
        opt.zero_grad()
        (-crf(torch.zeros(1, 3, len(TAGS)), bad, mask)).backward()
        opt.step()
    with torch.no_grad():
        assert float(crf.transitions[0, 2]) < FORBIDDEN / 2 and float(crf.start_transitions[2]) < FORBIDDEN / 2


def test_ner_with_crf_trains_saves_its_transitions_and_decodes_valid_sequences(tiny_model, tmp_path):
    import json

    from transferkit.config import load_config
    from transferkit.deploy.predictor import Predictor
    from transferkit.errors import ConfigError
    from transferkit.recipes import finetune
    from transferkit.recipes.export import export

    from conftest import ner_rows, tiny_config, write_jsonl

    data = write_jsonl(tmp_path / "ner.jsonl", ner_rows(120))
    raw = tiny_config(tiny_model, data, tmp_path, name="crf", train={"epochs": 8, "optimizer": {"lr": 1e-2}},
                      task={"type": "token_classification", "ner": {"crf": True}})
    summary = finetune.run(load_config(raw=raw), progress=False)
    assert summary["test"]["f1"] > 0.5
    desc = json.loads((tmp_path / "crf/model/task.json").read_text())
    trans = np.array(desc["crf"]["transitions"])
    labels = desc["labels"]
    o, i_per = labels.index("O"), labels.index("I-PER")
    assert trans[o, i_per] < FORBIDDEN / 2 and trans.shape == (len(labels), len(labels))
    pred = Predictor.load(tmp_path / "crf")
    assert pred.task.crf and pred.task.transitions is not None
    texts = ["Carla joined Acme today", "Ivan joined Hooli", "today Acme joined Sofia and Pedro"]
    out = pred.predict(texts)
    for o_ in out:
        assert valid([labels.index(t) for t in o_["tags"]], labels, "BIO")
    assert [e["text"] for e in out[0]["entities"]] == ["Carla", "Acme"]
    # the ONNX export decodes with the same transitions
    export(tmp_path / "crf", tmp_path / "crf_export")
    assert [x["tags"] for x in Predictor.load(tmp_path / "crf_export").predict(texts)] == [x["tags"] for x in out]
    with pytest.raises(ConfigError, match="crf reads one tag per word: it needs label_subtokens: first"):
        load_config(raw={**raw, "task": {"type": "token_classification",
                                         "ner": {"crf": True, "label_subtokens": "all"}}})
