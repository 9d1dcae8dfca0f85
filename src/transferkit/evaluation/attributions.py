"""Token attributions for sequence-level predictions (text classification, relations, prompt heads).

- Integrated gradients (Sundararajan et al. 2017) on the word-embedding layer, by Captum's
  `LayerIntegratedGradients`: the path from a baseline input (every ordinary token replaced by the padding token,
  special tokens such as [CLS], [SEP] and [MASK] kept in place) to the input, `steps` points, Gauss-Legendre.
  Each piece's attribution is the dot product of its embedding difference with the path-integrated gradient of
  the explained class's logit; by completeness they add up to logit(input) - logit(baseline), up to the
  integral's approximation error (`delta`, reported).
- Attention rollout (Abnar & Zuidema 2020), the cheap alternative: per layer the head-averaged attention plus the
  identity (the residual stream), rows renormalised, multiplied through the layers; a piece's relevance is what
  the pooled position (the [CLS] row, or the mean of the rows for mean pooling) receives from it. Non-negative
  and class-agnostic: it says where the model looked, not which way it pushed.

WordPiece continuations (##...) are merged into their word, attributions summed (rollout: summed relevance).
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import torch

METHODS = ("integrated_gradients", "attention_rollout")


def _batch(task: Any, tokenizer: Any, texts: list[str], pairs: list[str] | None, device: Any) -> dict[str, torch.Tensor]:
    from transferkit.data.sources import Examples

    make = getattr(task, "examples_for_prediction", None)
    ex = make(list(texts), pairs) if make is not None else Examples(
        texts=list(texts), labels=[None] * len(texts), origin=[""] * len(texts), text_pairs=pairs)
    enc = task.encode(tokenizer, ex)
    batch = task.collate(enc.features)
    return {k: v.to(device) for k, v in batch.items() if k != "labels"}


def words_of(tokens: list[str], values: np.ndarray, special: set[str]) -> list[dict[str, Any]]:
    """Pieces -> words: '##' continuations join the word before them, their values summed; special tokens
    and padding are left out."""
    out: list[dict[str, Any]] = []
    for tok, v in zip(tokens, values):
        if tok in special:
            continue
        if tok.startswith("##") and out:
            out[-1]["word"] += tok[2:]
            out[-1]["attribution"] += float(v)
        else:
            out.append({"word": tok, "attribution": float(v)})
    return out


def explain(predictor: Any, texts: list[str], *, method: str = "integrated_gradients", target: str | None = None,
            steps: int = 50, pairs: list[str] | None = None, internal_batch_size: int = 16) -> list[dict[str, Any]]:
    """Per text: the predicted label, the label explained (`target`, default the predicted one), its
    probability, and per word its attribution; integrated gradients add the logit difference to the baseline
    and the completeness gap `delta`."""
    from transferkit.errors import ConfigError

    task, model, tok = predictor.task, predictor.model, predictor.tokenizer
    if method not in METHODS:
        raise ConfigError([f"explain: unknown method '{method}'; choose among {', '.join(METHODS)}"])
    if task.name == "token_classification" and isinstance(model, torch.nn.Module):
        if method != "integrated_gradients":
            raise ConfigError(["explain: NER runs are explained per entity by integrated gradients (--method ig)"])
        return explain_entities(predictor, texts, steps=steps, internal_batch_size=internal_batch_size)
    if task.name == "question_answering" and isinstance(model, torch.nn.Module):
        if method != "integrated_gradients":
            raise ConfigError(["explain: QA runs are explained per answer by integrated gradients (--method ig)"])
        return explain_answers(predictor, texts, pairs=pairs, steps=steps, internal_batch_size=internal_batch_size)
    if not isinstance(model, torch.nn.Module) or getattr(task, "token_level", False) or not hasattr(task, "labels") \
            or getattr(task, "multilabel", False) or task.name not in ("text_classification", "relation_extraction"):
        raise ConfigError([f"explain: for single-label text classification and relation runs with a torch model "
                           f"(this one: {task.name}, backend {predictor.backend})"])
    if method == "attention_rollout" and getattr(task, "pooling", "cls") not in ("cls", "mean"):
        raise ConfigError([f"explain --method rollout: reads the [CLS] row, the mask row of a prompt head or the mean "
                           f"of the rows; this model pools '{task.pooling}' (relation markers): use ig"])
    if method == "integrated_gradients" and any("quantized" in type(m).__module__ for m in model.modules()):
        raise ConfigError(["explain: integrated gradients need a differentiable model and this one is int8-quantized; "
                           "load it without --int8, or use --method rollout"])
    if target is not None and target not in task.labels:
        raise ConfigError([f"explain: --target '{target}' is not a label of this model ({', '.join(task.labels)})"])
    model.eval()
    batch = _batch(task, tok, texts, pairs, predictor.device)
    with torch.no_grad():
        logits = task.forward(model, batch).float()
        probs = task.scores(logits).cpu().numpy()
    predicted = task.decide(probs)  # the label the model gives (a tuned threshold included)
    targets = [task.labels.index(target) if target else int(p) for p in predicted]
    ids = batch["input_ids"]
    special = set(tok.all_special_tokens) - {tok.unk_token}  # an unknown word is still a word of the text
    if method == "integrated_gradients":
        values, extra = _integrated_gradients(task, model, tok, batch, targets, steps, internal_batch_size)
    else:
        values, extra = _rollout(task, model, batch), [{} for _ in texts]
    out = []
    for i in range(len(texts)):
        n = int(batch["attention_mask"][i].sum()) if "attention_mask" in batch else ids.shape[1]
        tokens = tok.convert_ids_to_tokens(ids[i, :n].tolist())
        out.append({"label": task.labels[int(predicted[i])], "explained": task.labels[targets[i]],
                    "probability": float(probs[i, targets[i]]), "method": method,
                    "words": words_of(tokens, values[i, :n], special), **extra[i]})
    return out


def _integrated_gradients(task: Any, model: Any, tok: Any, batch: dict[str, torch.Tensor], targets: list[int],
                          steps: int, internal_batch_size: int) -> tuple[np.ndarray, list[dict[str, Any]]]:
    from captum.attr import LayerIntegratedGradients

    ids = batch["input_ids"]
    rest = {k: v for k, v in batch.items() if k != "input_ids"}
    names = sorted(rest)

    def forward(input_ids: torch.Tensor, *others: torch.Tensor) -> torch.Tensor:
        b = {"input_ids": input_ids, **dict(zip(names, others))}
        return task.forward(model, b).float()

    # [CLS], [SEP], [MASK] stay in the baseline; [UNK] is a word of the text and gets its attribution
    keep = torch.tensor(sorted(set(tok.all_special_ids) - {tok.pad_token_id, tok.unk_token_id}), device=ids.device)
    baseline = torch.where(torch.isin(ids, keep), ids, torch.full_like(ids, tok.pad_token_id or 0))
    lig = LayerIntegratedGradients(forward, model.get_input_embeddings())
    others = tuple(rest[k] for k in names)
    attr, delta = lig.attribute(ids, baselines=baseline, additional_forward_args=others, target=targets,
                                n_steps=steps, internal_batch_size=internal_batch_size,
                                return_convergence_delta=True)
    with torch.no_grad():
        rows = torch.arange(len(targets))
        t = torch.tensor(targets)
        diff = forward(ids, *others)[rows, t] - forward(baseline, *others)[rows, t]
    values = attr.sum(dim=-1).detach().cpu().numpy()
    if "attention_mask" in batch:
        values = values * batch["attention_mask"].cpu().numpy()
    extra = [{"logit_difference": float(diff[i]), "delta": float(delta[i]), "steps": steps} for i in range(len(targets))]
    return values, extra


def _rollout(task: Any, model: Any, batch: dict[str, torch.Tensor]) -> np.ndarray:
    encoder = getattr(model, getattr(model, "base_model_prefix", "bert"), model)
    previous = getattr(encoder.config, "_attn_implementation", None)
    try:
        encoder.set_attn_implementation("eager")  # sdpa kernels return no attention weights
    except (AttributeError, ValueError):
        pass
    try:
        with torch.no_grad():
            outputs = encoder(**{k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")},
                              output_attentions=True)
    finally:
        try:
            encoder.set_attn_implementation(previous or "sdpa")
        except (AttributeError, ValueError):
            pass
    att = torch.stack([a.float().mean(dim=1) for a in outputs.attentions])  # layers, batch, L, L
    mask = batch.get("attention_mask", torch.ones(att.shape[1:3], dtype=torch.long, device=att.device)).float()
    eye = torch.eye(att.shape[-1], device=att.device).expand_as(att[0])
    result = eye.clone()
    for a in att:
        a = 0.5 * a + 0.5 * eye
        a = a * mask[:, None, :]
        a = a / a.sum(dim=-1, keepdim=True).clamp_min(1e-12)
        result = a @ result
    if "mask_pos" in batch:  # a prompt head reads the mask position
        rel = result[torch.arange(result.shape[0], device=result.device), batch["mask_pos"]]
    elif getattr(task, "pooling", "cls") == "mean":
        rel = (result * mask[:, :, None]).sum(1) / mask.sum(1, keepdim=True)
    else:
        rel = result[:, 0]
    return (rel * mask).cpu().numpy()


def to_html(explanations: list[dict[str, Any]], title: str = "attributions") -> str:
    """One line per text: words shaded by their attribution (green: toward the explained label, red: against
    it; rollout: blue by relevance), each line's scale its own largest magnitude."""
    flat = []
    for e in explanations:  # NER: one line per entity
        if "entities" in e:
            flat += [{"method": "integrated_gradients", "explained": f"{x['type']}: {x['text']}", "label": x["type"],
                      "probability": float("nan"), "words": x["words"]} for x in e["entities"]]
        elif "context_words" in e:  # QA: the question's words, then the context's
            flat.append({"method": "integrated_gradients", "explained": f"answer: {e['answer'] or '(none)'}",
                         "label": "", "probability": float("nan"),
                         "words": [*e["question_words"], {"word": "|", "attribution": 0.0}, *e["context_words"]]})
        else:
            flat.append(e)
    rows = []
    for e in flat:
        top = max((abs(w["attribution"]) for w in e["words"]), default=0.0) or 1.0
        spans = []
        for w in e["words"]:
            a = w["attribution"] / top
            if e["method"] == "attention_rollout":
                color = f"rgba(40,110,220,{abs(a):.3f})"
            else:
                color = f"rgba(30,160,60,{a:.3f})" if a >= 0 else f"rgba(220,40,40,{-a:.3f})"
            spans.append(f'<span title="{w["attribution"]:+.4f}" style="background:{color};padding:1px 2px;'
                         f'border-radius:3px">{html.escape(w["word"])}</span>')
        head = (f'<b>{html.escape(e["explained"])}</b> ({e["probability"]:.3f}; predicted '
                f'{html.escape(e["label"])})') if e["probability"] == e["probability"] else \
            f'<b>{html.escape(e["explained"])}</b>'  
        if "gold" in e:
            head += f' · gold {html.escape(str(e["gold"]))}'
        rows.append(f"<p>{head}<br>{' '.join(spans)}</p>")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
            f"<body style='font-family:sans-serif;max-width:60em'><h2>{html.escape(title)}</h2>"
            + "\n".join(rows) + "</body></html>")


