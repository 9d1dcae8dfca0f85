"""Training throughput and accuracy: transferkit vs Hugging Face Trainer, same model, data, machine, run.

    python bench/train_bench.py                       # defaults: see --help; writes bench/results/
    python bench/train_bench.py --train-size 1500 --epochs 2 --repeats 3
    python bench/train_bench.py --dataset bbc_news --max-length 256 --train-size 400 --repeats 1   # long text
    python bench/train_bench.py --size base --train-size 200 --repeats 1    # BERT-base-sized, random init
    TK_PRECISION=bf16 python bench/train_bench.py --variants transferkit   # transferkit with bf16 autocast
    python bench/train_bench.py --lora 8 --lr 5e-4 --variants hf_best,transferkit --epochs 3   # LoRA: peft vs us

Variants (each in its own process, so peak RSS is its own):
  hf_example   Trainer as the example scripts run it: padding to max length 128, random batches
  hf_best      Trainer at its best: dynamic padding + group_by_length, fused AdamW (the default)
  transferkit  transferkit's fit(): length-grouped batches over the whole epoch, dynamic padding

All variants: the packaged MiniLM-L6 (or, with --size base, a BERT-base-sized model built from its config,
randomly initialised, with MiniLM's tokenizer) with transformers' [CLS]+pooler head, lr 5e-5 (--lr), linear schedule,
batch 32, the same stratified training subset of the dataset, the same seeds; test accuracy is computed for
every variant with the same inference code on the de-duplicated test split. With --lora R, every variant trains
LoRA adapters of rank R (alpha 2R, dropout 0.1) on every Linear layer of the encoder with the head trained in
full: the Trainer through peft's get_peft_model (task_type SEQ_CLS, target_modules "all-linear", which saves the
classifier), transferkit through its `lora` method with the same settings.
Reported: samples/s, real (non-pad) tokens/s, padding fraction, useful FLOP/s as a fraction of this
machine's measured peak fp32 matmul rate, peak RSS, test accuracy; medians over repeats; ratios.
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

VARIANTS = ("hf_example", "hf_best", "transferkit")
MAX_LEN = 128  # --max-length sets it in the workers
LORA = 0  # --lora sets it in the workers
LR = 5e-5  # --lr sets it in the workers


# ----------------------------------------------------------------------------- shared pieces

def load_data(train_size: int, dataset: str = "rotten_tomatoes"):
    from transferkit.config import DataConfig
    from transferkit.data.prepare import load_splits
    from transferkit.data.split import stratified_sample

    splits = load_splits(DataConfig(source=dataset))
    train = stratified_sample(splits.train, train_size, seed=42) if train_size else splits.train
    return train, splits.test


def peak_matmul_gflops(n: int = 2048, reps: int = 10) -> float:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = 0.0
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b)
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t) / 1e9)
    return best


def useful_flops_per_token(config, mean_len: float) -> float:
    """Forward+backward FLOPs per real token: 6 x non-embedding parameters, plus attention scores and
    values over the real sequence length (12 x layers x hidden x length)."""
    h, i, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    non_embedding = layers * (4 * h * h + 2 * h * i) + h * h + 2 * h  # encoder + pooler + head
    return 6 * non_embedding + 12 * layers * h * mean_len


def model_config(size: str | None, n_labels: int):
    from transformers import AutoConfig, BertConfig

    from transferkit.modeling.load import SIZES, resolve

    ref = AutoConfig.from_pretrained(resolve("minilm"))
    if not size:
        return AutoConfig.from_pretrained(resolve("minilm"), num_labels=n_labels)
    return BertConfig(vocab_size=ref.vocab_size, max_position_embeddings=ref.max_position_embeddings,
                      num_labels=n_labels, **SIZES[size])


def test_accuracy(model, tokenizer, test, labels) -> float:
    from transferkit.evaluation.evaluate import evaluate
    from transferkit.tasks.classification import ClassificationTask

    task = ClassificationTask(labels=labels, max_length=MAX_LEN)
    task.check(test)
    metrics, _ = evaluate(task, model, task.encode(tokenizer, test), batch_size=64)
    return metrics["accuracy"]


# ----------------------------------------------------------------------------- workers

def worker_hf(variant: str, train, test, epochs: float, seed: int, size: str | None) -> dict:
    import numpy as np
    from datasets import Dataset
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                              Trainer, TrainingArguments, set_seed)

    from transferkit.modeling.load import resolve

    ref = resolve("minilm")
    tok = AutoTokenizer.from_pretrained(ref)
    names = sorted(set(train.labels))
    labels = {name: i for i, name in enumerate(names)}
    example = variant == "hf_example"
    ds = Dataset.from_dict({"text": train.texts, "label": [labels[y] for y in train.labels]})
    ds = ds.map(lambda b: tok(b["text"], truncation=True, max_length=MAX_LEN,
                              padding="max_length" if example else False), batched=True, remove_columns=["text"])
    set_seed(seed)
    if size:
        model = AutoModelForSequenceClassification.from_config(model_config(size, len(names)))
    else:
        model = AutoModelForSequenceClassification.from_pretrained(ref, num_labels=len(names))
    if LORA:
        from peft import LoraConfig, TaskType, get_peft_model

        model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=LORA, lora_alpha=2 * LORA,
                                                 lora_dropout=0.1, target_modules="all-linear"))
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=32, num_train_epochs=epochs, learning_rate=LR,
            seed=seed, save_strategy="no", eval_strategy="no", report_to="none", logging_strategy="no",
            disable_tqdm=True, use_cpu=True, dataloader_num_workers=0,
            train_sampling_strategy="random" if example else "group_by_length")
        trainer = Trainer(model=model, args=args, train_dataset=ds,
                          data_collator=None if example else DataCollatorWithPadding(tok))
        pad = padding_fraction_hf(trainer, ds) if not example else None
        res = trainer.train()
    seconds = res.metrics["train_runtime"]
    real = [sum(1 for t in ids if t != tok.pad_token_id) for ids in ds["input_ids"]]
    samples = len(ds) * epochs
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"seconds": seconds, "samples": samples, "real_tokens": float(np.mean(real)) * samples,
            "padding_fraction": (1 - float(np.mean(real)) / MAX_LEN) if example else pad,
            "test_accuracy": test_accuracy(model, tok, test, names), "mean_real_len": float(np.mean(real)),
            "trainable_params": trainable}


def padding_fraction_hf(trainer, ds) -> float:
    """Padding of the batches the Trainer's own sampler forms (group_by_length)."""
    sampler = trainer._get_train_sampler()
    order = list(iter(sampler))
    lengths = [len(x) for x in ds["input_ids"]]
    real = padded = 0
    for k in range(0, len(order), 32):
        batch = [lengths[i] for i in order[k:k + 32]]
        real += sum(batch)
        padded += max(batch) * len(batch)
    return 1 - real / padded


