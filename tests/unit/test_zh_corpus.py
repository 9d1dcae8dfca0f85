"""The Chinese pretraining corpora leave out what fine-tuning tests on; float16 checkpoints train in float32."""

from __future__ import annotations

import re
from collections import defaultdict

import pytest


def test_peoples_daily_corpus_leaves_out_the_ner_validation_and_test_sentences():
    from transferkit.data import corpus

    held = corpus._ner_heldout_sentences()
    assert len(held) > 5000  # 20% of the ~37k sentences (some repeat)
    docs = corpus.BUILTIN["peoples_daily"]()
    sentences = {corpus._bare(s) for d in docs for s in d}
    assert len(sentences) > 20000
    assert not sentences & held


def test_tatoeba_corpus_is_the_training_part_and_translations_of_one_sentence_stay_together():
    from transferkit.data.builtin import tatoeba_pairs, tatoeba_part
    from transferkit.data.corpus import BUILTIN

    pairs = tatoeba_pairs()
    assert len(pairs) == 32028
    parts = defaultdict(set)
    for en, _ in pairs:
        parts[en].add(tatoeba_part(en))
    assert all(len(p) == 1 for p in parts.values())
    counts = defaultdict(int)
    for en, _ in pairs:
        counts[tatoeba_part(en)] += 1
    assert 0.08 < counts["test"] / len(pairs) < 0.12 and 0.08 < counts["validation"] / len(pairs) < 0.12
    train_zh = {zh for en, zh in pairs if tatoeba_part(en) == "train"}
    docs = BUILTIN["tatoeba_zh_text"]()
    got = {d[0] for d in docs}
    assert got == train_zh and len(docs) == counts["train"]


def test_a_float16_checkpoint_is_loaded_in_float32_for_training(tiny_model, tmp_path):
    import torch
    from transformers import AutoModelForMaskedLM, BertForMaskedLM

    from transferkit.modeling.load import instantiate, load_config

    half = tmp_path / "half"
    torch.manual_seed(0)
    BertForMaskedLM(load_config(str(tiny_model))).half().save_pretrained(half)
    assert AutoModelForMaskedLM.from_pretrained(half).dtype == torch.float16  # what transformers 5 does alone
    model = instantiate(AutoModelForMaskedLM, str(half), "pretrained", load_config(str(half)))
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_a_shipped_alias_without_its_folder_says_how_to_rebuild_it(monkeypatch, tmp_path):
    from transferkit.errors import ModelError
    from transferkit.modeling import load

    monkeypatch.setitem(load.ALIASES, "zh-mini", ("transferkit", "transferkit", str(tmp_path / "absent")))
    with pytest.raises(ModelError, match=r"ships with transferkit.*python scripts/build_zh_mini.py"):
        load.resolve("zh-mini")


def test_chatterbot_and_manual_page_corpora_are_chinese_running_text():
    from transferkit.data.corpus import BUILTIN, _is_chinese

    from transferkit.data.builtin import chatterbot_conversations, dialogue_part

    chat = BUILTIN["chatterbot_zh_text"]()
    assert len(chat) > 350 and all(isinstance(t, str) and t for d in chat for t in d)
    assert sum(len(t) for d in chat for t in d) > 8000
    held = [c for c in chatterbot_conversations("chinese") if dialogue_part(c) != "train"]
    assert len(held) > 50 and not any(c in chat for c in held)  # the dialogue task's val/test stay out
    man = BUILTIN["manpages_zh_text"]()
    sentences = [s for d in man for s in d]
    assert len(man) > 500 and sum(map(len, sentences)) > 1_000_000
    assert all(_is_chinese(s) for s in sentences)
    request = re.compile(r"\.(PP|TP|SH|SS|IP|B|I|BR|IR|RB|BI)( |$)")
    assert not any("\\f" in s or request.match(s) for s in sentences)  # troff markup removed
    assert _is_chinese("如果目录列表中的目录不存在，则创建之。") and not _is_chinese("mkdir -p /tmp/x 目录")


def test_the_shipped_zh_mini_loads_as_a_masked_lm_and_fills_masks():
    import json
    from pathlib import Path

    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer, pipeline

    from transferkit.modeling import load

    folder = Path(load.resolve("zh-mini"))
    size = sum(f.stat().st_size for f in folder.iterdir()) / 1e6
    assert size < 30, f"zh-mini is {size:.1f} MB"
    build = json.loads((folder / "build.json").read_text(encoding="utf-8"))
    assert build["fp16_check"]["top1_agreement"] >= 0.98
    card = (folder / "README.md").read_text(encoding="utf-8")
    held = build["pretraining"]["heldout_after"]
    assert f"{held['masked_accuracy']:.3f}" in card and f"{held['perplexity']:,.1f}" in card
    model = AutoModelForMaskedLM.from_pretrained(folder, dtype=torch.float32)
    assert next(model.parameters()).dtype == torch.float32 and model.config.hidden_size == 256
    tok = AutoTokenizer.from_pretrained(folder)
    assert tok.tokenize("北京大学") == ["北", "京", "大", "学"]  # characters, as Chinese BERTs split them
    fill = pipeline("fill-mask", model=str(folder), device="cpu")
    text = "我们在北[MASK]大学读书。"
    out = fill(text)
    enc = tok(text, return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits[0, enc["input_ids"][0].tolist().index(tok.mask_token_id)]
    assert len(out) == 5 and out[0]["token"] == int(logits.argmax())  # the pipeline runs the shipped weights
    assert [o["score"] for o in out] == sorted((o["score"] for o in out), reverse=True)
