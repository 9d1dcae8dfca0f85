"""The two recommendation experiments of `transferkit recommend`, each against its baselines, with the same
splits for every method; results.json and report.md in the config's folder.

cold_start: a movie's approval (share of fresh critics' reviews) from its plot text alone, k-fold over movies:
    TF-IDF + ridge, frozen pretrained embeddings + ridge (strength chosen on each fold's validation movies), and
    the encoder fine-tuned (transferkit finetune) to tell liked (approval >= `fresh`) from not, scored by P(liked);
    Spearman correlation and NDCG@10 (graded by the true approval) on each fold's held-out movies.
personal: simulated readers of BBC News (see data.py), users split into train / validation / test; each test user's
    next reads are ranked among unread articles by TF-IDF, by frozen embeddings (mean of the history's items, or the
    history's headlines through the tower), and by the two towers fine-tuned on the training users; AUC and NDCG@10.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.apps.recommend import data as D
from transferkit.apps.recommend.metrics import auc, ndcg_at_k, spearman
from transferkit.apps.recommend.settings import RecommendConfig

log = logging.getLogger("transferkit.recommend")
ALPHAS = (0.1, 1.0, 10.0, 100.0)


def _encoder(cfg: RecommendConfig) -> tuple[Any, Any, str]:
    from transformers import AutoModel

    from transferkit.modeling import load as mload

    ref = mload.resolve(cfg.encoder.path)
    return AutoModel.from_pretrained(ref).eval(), mload.load_tokenizer(ref), ref


def _ridge(xtr: Any, ytr: np.ndarray, xva: Any, yva: np.ndarray, xte: Any) -> tuple[np.ndarray, float]:
    """Ridge regression with the strength of best validation Spearman, refitted on train + validation."""
    from scipy.sparse import issparse, vstack
    from sklearn.linear_model import Ridge

    best = max(ALPHAS, key=lambda a: spearman(Ridge(alpha=a).fit(xtr, ytr).predict(xva), yva))
    both = vstack([xtr, xva]) if issparse(xtr) else np.vstack([xtr, xva])
    return Ridge(alpha=best).fit(both, np.concatenate([ytr, yva])).predict(xte), best


def cold_start(cfg: RecommendConfig, progress: bool = True) -> dict[str, Any]:
    from sklearn.feature_extraction.text import TfidfVectorizer

    from transferkit.evaluation.zeroshot import embed

    c = cfg.cold_start
    ms = D.movies(c.min_reviews)
    texts = [m.plot for m in ms]
    y = np.array([m.approval for m in ms])
    encoder, tokenizer, _ = _encoder(cfg)
    t = time.perf_counter()
    frozen = embed(encoder, tokenizer, texts, cfg.encoder.max_length)
    frozen_s = time.perf_counter() - t
    rows: dict[str, list[dict[str, float]]] = {k: [] for k in ("random", "tfidf_ridge", "frozen_ridge", "fine_tuned")}
    rng = np.random.default_rng(c.seed)
    for f, test in enumerate(D.folds(len(ms), c.folds, c.seed)):
        rest = np.setdiff1d(np.arange(len(ms)), test)
        perm = np.random.default_rng([c.seed, f]).permutation(rest)
        n_val = max(2, int(round(c.validation * len(rest))))
        val, train = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        scores: dict[str, tuple[np.ndarray, float]] = {}
        scores["random"] = (rng.random(len(test)), 0.0)
        t = time.perf_counter()
        vec = TfidfVectorizer(sublinear_tf=True, min_df=2, ngram_range=(1, 2)).fit([texts[i] for i in train])
        tf = lambda idx: vec.transform([texts[i] for i in idx])  # noqa: E731
        pred, _ = _ridge(tf(train), y[train], tf(val), y[val], tf(test))
        scores["tfidf_ridge"] = (pred, time.perf_counter() - t)
        t = time.perf_counter()
        pred, _ = _ridge(frozen[train], y[train], frozen[val], y[val], frozen[test])
        scores["frozen_ridge"] = (pred, time.perf_counter() - t + frozen_s)
        t = time.perf_counter()
        pred = _fine_tuned(cfg, f, ms, train, val, test, progress)
        scores["fine_tuned"] = (pred, time.perf_counter() - t)
        for name, (s, secs) in scores.items():
            rows[name].append({"spearman": spearman(s, y[test]), "ndcg@10": ndcg_at_k(s, y[test], 10),
                               "seconds": secs})
        log.info("fold %d: %s", f + 1, {k: round(v[-1]["spearman"], 3) for k, v in rows.items()})
    return {"movies": len(ms), "folds": c.folds, "mean_approval": float(y.mean()),
            "liked_share": float((y >= c.fresh).mean()), "methods": _summarise(rows), "per_fold": rows}


def _fine_tuned(cfg: RecommendConfig, fold: int, ms: list[D.Movie], train: np.ndarray, val: np.ndarray,
                test: np.ndarray, progress: bool) -> np.ndarray:
    """P(liked) of the test movies from MiniLM fine-tuned on the training movies' plots (transferkit finetune)."""
    from transferkit.config import load_config
    from transferkit.deploy.predictor import Predictor
    from transferkit.recipes import finetune

    folder = cfg.folder / "cold_start" / f"fold{fold + 1}"
    folder.mkdir(parents=True, exist_ok=True)
    c = cfg.cold_start
    for name, idx in (("train", train), ("validation", val), ("test", test)):
        rows = [{"text": ms[i].plot, "label": "liked" if ms[i].approval >= c.fresh else "not_liked"} for i in idx]
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    raw = {"name": "model", "model": {"path": cfg.encoder.path, "max_length": cfg.encoder.max_length},
           "data": {"train": str(folder / "train.jsonl"), "validation": str(folder / "validation.jsonl"),
                    "test": str(folder / "test.jsonl"), "dedupe": False},
           "task": {"type": "text_classification", "pooling": "mean", "labels": ["not_liked", "liked"]},
           "train": {"optimizer": {"lr": c.lr}, "epochs": c.epochs, "batch_size": 16, "seed": c.seed + fold},
           "early_stopping": {"metric": "loss", "mode": "min", "patience": 3},
           "compare": {"majority": False, "linear_probe": False}, "registry": {"enabled": False},
           "output": {"dir": str(folder / "{name}")}}
    finetune.run(load_config(raw=raw), overwrite=True, progress=progress)
    pred = Predictor.load(folder / "model").predict_scores([ms[i].plot for i in test])
    return np.asarray(pred)[:, 1]