def report_page(predictor: Any, texts: list[str], gold: list[int], probs: Any, n: int, path: Any,
                steps: int = 32) -> dict[str, Any]:
    """explanations.html of a run: the `n` most confident test errors and the `n` most confident correct
    predictions, each explained for its predicted label; returns what the page holds."""
    p = np.asarray(probs)
    pred = predictor.task.decide(p)
    conf = p[np.arange(len(p)), pred]
    gold_a = np.asarray(gold)
    wrong = [int(i) for i in np.argsort(-conf) if pred[i] != gold_a[i]][:n]
    right = [int(i) for i in np.argsort(-conf) if pred[i] == gold_a[i]][:n]
    sections = []
    for title, idx in (("Most confident errors", wrong), ("Most confident correct predictions", right)):
        rows = explain(predictor, [texts[i] for i in idx], steps=steps) if idx else []
        for r, i in zip(rows, idx):
            r["gold"] = predictor.task.labels[int(gold_a[i])]
        sections.append((title, rows))
    body = "".join(to_html(rows, title).split("<body", 1)[1].split(">", 1)[1].rsplit("</body>", 1)[0]
                   for title, rows in sections)
    path.write_text("<!doctype html><html><head><meta charset='utf-8'><title>explanations</title></head>"
                    "<body style='font-family:sans-serif;max-width:60em'><p>Integrated gradients (" + str(steps) +
                    " steps) of the predicted label on test texts; green words pushed toward it, red against it."
                    "</p>" + body + "</body></html>", encoding="utf-8")
    return {"file": path.name, "errors": len(wrong), "correct": len(right), "steps": steps}


