"""Fixtures: a tiny BERT and a WordPiece tokenizer built locally (no hub), and small synthetic datasets."""

from __future__ import annotations

import csv
import json
import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["TRANSFERKIT_REGISTRY"] = "off"  # tests register nothing unless they say so (tests/unit/test_registry.py)

POS = ["great", "wonderful", "superb", "moving", "brilliant", "charming", "fresh", "delightful"]
NEG = ["awful", "boring", "dull", "terrible", "weak", "tedious", "bland", "clumsy"]
FILL = ["the", "movie", "film", "plot", "was", "really", "quite", "and", "acting", "story", "a", "with",
        "cast", "ending", "script", "very", "so", "at", "times", "overall"]


def sentence(rng: random.Random, label: str) -> str:
    words = rng.sample(FILL, rng.randint(2, 12))
    adj = rng.choice(POS if label == "positive" else NEG)
    words.insert(rng.randint(0, len(words)), adj)
    return " ".join(words)


def make_rows(n: int, seed: int = 0, labels=("positive", "negative")) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < n:
        label = labels[len(rows) % len(labels)]
        text = sentence(rng, label)
        if text not in seen:
            seen.add(text)
            rows.append({"text": text, "label": label})
    return rows


def write_csv(path: Path, rows: list[dict], columns: list[str] | None = None) -> Path:
    columns = columns or list(rows[0])
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A randomly initialised BERT (hidden 32, 2 layers) with a WordPiece tokenizer trained on the fixture
    vocabulary, saved as a transformers checkpoint folder."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, BertTokenizerFast

    out = tmp_path_factory.mktemp("tiny_bert")
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    corpus = [" ".join(POS + NEG + FILL)] * 5 + [sentence(random.Random(i), "positive") for i in range(200)]
    tok.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=200, special_tokens=specials))
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    fast = BertTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                             sep_token="[SEP]", mask_token="[MASK]", model_max_length=64)
    fast.save_pretrained(out)
    config = BertConfig(vocab_size=len(fast), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, pad_token_id=fast.pad_token_id)
    import torch

    torch.manual_seed(0)
    BertModel(config).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_mlm(tiny_model, tmp_path_factory) -> Path:
    """The tiny BERT with a (random) masked-LM head, saved with its tokenizer: a checkpoint that has one."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, BertForMaskedLM

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny_mlm")
    BertForMaskedLM(AutoConfig.from_pretrained(tiny_model)).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(out)
    return out


@pytest.fixture
def sentiment_csv(tmp_path) -> Path:
    return write_csv(tmp_path / "reviews.csv", make_rows(240, seed=1))


def tiny_config(model_dir: Path, data: Path | dict, run_root: Path, **sections) -> dict:
    """A raw config dict for fast runs on the tiny model."""
    cfg = {
        "name": "tiny",
        "model": {"path": str(model_dir), "max_length": 32},
        "data": {"source": str(data)} if isinstance(data, Path) else data,
        "train": {"optimizer": {"lr": 3e-3}, "epochs": 3, "batch_size": 16, "seed": 7, "log_every": 5},
        "early_stopping": {"enabled": False},
        "compare": {"linear_probe": False},
        "output": {"dir": str(run_root / "{name}")},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


def write_config(path: Path, cfg: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


def tree_snapshot(root: Path, skip: Path | None = None) -> dict[str, str]:
    """{relative path: sha256} of every file under root (except under `skip`): to prove that a command
    deleted or changed nothing outside its run folder."""
    import hashlib

    out = {}
    for p in sorted(Path(root).rglob("*")):
        if skip is not None and (p == skip or skip in p.parents):
            continue
        if p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif p.is_dir():
            out[str(p.relative_to(root)) + "/"] = "dir"
    return out


def assert_declared_metrics(metrics: dict, kind: str, **flags) -> None:
    """Every metric that config validation lets early_stopping.metric watch is one the task reports."""
    from transferkit.config import validation_metrics

    scalars = {k for k, v in metrics.items() if isinstance(v, (int, float))}
    missing = set(validation_metrics(kind, **flags)) - scalars
    assert not missing, f"{kind}: declared metrics {missing} are not reported (reported: {sorted(scalars)})"


# NER, QA and relation extraction rows, shared by the task, peft and export tests
PEOPLE = ["Maria", "Pedro", "Carla", "Tomas", "Sofia", "Ivan"]
ORGS = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay"]


def re_rows(n: int, seed: int) -> list[dict]:
    """'P works for O' -> per:employee_of (head P, tail O); the reversed pair and 'P met O' -> no_relation."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        p, o = rng.choice(PEOPLE), rng.choice(ORGS)
        verb = "works for" if i % 2 == 0 else "met"
        text = f"the movie says {p} {verb} {o} today"
        ps, os_ = text.index(p), text.index(o)
        hp, to = {"start": ps, "end": ps + len(p), "type": "PER"}, {"start": os_, "end": os_ + len(o), "type": "ORG"}
        if verb == "met":
            rows.append({"text": text, "head": hp, "tail": to, "label": "no_relation"})
        elif i % 4 == 0:
            rows.append({"text": text, "head": hp, "tail": to, "label": "per:employee_of"})
        else:  # the same fact, reversed direction: no relation from the org to the person
            rows.append({"text": text, "head": to, "tail": hp, "label": "no_relation"})
    return rows


def ner_rows(n: int) -> list[dict]:
    """'P joined O today' with PER and ORG character spans."""
    rng = random.Random(1)
    rows = []
    for _ in range(n):
        p, o = rng.choice(PEOPLE), rng.choice(ORGS)
        text = f"{p} joined {o} today"
        rows.append({"text": text, "entities": [{"start": 0, "end": len(p), "label": "PER"},
                                                {"start": text.index(o), "end": text.index(o) + len(o), "label": "ORG"}]})
    return rows


def qa_rows(n: int) -> list[dict]:
    """'Who founded O?' over 'P founded O in the spring.': the answer is P."""
    rng = random.Random(3)
    rows = []
    for i in range(n):
        p, o = rng.choice(PEOPLE), rng.choice(ORGS)
        c = f"{p} founded {o} in the spring."
        rows.append({"id": str(i), "question": f"Who founded {o}?", "context": c,
                     "answers": [{"text": p, "answer_start": 0}]})
    return rows