def worker_transferkit(train, test, epochs: float, seed: int, size: str | None) -> dict:
    import numpy as np
    from transformers import AutoTokenizer, set_seed

    from transferkit.config import EarlyStoppingConfig, TrainConfig
    from transferkit.modeling.load import resolve
    from transferkit.tasks.classification import ClassificationTask
    from transferkit.training.batching import epoch_batches
    from transferkit.training.loop import fit

    ref = resolve("minilm")
    tok = AutoTokenizer.from_pretrained(ref)
    task = ClassificationTask(max_length=MAX_LEN)
    task.fit_labels(train)
    enc = task.encode(tok, train)
    set_seed(seed)
    if size:
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_config(model_config(size, len(task.labels)))
        model.config.id2label = dict(enumerate(task.labels))
        model.config.label2id = {label: i for i, label in enumerate(task.labels)}
    else:
        model = task.build_model(ref, init="pretrained", size=None, dropout=None, tokenizer=tok)
    methods = None
    if LORA:
        from transferkit.methods.lora import LoRAConfig
        from transferkit.methods.stack import MethodStack

        methods = MethodStack.from_config({"lora": LoRAConfig(r=LORA, alpha=2 * LORA, dropout=0.1,
                                                              target_modules="all-linear")})
        model = methods.prepare_model(model, task=task)
    # the Trainer's defaults where the two differ: no warm-up, no weight decay
    cfg = TrainConfig.model_validate({"epochs": epochs, "batch_size": 32, "seed": seed,
                                      "optimizer": {"lr": LR, "weight_decay": 0.0},
                                      "schedule": {"warmup_ratio": 0.0}, "eval_every": 10**9,
                                      "checkpoint_every": 10**9, "precision": os.environ.get("TK_PRECISION", "auto")})
    val = task.encode(tok, test.subset(list(range(64)), "validation"))  # the loop's final evaluation: tiny
    with tempfile.TemporaryDirectory() as out:
        res = fit(task, model, enc, val, cfg, EarlyStoppingConfig(enabled=False), Path(out), progress=False,
                  methods=methods)
    batches = epoch_batches(enc.lengths, 32, seed=seed, epoch=0)
    real = sum(enc.lengths)
    padded = sum(max(enc.lengths[i] for i in b) * len(b) for b in batches)
    return {"seconds": res.train_seconds, "samples": res.examples_seen, "real_tokens": res.tokens_seen,
            "padding_fraction": 1 - real / padded, "test_accuracy": test_accuracy(model, tok, test, task.labels),
            "mean_real_len": float(np.mean(enc.lengths)),
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad)}


