"""`transferkit bot build` and `transferkit bot evaluate`.

build: trains the intent classifier from `intents.config` when `intents.run` holds no model, then embeds the FAQ
questions and writes the index into the bot's folder.

evaluate: the held-out paraphrases (resources/bot_paraphrases_{en,zh}.jsonl, written by hand: reworded corpus
questions with the question and intent they paraphrase, plus out-of-scope messages that should be handed off),
split by their `part` field into a validation half (chooses each retriever's hand-off threshold) and a test half
(reported). Figures: intent accuracy; recall@1, recall@5 and MRR of the paraphrased question among all FAQ
questions (exact cosine over the whole index, whatever kind the bot serves with); hand-off rate of in-scope and
out-of-scope messages at the chosen threshold and accuracy of the answered part; for the embedding index, the
embedding index with the intent model, and a TF-IDF baseline. Written to metrics.json and report.md."""

from __future__ import annotations

import json
import logging
import platform
import subprocess
import time
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.apps.bot.bot import PredictorIntents, intent_of_entries, load_embedder
from transferkit.apps.bot.index import FaqIndex, TfidfIndex, faq_entries, ranking_metrics, ranks
from transferkit.apps.bot.settings import BotConfig
from transferkit.errors import ConfigError, DataError

log = logging.getLogger("transferkit.bot")


def build(cfg: BotConfig, progress: bool = True, retrain: bool = False) -> dict[str, Any]:
    from transferkit.data.builtin import chatterbot_faq

    started = time.perf_counter()
    trained = False
    if retrain or not (Path(cfg.intents.run) / "model").is_dir():
        if cfg.intents.config is None:
            raise ConfigError([f"intents.run '{cfg.intents.run}' holds no model and intents.config is not set: give the "
                              "fine-tuning config that trains it (e.g. configs/bot_intents_en.yaml)"])
        from transferkit.config import load_config
        from transferkit.recipes import finetune

        run_cfg = load_config(cfg.intents.config)
        if run_cfg.run_dir.resolve() != Path(cfg.intents.run).resolve():
            raise ConfigError([f"intents.config '{cfg.intents.config}' writes its run to '{run_cfg.run_dir}', not to "
                              f"intents.run '{cfg.intents.run}': make them the same folder"])
        log.info("training the intent classifier (%s)...", cfg.intents.config)
        finetune.run(run_cfg, overwrite=retrain, progress=progress)
        trained = True
    entries = faq_entries(chatterbot_faq(cfg.corpus_language))
    log.info("embedding %s FAQ questions with %s...", len(entries), cfg.encoder.path)
    index = FaqIndex.build(entries, load_embedder(cfg), cfg.index.kind, cfg.index.exact_below, cfg.index.hnsw_m,
                           cfg.index.hnsw_ef, meta={"encoder": cfg.encoder.path, "language": cfg.language})
    cfg.folder.mkdir(parents=True, exist_ok=True)
    index.save(cfg.folder / "index")
    return {"entries": len(entries), "answers": sum(len(e.answers) for e in entries), "kind": index.meta["kind"],
            "intents_trained": trained, "seconds": round(time.perf_counter() - started, 1),
            "folder": str(cfg.folder)}


