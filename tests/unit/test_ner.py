"""NER: schemes, sub-word alignment, windows, span round trips, seqeval figures, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from transferkit.data import tagging
from transferkit.errors import DataError
from transferkit.tasks.ner import IGNORE, TokenClassificationTask


def test_schemes_round_trip():
    spans = [(0, 2, "PER"), (3, 4, "LOC"), (4, 7, "ORG")]
    bio = tagging.spans_to_tags(spans, 8, "bio")
    assert bio == ["B-PER", "I-PER", "O", "B-LOC", "B-ORG", "I-ORG", "I-ORG", "O"]
    bioes = tagging.spans_to_tags(spans, 8, "bioes")
    assert bioes == ["B-PER", "E-PER", "O", "S-LOC", "B-ORG", "I-ORG", "E-ORG", "O"]
    assert tagging.tags_to_spans(bio) == spans
    assert tagging.tags_to_spans(bioes) == spans
    # IO cannot separate adjacent entities of one type, but reads the rest
    assert tagging.tags_to_spans(tagging.spans_to_tags(spans, 8, "io")) == spans
    # IOB1: I- after O starts an entity; B- only between two entities of a type
    assert tagging.tags_to_spans(["I-PER", "I-PER", "B-PER", "O", "I-LOC"]) == [
        (0, 2, "PER"), (2, 3, "PER"), (4, 5, "LOC")]


def test_bad_tags_name_the_record():
    with pytest.raises(DataError, match=r"f\.conll line 3: tag 'PERSON' at word 2"):
        tagging.tags_to_spans(["O", "PERSON"], strict=True, where="f.conll line 3")


def test_subword_alignment_first_and_all(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    words = ["the", "moviestar", "movie", "plotland"]  # the two made-up words split into several pieces
    enc = tok(words, is_split_into_words=True, add_special_tokens=False)
    wids = [None, *enc.word_ids(), None]
    n1, n3 = wids.count(1), wids.count(3)
    assert n1 >= 2 and n3 >= 2
    tags = tagging.spans_to_tags([(1, 2, "PER"), (3, 4, "LOC")], 4, "bio")

    first = TokenClassificationTask(types=["LOC", "PER"], label_subtokens="first")
    lab = [first.labels[i] if i != IGNORE else None for i in first._piece_labels(tags, wids)]
    assert lab == [None, "O", "B-PER", *[None] * (n1 - 1), "O", "B-LOC", *[None] * (n3 - 1), None]

    every = TokenClassificationTask(types=["LOC", "PER"], label_subtokens="all")
    lab = [every.labels[i] if i != IGNORE else None for i in every._piece_labels(tags, wids)]
    assert lab == [None, "O", "B-PER", *["I-PER"] * (n1 - 1), "O", "B-LOC", *["I-LOC"] * (n3 - 1), None]

    # BIOES: a single-word entity split into pieces becomes B- ... E-; decoding folds it back to S-
    bioes = TokenClassificationTask(types=["LOC", "PER"], label_subtokens="all", scheme="bioes")
    tags = tagging.spans_to_tags([(1, 2, "PER")], 4, "bioes")
    lab = [bioes.labels[i] if i != IGNORE else None for i in bioes._piece_labels(tags, wids)]
    assert lab[2:2 + n1] == ["B-PER", *["I-PER"] * (n1 - 2), "E-PER"]
    word_probs = np.zeros((4, len(bioes.labels)))
    for w, t in enumerate(["O", "B-PER", "O", "O"]):  # what the first pieces predict
        word_probs[w, bioes.labels.index(t)] = 1
    assert bioes.tags_of(word_probs) == ["O", "S-PER", "O", "O"]


def test_character_spans_round_trip():
    text = "Angela Merkel met Macron in Paris, France."
    ents = [{"start": 0, "end": 13, "label": "PER"}, {"start": 18, "end": 24, "label": "PER"},
            {"start": 28, "end": 33, "label": "LOC"}, {"start": 35, "end": 41, "label": "LOC"}]
    rec = tagging.record_from_spans(text, ents, "x line 1")
    assert rec["tokens"] == ["Angela", "Merkel", "met", "Macron", "in", "Paris", ",", "France", "."]
    assert rec["spans"] == [(0, 2, "PER"), (3, 4, "PER"), (5, 6, "LOC"), (7, 8, "LOC")]
    # back: gold tags as one-hot scores through the decoder give the same character spans
    task = TokenClassificationTask(types=["LOC", "PER"])
    ex = tagging.to_examples([rec], "test")
    tags = task.word_tags(ex)[0]
    probs = np.eye(len(task.labels))[[task.labels.index(t) for t in tags]]

    class Enc:
        meta = {"inputs": ex.inputs}

    out = task.decode([probs], Enc())[0]["entities"]
    assert [(e["start"], e["end"], e["type"], e["text"]) for e in out] == [
        (e["start"], e["end"], e["label"], text[e["start"]:e["end"]]) for e in ents]


def test_entity_inside_a_word_is_cut_there():
    rec = tagging.record_from_spans("北京大学在海淀", [[0, 2, "LOC"]], "r")
    assert rec["tokens"][:2] == ["北", "京"] and rec["spans"] == [(0, 2, "LOC")]
    rec = tagging.record_from_spans("pre-Brexit", [[4, 10, "MISC"]], "r")
    assert rec["tokens"] == ["pre", "-", "Brexit"] and rec["spans"] == [(2, 3, "MISC")]


def test_bad_spans_and_misaligned_rows_name_the_record(tmp_path):
    with pytest.raises(DataError, match=r"r line 4: entity .* outside the text \(length 5\)"):
        tagging.record_from_spans("hello", [{"start": 2, "end": 9, "label": "X"}], "r line 4")
    with pytest.raises(DataError, match="overlapping entities"):
        tagging.record_from_spans("New York City", [[0, 8, "LOC"], [4, 13, "LOC"]], "r")
    p = tmp_path / "bad.jsonl"
    p.write_text(json.dumps({"tokens": ["a", "b"], "tags": ["O", "O"]}) + "\n"
                 + json.dumps({"tokens": ["a", "b", "c"], "tags": ["O", "B-PER"]}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.jsonl line 2: 3 tokens but 2 tags"):
        tagging.read_jsonl(p, tokens_column="tokens", tags_column="tags", text_column="text",
                           entities_column="entities")
    c = tmp_path / "bad.conll"
    c.write_text("John B-PER\nlives\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.conll line 2: expected a word and its tag"):
        tagging.read_conll(c)


def test_conll_reader_skips_docstart_and_converts_schemes(tmp_path):
    c = tmp_path / "d.conll"
    c.write_text("-DOCSTART- -X- O\n\nU.N. NNP I-ORG\nofficial NN O\nEkeus NNP S-PER\n\n"
                 "Peter NNP B-PER\nBlackburn NNP E-PER\n", encoding="utf-8")
    recs = tagging.read_conll(c)
    assert [r["tokens"] for r in recs] == [["U.N.", "official", "Ekeus"], ["Peter", "Blackburn"]]
    assert [r["spans"] for r in recs] == [[(0, 1, "ORG"), (2, 3, "PER")], [(0, 2, "PER")]]
    assert recs[1]["origin"].endswith("d.conll line 7")


def test_seqeval_figures_on_a_known_example():
    task = TokenClassificationTask(types=["LOC", "PER"])
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-LOC", "O", "B-PER"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["B-LOC", "O", "B-LOC"]]  # 2 of 3 predicted right, 2 of 4 found
    probs = [np.eye(len(task.labels))[[task.labels.index(t) for t in p]] for p in pred]
    m = task.metrics(probs, gold)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 4)
    assert m["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert m["per_class"]["PER"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert m["per_class"]["LOC"]["precision"] == pytest.approx(0.5)
    # word-level type confusion: one PER word predicted LOC, one LOC word predicted O
    names = m["confusion_labels"]
    cm = np.array(m["confusion_matrix"])
    assert cm[names.index("PER"), names.index("LOC")] == 1
    assert cm[names.index("LOC"), names.index("O")] == 1
    # strict mode: an entity that starts with I- is not counted
    strict = task.metrics([np.eye(len(task.labels))[[task.labels.index(t) for t in ["I-PER", "I-PER", "O", "O"]]]],
                          [["B-PER", "I-PER", "O", "O"]])
    assert strict["f1"] == 0.0


def test_windows_cover_every_piece_and_start_on_words():
    task = TokenClassificationTask(types=["X"], max_length=12, stride=4)
    word_ids = [w for w in range(30) for _ in range(1 + w % 3)]  # words of 1-3 pieces
    wins = task.windows(word_ids)
    assert wins[0][0] == 0 and wins[-1][1] == len(word_ids)
    for (s, e), (s2, _) in zip(wins, wins[1:]):
        assert e - s <= 10 and s2 < e  # each window fits, and the next one overlaps it
        assert word_ids[s2] != word_ids[s2 - 1]  # starts on a word boundary
    covered = {i for s, e in wins for i in range(s, e)}
    assert covered == set(range(len(word_ids)))


def test_long_sentence_windows_merge_to_one_prediction_per_word(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    words = ("the movie was great and the plot was dull " * 6).split()
    spans = [[i, i + 1, "X"] for i, w in enumerate(words) if w == "great"]
    ex = tagging.to_examples([tagging._record(words, spans, "long")], "test")
    task = TokenClassificationTask(types=["X"], max_length=16, stride=4)
    enc = task.encode(tok, ex)
    assert len(enc) > 3 and max(enc.lengths) <= 16
    # fake scores that say which window and position each word was read from
    fake = [np.array([[k, pos, 0.0] for pos in range(len(f["input_ids"]))]) for k, f in enumerate(enc.features)]
    merged = task.postprocess(fake, enc)[0]
    assert merged.shape == (len(words), 3)
    margins = []
    for w in range(len(words)):
        k, pos = int(merged[w, 0]), int(merged[w, 1])
        wids = enc.features[k]["word_ids"]
        assert wids[pos] == w and wids[pos - 1] != w  # read at the word's first piece
        # ... in the window where that piece is farthest from an edge
        best = max(min(q, len(f["word_ids"]) - 1 - q) for f in enc.features
                   for q, x in enumerate(f["word_ids"]) if x == w and f["word_ids"][q - 1] != w)
        assert min(pos, len(wids) - 1 - pos) == best
        margins.append(best)
    assert min(margins[3:-3]) >= 3  # away from the sentence ends, no word is read at a window's edge
    # gold labels in every window agree with the word tags
    for f in enc.features:
        for pos, (w, y) in enumerate(zip(f["word_ids"], f["labels"])):
            if w is not None and (pos == 0 or f["word_ids"][pos - 1] != w):
                assert task.labels[y] == ("B-X" if words[w] == "great" else "O")


def test_peoples_daily_builtin_maps_tags_and_merges_person_names():
    recs = tagging.peoples_daily_ner()
    assert len(recs) > 40000
    first = next(r for r in recs if r["text"] == "中共中央总书记、国家主席江泽民")
    assert [(first["text"][first["offsets"][s][0]:first["offsets"][e - 1][1]], t) for s, e, t in first["spans"]] == [
        ("中共中央", "ORG"), ("江泽民", "PER")]  # 江/nr 泽民/nr is one person
    assert all(len(w) == 1 for r in recs[:200] for w in r["tokens"])  # character level