def explain_entities(predictor: Any, texts: list[Any], *, steps: int = 50, internal_batch_size: int = 16
                     ) -> list[dict[str, Any]]:
    """NER: per text its predicted entities, each with the attribution of every word of the text to the
    entity's score (the sum, over the entity's words, of the logit of the tag predicted at the word's first
    piece), by integrated gradients against the all-[PAD] baseline. Texts longer than one window are refused."""
    from captum.attr import LayerIntegratedGradients

    from transferkit.errors import ConfigError

    task, model, tok = predictor.task, predictor.model, predictor.tokenizer
    model.eval()
    ex = task.examples_for_prediction(list(texts))
    enc = task.encode(tok, ex)
    per_example = [[f for f in enc.features if f["example"] == i] for i in range(len(ex))]
    long = [i for i, fs in enumerate(per_example) if len(fs) != 1]
    if long:
        raise ConfigError([f"explain: input {long[0] + 1} is longer than one window of model.max_length pieces; "
                           "explain shorter texts (a sentence at a time)"])
    preds = predictor.predict(list(texts))
    keep = torch.tensor(sorted(set(tok.all_special_ids) - {tok.pad_token_id, tok.unk_token_id}))
    out = []
    for i, (feat,) in enumerate(per_example):
        words = ex.inputs[i]["tokens"]
        item = {"entities": [], "words": words}
        ents = preds[i]["entities"]
        if not ents:
            out.append(item)
            continue
        wid = feat["word_ids"]
        first = {}
        for p, w in enumerate(wid):
            if w is not None and w not in first:
                first[w] = p
        piece_tags = task._piece_labels(preds[i]["tags"], wid)  # the tag id each first piece was predicted as
        ids = torch.tensor([feat["input_ids"]] * len(ents))
        mask = torch.ones_like(ids)
        select = torch.zeros((len(ents), ids.shape[1], len(task.labels)))
        for j, e in enumerate(ents):
            for w in range(e["word_start"], e["word_end"]):
                select[j, first[w], piece_tags[first[w]]] = 1.0

        def forward(input_ids: torch.Tensor, attention_mask: torch.Tensor, sel: torch.Tensor) -> torch.Tensor:
            logits = task.forward(model, {"input_ids": input_ids, "attention_mask": attention_mask}).float()
            return (logits * sel).sum(dim=(1, 2))

        dev = predictor.device
        ids, mask, select = ids.to(dev), mask.to(dev), select.to(dev)
        baseline = torch.where(torch.isin(ids, keep.to(dev)), ids, torch.full_like(ids, tok.pad_token_id or 0))
        lig = LayerIntegratedGradients(forward, model.get_input_embeddings())
        attr, delta = lig.attribute(ids, baselines=baseline, additional_forward_args=(mask, select), n_steps=steps,
                                    internal_batch_size=internal_batch_size, return_convergence_delta=True)
        with torch.no_grad():
            diff = forward(ids, mask, select) - forward(baseline, mask, select)
        values = attr.sum(dim=-1).detach().cpu().numpy()
        for j, e in enumerate(ents):
            per_word = np.zeros(len(words))
            for p, w in enumerate(wid):
                if w is not None:
                    per_word[w] += values[j, p]
            item["entities"].append({**{k: e[k] for k in ("type", "word_start", "word_end") if k in e},
                                     "text": e.get("text", " ".join(words[e["word_start"]:e["word_end"]])),
                                     "words": [{"word": w, "attribution": float(a)} for w, a in zip(words, per_word)],
                                     "logit_difference": float(diff[j]), "delta": float(delta[j]), "steps": steps})
        out.append(item)
    return out


