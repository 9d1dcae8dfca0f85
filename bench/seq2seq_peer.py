"""BERT2BERT headline generation: transferkit's seq2seq task vs Hugging Face `Seq2SeqTrainer` (as
run_summarization.py sets it up), same warm start (the packaged MiniLM as encoder and decoder), same BBC
training sample and test split, epochs, batch size, learning rate, generation settings and machine, in one run.

    python bench/seq2seq_peer.py                          # 600 training articles, 2 epochs, greedy, 1 repeat
    python bench/seq2seq_peer.py --train-size 1500 --epochs 3 --repeats 3

Each side runs in its own process (so its peak RSS is its own), one after the other. Reported per side:
training samples/s, peak RSS, test ROUGE-1/2/L (both scored by transferkit's ROUGE, rouge-score with its
stemmer), wall time of the test generation; medians over repeats and the ratios transferkit / Trainer.
Appends to bench/results/seq2seq_peer.jsonl and writes seq2seq_peer.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
RESULTS = HERE / "bench" / "results"
MAX_SOURCE, MAX_TARGET = 256, 32


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def splits(train_size: int, seed: int):
    from transferkit.config import DataConfig
    from transferkit.data.prepare import load_splits
    from transferkit.tasks.seq2seq import Seq2SeqTask

    cfg = DataConfig(source="bbc_headlines", train_limit=train_size, train_sample_seed=seed)
    s = load_splits(cfg, Seq2SeqTask().read)
    return s.train, s.test


def worker_transferkit(args) -> dict:
    from transferkit.config import load_config
    from transferkit.recipes import finetune

    # the Trainer's defaults where the two differ: no warm-up, no weight decay; no evaluation during training
    raw = {"name": "tk", "output": {"dir": f"{args.tmp}/{{name}}"},
           "model": {"path": "minilm", "max_length": MAX_SOURCE},
           "data": {"source": "bbc_headlines", "train_limit": args.train_size, "train_sample_seed": args.seed},
           "task": {"type": "seq2seq", "seq2seq": {"max_target_length": MAX_TARGET},
                    "generation": {"max_new_tokens": MAX_TARGET}},
           "train": {"epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed, "eval_every": 10**9,
                     "optimizer": {"lr": args.lr, "weight_decay": 0.0}, "schedule": {"warmup_ratio": 0.0}},
           "early_stopping": {"enabled": False}, "compare": {"linear_probe": False, "majority": False}}
    t = time.perf_counter()
    s = finetune.run(load_config(raw=raw), progress=False)
    wall = time.perf_counter() - t
    return {"train_samples_per_s": s["train"]["samples_per_s"], "train_s": s["train"]["seconds"],
            "rouge1": s["test"]["rouge1"], "rouge2": s["test"]["rouge2"], "rougeL": s["test"]["rougeL"],
            "wall_s": wall}


def worker_hf(args) -> dict:
    import numpy as np
    from datasets import Dataset
    from transformers import (AutoTokenizer, DataCollatorForSeq2Seq, EncoderDecoderModel, Seq2SeqTrainer,
                              Seq2SeqTrainingArguments, set_seed)

    from transferkit.evaluation.textgen import generation_metrics
    from transferkit.modeling.load import resolve

    set_seed(args.seed)
    train, test = splits(args.train_size, args.seed)
    ref = resolve("minilm")
    tok = AutoTokenizer.from_pretrained(ref)
    model = EncoderDecoderModel.from_encoder_decoder_pretrained(ref, ref)
    model.config.decoder_start_token_id = tok.cls_token_id
    model.config.pad_token_id = tok.pad_token_id
    model.config.eos_token_id = tok.sep_token_id
    model.generation_config.decoder_start_token_id = tok.cls_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.sep_token_id

    def encode(split):
        enc = tok(list(split.texts), max_length=MAX_SOURCE, truncation=True)
        enc["labels"] = tok(text_target=[str(y) for y in split.labels], max_length=MAX_TARGET, truncation=True)["input_ids"]
        return Dataset.from_dict(dict(enc))

    targs = Seq2SeqTrainingArguments(
        output_dir=str(Path(args.tmp) / "hf"), per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=64, num_train_epochs=args.epochs, learning_rate=args.lr, seed=args.seed,
        save_strategy="no", eval_strategy="no", report_to="none", logging_strategy="no", disable_tqdm=True,
        use_cpu=True, dataloader_num_workers=0, predict_with_generate=True, generation_max_length=MAX_TARGET + 2,
        generation_num_beams=1)
    trainer = Seq2SeqTrainer(model=model, args=targs, train_dataset=encode(train),
                             data_collator=DataCollatorForSeq2Seq(tok, model=model, label_pad_token_id=-100),
                             processing_class=tok)
    t = time.perf_counter()
    res = trainer.train()
    train_s = time.perf_counter() - t
    t = time.perf_counter()
    pred = trainer.predict(encode(test))
    ids = np.where(pred.predictions < 0, tok.pad_token_id, pred.predictions)
    texts = [x.strip() for x in tok.batch_decode(ids, skip_special_tokens=True)]
    m = generation_metrics(texts, [str(y) for y in test.labels])
    return {"train_samples_per_s": res.metrics["train_samples_per_second"], "train_s": train_s,
            "rouge1": m["rouge1"], "rouge2": m["rouge2"], "rougeL": m["rougeL"],
            "wall_s": train_s + time.perf_counter() - t}


def child(args) -> None:
    r = (worker_transferkit if args.worker == "transferkit" else worker_hf)(args)
    r["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print("RESULT " + json.dumps(r), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train-size", type=int, default=600)
    ap.add_argument("--epochs", type=float, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--worker", choices=["transferkit", "hf"], help=argparse.SUPPRESS)
    ap.add_argument("--tmp", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return child(args)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    rows: dict[str, list[dict]] = {"transferkit": [], "hf": []}
    for rep in range(args.repeats):
        for side in ("hf", "transferkit") if rep % 2 else ("transferkit", "hf"):
            with tempfile.TemporaryDirectory() as tmp:
                cmd = [sys.executable, __file__, "--worker", side, "--tmp", tmp, "--train-size", str(args.train_size),
                       "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--lr", str(args.lr),
                       "--seed", str(args.seed)]
                p = subprocess.run(cmd, env=env, capture_output=True, text=True)
                line = next((x for x in p.stdout.splitlines() if x.startswith("RESULT ")), None)
                if line is None:
                    sys.exit(f"{side} failed:\n{p.stderr[-3000:]}")
                rows[side].append(json.loads(line[7:]))
                print(side, rows[side][-1], flush=True)
    med = {s: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for s, rs in rows.items()}
    ratio = {k: med["transferkit"][k] / med["hf"][k] for k in ("train_samples_per_s", "peak_rss_mb")}
    record = {"machine": f"{cpu_name()}, {os.cpu_count()} cores", "threads": os.environ.get("OMP_NUM_THREADS"),
              "train_size": args.train_size, "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
              "repeats": args.repeats, "median": med, "ratio_transferkit_over_hf": ratio, "runs": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    with (RESULTS / "seq2seq_peer.jsonl").open("a") as f:
        f.write(json.dumps(record) + "\n")
    lines = [f"# BERT2BERT headlines: transferkit vs Seq2SeqTrainer ({record['machine']})", "",
             f"`python bench/seq2seq_peer.py --train-size {args.train_size} --epochs {args.epochs} --repeats "
             f"{args.repeats}`; MiniLM encoder and decoder, batch {args.batch_size}, lr {args.lr}, greedy, "
             f"medians over {args.repeats} repeat(s).", "",
             "| | train samples/s | peak RSS MB | test ROUGE-1 | ROUGE-2 | ROUGE-L |", "|---|---|---|---|---|---|"]
    for s, name in (("transferkit", "transferkit"), ("hf", "Seq2SeqTrainer")):
        m = med[s]
        lines.append(f"| {name} | {m['train_samples_per_s']:.2f} | {m['peak_rss_mb']:.0f} | {m['rouge1']:.4f} | "
                     f"{m['rouge2']:.4f} | {m['rougeL']:.4f} |")
    lines += ["", f"Ratios transferkit / Trainer: samples/s {ratio['train_samples_per_s']:.2f}x, peak RSS "
              f"{ratio['peak_rss_mb']:.2f}x."]
    (RESULTS / "seq2seq_peer.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
