"""Decoder-only generation (dialogue: the conversation so far -> the next turn) through the one loop.

The model is a causal LM: a GPT-2-style checkpoint as it is, or a BERT checkpoint turned decoder
(`is_decoder`: causal self-attention, the MLM head predicts the next token; a model pretrained here with the
causal objective, `objective.kind: causal`, is such a checkpoint). A conversation is rendered by a chat
template (the tokenizer's own when it has one, else `DEFAULT_TEMPLATE`, saved with the model either way), and
the loss is next-token cross-entropy on the reply only (the context is -100). Evaluation reports the reply
perplexity and generates each reply (`generate`, called by `infer`) for distinct-n, ROUGE, BLEU and chrF.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from transferkit.data.sources import Examples
from transferkit.errors import DataError, ModelError
from transferkit.tasks.base import Encoded, pad_inputs, pad_labels
from transferkit.tasks.clm import next_token, next_token_loss
from transferkit.tasks.generation import TextTargets

IGNORE = -100
TURN_SEPARATOR = "\n"  # turns of one context in a text cell, in predict and serve inputs too
ROLES = ("user", "assistant")

#: transferkit's chat template for tokenizers without one: "{bos}user: ...{eos}assistant: ...{eos}"; the
#: generation prompt ends with "assistant:" and the reply with the end token, where generation stops
DEFAULT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}{{ eos_token }}{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)

BUILTIN = {
    "chatterbot_en": "English chatterbot-corpus conversations: context -> next turn (BSD)",
    "chatterbot_zh": "Simplified Chinese chatterbot-corpus conversations: context -> next turn (BSD)",
}


def conversation_examples(convs: list[list[str]], where: str, name: str, max_turns: int) -> Examples:
    """Every reply of every conversation as one example: up to `max_turns` previous turns -> the reply."""
    texts, labels, origin = [], [], []
    for c, turns in enumerate(convs):
        for k in range(1, len(turns)):
            texts.append(TURN_SEPARATOR.join(turns[max(0, k - max_turns):k]))
            labels.append(turns[k])
            origin.append(f"{where} conversation {c + 1} turn {k + 1}")
    return Examples(texts=texts, labels=labels, origin=origin, name=name, stratify=False)


def read_builtin(ref: str, max_turns: int) -> dict[str, Examples]:
    from transferkit.data.builtin import chatterbot_conversations, dialogue_part

    convs = chatterbot_conversations("english" if ref == "chatterbot_en" else "chinese")
    parts: dict[str, list[list[str]]] = {"train": [], "validation": [], "test": []}
    for c in convs:
        parts[dialogue_part(c)].append(c)
    return {k: conversation_examples(v, ref, k, max_turns) for k, v in parts.items()}


def messages_of(context: str) -> list[dict[str, str]]:
    """The turns of a context cell as chat messages; the last turn is the user's, roles alternate backwards."""
    turns = [t.strip() for t in context.split(TURN_SEPARATOR) if t.strip()]
    n = len(turns)
    return [{"role": ROLES[(n - 1 - i) % 2], "content": t} for i, t in enumerate(turns)]


def parse_chat(text: str, eos: str, bos: str = "") -> list[dict[str, str]]:
    """The messages of a conversation rendered by DEFAULT_TEMPLATE (its inverse)."""
    text = text[len(bos):] if bos and text.startswith(bos) else text
    out = []
    for part in text.split(eos):
        if not part:
            continue
        role, sep, content = part.partition(": ")
        if not sep or role not in ROLES:
            raise ValueError(f"not a rendered turn: {part!r}")
        out.append({"role": role, "content": content})
    return out