def run_worker(a) -> dict:
    global MAX_LEN, LORA, LR
    MAX_LEN, LORA, LR = a.max_length, a.lora, a.lr
    train, test = load_data(a.train_size, a.dataset)
    if a.test_size and a.test_size < len(test):
        test = test.subset(list(range(a.test_size)), "test")
    if a.worker == "transferkit":
        out = worker_transferkit(train, test, a.epochs, a.seed, a.size)
    else:
        out = worker_hf(a.worker, train, test, a.epochs, a.seed, a.size)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


# ----------------------------------------------------------------------------- driver

def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-size", type=int, default=3000, help="training examples (0 = all 10,200)")
    p.add_argument("--epochs", type=float, default=1)
    p.add_argument("--repeats", type=int, default=3, help="runs per variant (seeds 42, 43, ...)")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--dataset", default="rotten_tomatoes", help="rotten_tomatoes or bbc_news (long texts)")
    p.add_argument("--max-length", type=int, default=128, help="tokens; hf_example pads every text to it")
    p.add_argument("--size", choices=["base"], help="a BERT of this size from its config, randomly initialised")
    p.add_argument("--test-size", type=int, default=0, help="cap the test split (0 = all)")
    p.add_argument("--lora", type=int, default=0, help="train LoRA adapters of this rank (0: full fine-tuning)")
    p.add_argument("--lr", type=float, default=5e-5, help="learning rate")
    p.add_argument("--out", default="bench/results")
    p.add_argument("--name", help="results file stem; default train, or train_<dataset>_<max-length>[_<size>]")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=42, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        print("RESULT " + json.dumps(run_worker(a)))
        return

    import torch
    peak = peak_matmul_gflops()
    print(f"peak fp32 matmul: {peak:.1f} GFLOP/s ({torch.get_num_threads()} threads)", flush=True)
    config = model_config(a.size, 2)
    default = a.dataset == "rotten_tomatoes" and a.max_length == 128 and not a.size
    name = a.name or ("train" if default else f"train_{a.dataset}_{a.max_length}" + (f"_{a.size}" if a.size else ""))
    if a.lora and not a.name:
        name += f"_lora{a.lora}"
    runs: dict[str, list[dict]] = {}
    for variant in a.variants.split(","):
        for r in range(a.repeats):
            cmd = [sys.executable, __file__, "--worker", variant, "--train-size", str(a.train_size),
                   "--epochs", str(a.epochs), "--seed", str(42 + r), "--dataset", a.dataset,
                   "--max-length", str(a.max_length), "--test-size", str(a.test_size), "--lora", str(a.lora),
                   "--lr", str(a.lr)] + (
                   ["--size", a.size] if a.size else [])
            done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
            line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
            if done.returncode or not line:
                sys.exit(f"{variant} failed:\n{done.stderr[-3000:]}")
            res = json.loads(line[0][7:])
            res["samples_per_s"] = res["samples"] / res["seconds"]
            res["real_tokens_per_s"] = res["real_tokens"] / res["seconds"]
            flops = useful_flops_per_token(config, res["mean_real_len"]) * res["real_tokens_per_s"]
            res["useful_flops_fraction"] = flops / (peak * 1e9)
            runs.setdefault(variant, []).append(res)
            print(f"{variant} seed {42 + r}: {res['samples_per_s']:.1f} samples/s, "
                  f"{res['real_tokens_per_s']:.0f} real tokens/s, useful {res['useful_flops_fraction']:.0%}, "
                  f"padding {res['padding_fraction']:.0%}, RSS {res['peak_rss_mb']:.0f} MB, "
                  f"test acc {res['test_accuracy']:.4f}", flush=True)
    keys = ("samples_per_s", "real_tokens_per_s", "useful_flops_fraction", "padding_fraction",
            "peak_rss_mb", "test_accuracy", "trainable_params")
    summary = {v: {k: statistics.median(r[k] for r in rs) for k in keys} for v, rs in runs.items()}
    if "transferkit" in summary:
        for peer in ("hf_example", "hf_best"):
            if peer in summary:
                summary["transferkit"][f"speedup_vs_{peer}"] = (
                    summary["transferkit"]["samples_per_s"] / summary[peer]["samples_per_s"])
    result = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "torch_threads": torch.get_num_threads(), "torch": torch.__version__},
              "peak_matmul_gflops": peak,
              "settings": {"dataset": a.dataset, "max_length": a.max_length, "model": a.size or "minilm",
                           "train_size": a.train_size, "test_size": a.test_size or "all", "epochs": a.epochs,
                           "repeats": a.repeats, "batch_size": 32, "lr": a.lr,
                           "lora": {"r": a.lora, "alpha": 2 * a.lora, "dropout": 0.1, "targets": "all-linear"}
                           if a.lora else None},
              "variants": summary, "runs": runs}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2))
    write_table_and_plot(result, out, name)
    print((out / f"{name}.md").read_text())