def personal(cfg: RecommendConfig, progress: bool = True) -> dict[str, Any]:
    from sklearn.feature_extraction.text import TfidfVectorizer

    from transferkit.apps.recommend.towers import embed_texts, train_towers

    p = cfg.personal
    items = D.articles()
    users = D.simulate_users(items, p.users, p.history, p.future, p.concentration, p.seed)
    n_test, n_val = int(round(p.test_users * len(users))), int(round(p.validation_users * len(users)))
    train_u, val_u, test_u = users[:-(n_val + n_test)], users[-(n_val + n_test):-n_test], users[-n_test:]
    cands = [D.candidates(u, len(items), p.negatives, p.seed) for u in test_u]
    item_texts = [a.text for a in items]
    out: dict[str, dict[str, float]] = {}

    def score_all(name: str, user_vecs: np.ndarray, item_vecs: Any, seconds: float) -> None:
        aucs, ndcgs = [], []
        for u, (cand, rel) in zip(range(len(test_u)), cands):
            iv = item_vecs[cand]
            s = np.asarray(iv @ user_vecs[u].T).ravel()
            aucs.append(auc(s, rel))
            ndcgs.append(ndcg_at_k(s, rel, 10))
        out[name] = {"auc": float(np.mean(aucs)), "ndcg@10": float(np.mean(ndcgs)), "seconds": round(seconds, 1)}
        log.info("%s: AUC %.4f NDCG@10 %.4f", name, out[name]["auc"], out[name]["ndcg@10"])

    rng = np.random.default_rng(p.seed)
    score_all("random", rng.random((len(test_u), 8)), rng.random((len(items), 8)), 0.0)
    # the ceiling: each candidate scored by the simulated user's true preference for its topic
    topics = sorted({a.topic for a in items})
    onehot = np.eye(len(topics))[[topics.index(a.topic) for a in items]]
    score_all("oracle_preferences", np.array([u.preferences for u in test_u]), onehot, 0.0)
    t = time.perf_counter()
    tfidf = TfidfVectorizer(sublinear_tf=True, min_df=2, stop_words="english").fit(item_texts)
    X = tfidf.transform(item_texts)
    U = np.vstack([np.asarray(X[list(u.history)].mean(axis=0)) for u in test_u])
    score_all("tfidf", U / np.clip(np.linalg.norm(U, axis=1, keepdims=True), 1e-12, None), X,
              time.perf_counter() - t)
    encoder, tokenizer, ref = _encoder(cfg)
    t = time.perf_counter()
    E = embed_texts(encoder, tokenizer, item_texts, cfg.encoder.max_length)
    emb_s = time.perf_counter() - t
    U = np.vstack([E[list(u.history)].mean(axis=0) for u in test_u])
    score_all("frozen_item_mean", U / np.linalg.norm(U, axis=1, keepdims=True), E, emb_s)
    t = time.perf_counter()
    Ut = embed_texts(encoder, tokenizer, [D.user_text(items, u) for u in test_u], cfg.encoder.user_max_length)
    score_all("frozen_towers", Ut, E, emb_s + time.perf_counter() - t)

    def pairs(us: list[D.User]) -> tuple[list[str], list[str]]:
        return ([D.user_text(items, u) for u in us for _ in u.future], [items[i].text for u in us for i in u.future])

    t = time.perf_counter()
    model, fit_summary = train_towers(ref, tokenizer, pairs(train_u), pairs(val_u), cfg, cfg.folder / "towers",
                                      progress=progress)
    train_s = time.perf_counter() - t
    t = time.perf_counter()
    E2 = embed_texts(model, tokenizer, item_texts, cfg.encoder.max_length)
    U2 = embed_texts(model, tokenizer, [D.user_text(items, u) for u in test_u], cfg.encoder.user_max_length)
    score_all("two_tower_fine_tuned", U2, E2, train_s + time.perf_counter() - t)
    out["two_tower_fine_tuned"]["fit"] = fit_summary  # type: ignore[assignment]
    return {"items": len(items), "users": {"train": len(train_u), "validation": len(val_u), "test": len(test_u)},
            "candidates_per_user": p.future + p.negatives, "positives_per_user": p.future,
            "simulated": True, "methods": out}


