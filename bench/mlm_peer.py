"""Masked-LM pretraining: transferkit's pretrain loop vs Hugging Face Trainer + DataCollatorForLanguageModeling
(what run_mlm.py does), same corpus, tokenizer, packed sequences, model initialisation, optimizer settings,
steps and machine, in one run.

    python bench/mlm_peer.py configs/pretrain_zh_mini.yaml --steps 400 --docs 4000
    python bench/mlm_peer.py configs/pretrain_zh_mini.yaml --steps 400 --docs 4000 --only transferkit \
        train.optimizer.lr=3e-4

Both sides mask token by token (the collator's default; the config's whole-word setting is turned off for the
comparison). Both models are scored by the same function on the same held-out sequences with the same fixed
masks: masked accuracy, loss and perplexity over the predicted tokens. Appends one JSON row per side to
bench/results/mlm_peer.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("overrides", nargs="*")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--docs", type=int, default=4000, help="corpus.max_documents")
    ap.add_argument("--only", default="transferkit,hf", help="comma-separated sides")
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--untie", action="store_true", help="diagnosis: an output layer of its own instead of the "
                    "input embeddings (BERT ties them)")
    args = ap.parse_args()

    import torch

    from transferkit.config import load_pretrain_config
    from transferkit.data.corpus import load_corpus
    from transferkit.evaluation.evaluate import evaluate
    from transferkit.recipes.pretrain import _build_lm, _encode, _tokenizer
    from transferkit.tasks.mlm import MaskedLMTask

    overrides = [f"corpus.max_documents={args.docs}", f"train.max_steps={args.steps}", "objective.whole_word=false",
                 f"train.eval_every={args.eval_every}", *args.overrides]
    cfg = load_pretrain_config(args.config, overrides)
    c, o, t = cfg.corpus, cfg.objective, cfg.train
    corpus = load_corpus(c.sources, text_column=c.text_column, heldout=c.heldout, dedupe=c.dedupe,
                         max_documents=c.max_documents, seed=c.seed)
    tokenizer, _, _ = _tokenizer(cfg, corpus)
    task = MaskedLMTask(mask_id=tokenizer.mask_token_id, pad_id=tokenizer.pad_token_id, vocab_size=len(tokenizer),
                        mlm_probability=o.mlm_probability, whole_word=False)
    train, held = _encode(cfg, tokenizer, corpus, task)
    print(f"{len(train)} training sequences, {len(held)} held-out; {sum(train.lengths)} tokens", flush=True)

    def build(cfg, tokenizer):
        lm = _build_lm(cfg, tokenizer, False)
        if args.untie:
            dec = lm.get_output_embeddings()
            dec.weight = torch.nn.Parameter(dec.weight.detach().clone())
            lm.config.tie_word_embeddings = False
        return lm

    def score(lm) -> dict:
        m, _ = evaluate(task, task.wrap(lm).eval(), held, device=torch.device("cpu"), batch_size=64)
        return {k: m[k] for k in ("masked_accuracy", "mlm_loss", "perplexity")}

    common = {"untied": args.untie, "config": args.config, "overrides": overrides, "steps": args.steps, "batch_size": t.batch_size,
              "lr": t.optimizer.lr, "train_sequences": len(train), "threads": torch.get_num_threads(),
              "machine": f"{cpu_name()}, {os.cpu_count()} cores"}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if "transferkit" in args.only:
            from transferkit.training.loop import fit

            lm = build(cfg, tokenizer)
            before = score(lm)
            t0 = time.perf_counter()
            res = fit(task, task.wrap(lm), train, held, cfg.train, cfg.early_stopping, Path(tmp) / "tk",
                      progress=False, label="transferkit")
            wall = time.perf_counter() - t0
            curve = [{"step": h["step"], "masked_accuracy": h["masked_accuracy"]} for h in res.history
                     if "masked_accuracy" in h]
            rows.append({"side": "transferkit", **common, "before": before, "after": score(lm), "wall_s": wall,
                         "train_s": res.train_seconds, "curve": curve})
            print(rows[-1], flush=True)
        if "hf" in args.only:
            from datasets import Dataset
            from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

            lm = build(cfg, tokenizer)
            ds = Dataset.from_dict({"input_ids": [f["input_ids"] for f in train.features]})
            targs = TrainingArguments(
                output_dir=str(Path(tmp) / "hf"), max_steps=args.steps, per_device_train_batch_size=t.batch_size,
                learning_rate=t.optimizer.lr, weight_decay=t.optimizer.weight_decay,
                warmup_steps=t.schedule.warmup_ratio, lr_scheduler_type=t.schedule.name, max_grad_norm=t.max_grad_norm,
                seed=t.seed, save_strategy="no", eval_strategy="no", report_to="none", logging_steps=50,
                disable_tqdm=True, use_cpu=True, dataloader_num_workers=0)
            collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=o.mlm_probability)
            trainer = Trainer(model=lm, args=targs, train_dataset=ds, data_collator=collator)
            t0 = time.perf_counter()
            trainer.train()
            wall = time.perf_counter() - t0
            rows.append({"side": "hf_trainer", **common, "after": score(lm), "wall_s": wall, "train_s": wall})
            print(rows[-1], flush=True)
    out = HERE / "bench" / "results" / "mlm_peer.jsonl"
    with out.open("a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    sys.exit(main())