@dataclass
class CausalLMTask(TextTargets):
    max_length: int = 256
    max_target_length: int = 48
    max_turns: int = 4
    generation: dict[str, Any] = field(default_factory=dict)
    chinese_target: bool | None = None
    pad_token_id: int = 0
    name: str = "causal_lm"
    primary_metric: str = "lm_loss"
    token_level = False
    target_name = "reply"
    #: what the transfer table shows beside lm_loss
    transfer_metrics = ("perplexity", "distinct_1", "distinct_2", "rougeL", "chrf")
    #: generate replies in the training loop's evaluations too (needed when early stopping watches a
    #: generation metric; with lm_loss or perplexity only the test, predict and serve generate)
    generate_in_validation: bool = False
    baselines: tuple[str, ...] = ()
    labels: list[str] = field(default_factory=list)
    tokenizer: Any = None

    @classmethod
    def from_config(cls, cfg) -> CausalLMTask:
        from transferkit.config import minimized

        c = cfg.task.causal_lm
        watched = cfg.early_stopping.metric
        return cls(max_length=cfg.model.max_length, max_target_length=c.max_target_length, max_turns=c.max_turns,
                   generation=cfg.task.generation.model_dump(),
                   generate_in_validation=watched is not None and not minimized(watched))

    @classmethod
    def from_description(cls, d: dict[str, Any]) -> CausalLMTask:
        return cls(max_length=d["max_length"], max_target_length=d["max_target_length"], max_turns=d["max_turns"],
                   generation=d["generation"], chinese_target=d.get("chinese_target"),
                   pad_token_id=d.get("pad_token_id", 0))

    def describe(self) -> dict[str, Any]:
        return {"task": self.name, "max_length": self.max_length, "max_target_length": self.max_target_length,
                "max_turns": self.max_turns, "generation": self.generation, "chinese_target": self.chinese_target,
                "pad_token_id": self.pad_token_id}

    def model_class(self, config: Any = None) -> Any:
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM

    # ------------------------------------------------------------------ tokenizer and template

    def prepare_tokenizer(self, tokenizer: Any) -> Any:
        """The chat template (kept when the tokenizer has one) and a pad token; saved with the tokenizer."""
        if getattr(tokenizer, "chat_template", None) is None:
            tokenizer.chat_template = DEFAULT_TEMPLATE
        if tokenizer.eos_token is None:
            if tokenizer.sep_token is None:
                raise ModelError("the tokenizer has neither an end-of-sequence nor a [SEP] token to end a turn with")
            tokenizer.eos_token = tokenizer.sep_token
        if tokenizer.bos_token is None and tokenizer.cls_token is not None:
            tokenizer.bos_token = tokenizer.cls_token
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.tokenizer = tokenizer
        self.pad_token_id = int(tokenizer.pad_token_id)
        return tokenizer

    def load_files(self, folder: Any, tokenizer: Any) -> None:
        self.prepare_tokenizer(tokenizer)

    def render(self, messages: list[dict[str, str]], generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)

    # ------------------------------------------------------------------ data

    def read(self, ref: str, data_cfg: Any) -> dict[str, Examples]:
        """A built-in conversation set, or a table: data.text_column the context (turns separated by newlines),
        data.label_column the reply."""
        if ref in BUILTIN:
            return read_builtin(ref, self.max_turns)
        from transferkit.data.prepare import _columns_reader

        found = _columns_reader(ref, data_cfg)
        for ex in found.values():
            ex.stratify = False
            ex.labels = [None if y is None else str(y) for y in ex.labels]
        return found

    def examples_for_prediction(self, items: list[Any], pairs: list[str] | None = None) -> Examples:
        """A context per input: a text (turns separated by newlines; one stdin line is a one-turn context), or a
        JSON record with "turns" (a list of strings), "messages" (chat messages: the content of each, in order;
        roles are not read: they alternate backwards from the last turn, the user's, as in training) or
        "text"."""
        texts = []
        for n, it in enumerate(items):
            if isinstance(it, dict):
                if isinstance(it.get("turns"), list):
                    turns = [str(t) for t in it["turns"]]
                elif isinstance(it.get("messages"), list):
                    turns = [str(m.get("content", "")) if isinstance(m, dict) else str(m) for m in it["messages"]]
                elif it.get("text") is not None:
                    turns = [str(it["text"])]
                else:
                    raise DataError(f"input {n + 1}: a dialogue record needs \"turns\" (a list of strings), "
                                    f"\"messages\" or \"text\"; it has {', '.join(map(repr, it)) or 'no fields'}")
                texts.append(TURN_SEPARATOR.join(t.replace(TURN_SEPARATOR, " ") for t in turns))
            else:
                texts.append(str(it))
        return Examples(texts=texts, labels=[None] * len(texts), origin=[f"input {n + 1}" for n in range(len(texts))],
                        name="input", stratify=False)

    def check(self, split: Examples) -> None:
        super().check(split)
        none = [split.origin[i] for i, t in enumerate(split.texts) if not str(t).strip()]
        if none:
            raise DataError(f"{len(none)} example(s) of the {split.name} split have no context (data -> text_column "
                            f"holds the turns before the reply, one per line), e.g. {', '.join(none[:3])}")

    def encode(self, tokenizer: Any, split: Examples) -> Encoded:
        tok = self.prepare_tokenizer(tokenizer) if self.tokenizer is not tokenizer else tokenizer
        feats: list[dict[str, Any]] = []
        refs = [None if y is None else str(y) for y in split.labels]
        for text, ref in zip(split.texts, refs):
            msgs = messages_of(str(text))[-self.max_turns:]
            if tok.chat_template != DEFAULT_TEMPLATE and msgs[0]["role"] == "assistant" and len(msgs) > 1:
                msgs = msgs[1:]  # a model's own template may insist that the user speaks first
            prompt = tok(self.render(msgs, True), add_special_tokens=False)["input_ids"]
            reply: list[int] = []
            if ref is not None:
                reply = tok(" " + ref, add_special_tokens=False)["input_ids"][:self.max_target_length - 1]
                reply = reply + [tok.eos_token_id]
            keep = max(1, self.max_length - len(reply))
            prompt = prompt[-keep:]  # the oldest context goes first when it is too long
            f: dict[str, Any] = {"input_ids": prompt + reply, "prompt_length": len(prompt)}
            if ref is not None:
                f["labels"] = [IGNORE] * len(prompt) + reply
            feats.append(f)
        return Encoded(features=feats, lengths=[len(f["input_ids"]) for f in feats],
                       meta={"references": refs, "sort_lengths": [f["prompt_length"] for f in feats]})

    def collate(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = pad_inputs([{"input_ids": f["input_ids"]} for f in features], self.pad_token_id)
        batch["prompt_length"] = torch.tensor([f["prompt_length"] for f in features])
        if "labels" in features[0]:
            batch["labels"] = pad_labels(features, batch["input_ids"].shape[1], IGNORE)
        return batch

    # ------------------------------------------------------------------ model

    def build_model(self, ref: str, *, init: str, size: str | None, dropout: float | None,
                    tokenizer: Any) -> nn.Module:
        from transformers import AutoModelForCausalLM

        from transferkit.modeling import load as mload

        tok = self.prepare_tokenizer(tokenizer)
        config = (mload.scratch_config(ref, size, len(tok)) if init == "scratch" and size is not None
                  else mload.load_config(ref, **mload.dropout_overrides(dropout)))
        if init == "scratch":
            for k, v in mload.dropout_overrides(dropout).items():
                setattr(config, k, v)
        if config.model_type in mload.DECODER_BY_FLAG:
            config.is_decoder = True  # causal self-attention; the MLM head predicts the next token
        if config.model_type not in _causal_types():
            raise ModelError(f"'{ref}' ({config.model_type}) cannot be loaded as a causal LM: use a GPT-2-style "
                             "checkpoint or a BERT one (it becomes a decoder)")
        import transformers

        level = transformers.logging.get_verbosity()
        transformers.logging.set_verbosity_error()  # a BERT encoder without an MLM head gets a new one: expected
        try:
            model = mload.instantiate(AutoModelForCausalLM, ref, init, config)
        finally:
            transformers.logging.set_verbosity(level)
        if model.get_input_embeddings().weight.shape[0] < len(tok):
            model.resize_token_embeddings(len(tok))
        c: Any = model.config
        c.pad_token_id, c.eos_token_id, c.bos_token_id = tok.pad_token_id, tok.eos_token_id, tok.bos_token_id
        for k in ("pad_token_id", "eos_token_id", "bos_token_id"):
            setattr(model.generation_config, k, getattr(c, k))
        return model

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits

    def loss(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return next_token_loss(outputs, batch["labels"])

    def scores(self, outputs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("causal_lm scores are generated replies: infer calls task.generate")

    # ------------------------------------------------------------------ generation and evaluation

    def generation_config(self, model: Any) -> Any:
        from transformers import GenerationConfig

        c = model.config
        return GenerationConfig(**self.generation_kwargs(), pad_token_id=c.pad_token_id, eos_token_id=c.eos_token_id,
                                bos_token_id=getattr(c, "bos_token_id", None))

    def generate(self, model: nn.Module, batch: dict[str, torch.Tensor], outputs: torch.Tensor | None = None,
                 validation: bool = False) -> list[dict[str, Any]]:
        """Per example: the reply's summed negative log-likelihood and token count (when labelled, from the
        forward pass infer already ran) and the generated reply's token ids (cut at the end token; none in the
        loop's validation unless `generate_in_validation`).

        Prompts are generated in groups of equal length, so no prompt is padded: BERT-style decoders take
        absolute positions from 0 and would read a left-padded prompt at the wrong positions."""
        n = batch["input_ids"].shape[0]
        rows: list[dict[str, Any]] = [{"nll": None, "tokens": 0, "ids": None} for _ in range(n)]
        if outputs is not None and "labels" in batch:
            logits, labels = next_token(outputs, batch["labels"])
            where = (labels != IGNORE).nonzero(as_tuple=True)  # the reply positions only
            tok_nll = nn.functional.cross_entropy(logits[where], labels[where], reduction="none")
            nll = torch.zeros(n, dtype=torch.float64).index_add_(0, where[0], tok_nll.double())
            count = torch.bincount(where[0], minlength=n)
            for i in range(n):
                rows[i]["nll"], rows[i]["tokens"] = float(nll[i]), int(count[i])
        if validation and not self.generate_in_validation:
            return rows
        gen = self.generation_config(model)
        if gen.do_sample:
            torch.manual_seed(int(self.generation.get("seed", 0)))
        plen = batch["prompt_length"].tolist()
        room = getattr(model.config, "max_position_embeddings", None)
        room = room - int(gen.max_new_tokens) if room else None  # prompt + reply must fit the positions
        for length in sorted(set(plen)):
            idx = [i for i in range(n) if plen[i] == length]
            prompt = batch["input_ids"][idx, :length]
            if room is not None and room > 0 and length > room:
                prompt = prompt[:, -room:]  # the oldest context goes first
                length = room
            out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt),  # type: ignore[operator]
                                 generation_config=gen)
            for i, seq in zip(idx, out[:, length:].cpu().numpy()):
                ends = np.nonzero(seq == gen.eos_token_id)[0]
                seq = seq[:ends[0]] if len(ends) else seq
                rows[i]["ids"] = seq
        return rows

    def texts_of(self, rows: list[dict[str, Any]]) -> list[str]:
        from transferkit.evaluation.textgen import join_cjk

        texts = self.tokenizer.batch_decode([list(map(int, r["ids"])) for r in rows], skip_special_tokens=True)
        return [join_cjk(t) if self.chinese_target else t.strip() for t in texts]

    def gold(self, encoded: Encoded) -> list[str | None]:
        return list(encoded.meta["references"])

    def metrics(self, scores: Any, labels: Any) -> dict[str, Any]:
        from transferkit.evaluation.textgen import generation_metrics

        nll = sum(r["nll"] for r in scores if r["nll"] is not None)
        tokens = sum(r["tokens"] for r in scores)
        loss = nll / tokens if tokens else float("nan")
        out = {"lm_loss": loss, "perplexity": math.exp(min(loss, 50.0)) if tokens else float("nan"),
               "reply_tokens": tokens}
        if all(r["ids"] is not None for r in scores):  # replies were generated
            out.update(generation_metrics(self.texts_of(scores), [str(r) for r in labels],
                                          chinese=self.chinese_target))
        return out

    def decode(self, scores: Any, encoded: Encoded | None = None) -> list[dict[str, Any]]:
        return [{"text": t} for t in self.texts_of(scores)]



def _causal_types() -> set[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
