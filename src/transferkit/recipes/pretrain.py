"""pretrain: corpus -> tokenizer (trained, reused or extended) -> packed sequences -> masked LM (+ NSP/SOP)
through fit() -> a model folder that `transformers` loads as AutoModelForMaskedLM and that
`transferkit finetune` takes as model.path.

All input checks (config, corpus, model reference) happen before the run folder is created.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from transferkit.config import PretrainConfig
from transferkit.errors import ConfigError, TransferkitError
from transferkit.modeling import load as mload

from transferkit.allocator import current as allocator  # noqa: E402

log = logging.getLogger(__name__)


#: the run folder's copy of a tokenizer trained on the corpus (`--resume` reads it back: training it again
#: could give other ids, HF tokenizers' WordPiece trainer not being deterministic between processes)
RUN_TOKENIZER = "tokenizer"


def _tokenizer(cfg: PretrainConfig, corpus, saved: Any = None) -> tuple[Any, Any, list[tuple[str, int, int]]]:
    """(tokenizer to use, the original tokenizer or None, the words added to it). `saved`: the run folder's
    trained tokenizer, when resuming."""
    from transferkit.modeling.vocab import candidate_words, extend_vocabulary, train_wordpiece

    m, t = cfg.model, cfg.tokenizer
    if m.init == "scratch" and (t.train or not m.path):
        if t.extend.enabled:
            raise ConfigError(["tokenizer -> extend: extension applies to an existing tokenizer; a tokenizer "
                               "trained on the corpus already covers its words"])
        if saved is not None:
            log.info("resuming: the run's own tokenizer (%s)", saved)
            return mload.load_tokenizer(str(saved)), None, []
        texts = (s for d in corpus.train for s in d)
        log.info("training a WordPiece tokenizer (vocabulary %d) on %d documents...", t.vocab_size,
                 len(corpus.train))
        return train_wordpiece(texts, t.vocab_size, min_frequency=t.min_frequency, lowercase=t.lowercase,
                               model_max_length=max(512, m.max_length)), None, []
    base = mload.load_tokenizer(mload.resolve(str(m.path)))
    if not t.extend.enabled:
        return base, None, []
    words = candidate_words(base, (s for d in corpus.train for s in d), min_frequency=t.extend.min_frequency,
                            min_pieces=t.extend.min_pieces, max_new=t.extend.max_new_tokens)
    log.info("vocabulary extension: %d words (e.g. %s)", len(words), ", ".join(w for w, _, _ in words[:8]))
    return extend_vocabulary(base, [w for w, _, _ in words]), base, words


def _build_lm(cfg: PretrainConfig, tokenizer, pair: bool):
    from transformers import (AutoModelForCausalLM, AutoModelForMaskedLM, BertConfig, BertForMaskedLM,
                              BertForPreTraining, BertLMHeadModel, set_seed)

    m = cfg.model
    causal = cfg.objective.kind == "causal"
    set_seed(cfg.train.seed)
    drop = mload.dropout_overrides(m.dropout)
    if m.init == "scratch":
        kw: dict[str, Any] = {**mload.SIZES[m.size], **drop}
        config = BertConfig(vocab_size=len(tokenizer), max_position_embeddings=max(512, m.max_length),
                            pad_token_id=tokenizer.pad_token_id, is_decoder=causal, **kw)
        return BertLMHeadModel(config) if causal else (BertForPreTraining if pair else BertForMaskedLM)(config)
    ref = mload.resolve(str(m.path))
    config = mload.load_config(ref, **drop)
    if causal:
        if config.model_type in mload.DECODER_BY_FLAG:
            config.is_decoder = True
        return mload.instantiate(AutoModelForCausalLM, ref, "pretrained", config)
    if pair:
        if config.model_type != "bert":
            raise ConfigError([f"objective -> pair: NSP/SOP heads are implemented for BERT, not "
                               f"'{config.model_type}'"])
        return mload.instantiate(BertForPreTraining, ref, "pretrained", config)
    return mload.instantiate(AutoModelForMaskedLM, ref, "pretrained", config)


def _encode(cfg: PretrainConfig, tokenizer, corpus, task):
    from transferkit.data.packing import make_pairs, pack_stream, tokenize_documents

    o, L = cfg.objective, cfg.model.max_length
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    words = o.chinese_words if o.whole_word and o.kind == "mlm" else "characters"
    out = []
    for part, docs in (("train", corpus.train), ("heldout", corpus.heldout)):
        t0 = time.perf_counter()
        toks = tokenize_documents(tokenizer, docs, chinese_words=words)
        if o.pair == "none":
            feats = pack_stream(toks, L, cls_id, sep_id)
        else:
            feats = make_pairs(toks, L, cls_id, sep_id, o.pair, seed=cfg.corpus.seed + (part == "heldout"))
        log.info("%s: %d documents -> %d sequences of <= %d tokens (%.0f s)", part, len(docs), len(feats), L,
                 time.perf_counter() - t0)
        out.append(task.encoded(feats))
    train, held = out
    if not train.features or not held.features:
        raise TransferkitError("the corpus produced no training or no held-out sequences: give more text")
    return train, task.fix_masks(held, seed=cfg.corpus.seed)


def _task(cfg: PretrainConfig, tokenizer: Any) -> Any:
    from transferkit.tasks.clm import CausalPretrainTask
    from transferkit.tasks.mlm import MaskedLMTask

    o = cfg.objective
    if tokenizer.pad_token_id is None:
        raise ConfigError([f"model -> path: the tokenizer of '{cfg.model.path}' has no padding token"])
    if o.kind == "causal":
        if tokenizer.cls_token_id is None or tokenizer.sep_token_id is None:
            raise ConfigError([f"objective -> kind: causal pretraining packs the corpus with [CLS] and [SEP]; the "
                               f"tokenizer of '{cfg.model.path}' has no such tokens (BERT-style checkpoints, or "
                               "model.init: scratch with a trained tokenizer)"])
        return CausalPretrainTask(pad_id=tokenizer.pad_token_id)
    return MaskedLMTask(mask_id=tokenizer.mask_token_id, pad_id=tokenizer.pad_token_id, vocab_size=len(tokenizer),
                        mlm_probability=o.mlm_probability, mask_fraction=o.mask_fraction,
                        random_fraction=o.random_fraction, whole_word=o.whole_word, pair=o.pair)


def padding_fraction(encoded, batches) -> float:
    real = sum(encoded.lengths)
    padded = sum(max(encoded.lengths[i] for i in b) * len(b) for b in batches)
    return 1 - real / max(padded, 1)


def run(cfg: PretrainConfig, *, resume: bool = False, overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    from transferkit.data.corpus import load_corpus
    from transferkit.recipes import rundir
    from transferkit.recipes.finetune import open_run

    # 1. Checks and inputs, before anything is written.
    folder = rundir.plan(cfg, cfg.run_dir, "pretrain", resume=resume, overwrite=overwrite)
    if cfg.model.init == "pretrained":
        mload.check_weights(mload.resolve(str(cfg.model.path)))
    c = cfg.corpus
    corpus = load_corpus(c.sources, text_column=c.text_column, heldout=c.heldout, dedupe=c.dedupe,
                         max_documents=c.max_documents, seed=c.seed)
    log.info("corpus: %s", corpus.stats)
    folder.check_data(rundir.fingerprint(s for d in corpus.train for s in d))
    saved = cfg.run_dir / RUN_TOKENIZER
    tokenizer, old_tokenizer, added = _tokenizer(cfg, corpus, saved if resume and saved.is_dir() else None)
    task = _task(cfg, tokenizer)

    from transferkit.modeling.vocab import init_new_embeddings
    from transferkit.training.loop import make_accelerator

    acc = make_accelerator(cfg.train.precision)

    # 2. Sequences, model (errors here still leave no run folder).
    train, held = _encode(cfg, tokenizer, corpus, task)
    lm = _build_lm(cfg, tokenizer, cfg.objective.pair != "none")
    if added:
        init_new_embeddings(lm, old_tokenizer, tokenizer, [w for w, _, _ in added])
    elif lm.get_input_embeddings().weight.shape[0] < len(tokenizer):
        lm.resize_token_embeddings(len(tokenizer))
    model = task.wrap(lm)
    from transferkit.methods.stack import MethodStack

    methods = MethodStack.from_config(cfg.methods, run=cfg)
    from transferkit.tracking import observers as trackers

    if cfg.tracking.mlflow:
        methods = MethodStack([*methods.methods, *trackers(cfg, cfg.run_dir)])
    model = methods.prepare_model(model, task=task)
    rundir.check_free_space(folder.path, model)
    open_run(cfg, folder, acc)
    if acc.is_main_process and not (resume and saved.is_dir()):
        tokenizer.save_pretrained(saved)
    with folder.guard(acc.is_main_process):
        return _train_and_ship(cfg, task, model, tokenizer, corpus, added, train, held, acc, folder.path,
                               resume=resume, progress=progress, methods=methods)


def _train_and_ship(cfg: PretrainConfig, task: Any, model: Any, tokenizer: Any, corpus: Any, added: list,
                    train: Any, held: Any, acc: Any, run_dir: Any, *, resume: bool, progress: bool,
                    methods: Any) -> dict[str, Any]:
    from transferkit.evaluation.evaluate import evaluate
    from transferkit.evaluation.report import write_pretrain_report
    from transferkit.recipes.finetune import peak_rss_mb
    from transferkit.training.batching import epoch_batches
    from transferkit.training.checkpoint import atomic_write_text
    from transferkit.training.loop import fit

    main = acc.is_main_process
    before, _ = evaluate(task, model, held, device=acc.device, accelerator=acc, batch_size=64)
    from transferkit.evaluation.report import pretrain_keys

    lk, _, ak, aname = pretrain_keys(before)
    log.info("held-out before pretraining: loss %.3f, perplexity %.1f, %s %.3f", before[lk], before["perplexity"],
             aname, before[ak])

    # 3. Train.
    result = fit(task, model, train, held, cfg.train, cfg.early_stopping, run_dir, accelerator=acc,
                 resume=resume, progress=progress, label="pretraining", methods=methods,
                 tensorboard=cfg.tracking.tensorboard)
    model = acc.unwrap_model(model)
    after, _ = evaluate(task, model, held, device=acc.device, accelerator=acc, batch_size=64)
    if not main:
        return {}

    # 4. Ship: a transformers MLM folder (a method may write its own files and ship another model: the LoRA
    # adapter, and the merged model in model/).
    out = run_dir / "model"
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    sample = task.collate([held.features[i] for i in range(min(8, len(held)))])
    sample = {k: v.to(acc.device) for k, v in sample.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    lm = methods.export(model.lm, run_dir=run_dir, forward=lambda m: m(**sample).logits)
    lm.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    per_batch = max(1, cfg.train.batch_size // cfg.train.grad_accum)
    pad = padding_fraction(train, epoch_batches(train.lengths, per_batch, seed=cfg.train.seed, epoch=0,
                                                strategy=cfg.train.batching.strategy))
    summary = {
        "name": cfg.name, "task": "pretrain", "objective": task.describe(),
        "model": {"init": cfg.model.init, "path": cfg.model.path, "size": cfg.model.size if cfg.model.init ==
                  "scratch" else None, "parameters": sum(p.numel() for p in lm.parameters()),
                  "trainable": trainable,
                  "vocab_size": len(tokenizer), "max_length": cfg.model.max_length},
        "corpus": {**corpus.stats, "train_sequences": len(train), "heldout_sequences": len(held),
                   "train_tokens": sum(train.lengths)},
        "vocab_extension": [{"word": w, "frequency": f, "pieces": p} for w, f, p in added],
        "heldout_before": before, "heldout_after": after,
        "train": {"steps": result.steps, "epochs": result.epochs_completed, "seconds": result.train_seconds,
                  "tokens_per_s": result.tokens_seen / max(result.train_seconds, 1e-9),
                  "sequences_per_s": result.examples_seen / max(result.train_seconds, 1e-9),
                  "padding_fraction": pad, "peak_rss_mb": peak_rss_mb(), "allocator": allocator(), "processes": acc.num_processes},
    }
    atomic_write_text(run_dir / "metrics.json", json.dumps(summary, indent=2, ensure_ascii=False))
    write_pretrain_report(run_dir, summary, result.history)
    from transferkit.registry import register

    register(run_dir, summary, cfg, "pretrain")
    return summary

