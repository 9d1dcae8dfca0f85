"""Batch inference: transferkit's Predictor vs transformers.pipeline on the same model folder and texts.

    python bench/infer_bench.py runs/sentiment          # a run folder from `make demo`
    python bench/infer_bench.py runs/sentiment --repeats 3 --latency-texts 200

Throughput over the Rotten Tomatoes test split (1,276 texts): pipeline with its default settings (one text
per forward pass), pipeline with batch_size=32, and transferkit with batch 32 (length-sorted batches): PyTorch
fp32 and int8 (dynamic quantization of the encoder's Linear layers), and the run's ONNX export, fp32 and int8
(ONNX Runtime; exported with `transferkit export RUN --int8` when the folder is missing).
Latency: one text per call, median and p90 over `--latency-texts` texts. Test accuracy and label agreement
with the pipeline for each. Writes bench/results/infer.json and infer.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="run folder")
    p.add_argument("--export", default=None, help="its export folder (default: RUN/export, written with "
                   "`transferkit export RUN --int8` when missing)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--latency-texts", type=int, default=200)
    p.add_argument("--out", default="bench/results")
    a = p.parse_args()

    import torch
    from transformers import pipeline

    from transferkit.config import DataConfig
    from transferkit.data.prepare import load_splits
    from transferkit.deploy.onnx import INT8_FILE
    from transferkit.deploy.predictor import Predictor, model_dir_of
    from transferkit.recipes.export import timed

    exp = Path(a.export) if a.export else Path(a.run) / "export"
    if not (exp / INT8_FILE).is_file():
        from transferkit.recipes.export import export

        export(a.run, exp, int8=True)
    test = load_splits(DataConfig(source="rotten_tomatoes")).test
    texts, gold = test.texts, test.labels
    pipe = pipeline("text-classification", model=str(model_dir_of(a.run)), device="cpu", trust_remote_code=True)
    ours = {"transferkit": Predictor.load(a.run, device="cpu"), "transferkit_int8": Predictor.load(a.run, int8=True),
            "transferkit_onnx": Predictor.load(exp), "transferkit_onnx_int8": Predictor.load(exp, int8=True)}
    batch = {"pipeline_default": lambda xs: pipe(xs), "pipeline_batch32": lambda xs: pipe(xs, batch_size=32)}
    for name, pr in ours.items():
        batch[name] = lambda xs, pr=pr: pr.predict(xs, batch_size=32)
    for fn in batch.values():
        fn(texts[:64])  # warm-up

    res: dict[str, dict] = {}
    labels: dict[str, list] = {}
    for name, fn in batch.items():
        t, preds = timed(lambda: fn(texts), 1 if name == "pipeline_default" else a.repeats)
        labels[name] = [x["label"] for x in preds]
        res[name] = {"seconds": t, "texts_per_s": len(texts) / t,
                     "test_accuracy": sum(y == g for y, g in zip(labels[name], gold)) / len(texts)}

    lat_texts = texts[: a.latency_texts]
    single = {"pipeline": lambda x: pipe(x), **{k: (lambda x, pr=pr: pr.predict([x])) for k, pr in ours.items()}}
    for name, fn in single.items():
        lats = []
        for x in lat_texts:
            t0 = time.perf_counter()
            fn(x)
            lats.append((time.perf_counter() - t0) * 1000)
        lats.sort()
        res[f"{name}_latency_ms"] = {"median": statistics.median(lats), "p90": lats[int(0.9 * len(lats))]}

    base = res["pipeline_default"]["texts_per_s"]
    for k in batch:
        res[k]["speedup_vs_pipeline_default"] = res[k]["texts_per_s"] / base
        res[k]["speedup_vs_pipeline_batch32"] = res[k]["texts_per_s"] / res["pipeline_batch32"]["texts_per_s"]
        res[k]["label_agreement_with_pipeline"] = sum(
            x == y for x, y in zip(labels[k], labels["pipeline_default"])) / len(texts)
    result = {"texts": len(texts), "threads": torch.get_num_threads(), "machine": cpu_name(), "results": res}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "infer.json").write_text(json.dumps(result, indent=2))
    acc0 = res["pipeline_default"]["test_accuracy"]
    md = [f"Rotten Tomatoes test split ({len(texts)} texts), {torch.get_num_threads()} threads, {cpu_name()}; "
          f"medians of {a.repeats} runs (pipeline default: 1 run). `python bench/infer_bench.py {a.run}`.", "",
          "| variant | texts/s | vs pipeline default | vs pipeline batch 32 | test accuracy | vs pipeline (pt) |",
          "|---|---|---|---|---|---|"]
    md += [f"| {k} | {res[k]['texts_per_s']:.1f} | {res[k]['speedup_vs_pipeline_default']:.2f}x | "
           f"{res[k]['speedup_vs_pipeline_batch32']:.2f}x | {res[k]['test_accuracy']:.4f} | "
           f"{100 * (res[k]['test_accuracy'] - acc0):+.2f} |" for k in batch]
    md += ["", "| latency, 1 text per call | median ms | p90 ms |", "|---|---|---|"]
    md += [f"| {k[:-11]} | {v['median']:.1f} | {v['p90']:.1f} |" for k, v in res.items() if k.endswith("_latency_ms")]
    (out / "infer.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


def cpu_name() -> str:
    import platform

    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    main()
