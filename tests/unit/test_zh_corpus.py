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

    chat = BUILTIN["chatterbot_zh_text"]()
    assert len(chat) > 400 and all(isinstance(t, str) and t for d in chat for t in d)
    assert sum(len(t) for d in chat for t in d) > 9000
    man = BUILTIN["manpages_zh_text"]()
    sentences = [s for d in man for s in d]
    assert len(man) > 500 and sum(map(len, sentences)) > 1_000_000
    assert all(_is_chinese(s) for s in sentences)
    request = re.compile(r"\.(PP|TP|SH|SS|IP|B|I|BR|IR|RB|BI)( |$)")
    assert not any("\\f" in s or request.match(s) for s in sentences)  # troff markup removed
    assert _is_chinese("如果目录列表中的目录不存在，则创建之。") and not _is_chinese("mkdir -p /tmp/x 目录")
