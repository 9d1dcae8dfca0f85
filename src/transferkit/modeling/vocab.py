"""Vocabularies: train a BERT WordPiece tokenizer on a corpus, or extend an existing one with domain words.

Extension appends whole words to the WordPiece vocabulary (not as "added tokens", which would match inside
other words): WordPiece's greedy longest match then keeps such a word in one piece wherever it occurs as a
word. Old token ids are unchanged; the new rows of the embedding matrix (and of the MLM output bias) are
the mean of the rows of the pieces the word used to be split into.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from typing import Any

import torch

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train_wordpiece(texts: Iterable[str], vocab_size: int, *, min_frequency: int = 2, lowercase: bool = True,
                    model_max_length: int = 512):
    """A BertTokenizerFast trained on `texts` (Chinese characters are split one per token, as in BERT)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertTokenizerFast  # type: ignore[attr-defined]

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                strip_accents=lowercase, lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                        special_tokens=SPECIALS, continuing_subword_prefix="##")
    tok.train_from_iterator(texts, trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    return BertTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                             sep_token="[SEP]", mask_token="[MASK]", do_lower_case=lowercase,
                             model_max_length=model_max_length)


def candidate_words(tokenizer: Any, texts: Iterable[str], *, min_frequency: int, min_pieces: int,
                    max_new: int) -> list[tuple[str, int, int]]:
    """(word, frequency, pieces) of frequent words that the tokenizer splits into >= min_pieces pieces,
    most frequent first. Words are the tokenizer's own pre-tokenized, normalized words."""
    backend = tokenizer.backend_tokenizer
    counts: Counter[str] = Counter()
    for text in texts:
        norm = backend.normalizer.normalize_str(text) if backend.normalizer else text
        counts.update(w for w, _ in backend.pre_tokenizer.pre_tokenize_str(norm))
    vocab = tokenizer.get_vocab()
    out: list[Any] = []
    for word, freq in counts.most_common():
        if freq < min_frequency or len(out) >= max_new:
            break
        if word in vocab or not any(ch.isalpha() for ch in word):
            continue
        pieces = tokenizer.tokenize(word)
        if len(pieces) >= min_pieces and "[UNK]" not in pieces:
            out.append((word, freq, len(pieces)))
    return out


def extend_vocabulary(tokenizer: Any, words: list[str]):
    """A new fast tokenizer whose WordPiece vocabulary has `words` appended (ids len(vocab)...)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    state = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab: dict[str, int] = state["model"]["vocab"]
    next_id = max(vocab.values()) + 1
    for w in words:
        if w not in vocab:
            vocab[w] = next_id
            next_id += 1
    backend = Tokenizer.from_str(json.dumps(state))
    cls = type(tokenizer) if isinstance(tokenizer, PreTrainedTokenizerFast) else PreTrainedTokenizerFast
    new = cls(tokenizer_object=backend, **{k: v for k, v in tokenizer.special_tokens_map.items()
                                           if isinstance(v, str)},
              model_max_length=tokenizer.model_max_length)
    if hasattr(new, "do_lower_case") and hasattr(tokenizer, "do_lower_case"):
        new.do_lower_case = tokenizer.do_lower_case
    return new


@torch.no_grad()
def init_new_embeddings(model: Any, old_tokenizer: Any, new_tokenizer: Any, words: list[str]) -> dict[str, list[int]]:
    """Resize `model`'s embeddings to the new vocabulary; each new word's row (input embedding, and the MLM
    output bias when there is one) is the mean of the rows of its old pieces. Returns word -> old piece ids."""
    old_n = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(len(new_tokenizer), mean_resizing=False)
    emb = model.get_input_embeddings().weight
    out_emb = model.get_output_embeddings()
    bias = getattr(out_emb, "bias", None) if out_emb is not None else None
    pieces: dict[str, list[int]] = {}
    for w in words:
        new_id = new_tokenizer.convert_tokens_to_ids(w)
        if new_id < old_n:
            continue
        ids = old_tokenizer(w, add_special_tokens=False)["input_ids"]
        pieces[w] = ids
        emb[new_id] = emb[ids].mean(0)
        if bias is not None and bias.shape[0] > new_id:
            bias[new_id] = bias[ids].mean()
    return pieces
