"""The few-shot peer: SetFit 1.2.0 (`pip install -e '.[bench]'`) with the same packaged MiniLM on exactly the samples
`transferkit fewshot` trains on (transferkit's own k-per-class sampler, same seeds), scored on the same test
split. Rows (method "setfit") are appended to the fewshot folder's fewshot.jsonl, so the next `transferkit fewshot`
(or `--summarize` here) puts them in the same table and plot.

    python bench/fewshot_setfit.py configs/fewshot_rt.yaml --shots 8,16,32,64 --seeds 1,2,3,4,5,6,7,8,9,10
    python bench/fewshot_setfit.py configs/fewshot_rt.yaml --summarize

SetFit runs with its defaults (what a user would pick): batch size 16, one epoch of its pair sampling
("oversampling": as many pairs as the larger of the positive and negative pair sets), body learning rate 2e-5,
a logistic-regression head. Wall time covers model loading, training and the test predictions, as for the
transferkit rows.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", type=Path)
    ap.add_argument("overrides", nargs="*", help="dotted overrides, as for transferkit fewshot")
    ap.add_argument("--shots", default=None, help="e.g. 8,16,32,64 (default: the config's fewshot.shots)")
    ap.add_argument("--seeds", default=None, help="e.g. 1,2,3 (default: the config's fewshot.seeds)")
    ap.add_argument("--summarize", action="store_true", help="only rewrite fewshot.md/png from what is measured")
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transferkit.config import _validate, apply_overrides, read_yaml
    from transferkit.config import RunConfig
    from transferkit.recipes import fewshot as fs_recipe

    raw, fs = fs_recipe.split_fewshot(apply_overrides(read_yaml(a.config), a.overrides), str(a.config))
    base = _validate(json.loads(json.dumps(raw)), RunConfig, str(a.config))
    root = base.run_dir
    from transferkit.recipes.curve import _open_curve_folder

    _open_curve_folder(root, kind="fewshot")  # the same folder as `transferkit fewshot`'s
    path = root / "fewshot.jsonl"
    shots = [int(x) for x in a.shots.split(",")] if a.shots else fs.shots
    seeds = [int(x) for x in a.seeds.split(",")] if a.seeds else fs.seeds
    if not a.summarize:
        done = {(r["method"], r["k"], r["seed"]) for r in fs_recipe._rows(path)}
        for k in shots:
            for seed in seeds:
                if ("setfit", k, seed) in done:
                    continue
                row = one(base, k, seed)
                fs_recipe._append(path, row)
                print(json.dumps(row), flush=True)
    result = fs_recipe.summarize(fs_recipe._rows(path), shots)
    result["name"], result["folder"] = base.name, str(root)
    (root / "fewshot.json").write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    fs_recipe.write_table(result, root / "fewshot.md", root / "fewshot.png")
    print((root / "fewshot.md").read_text())


def one(base, k: int, seed: int) -> dict:
    import numpy as np
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments
    from sklearn.metrics import accuracy_score, f1_score

    from transferkit.data.prepare import load_splits
    from transferkit.modeling import load as mload

    data = base.data.model_copy(update={"train_per_class": k, "validation_per_class": k, "train_sample_seed": seed})
    splits = load_splits(data)  # the very sampler (and seed) of `transferkit fewshot`
    labels = sorted(set(splits.train.labels))
    t0 = time.perf_counter()
    model = SetFitModel.from_pretrained(str(mload.resolve(base.model.path)), labels=labels)
    model.model_body.max_seq_length = base.model.max_length
    args = TrainingArguments(batch_size=16, num_epochs=1, seed=seed, report_to="none", show_progress_bar=False,
                             save_strategy="no", eval_strategy="no")
    index = {y: i for i, y in enumerate(labels)}
    train = Dataset.from_dict({"text": splits.train.texts, "label": [index[y] for y in splits.train.labels]})
    Trainer(model=model, args=args, train_dataset=train).train()
    t_train = time.perf_counter() - t0
    pred = model.predict(splits.test.texts, batch_size=64, as_numpy=True)
    pred = np.asarray([p if isinstance(p, str) else labels[int(p)] for p in list(pred)])
    gold = np.asarray(splits.test.labels)
    return {"method": "setfit", "k": k, "seed": seed, "accuracy": float(accuracy_score(gold, pred)),
            "macro_f1": float(f1_score(gold, pred, average="macro")), "wall_s": time.perf_counter() - t0,
            "train_s": t_train, "model": base.model.path, "peer": "setfit 1.2.0"}


if __name__ == "__main__":
    sys.exit(main())
