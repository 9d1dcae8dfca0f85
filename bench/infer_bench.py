"""Batch inference: transferkit's Predictor vs transformers.pipeline on the same model folder and texts.

    python bench/infer_bench.py runs/sentiment          # a run folder from `make demo`
    python bench/infer_bench.py runs/sentiment --repeats 3 --latency-texts 200

Throughput over the Rotten Tomatoes test split (1,276 texts): pipeline with its default settings (one text
per forward pass), pipeline with batch_size=32, and transferkit with batch 32 (length-sorted batches), fp32
and int8 (dynamic quantization of the encoder's Linear layers).
Latency: one text per call, median and p90 over `--latency-texts` texts. Also checks that both give the
same labels. Writes bench/results/infer.json and infer.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="run folder or model folder")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--latency-texts", type=int, default=200)
    p.add_argument("--out", default="bench/results")
    a = p.parse_args()

    import torch
    from transformers import pipeline

    from transferkit.config import DataConfig
    from transferkit.data.prepare import load_splits
    from transferkit.deploy.predictor import Predictor, model_dir_of

    test = load_splits(DataConfig(source="rotten_tomatoes")).test
    texts = test.texts
    ours = Predictor.load(a.run, device="cpu")
    ours8 = Predictor.load(a.run, int8=True)
    pipe = pipeline("text-classification", model=str(model_dir_of(a.run)), device="cpu",
                    trust_remote_code=True)
    ours.predict(texts[:64])
    ours8.predict(texts[:64])
    pipe(texts[:64])

    res: dict[str, dict] = {}
    t, preds_pipe1 = timed(lambda: pipe(texts), a.repeats)
    res["pipeline_default"] = {"seconds": t, "texts_per_s": len(texts) / t}
    t, preds_pipe = timed(lambda: pipe(texts, batch_size=32), a.repeats)
    res["pipeline_batch32"] = {"seconds": t, "texts_per_s": len(texts) / t}
    t, preds_ours = timed(lambda: ours.predict(texts, batch_size=32), a.repeats)
    res["transferkit_batch32"] = {"seconds": t, "texts_per_s": len(texts) / t}
    t, preds_int8 = timed(lambda: ours8.predict(texts, batch_size=32), a.repeats)
    res["transferkit_int8_batch32"] = {"seconds": t, "texts_per_s": len(texts) / t}
    agree = sum(p["label"] == o["label"] for p, o in zip(preds_pipe, preds_ours)) / len(texts)
    gold = test.labels
    acc = {"transferkit": sum(o["label"] == g for o, g in zip(preds_ours, gold)) / len(texts),
           "transferkit_int8": sum(o["label"] == g for o, g in zip(preds_int8, gold)) / len(texts),
           "pipeline": sum(p["label"] == g for p, g in zip(preds_pipe1, gold)) / len(texts)}

    lat_texts = texts[: a.latency_texts]
    for name, fn in (("pipeline", lambda x: pipe(x)), ("transferkit", lambda x: ours.predict([x])),
                     ("transferkit_int8", lambda x: ours8.predict([x]))):
        lats = []
        for x in lat_texts:
            t0 = time.perf_counter()
            fn(x)
            lats.append((time.perf_counter() - t0) * 1000)
        lats.sort()
        res[f"{name}_latency_ms"] = {"median": statistics.median(lats), "p90": lats[int(0.9 * len(lats))]}

    tk = res["transferkit_batch32"]["texts_per_s"]
    tk8 = res["transferkit_int8_batch32"]["texts_per_s"]
    result = {"texts": len(texts), "threads": torch.get_num_threads(), "results": res,
              "speedup_vs_pipeline_default": tk / res["pipeline_default"]["texts_per_s"],
              "speedup_vs_pipeline_batch32": tk / res["pipeline_batch32"]["texts_per_s"],
              "int8_speedup_vs_pipeline_default": tk8 / res["pipeline_default"]["texts_per_s"],
              "int8_speedup_vs_pipeline_batch32": tk8 / res["pipeline_batch32"]["texts_per_s"],
              "label_agreement": agree, "test_accuracy": acc}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "infer.json").write_text(json.dumps(result, indent=2))
    md = [f"Rotten Tomatoes test split ({len(texts)} texts), {torch.get_num_threads()} threads; medians of "
          f"{a.repeats} runs each.", "",
          "| variant | texts/s |", "|---|---|"]
    md += [f"| {k} | {v['texts_per_s']:.1f} |" for k, v in res.items() if "texts_per_s" in v]
    md += ["", "| latency, 1 text per call | median ms | p90 ms |", "|---|---|---|"]
    md += [f"| {k[:-11]} | {v['median']:.1f} | {v['p90']:.1f} |" for k, v in res.items() if k.endswith("_latency_ms")]
    md += ["", f"transferkit vs pipeline (default): {result['speedup_vs_pipeline_default']:.2f}x; "
               f"vs pipeline (batch 32): {result['speedup_vs_pipeline_batch32']:.2f}x; "
               f"int8: {result['int8_speedup_vs_pipeline_default']:.2f}x / "
               f"{result['int8_speedup_vs_pipeline_batch32']:.2f}x; fp32 labels equal the pipeline's on {agree:.2%} "
               f"of texts; test accuracy {acc['transferkit']:.4f} (ours fp32) / {acc['transferkit_int8']:.4f} "
               f"(ours int8) / {acc['pipeline']:.4f} (pipeline)."]
    (out / "infer.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
