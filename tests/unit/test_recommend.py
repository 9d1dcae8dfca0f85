"""`transferkit recommend` (issue 18, part 3): ranking metrics against hand computations, the simulated users and
candidate sets, the two-tower loss against a hand-written InfoNCE, towers that learn through the one loop, and both
experiments end to end on the tiny model (results and report written, every method scored)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from transferkit.apps.recommend import data as D
from transferkit.apps.recommend.metrics import auc, dcg, ndcg_at_k, spearman
from transferkit.apps.recommend.settings import RecommendConfig
from transferkit.apps.recommend.towers import TwoTowerTask, embed_texts
from transferkit.config import load_config


def test_ndcg_and_auc_on_known_rankings():
    # ranked relevances 3, 2, 3, 0, 1, 2 (Wikipedia's DCG example, with 2^rel - 1 gains)
    rel = [3, 2, 3, 0, 1, 2]
    expected = 7 / 1 + 3 / math.log2(3) + 7 / 2 + 0 + 1 / math.log2(6) + 3 / math.log2(7)
    assert dcg(rel) == pytest.approx(expected)
    scores = [6, 5, 4, 3, 2, 1]  # ranks the items in the given order
    ideal = 7 + 7 / math.log2(3) + 3 / 2 + 3 / math.log2(5) + 1 / math.log2(6)
    assert ndcg_at_k(scores, rel, 6) == pytest.approx(expected / ideal)
    assert ndcg_at_k([1, 2, 3], [0, 0, 1], 10) == pytest.approx(1.0)  # the one relevant item ranked first
    assert ndcg_at_k([3, 2, 1], [0, 0, 1], 2) == 0.0  # not in the top 2
    assert ndcg_at_k([3, 2, 1], [0, 0, 1], 3) == pytest.approx(1 / 2)  # third: 1 / log2(4)
    assert auc([0.9, 0.1, 0.5, 0.5], [1, 1, 0, 0]) == pytest.approx(0.5)  # (1 + 1 + 0 + 0) / 4
    assert auc([0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0]) == pytest.approx((1 + 1 + 0.5 + 1) / 4)
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)


def test_simulated_users_and_candidates():
    items = [D.Article(t, f"{t} headline {i}", f"{t} text {i}") for t in ("a", "b", "c") for i in range(30)]
    users = D.simulate_users(items, 40, history=6, future=4, concentration=0.1, seed=3)
    assert users == D.simulate_users(items, 40, history=6, future=4, concentration=0.1, seed=3)  # seeded
    for u in users:
        assert len(u.history) == 6 and len(u.future) == 4 and len(set(u.history + u.future)) == 10
        assert sum(u.preferences) == pytest.approx(1.0)
    # a small concentration makes users keep to their main topic: most reads are of it
    main = [np.argmax(u.preferences) for u in users]
    share = np.mean([np.mean([items[i].topic == "abc"[m] for i in u.history + u.future]) for u, m in zip(users, main)])
    assert share > 0.75
    cand, rel = D.candidates(users[0], len(items), 20, seed=1)
    pos = [c for c, r in zip(cand, rel) if r]
    neg = [c for c, r in zip(cand, rel) if not r]
    assert sorted(pos) == sorted(users[0].future) and len(neg) == 20
    assert rel != sorted(rel, reverse=True)  # shuffled: the next reads are not simply first
    assert not set(neg) & set(users[0].history + users[0].future) and len(set(cand)) == 24
    assert (cand, rel) == D.candidates(users[0], len(items), 20, seed=1)  # seeded
    assert D.user_text(items, users[0]).split(" | ")[0] == items[users[0].history[-1]].headline  # latest first
    folds = D.folds(23, 5, seed=0)
    assert sorted(np.concatenate(folds).tolist()) == list(range(23)) and {len(f) for f in folds} == {4, 5}


def test_two_tower_loss_is_in_batch_infonce():
    task = TwoTowerTask(pad_token_id=0, temperature=0.5)
    q = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), dim=-1)
    d = torch.nn.functional.normalize(torch.tensor([[1.0, 0.2], [0.1, 1.0], [-1.0, 1.0]]), dim=-1)
    logits = (q @ d.T) / 0.5
    hand = -np.mean([float(torch.log_softmax(logits[i], 0)[i]) for i in range(3)])
    assert float(task.loss((q, d), {})) == pytest.approx(hand, rel=1e-6)
    assert task.scores((q, d)).tolist() == pytest.approx((q * d).sum(-1).tolist())
    b = task.collate([{"q": [5, 6, 7], "d": [8]}, {"q": [9], "d": [10, 11]}])
    assert b["q_ids"].tolist() == [[5, 6, 7], [9, 0, 0]] and b["d_mask"].tolist() == [[1, 0], [1, 1]]
    # pairs 0 and 2 are one user's: each other's item is not a negative (masked out of the softmax)
    groups = torch.tensor([0, 1, 0])
    hand = -np.mean([float(torch.log_softmax(logits[0, [0, 1]], 0)[0]), float(torch.log_softmax(logits[1], 0)[1]),
                     float(torch.log_softmax(logits[2, [1, 2]], 0)[1])])
    assert float(task.loss((q, d), {"groups": groups})) == pytest.approx(hand, rel=1e-6)
    enc = task.encode_pairs(_Tok(), ["u a", "u b", "u a"], ["x", "y", "z"], 8, 8)
    assert [f["g"] for f in enc.features] == [0, 1, 0]


class _Tok:
    def __call__(self, texts, truncation, max_length):
        return {"input_ids": [[len(t)] for t in texts]}


def tiny_cfg(tiny_model, tmp_path, **kw) -> RecommendConfig:
    raw = {"name": "rec", "output_dir": str(tmp_path / "{name}"),
           "encoder": {"path": str(tiny_model), "max_length": 32, "user_max_length": 48},
           "cold_start": {"folds": 2, "epochs": 1},
           "personal": {"users": 60, "history": 4, "future": 3, "negatives": 12},
           "train": {"optimizer": {"lr": 3e-3}, "epochs": 3, "batch_size": 16, "seed": 1},
           "early_stopping": {"metric": "loss", "mode": "min", "patience": 3}}
    raw.update(kw)
    return load_config(raw=raw, schema=RecommendConfig)


def test_towers_learn_through_the_loop(tiny_model, tmp_path):
    """Users say a positive word, their items hold its counterpart negative word (POS[i] -> NEG[i]): no overlap a
    random encoder could use. After training, each user's own item is much nearer than the others (cosine margin),
    and the nearest of the 8 for most users."""
    from transformers import AutoModel, AutoTokenizer

    from transferkit.apps.recommend.towers import train_towers
    from conftest import FILL, NEG, POS

    rng = np.random.default_rng(0)

    def pairs(n):
        us, it = [], []
        for _ in range(n):
            k = int(rng.integers(len(POS)))
            us.append(" ".join(rng.choice(FILL, 4).tolist() + [POS[k]]))
            it.append(" ".join([NEG[k]] + rng.choice(FILL, 4).tolist()))
        return us, it

    cfg = tiny_cfg(tiny_model, tmp_path)
    tok = AutoTokenizer.from_pretrained(tiny_model)
    test_u = [f"the movie was {w}" for w in POS]
    test_i = [f"{w} story and plot" for w in NEG]

    def top1(model):
        """Share of users whose own item is the nearest, and the mean cosine margin of the own item over the others."""
        sims = embed_texts(model, tok, test_u, 32) @ embed_texts(model, tok, test_i, 32).T
        own = np.diag(sims)
        others = (sims.sum(1) - own) / (len(POS) - 1)
        return float(np.mean(sims.argmax(1) == np.arange(len(POS)))), float(np.mean(own - others))

    before = top1(AutoModel.from_pretrained(tiny_model))
    model, fit = train_towers(str(tiny_model), tok, pairs(400), pairs(64), cfg, tmp_path / "towers", progress=False)
    after = top1(model)
    print("towers top-1, margin before/after", before, after)
    assert before[0] <= 0.375 and abs(before[1]) < 0.1, before
    assert after[0] >= 0.5 and after[1] > 0.1, after
    assert (tmp_path / "towers" / "model" / "config.json").is_file() and fit["steps"] > 0


def test_both_experiments_end_to_end_on_the_tiny_model(tiny_model, tmp_path):
    from transferkit.apps.recommend import run as R

    cfg = tiny_cfg(tiny_model, tmp_path)
    p = R.personal(cfg, progress=False)
    assert set(p["methods"]) == {"random", "oracle_preferences", "tfidf", "frozen_item_mean", "frozen_towers",
                                 "two_tower_fine_tuned"}
    assert p["methods"]["oracle_preferences"]["auc"] > max(v["auc"] for k, v in p["methods"].items()
                                                            if k != "oracle_preferences")
    assert p["users"] == {"train": 36, "validation": 9, "test": 15} and p["simulated"] is True
    for m in p["methods"].values():
        assert 0.0 <= m["auc"] <= 1.0 and 0.0 <= m["ndcg@10"] <= 1.0
    assert p["methods"]["tfidf"]["auc"] > 0.6 > abs(p["methods"]["random"]["auc"] - 0.5) + 0.5  # topics: words
    c = R.cold_start(cfg, progress=False)
    assert c["movies"] == 154 and set(c["methods"]) == {"random", "tfidf_ridge", "frozen_ridge", "fine_tuned"}
    assert all(len(v) == 2 for v in c["per_fold"].values())
    R.write(cfg, "personal", p, "test machine")
    report = R.write(cfg, "cold_start", c, "test machine").read_text()
    assert "| tfidf |" in report and "| fine_tuned |" in report and "154 Rotten Tomatoes movies" in report
    assert set(json.loads((cfg.folder / "results.json").read_text())) == {"personal", "cold_start"}