def explain_answers(predictor: Any, items: list[Any], *, pairs: list[str] | None = None, steps: int = 50,
                    internal_batch_size: int = 16) -> list[dict[str, Any]]:
    """Extractive QA: per {question, context}, the predicted answer and the attribution of every question and
    context word to its score (start logit at its first piece + end logit at its last), by integrated
    gradients against the all-[PAD] baseline. Inputs longer than one window are refused."""
    from captum.attr import LayerIntegratedGradients

    from transferkit.errors import ConfigError

    task, model, tok = predictor.task, predictor.model, predictor.tokenizer
    model.eval()
    ex = task.examples_for_prediction(list(items), pairs)
    enc = task.encode(tok, ex)
    preds = predictor.predict(list(items), pairs)
    keep = torch.tensor(sorted(set(tok.all_special_ids) - {tok.pad_token_id, tok.unk_token_id}))
    special = set(tok.all_special_tokens) - {tok.unk_token}
    out = []
    for i, p in enumerate(preds):
        feats = [f for f in enc.features if f["example"] == i]
        if len(feats) != 1:
            raise ConfigError([f"explain: input {i + 1} is longer than one window of model.max_length pieces; "
                               "explain a shorter context"])
        f = feats[0]
        item: dict[str, Any] = {"answer": p["answer"], "start": p["start"], "end": p["end"]}
        if p["start"] is None:  # no answer: nothing to attribute
            out.append({**item, "question_words": [], "context_words": []})
            continue
        s_pos, e_pos = task._positions([{"answer_start": p["start"], "text": p["answer"]}], f["offsets"])
        ids = torch.tensor([f["input_ids"]], device=predictor.device)
        extra = {"attention_mask": torch.ones_like(ids)}
        if "token_type_ids" in f:
            extra["token_type_ids"] = torch.tensor([f["token_type_ids"]], device=predictor.device)
        names = sorted(extra)

        def forward(input_ids: torch.Tensor, *others: torch.Tensor) -> torch.Tensor:
            logits = task.forward(model, {"input_ids": input_ids, **dict(zip(names, others))}).float()
            return logits[:, s_pos, 0] + logits[:, e_pos, 1]

        others = tuple(extra[k] for k in names)
        baseline = torch.where(torch.isin(ids, keep.to(ids.device)), ids, torch.full_like(ids, tok.pad_token_id or 0))
        lig = LayerIntegratedGradients(forward, model.get_input_embeddings())
        attr, delta = lig.attribute(ids, baselines=baseline, additional_forward_args=others, n_steps=steps,
                                    internal_batch_size=internal_batch_size, return_convergence_delta=True)
        with torch.no_grad():
            diff = forward(ids, *others) - forward(baseline, *others)
        values = attr.sum(dim=-1)[0].detach().cpu().numpy()
        tokens = tok.convert_ids_to_tokens(f["input_ids"])
        in_context = np.array([o is not None for o in f["offsets"]])
        first_sep = next((j for j, t in enumerate(tokens) if t == tok.sep_token), len(tokens))
        question = np.arange(len(tokens)) < first_sep
        out.append({**item, "question_words": words_of([t for t, q in zip(tokens, question) if q],
                                                       values[question], special),
                    "context_words": words_of([t for t, c in zip(tokens, in_context) if c], values[in_context], special),
                    "logit_difference": float(diff[0]), "delta": float(delta[0]), "steps": steps})
    return out