def _summarise(rows: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    out = {}
    for name, rs in rows.items():
        s = {}
        for key in ("spearman", "ndcg@10", "seconds"):
            v = np.array([r[key] for r in rs], dtype=np.float64)
            s[key], s[key + "_std"] = float(np.nanmean(v)), float(np.nanstd(v))
        out[name] = s
    return out


def write(cfg: RecommendConfig, part: str, result: dict[str, Any], machine: str) -> Path:
    from transferkit.training.checkpoint import atomic_write_text

    folder = cfg.folder
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "results.json"
    allr = json.loads(path.read_text()) if path.is_file() else {}
    allr[part] = {**result, "machine": machine}
    atomic_write_text(path, json.dumps(allr, indent=2))
    lines = [f"# Recommendation: `{cfg.name}`", ""]
    if "cold_start" in allr:
        r = allr["cold_start"]
        lines += ["## Cold start: a movie's approval from its plot text", "",
                  f"{r['movies']} Rotten Tomatoes movies with a plot and >= {cfg.cold_start.min_reviews} reviews; "
                  f"{r['folds']}-fold cross-validation over movies (mean ± std over folds); {r['machine']}.", "",
                  "| method | Spearman | NDCG@10 | seconds per fold |", "|---|---|---|---|"]
        for name, s in r["methods"].items():
            lines.append(f"| {name} | {s['spearman']:.3f} ± {s['spearman_std']:.3f} | {s['ndcg@10']:.3f} ± "
                         f"{s['ndcg@10_std']:.3f} | {s['seconds']:.1f} |")
        lines.append("")
    if "personal" in allr:
        r = allr["personal"]
        lines += ["## Personalised ranking (simulated users)", "",
                  f"Simulated readers of {r['items']} BBC News articles (topic preferences drawn from a Dirichlet; not "
                  f"real interaction data); users {r['users']}; each test user's {r['positives_per_user']} next reads "
                  f"ranked among {r['candidates_per_user']} candidates; {r['machine']}.", "",
                  "| method | AUC | NDCG@10 | seconds |", "|---|---|---|---|"]
        for name, s in r["methods"].items():
            lines.append(f"| {name} | {s['auc']:.4f} | {s['ndcg@10']:.4f} | {s['seconds']} |")
        lines.append("")
    atomic_write_text(folder / "report.md", "\n".join(lines))
    return folder / "report.md"
