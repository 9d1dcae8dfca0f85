"""causal_lm (dialogue with a decoder-only model) through the one loop, on a tiny BERT turned decoder: the chat
template, reply-only loss, generation limits, runs, predict."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import assert_declared_metrics, make_rows, tiny_config, write_config, write_csv
from transferkit.data.sources import Examples

CLI = [sys.executable, "-m", "transferkit.cli"]


def _env():
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


def _task_and_model(tiny_model, **gen):
    from transformers import AutoTokenizer

    from transferkit.tasks.causal_lm import CausalLMTask

    tok = AutoTokenizer.from_pretrained(tiny_model)
    task = CausalLMTask(max_length=32, max_target_length=8, generation={"max_new_tokens": 5, **gen})
    torch.manual_seed(0)
    model = task.build_model(str(tiny_model), init="pretrained", size=None, dropout=None, tokenizer=tok)
    return task, model.eval(), tok


def _split(ctx: list[str], replies: list[str | None]) -> Examples:
    return Examples(texts=ctx, labels=replies, origin=[f"row {i}" for i in range(len(ctx))], name="t", stratify=False)


def test_the_chat_template_round_trips_a_conversation(tiny_model):
    from transferkit.tasks.causal_lm import messages_of, parse_chat

    task, _, tok = _task_and_model(tiny_model)
    msgs = messages_of("hello there\nhi, how are you?\nfine thanks")
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]  # the turn before the reply is the user's
    text = task.render(msgs, generation_prompt=False)
    assert text == "[CLS]user: hello there[SEP]assistant: hi, how are you?[SEP]user: fine thanks[SEP]"
    assert parse_chat(text, eos=tok.eos_token, bos=tok.bos_token) == msgs
    assert task.render(msgs, generation_prompt=True).endswith("[SEP]assistant:")


def test_loss_is_on_the_reply_only_and_padding_changes_nothing(tiny_model):
    task, model, tok = _task_and_model(tiny_model)
    enc = task.encode(tok, _split(["the movie was great", "dull\nvery dull indeed"], ["great film", "awful"]))
    f = enc.features[0]
    reply = tok(" great film", add_special_tokens=False)["input_ids"] + [tok.sep_token_id]
    assert f["input_ids"][f["prompt_length"]:] == reply
    assert f["labels"] == [-100] * f["prompt_length"] + reply  # the context is not a target
    assert model.config.is_decoder  # a BERT checkpoint became a causal decoder
    both = task.collate(enc.features)
    alone = task.collate(enc.features[:1])
    assert both["input_ids"].shape[1] > alone["input_ids"].shape[1]  # the first example is padded in `both`
    with torch.no_grad():
        l_alone = task.loss(task.forward(model, alone), alone)
        out = task.forward(model, both)
        rows = task.generate(model, both, out)
    # per-example reply NLL from the padded batch equals the example alone
    assert rows[0]["tokens"] == len(reply)
    assert rows[0]["nll"] / rows[0]["tokens"] == pytest.approx(float(l_alone), rel=1e-4)


def test_causality_the_reply_does_not_change_the_context_logits(tiny_model):
    task, model, tok = _task_and_model(tiny_model)
    a = task.collate(task.encode(tok, _split(["good movie"], ["great film"])).features)
    b = task.collate(task.encode(tok, _split(["good movie"], ["awful awful"])).features)
    p = int(a["prompt_length"][0])
    with torch.no_grad():
        la, lb = task.forward(model, a), task.forward(model, b)
    assert torch.allclose(la[0, :p], lb[0, :p], atol=1e-5)


def test_generation_stops_at_the_end_token_and_respects_max_new_tokens(tiny_model):
    task, model, tok = _task_and_model(tiny_model, max_new_tokens=4)
    enc = task.encode(tok, _split(["good movie", "a dull plot\nreally"], [None, None]))
    assert "labels" not in enc.features[0]
    batch = task.collate(enc.features)
    with torch.no_grad():
        rows = task.generate(model, batch)
    assert all(len(r["ids"]) <= 4 for r in rows) and all(r["nll"] is None for r in rows)
    # force the end token: its bias dominates, so generation ends at once with an empty reply
    with torch.no_grad():
        model.get_output_embeddings().bias[tok.sep_token_id] = 1e4
        rows = task.generate(model, batch)
    assert [len(r["ids"]) for r in rows] == [0, 0]
    # unequal prompt lengths are generated without padding: each equals generating it alone
    with torch.no_grad():
        model.get_output_embeddings().bias[tok.sep_token_id] = 0.0
        together = task.generate(model, batch)
        alone = task.generate(model, task.collate(enc.features[1:]))
    assert together[1]["ids"].tolist() == alone[0]["ids"].tolist()


def _dialogue_csv(path: Path, n: int = 300) -> Path:
    """Context (a review, then its sentiment word as the last turn) -> the reply repeats that word: learnable by
    a tiny decoder only by attending back to it (16 different words)."""
    from conftest import NEG, POS

    rows = make_rows(n, seed=5)
    word = [next(w for w in r["text"].split() if w in POS + NEG) for r in rows]
    return write_csv(path, [{"text": f"{r['text']}\n{w}", "reply": w} for r, w in zip(rows, word)])


def test_finetune_predict_causal_lm(tiny_model, tmp_path):
    csv = _dialogue_csv(tmp_path / "d.csv")
    cfg = tiny_config(tiny_model, {"source": str(csv), "label_column": "reply"}, tmp_path / "runs",
                      task={"type": "causal_lm", "causal_lm": {"max_target_length": 4},
                            "generation": {"max_new_tokens": 3}})
    # a tied output layer (BERT's decoder is its input embeddings) learns this slowly at the tiny config's 3e-3
    cfg["train"].update(epochs=60, optimizer={"lr": 2e-3})
    p = subprocess.run([*CLI, "finetune", str(write_config(tmp_path / "c.yaml", cfg)), "-q"], env=_env(),
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-3000:]
    run = tmp_path / "runs" / "tiny"
    m = json.loads((run / "metrics.json").read_text())
    test = m["test"]
    assert test["perplexity"] == pytest.approx(torch.tensor(test["lm_loss"]).exp().item(), rel=1e-6)
    assert test["perplexity"] < 2.0  # the reply is decided by the context: learnt
    assert_declared_metrics(test, "causal_lm")
    val = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in val if r["split"] == "validation"]
    assert val and all("lm_loss" in r and "rougeL" not in r for r in val)  # early stopping on lm_loss: no generation
    assert test["rougeL"] > 0.9
    desc = json.loads((run / "model" / "task.json").read_text())
    assert desc["task"] == "causal_lm"
    assert "assistant:" in json.dumps(json.loads((run / "model" / "tokenizer_config.json").read_text())) or \
        (run / "model" / "chat_template.jinja").is_file()
    assert sum(x["output"] == x["input"].split("\n")[-1] for x in m["samples"]) >= 0.9 * len(m["samples"])
    from conftest import NEG, POS

    fresh = make_rows(10, seed=77)
    words = [next(w for w in r["text"].split() if w in POS + NEG) for r in fresh]
    records = [{"turns": [r["text"], w]} if i % 2 else
               {"messages": [{"role": "user", "content": r["text"]}, {"role": "assistant", "content": w}]}
               for i, (r, w) in enumerate(zip(fresh, words))]
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("".join(json.dumps(rec) + "\n" for rec in records))
    p = subprocess.run([*CLI, "predict", str(run), "-i", str(inputs)], env=_env(), capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    out = [json.loads(line) for line in p.stdout.splitlines()]
    # the last turn's word repeated (chance: 1 in 16; the tiny tokenizer differs between sessions, so leave room)
    assert len(out) == 10 and sum(o["text"] == w for o, w in zip(out, words)) >= 5

    # export refuses a generation run with what to do instead; the service generates, with its limits
    from test_serve import serve

    from transferkit.errors import ModelError
    from transferkit.recipes.export import export

    with pytest.raises(ModelError, match="generates text token by token.*transferkit serve"):
        export(run)
    keys = tmp_path / "keys.yaml"
    keys.write_text("keys:\n  - name: app\n    key: causal-test-key-0123456789\n    scopes: [predict]\n")
    import httpx

    h = {"Authorization": "Bearer causal-test-key-0123456789"}
    with serve(run, keys, max_chars=60) as s:
        r = httpx.post(s.url + "/v1/predict", json={"inputs": [records[1]]}, headers=h)
        assert r.status_code == 200 and r.json()["predictions"][0]["text"] == out[1]["text"]  # same as predict
        long = {"inputs": [{"turns": ["short", "x" * 61]}]}  # a turn inside the list counts against the limit
        assert httpx.post(s.url + "/v1/predict", json=long, headers=h).status_code == 413
        bad = {"inputs": [{"speaker": "me"}]}
        r = httpx.post(s.url + "/v1/predict", json=bad, headers=h)
        assert r.status_code == 422 and "needs \"turns\"" in r.json()["detail"]