def write_table_and_plot(result: dict, out: Path, stem: str = "train") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    v = result["variants"]
    rows = ["| variant | samples/s | real tokens/s | padding | useful FLOP/s of peak | peak RSS MB | test acc | trained params |",
            "|---|---|---|---|---|---|---|---|"]
    for name, s in v.items():
        trained = f"{s['trainable_params']:,.0f}" if "trainable_params" in s else ""
        rows.append(f"| {name} | {s['samples_per_s']:.1f} | {s['real_tokens_per_s']:.0f} | "
                    f"{s['padding_fraction']:.0%} | {s['useful_flops_fraction']:.0%} | {s['peak_rss_mb']:.0f} | "
                    f"{s['test_accuracy']:.4f} | {trained} |")
    tk = v.get("transferkit", {})
    ratios = [f"transferkit vs {k[11:]}: {x:.2f}x" for k, x in tk.items() if k.startswith("speedup_vs_")]
    st = result["settings"]
    model = "MiniLM-L6" if st.get("model", "minilm") == "minilm" else f"BERT-{st['model']} (random init)"
    lora = st.get("lora")
    how = (f"LoRA r={lora['r']} (alpha {lora['alpha']}, dropout {lora['dropout']}, all Linear layers of the encoder, "
           f"head trained), lr {st['lr']:g}" if lora else f"full fine-tuning, lr {st.get('lr', 5e-5):g}")
    text = (f"{model} on {st.get('dataset', 'rotten_tomatoes')}, max length {st.get('max_length', 128)}, {how}. "
            f"Medians of {st['repeats']} runs; {st['train_size'] or 'all'} training examples x {st['epochs']} "
            f"epochs; peak fp32 matmul {result['peak_matmul_gflops']:.0f} GFLOP/s.\n\n" + "\n".join(rows)
            + "\n\n" + "; ".join(ratios) + "\n")
    (out / f"{stem}.md").write_text(text)
    fig, ax = plt.subplots(figsize=(6, 3))
    names = list(v)
    ax.barh(names, [v[n]["samples_per_s"] for n in names], color=["#bbb", "#8ab", "#2a7"][: len(names)])
    for i, n in enumerate(names):
        ax.text(v[n]["samples_per_s"], i, f" {v[n]['samples_per_s']:.1f}", va="center")
    ax.set_xlim(0, 1.15 * max(v[n]["samples_per_s"] for n in names))
    ax.set_xlabel("training samples/s (median)")
    ax.set_title(f"{model} fine-tuning on {st.get('dataset', 'rotten_tomatoes')} "
                 f"(max length {st.get('max_length', 128)}), CPU", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / f"{stem}.png", dpi=110)


if __name__ == "__main__":
    main()