def paraphrases(language: str) -> list[dict[str, Any]]:
    text = (resources.files("transferkit") / "resources" / f"bot_paraphrases_{language}.jsonl").read_text("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def choose_threshold(top: np.ndarray, correct: np.ndarray) -> float:
    """The threshold (one of the observed top scores, or above them all) that maximises answered-right minus
    answered-wrong (an out-of-scope message answered is wrong; a hand-off counts 0); ties: the lowest."""
    cands = np.unique(np.concatenate([top, [np.max(top) + 1e-6]]))
    best_t, best_u = float(cands[0]), -np.inf
    for t in cands:
        answered = top >= t
        u = int(np.sum(answered & correct)) - int(np.sum(answered & ~correct))
        if u > best_u:
            best_t, best_u = float(t), u
    return best_t


def handoff_figures(top: np.ndarray, correct: np.ndarray, in_scope: np.ndarray, t: float) -> dict[str, Any]:
    answered = top >= t
    n_ans = int(answered.sum())
    return {"threshold": round(t, 4),
            "handoff_rate": round(float(np.mean(~answered[in_scope])), 4) if in_scope.any() else None,
            "handoff_rate_out_of_scope": round(float(np.mean(~answered[~in_scope])), 4) if (~in_scope).any() else None,
            "answered": n_ans,
            "answered_accuracy": round(float(np.mean(correct[answered])), 4) if n_ans else None}


def machine() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or platform.machine()


def evaluate(cfg: BotConfig, write: bool = True) -> dict[str, Any]:
    started = time.perf_counter()
    index = FaqIndex.load(cfg.folder / "index")
    rows = paraphrases(cfg.language)
    missing = [r["id"] for r in rows if r["question"] is not None and r["question"] not in index.position]
    if missing:
        raise DataError(f"paraphrases {', '.join(missing[:5])} paraphrase questions that are not in the FAQ index "
                        f"'{cfg.folder / 'index'}' (built for another language or corpus?): rebuild it with "
                        "`transferkit bot build`")
    texts = [r["text"] for r in rows]
    in_scope = np.array([r["question"] is not None for r in rows])
    relevant = np.array([index.position[r["question"]] if r["question"] is not None else -1 for r in rows])
    parts = {p: np.array([r["part"] == p for r in rows]) for p in ("validation", "test")}
    intents = PredictorIntents(cfg.intents.run)
    probs = intents.probabilities(texts)
    cos = index.index.similarities(load_embedder(cfg)(texts))
    entry_intent = intent_of_entries(index.entries, intents.labels)
    w = cfg.answer.intent_weight
    p_entry = np.where(entry_intent[None, :] >= 0, probs[:, np.clip(entry_intent, 0, None)], 0.0)
    tfidf = TfidfIndex([e.question for e in index.entries], cfg.language)
    scores = {"tfidf": tfidf.similarities(texts), "embedding": cos}
    if w > 0:
        scores["embedding+intent"] = ((1 - w) * cos + w * p_entry).astype(np.float32)
    served = "embedding+intent" if w > 0 else "embedding"

    predicted = [intents.labels[int(j)] for j in probs.argmax(axis=1)]
    out: dict[str, Any] = {"language": cfg.language, "machine": machine(), "index_size": len(index.entries),
                           "encoder": cfg.encoder.path, "intent_run": cfg.intents.run, "intent_weight": w,
                           "paraphrases": {p: {"in_scope": int((m & in_scope).sum()),
                                               "out_of_scope": int((m & ~in_scope).sum())} for p, m in parts.items()},
                           "intent_accuracy": {}, "retrievers": {}, "served": served}
    for p, m in parts.items():
        sel = np.nonzero(m & in_scope)[0]
        out["intent_accuracy"][p] = round(float(np.mean([predicted[i] == rows[i]["intent"] for i in sel])), 4)
    for name, s in scores.items():
        top_ids = s.argmax(axis=1)
        top = s.max(axis=1)
        correct = in_scope & (top_ids == relevant)
        res: dict[str, Any] = {}
        t = choose_threshold(top[parts["validation"]], correct[parts["validation"]])
        for p, m in parts.items():
            sel = np.nonzero(m & in_scope)[0]
            r = ranks(s[sel], relevant[sel].tolist())
            res[p] = {k: round(v, 4) for k, v in ranking_metrics(r).items()}
            res[p].update(handoff_figures(top[m], correct[m], in_scope[m], t))
        out["retrievers"][name] = res
    out["threshold"] = out["retrievers"][served]["validation"]["threshold"]
    out["seconds"] = round(time.perf_counter() - started, 1)
    if write:
        cfg.folder.mkdir(parents=True, exist_ok=True)
        (cfg.folder / "metrics.json").write_text(json.dumps(out, indent=2, ensure_ascii=False), encoding="utf-8")
        (cfg.folder / "threshold.json").write_text(json.dumps({"threshold": out["threshold"], "retriever": served,
                                                               "chosen_on": "validation paraphrases"}, indent=2),
                                                   encoding="utf-8")
        (cfg.folder / "report.md").write_text(report(out), encoding="utf-8")
    return out


def report(m: dict[str, Any]) -> str:
    lines = [f"# Customer-service bot ({m['language']}): evaluation", "",
             f"Machine: {m['machine']}. FAQ index: {m['index_size']} questions, encoder `{m['encoder']}`; intent "
             f"model `{m['intent_run']}`; intent weight {m['intent_weight']}. Paraphrases: validation "
             f"{m['paraphrases']['validation']['in_scope']} in scope + {m['paraphrases']['validation']['out_of_scope']} "
             f"out of scope (chooses the thresholds), test {m['paraphrases']['test']['in_scope']} + "
             f"{m['paraphrases']['test']['out_of_scope']} (reported below).", "",
             f"Intent accuracy (test): {m['intent_accuracy']['test']:.4f} (validation "
             f"{m['intent_accuracy']['validation']:.4f}).", "",
             "| retriever | recall@1 | recall@5 | MRR | threshold | hand-off (in scope) | hand-off (out of scope) "
             "| accuracy of answered |", "|---|---|---|---|---|---|---|---|"]
    for name, r in m["retrievers"].items():
        t = r["test"]
        acc = "-" if t["answered_accuracy"] is None else f"{t['answered_accuracy']:.4f} ({t['answered']})"
        lines.append(f"| {name}{' (served)' if name == m['served'] else ''} | {t['recall@1']:.4f} | "
                     f"{t['recall@5']:.4f} | {t['mrr']:.4f} | {t['threshold']:.4f} | {t['handoff_rate']:.4f} | "
                     f"{t['handoff_rate_out_of_scope']:.4f} | {acc} |")
    lines += ["", "Thresholds maximise answered-right minus answered-wrong on the validation half; an out-of-scope "
              "message answered counts as wrong.", ""]
    return "\n".join(lines)
