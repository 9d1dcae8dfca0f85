"""Hyperparameter search: `transferkit search` against Hugging Face `Trainer.hyperparameter_search(backend="optuna")`
over the same space, the same number of trials, the same sampler seed and the same pruner, on the same data, in
one run (one after the other, each alone on the machine).

    python bench/search_peer.py --trials 20                 # configs/search_sentiment.yaml's space, 2,000 labels
    python bench/search_peer.py --trials 4 --train-size 400  # a quick look

Both pick by validation accuracy (HF: the accuracy of the trial's last evaluation, which is what its Optuna
integration reports; transferkit: the best evaluation's, the checkpoint it keeps). The chosen setting of each is then
scored on the test split once. Writes bench/results/search_peer.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from methods_table import cpu_name  # bench/ is on sys.path when a script here runs

HERE = Path(__file__).resolve().parents[1]
RESULTS = HERE / "bench" / "results"
WORK = HERE / "bench" / "work" / "search_peer"
CONFIG = HERE / "configs" / "search_sentiment.yaml"


def splits(train_size: int):
    from transferkit.config import load_config
    from transferkit.data.prepare import load_splits
    from transferkit.data.split import stratified_sample

    cfg = load_config(CONFIG)
    s = load_splits(cfg.data.model_copy(update={"train_limit": None}))
    train = stratified_sample(s.train, train_size, seed=42)
    return train, s.validation, s.test


def hf_search(trials: int, train_size: int) -> dict:
    import numpy as np
    import optuna
    from datasets import Dataset
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments)

    from transferkit.modeling.load import resolve
    from transferkit.recipes.search import split_search
    from transferkit.config import read_yaml

    _, space = split_search(read_yaml(CONFIG), str(CONFIG))
    train, val, test = splits(train_size)
    ref = resolve("minilm")
    tok = AutoTokenizer.from_pretrained(ref)
    names = sorted(set(train.labels))
    lab = {n: i for i, n in enumerate(names)}

    def enc(ex):
        ds = Dataset.from_dict({"text": ex.texts, "label": [lab[y] for y in ex.labels]})
        return ds.map(lambda b: tok(b["text"], truncation=True, max_length=128), batched=True, remove_columns=["text"])

    tr, va, te = enc(train), enc(val), enc(test)

    def model_init(trial=None):
        return AutoModelForSequenceClassification.from_pretrained(ref, num_labels=len(names))

    def accuracy(p):
        return {"accuracy": float((np.argmax(p.predictions, -1) == p.label_ids).mean())}

    def hp_space(trial):
        out = {}
        for key, spec in space.space.items():
            name = {"train.optimizer.lr": "learning_rate", "train.batch_size": "per_device_train_batch_size",
                    "train.optimizer.weight_decay": "weight_decay", "train.schedule.warmup_ratio": "warmup_ratio"}[key]
            if spec.choices is not None:
                out[name] = trial.suggest_categorical(key, spec.choices)
            else:
                out[name] = trial.suggest_float(key, spec.low, spec.high, log=spec.log)
        return out

    out_dir = tempfile.mkdtemp(prefix="hf_search_")
    args = TrainingArguments(output_dir=out_dir, num_train_epochs=3, eval_strategy="steps", eval_steps=20,
                             save_strategy="no", report_to="none", logging_strategy="no", disable_tqdm=True,
                             use_cpu=True, seed=42, train_sampling_strategy="group_by_length",
                             per_device_eval_batch_size=64, warmup_ratio=0.06)
    trainer = Trainer(model_init=model_init, args=args, train_dataset=tr, eval_dataset=va,
                      data_collator=DataCollatorWithPadding(tok), compute_metrics=accuracy)
    t0 = time.time()
    best = trainer.hyperparameter_search(
        hp_space=hp_space, compute_objective=lambda m: m["eval_accuracy"], n_trials=trials, direction="maximize",
        backend="optuna", sampler=optuna.samplers.TPESampler(seed=space.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=space.startup_trials, n_warmup_steps=space.warmup_steps))
    wall = time.time() - t0
    # the chosen setting, trained once more and scored on test
    for k, v in hp_space(optuna.trial.FixedTrial(best.hyperparameters)).items():
        setattr(trainer.args, k, v)
    trainer.model = model_init()
    trainer.train()
    test_acc = accuracy(trainer.predict(te))["accuracy"]
    shutil.rmtree(out_dir, ignore_errors=True)
    return {"best_validation": best.objective, "best_params": best.hyperparameters, "wall_s": wall,
            "test_accuracy_of_best": test_acc}


def tk_search(trials: int, train_size: int) -> dict:
    import subprocess

    import yaml

    shutil.rmtree(WORK, ignore_errors=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFERKIT_REGISTRY": "off"}
    over = [f"output.dir={WORK}/{{name}}", f"data.train_limit={train_size}", "data.train_sample_seed=42"]
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "transferkit.cli", "search", str(CONFIG), "-q", "--trials", str(trials),
                    *over], check=True, env=env, cwd=HERE)
    wall = time.time() - t0
    s = json.loads((WORK / "sentiment_search" / "search.json").read_text())
    best = yaml.safe_load((WORK / "sentiment_search" / "best.yaml").read_text())
    # the chosen setting, trained once more and scored on test
    best["name"] = "best"
    best["output"] = {"dir": str(WORK / "{name}")}
    (WORK / "best.yaml").write_text(yaml.safe_dump(best))
    subprocess.run([sys.executable, "-m", "transferkit.cli", "finetune", str(WORK / "best.yaml"), "-q", "--overwrite"],
                   check=True, env=env, cwd=HERE)
    test_acc = json.loads((WORK / "best" / "metrics.json").read_text())["test"]["accuracy"]
    return {"best_validation": s.get("best_value"), "best_params": s.get("best_params"), "wall_s": wall,
            "trials": s["trials"], "test_accuracy_of_best": test_acc}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--train-size", type=int, default=2000)
    a = ap.parse_args()
    cpu = cpu_name()
    res = {"machine": f"{cpu}, {os.cpu_count()} cores", "trials": a.trials, "train_size": a.train_size,
           "transferkit": tk_search(a.trials, a.train_size), "hf_trainer": hf_search(a.trials, a.train_size)}
    res["wall_ratio"] = res["transferkit"]["wall_s"] / res["hf_trainer"]["wall_s"]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "search_peer.json").write_text(json.dumps(res, indent=2))
    t, h = res["transferkit"], res["hf_trainer"]
    lines = [f"# Hyperparameter search: transferkit vs Trainer.hyperparameter_search (optuna)", "",
             f"`python bench/search_peer.py --trials {a.trials} --train-size {a.train_size}` on {res['machine']}: "
             "the space of configs/search_sentiment.yaml, TPE seed and median pruner the same.", "",
             "| | best validation accuracy | test accuracy of the chosen setting | wall s (search) |", "|---|---|---|---|",
             f"| transferkit search | {t['best_validation']:.4f} | {t['test_accuracy_of_best']:.4f} | {t['wall_s']:.0f} |",
             f"| Trainer.hyperparameter_search | {h['best_validation']:.4f} | {h['test_accuracy_of_best']:.4f} | "
             f"{h['wall_s']:.0f} |", "", f"Wall-time ratio transferkit / Trainer: {res['wall_ratio']:.2f}."]
    (RESULTS / "search_peer.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
