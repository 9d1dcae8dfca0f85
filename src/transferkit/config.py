"""The schema of a run: every knob is a field here, with its default and its description, once.

Loading: YAML file -> dotted overrides (``train.optimizer.lr=3e-5``) -> pydantic validation.
All problems are collected and reported together, each with its location (``train -> optimizer -> lr``).
This module must not import torch: `transferkit config validate` should be instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from transferkit.errors import ConfigError, did_you_mean


class Section(BaseModel):
    """A config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def check_run_name(name: Any) -> str:
    """A run's name becomes one folder under output.dir: never a path, '.', '..' or empty."""
    if name is None:
        raise ValueError("must be a plain folder name such as 'my_run' (got nothing: `name=` or `name: ~` in YAML "
                         "means null)")
    if isinstance(name, (int, float)) and not isinstance(name, bool):
        name = str(name)  # name=123: a number is a fine folder name
    if not isinstance(name, str):
        raise ValueError(f"must be a plain folder name such as 'my_run' (got {name!r})")
    if not name.strip() or name.strip() in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise ValueError("must be a plain folder name such as 'my_run': not empty, '.' or '..', and without "
                         "'/' or '\\'; use output.dir to choose where run folders go")
    return name


class ModelConfig(Section):
    path: str = Field(
        "minilm",
        description="Pretrained checkpoint: a local folder, a Hugging Face hub name (needs internet), "
        "or the built-in alias 'minilm' (the packaged all-MiniLM-L6-v2, offline).",
    )
    init: Literal["pretrained", "scratch"] = Field(
        "pretrained",
        description="'pretrained' loads the weights; 'scratch' builds the same architecture (or `size`) "
        "with random weights, keeping the checkpoint's tokenizer.",
    )
    size: Literal["tiny", "mini", "small", "base"] | None = Field(
        None, description="With init=scratch: a named BERT size instead of the checkpoint's architecture."
    )
    max_length: int = Field(128, ge=8, le=8192, description="Tokens per example after truncation.")
    dropout: float | None = Field(
        None, ge=0.0, lt=1.0, description="Override the hidden and attention dropout of the encoder."
    )


class SplitConfig(Section):
    validation: float = Field(0.1, gt=0.0, lt=0.5, description="Fraction held out for validation.")
    test: float = Field(0.1, gt=0.0, lt=0.5, description="Fraction held out for the final test.")
    seed: int = Field(42, description="Seed of the stratified split.")


class DataConfig(Section):
    source: str | None = Field(
        None,
        description="Built-in dataset (rotten_tomatoes, bbc_news, chinese_reviews; peoples_daily_ner for NER), a file "
        "(.csv/.tsv/.jsonl), a saved `datasets` folder, or a hub dataset name. One source is split "
        "into train/validation/test by `split`.",
    )
    train: str | None = Field(None, description="Training file, instead of `source`.")
    validation: str | None = Field(None, description="Validation file (optional with `train`).")
    test: str | None = Field(None, description="Test file (optional with `train`).")
    text_column: str = Field("text", description="Column holding the text.")
    text_pair_column: str | None = Field(None, description="Optional second text column (sentence pairs).")
    label_column: str = Field("label", description="Column holding the label.")
    split: SplitConfig = Field(default_factory=SplitConfig, description="How a single source is split.")
    dedupe: bool = Field(
        True,
        description="Drop duplicate texts within the data and remove texts shared between splits "
        "(leakage). Counts are reported.",
    )
    limit: int | None = Field(
        None, ge=10, description="Use at most this many examples (stratified sample): quick runs."
    )

    train_limit: int | None = Field(
        None, ge=2, description="Keep only this many training examples (stratified sample) after splitting; "
        "validation and test stay whole: learning curves with few labels."
    )
    train_sample_seed: int | None = Field(
        None, description="Seed of the train_limit / train_per_class sample (default: split.seed)."
    )
    train_per_class: int | None = Field(
        None, ge=1, description="Few-shot: keep exactly this many training examples of each label (seeded by "
        "train_sample_seed), drawn from the training split only; single-label classification."
    )
    validation_per_class: int | None = Field(
        None, ge=1, description="Few-shot: keep this many validation examples of each label (same seed), so model "
        "choice sees no more labels than a few-shot user has; the test split stays whole."
    )

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if self.source and self.train:
            raise ValueError("give either `source` (split for you) or `train` (+ validation/test), not both")
        if not self.source and not self.train:
            raise ValueError("no data: set `data.source` (e.g. rotten_tomatoes) or `data.train` (a file)")
        if self.train_per_class and self.train_limit:
            raise ValueError("give either train_limit (a stratified sample of that size) or train_per_class "
                             "(k examples of each label), not both")
        return self


class NerConfig(Section):
    scheme: Literal["bio", "bioes", "io"] = Field(
        "bio", description="Tagging scheme the model predicts. Input files may use BIO, IOB1, BIOES or IO: "
        "they are read as entity spans and converted."
    )
    label_subtokens: Literal["first", "all"] = Field(
        "first", description="'first': a word's tag on its first sub-word (the others are ignored by the loss); "
        "'all': on every sub-word, B- turned into I- on continuations."
    )
    stride: int | None = Field(
        None, ge=0, description="Sentences longer than model.max_length are cut into windows overlapping by this "
        "many sub-words (default: a quarter of the window); each word is predicted from the window where it is "
        "farthest from an edge."
    )
    tokens_column: str = Field("tokens", description="JSONL field holding the words.")
    tags_column: str = Field("tags", description="JSONL field holding one tag per word.")
    entities_column: str = Field(
        "entities", description="JSONL field of character-span entities ({start, end, label}) beside data.text_column."
    )
    crf: bool = Field(
        False, description="A linear-chain CRF over the word tags (pytorch-crf): trained by its log-likelihood, "
        "decoded by Viterbi constrained to valid sequences of the scheme. Needs label_subtokens: first."
    )

    @model_validator(mode="after")
    def _crf_on_words(self) -> NerConfig:
        if self.crf and self.label_subtokens != "first":
            raise ValueError("crf reads one tag per word: it needs label_subtokens: first")
        return self


class RelationConfig(Section):
    markers: Literal["typed", "plain"] = Field(
        "typed", description="Entity markers inserted around the two spans: 'typed' carries the entity types "
        "(<e1:PER> ... </e1:PER>) when the data gives them, 'plain' is <e1> ... </e1>. Added to the tokenizer."
    )
    pooling: Literal["markers", "cls"] = Field(
        "markers", description="Representation fed to the head: the start markers' states (concatenated), or [CLS]."
    )
    no_relation: str = Field(
        "no_relation", description="The label meaning 'no relation'; excluded from the micro-F1."
    )
    head_column: str = Field("head", description="JSONL field of the head entity: {start, end[, type]}.")
    tail_column: str = Field("tail", description="JSONL field of the tail entity: {start, end[, type]}.")


class QAConfig(Section):
    doc_stride: int | None = Field(
        None, ge=0, description="Contexts longer than the window are cut into windows overlapping by this many "
        "tokens (default: a quarter of model.max_length)."
    )
    max_answer_length: int = Field(30, ge=1, description="Longest answer considered, in tokens.")
    n_best: int = Field(20, ge=1, description="Start and end candidates considered per window.")
    null_threshold: float = Field(
        0.0, description="SQuAD v2: answer 'no answer' when its score beats the best span's by more than this."
    )
    version_2: bool | None = Field(
        None, description="Allow unanswerable questions (SQuAD v2). Default: true when the training data has some."
    )


class GenerationConfig(Section):
    """How text is generated, in evaluation, `transferkit predict` and `transferkit serve` alike."""

    max_new_tokens: int = Field(48, ge=1, description="Longest output, in target tokens.")
    num_beams: int = Field(1, ge=1, description="Beam search with this many beams (1: greedy or sampling).")
    do_sample: bool = Field(False, description="Sample from the distribution instead of taking the best token.")
    temperature: float = Field(1.0, gt=0.0, description="Sampling temperature (do_sample only).")
    top_k: int | None = Field(None, ge=1, description="Sample among the k most likely tokens (do_sample only).")
    top_p: float | None = Field(None, gt=0.0, le=1.0, description="Nucleus sampling mass (do_sample only).")
    no_repeat_ngram_size: int = Field(0, ge=0, description="Never repeat an n-gram of this size (0: off).")
    repetition_penalty: float = Field(1.0, gt=0.0, description="Penalty on tokens already generated (1.0: off).")
    length_penalty: float = Field(1.0, description="Beam search: >1 favours longer outputs, <1 shorter.")
    seed: int = Field(0, description="Seed of sampling, so that evaluation and predictions repeat.")

    @model_validator(mode="after")
    def _sampling_knobs(self) -> GenerationConfig:
        if not self.do_sample and (self.top_k is not None or self.top_p is not None or self.temperature != 1.0):
            raise ValueError("temperature, top_k and top_p act only when sampling: set do_sample: true")
        return self


class Seq2SeqConfig(Section):
    decoder: str | None = Field(
        None, description="Checkpoint the decoder is warm-started from (folder, hub name or alias: minilm, "
        "zh-mini): an encoder-decoder built from model.path and this (cross-attention added, random). Default: "
        "model.path again (BERT2BERT), or nothing when model.path is itself a seq2seq checkpoint (T5, BART, Marian)."
    )
    max_target_length: int = Field(64, ge=2, description="Target texts are cut to this many tokens in training.")
    metric: Literal["rougeL", "rouge1", "rouge2", "bleu", "chrf"] = Field(
        "rougeL", description="The validation metric of the run (early stopping, the report's headline)."
    )
    tie_encoder_decoder: bool = Field(
        False, description="Share the encoder's and decoder's weights (Rothe et al.'s BERTShare; same checkpoint "
        "only)."
    )
    source_prefix: str = Field("", description="Text put before every source (e.g. 'summarize: ' for T5).")


class CausalLMConfig(Section):
    max_target_length: int = Field(48, ge=2, description="Replies are cut to this many tokens in training.")
    max_turns: int = Field(
        4, ge=1, description="Turns of the conversation before the reply that the model sees (the built-in "
        "conversation sets make one example of every reply with up to this many turns before it)."
    )


class PromptConfig(Section):
    template: str = Field(
        "{text} It was {mask}.", description="The cloze pattern around each text: {text} is the input (truncated "
        "to fit model.max_length, the rest of the pattern is kept), {mask} the masked token whose masked-LM scores "
        "of the verbalizer words classify the text.")
    verbalizer: dict[str, str] | None = Field(
        None, description="Label -> the word that stands for it at {mask} (e.g. {positive: great, negative: "
        "terrible}); each word must be one token of the model's vocabulary.")
    calibrate: bool = Field(
        True, description="Zero-shot cloze baseline: also report it with contextual calibration (Zhao et al. 2021): "
        "the label-word probabilities divided by those of content-free inputs, then renormalised.")
    content_free: list[str] = Field(
        ["N/A", "", "[MASK]"], description="Content-free inputs for contextual calibration ('[MASK]' means the "
        "tokenizer's mask token); their label-word probabilities are averaged.")

    @field_validator("template")
    @classmethod
    def _slots(cls, v: str) -> str:
        for slot in ("{text}", "{mask}"):
            if v.count(slot) != 1:
                raise ValueError(f"the template must contain {slot} exactly once")
        return v


class TaskConfig(Section):
    type: Literal["text_classification", "token_classification", "relation_extraction",
                  "question_answering", "seq2seq", "causal_lm"] = Field(
        "text_classification", description="The task: text_classification, token_classification (NER), "
        "relation_extraction, question_answering (extractive), seq2seq (summarization, translation: text in, "
        "text out; the target is data.label_column) or causal_lm (dialogue with a decoder-only model: the "
        "context, turns one per line, in data.text_column, the reply in data.label_column)."
    )
    pooling: Literal["cls", "mean"] = Field(
        "cls",
        description="How the head reads the encoder: the [CLS] token through the pooler (BERT's head) "
        "or the mean of the token states (what sentence encoders such as MiniLM were trained for).",
    )
    multilabel: bool = Field(False, description="Each example may carry several labels (sigmoid head).")
    label_separator: str = Field(",", description="Separator of labels in one cell when multilabel.")
    labels: list[str] | None = Field(
        None, description="Label names in order. Default: sorted labels found in the training data."
    )
    head: Literal["linear", "prompt"] = Field(
        "linear", description="text_classification: 'linear' is a classifier layer on the pooled encoder; 'prompt' "
        "classifies with the model's masked-LM head at the {mask} of task.prompt.template, scoring only the "
        "verbalizer words (PET / LM-BFF prompt-based fine-tuning; needs a model with a trained MLM head).")
    prompt: PromptConfig = Field(default_factory=PromptConfig, description="head: prompt settings (template, "
                                 "verbalizer, calibration of the zero-shot cloze baseline).")
    label_descriptions: dict[str, str] | None = Field(
        None, description="Zero-shot by embeddings (compare.zero_shot): a description per label (e.g. {positive: "
        "'a glowing review'}), embedded like the texts; each text gets the label whose description is the most "
        "similar (cosine). Default: the label names themselves.")
    ner: NerConfig = Field(default_factory=NerConfig, description="token_classification settings.")
    relation: RelationConfig = Field(default_factory=RelationConfig, description="relation_extraction settings.")
    qa: QAConfig = Field(default_factory=QAConfig, description="question_answering settings.")
    seq2seq: Seq2SeqConfig = Field(default_factory=Seq2SeqConfig, description="seq2seq settings.")
    causal_lm: CausalLMConfig = Field(default_factory=CausalLMConfig, description="causal_lm settings.")
    generation: GenerationConfig = Field(default_factory=GenerationConfig,
                                         description="Text generation settings (seq2seq, causal_lm).")


class OptimizerConfig(Section):
    name: Literal["adamw", "adam", "sgd"] = Field("adamw", description="Optimizer.")
    lr: float = Field(5e-5, gt=0.0, le=1.0, description="Peak learning rate.")
    weight_decay: float = Field(
        0.01, ge=0.0, description="Weight decay (never applied to biases and LayerNorm weights)."
    )
    betas: tuple[float, float] = Field((0.9, 0.999), description="Adam betas.")
    eps: float = Field(1e-8, gt=0.0, description="Adam epsilon.")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum.")


class ScheduleConfig(Section):
    name: Literal["linear", "cosine", "constant"] = Field("linear", description="Learning-rate schedule.")
    warmup_ratio: float = Field(0.06, ge=0.0, lt=1.0, description="Fraction of steps spent warming up.")
    warmup_steps: int | None = Field(None, ge=0, description="Warm-up steps; overrides warmup_ratio.")


class BatchingConfig(Section):
    strategy: Literal["length_grouped", "random"] = Field(
        "length_grouped",
        description="'length_grouped' sorts each epoch by length (random tie-break) into batches of "
        "similar length, then shuffles the batches: little padding. 'random' is plain shuffling.",
    )
    max_tokens: int | None = Field(
        None,
        ge=16,
        description="Token budget per batch (padded tokens). Batches then vary in size, capped by batch_size.",
    )
    chunk_tokens: int | None = Field(
        1024,
        ge=16,
        description="Memory cap: a batch with more padded tokens than this is run in consecutive chunks whose "
        "gradients add up to the same optimizer step (same update, up to float rounding), so peak activation "
        "memory stays bounded on long texts. null runs every batch whole.",
    )


class TrainConfig(Section):
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig, description="Optimizer settings.")
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig, description="Learning-rate schedule.")
    batching: BatchingConfig = Field(default_factory=BatchingConfig, description="How batches are formed.")
    epochs: float = Field(3, gt=0, description="Passes over the training data.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps (overrides epochs).")
    batch_size: int = Field(32, ge=1, description="Examples per optimizer step, across all processes.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches accumulated per optimizer step.")
    max_grad_norm: float | None = Field(1.0, gt=0, description="Gradient clipping norm; null disables.")
    seed: int = Field(42, description="Seed of initialisation, shuffling and dropout.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="'auto' picks bf16 on GPUs that support it and fp32 elsewhere: bf16 autocast was measured "
        "slower on CPUs (about 16x on an AVX2 CPU, 0.76x on an AVX-512-BF16 Xeon).",
    )
    eval_every: Literal["epoch"] | int = Field(
        "epoch", description="Evaluate on validation every N optimizer steps, or every 'epoch'."
    )
    log_every: int = Field(20, ge=1, description="Log training loss every N optimizer steps.")
    checkpoint_every: int = Field(
        200, ge=1, description="Save a resumable checkpoint every N optimizer steps (and at every evaluation)."
    )


class FreezeConfig(Section):
    mode: Literal["none", "embeddings", "bottom", "all_but_head"] = Field(
        "none",
        description="'embeddings' freezes the embedding layer; 'bottom' the embeddings and the lowest "
        "`layers` layers; 'all_but_head' trains only the head (a linear probe).",
    )
    layers: int = Field(0, ge=0, description="With mode=bottom: how many encoder layers to freeze.")


class EarlyStoppingConfig(Section):
    enabled: bool = Field(True, description="Stop when the validation metric stops improving.")
    metric: str | None = Field(
        None, description="Validation metric to watch (accuracy, macro_f1, f1, exact_match, loss...). Default: the "
        "task's main metric (accuracy; micro F1 for multilabel; entity F1 for NER; relation F1; SQuAD F1)."
    )
    mode: Literal["max", "min"] | None = Field(
        None, description="Whether larger or smaller is better. Default: 'min' for losses, else 'max'."
    )
    patience: int = Field(3, ge=1, description="Evaluations without improvement before stopping.")
    min_delta: float = Field(0.0, ge=0.0, description="Smallest change that counts as an improvement.")


class ReportConfig(Section):
    explain: int = Field(0, ge=0, le=200, description="Single-label text classification: highlight the words "
                         "behind this many of the most confident test errors and as many of the most confident "
                         "correct predictions (integrated gradients) in explanations.html, linked from the report.")
    trust: bool = Field(False, description="Run `transferkit evaluate --suite calibration,robustness,bias` on the "
                        "finished run (single-label text classification; results in trust/, linked from the report).")


class CompareConfig(Section):
    majority: bool = Field(True, description="Report the majority-class baseline.")
    linear_probe: bool = Field(
        True, description="Report a logistic-regression probe on frozen pretrained mean-pooled features."
    )
    scratch: bool = Field(
        False, description="Also train the same architecture from random init on the same data and budget."
    )
    zero_shot: bool = Field(
        False, description="text_classification: report zero-shot baselines that use no training labels: label "
        "descriptions vs texts by embedding similarity (task.label_descriptions), and with head: prompt the cloze "
        "prompt on the pretrained masked LM, raw and contextually calibrated (task.prompt)."
    )


class OutputConfig(Section):
    dir: str = Field("runs/{name}", description="Run folder; {name} is replaced by the run's name.")


class RegistryConfig(Section):
    enabled: bool = Field(True, description="Register the finished run as a new version of a model in the MLflow "
                          "registry (params, metrics, lineage, data fingerprint; alias `candidate`). The environment "
                          "variable TRANSFERKIT_REGISTRY=off turns it off, any other value is the URI.")
    uri: str | None = Field(None, description="MLflow tracking and registry URI. Default: sqlite:///mlruns.db in the "
                            "working directory (artifacts beside it in mlartifacts/).")
    model_name: str | None = Field(None, description="The registered model this run is a version of. Default: the "
                                   "run's name; an update: its parent's model.")


class TrackingConfig(Section):
    tensorboard: bool = Field(True, description="TensorBoard event files in RUN/tensorboard (metrics.jsonl is always "
                              "written).")
    mlflow: bool = Field(False, description="Live metrics of training and validation to an MLflow run as they are "
                         "logged (the registry's URI, experiment 'transferkit'); the registered version then "
                         "points at that run.")


class RunOutputConfig(OutputConfig):
    keep: Literal["all", "model", "metrics"] = Field(
        "all", description="What a finished run folder keeps: 'all' (model/, checkpoints/ for --resume), 'model' "
        "(no checkpoints), 'metrics' (metrics, report and config only, and no checkpoints while training either, so "
        "no --resume: sweeps of many small runs).")
    replay_sample: int = Field(
        1000, ge=0, description="Training examples kept in the run folder (replay.jsonl; a stratified sample for "
        "classification) so that a later `transferkit update` can replay them (methods.replay) and estimate the "
        "Fisher information (methods.ewc). 0 keeps none.")


class UpdateConfig(Section):
    parent: str | None = Field(
        None, description="The run folder this run updates (`transferkit update` sets it): the fine-tuning starts "
        "from its model, replay and EWC read its kept sample, and the report measures what the update forgot on "
        "its test split. None: a run of its own.")
    evaluate_parent: bool = Field(
        True, description="Score the parent's test split before and after the update (the forgetting score) "
        "and the new test split before and after (the gain).")


METHODS_HELP = ("Fine-tuning methods plugged into the training loop, by name, each with its own settings, e.g. "
                "{layerwise_lr: {decay: 0.9}, fgm: {epsilon: 1.0}}; `transferkit config explain` lists the fields.")


class RunConfig(Section):
    name: str = Field("run", description="Name of the run: one folder name (no '/', not '.' or '..').")

    _name = field_validator("name", mode="before")(check_run_name)
    model: ModelConfig = Field(default_factory=ModelConfig, description="The pretrained model.")
    data: DataConfig = Field(description="Where the examples come from.")
    task: TaskConfig = Field(default_factory=TaskConfig, description="What is predicted.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="The training loop.")
    freeze: FreezeConfig = Field(default_factory=FreezeConfig, description="Which parameters stay fixed.")
    early_stopping: EarlyStoppingConfig = Field(
        default_factory=EarlyStoppingConfig, description="Early stopping on validation."
    )
    compare: CompareConfig = Field(default_factory=CompareConfig, description="Baselines in the transfer report.")
    report: ReportConfig = Field(default_factory=ReportConfig, description="What the report adds: explanations, "
                                 "trust checks.")
    methods: dict[str, Any] = Field(default_factory=dict, description=METHODS_HELP)
    output: RunOutputConfig = Field(default_factory=RunOutputConfig, description="Where results go.")
    registry: RegistryConfig = Field(default_factory=RegistryConfig, description="Model versions in MLflow.")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="Experiment tracking.")
    update: UpdateConfig = Field(default_factory=UpdateConfig,
                                 description="Continual learning: the run this one updates (lineage).")
    fewshot: dict[str, Any] | None = Field(
        None, description="Settings of `transferkit fewshot` (shots, seeds, methods, the masked LM of the prompt "
        "methods; docs/fewshot.md); `finetune` ignores it.")
    search: dict[str, Any] | None = Field(
        None, description="Hyperparameter search space and settings for `transferkit search` (docs/search.md); "
        "`finetune` ignores it.")

    @property
    def run_dir(self) -> Path:
        return Path(self.output.dir.format(name=self.name)).expanduser()

    def cross_checks(self) -> list[str]:
        """Rules that span sections: settings that do nothing for this task, metrics it does not report."""
        problems = _output_dir_problems(self.output.dir) + _method_problems(self, self.task.type)
        kind = self.task.type
        defaults = TaskConfig()
        if kind != "text_classification":
            for key in ("pooling", "multilabel", "label_separator", "head", "prompt", "label_descriptions"):
                if getattr(self.task, key) != getattr(defaults, key):
                    problems.append(f"task -> {key}: applies to text_classification only, not to {kind}; "
                                    "remove it")
            if self.data.text_pair_column is not None:
                problems.append(f"data -> text_pair_column: sentence pairs are a text_classification input, not "
                                f"{kind}'s; remove it")
        for key, owners in (("ner", ("token_classification",)), ("relation", ("relation_extraction",)),
                            ("qa", ("question_answering",)), ("seq2seq", ("seq2seq",)), ("causal_lm", ("causal_lm",)),
                            ("generation", ("seq2seq", "causal_lm"))):
            if kind not in owners and getattr(self.task, key) != getattr(defaults, key):
                owner = " or ".join(owners)
                problems.append(f"task -> {key}: settings of {owner}, but task.type is {kind}; remove them or "
                                f"set task.type: {owners[0]}")
        multilabel = self.task.multilabel and kind == "text_classification"
        for key in ("explain", "trust"):
            if getattr(self.report, key) and (kind != "text_classification" or multilabel):
                problems.append(f"report -> {key}: for single-label text_classification runs, not "
                                f"{'multilabel ' if multilabel else ''}{kind}; remove it")
        if self.report.trust and self.output.keep == "metrics":
            problems.append("report -> trust: the suites load the model folder, which output.keep: metrics does not "
                            "keep; use output.keep: model or all")
        if self.report.explain and self.data.text_pair_column is not None:
            problems.append("report -> explain: explains single texts; this run classifies text pairs")
        problems += _metric_problems(self.early_stopping, validation_metrics(kind, multilabel=multilabel))
        L = self.model.max_length
        if kind == "token_classification" and self.task.ner.stride is not None and self.task.ner.stride >= L - 2:
            problems.append(f"task -> ner -> stride: {self.task.ner.stride} must be smaller than model.max_length - 2 "
                            f"({L - 2})")
        if kind == "causal_lm" and self.task.causal_lm.max_target_length >= L:
            problems.append(f"task -> causal_lm -> max_target_length: {self.task.causal_lm.max_target_length} leaves "
                            f"no room for the context in model.max_length ({L}); make it smaller")
        if kind == "question_answering" and self.task.qa.doc_stride is not None and self.task.qa.doc_stride >= L // 2:
            problems.append(f"task -> qa -> doc_stride: {self.task.qa.doc_stride} must be less than half of "
                            f"model.max_length ({L}); e.g. max_length 384 with doc_stride 128")
        problems += _prompt_problems(self)
        if self.freeze.layers and self.freeze.mode != "bottom":
            problems.append(f"freeze -> layers: only used with freeze.mode: bottom (mode is '{self.freeze.mode}')")
        if self.compare.scratch and self.model.init == "scratch":
            problems.append("compare -> scratch: the model itself is trained from scratch (model.init: scratch), "
                            "so there is nothing to compare; remove one of them")
        return problems


def _prompt_problems(cfg: RunConfig) -> list[str]:
    t = cfg.task
    out: list[str] = []
    if t.head == "prompt" and t.type == "text_classification":
        if t.multilabel:
            out.append("task -> head: 'prompt' scores one masked word per text, so it is single-label only; "
                       "use head: linear with multilabel: true")
        if not t.prompt.verbalizer:
            out.append("task -> prompt -> verbalizer: head: prompt needs a word per label, e.g. "
                       "{positive: great, negative: terrible}")
        elif t.labels and sorted(t.prompt.verbalizer) != sorted(t.labels):
            out.append(f"task -> prompt -> verbalizer: its labels {sorted(t.prompt.verbalizer)} differ from "
                       f"task.labels {sorted(t.labels)}")
        if cfg.data.text_pair_column is not None:
            out.append("task -> head: 'prompt' reads one text per example; remove data.text_pair_column")
    if t.label_descriptions and t.labels and sorted(t.label_descriptions) != sorted(t.labels):
        out.append(f"task -> label_descriptions: its labels {sorted(t.label_descriptions)} differ from task.labels "
                   f"{sorted(t.labels)}")
    if cfg.compare.zero_shot and (t.type != "text_classification" or t.multilabel):
        out.append("compare -> zero_shot: zero-shot baselines are for single-label text_classification; remove it")
    return out


#: The validation metrics each task always reports: what early_stopping.metric may watch. A unit test
#: checks them against what each task's evaluation returns, so they cannot drift apart.
VALIDATION_METRICS: dict[str, tuple[str, ...]] = {
    "text_classification": ("accuracy", "macro_f1", "loss"),
    "text_classification/multilabel": ("micro_f1", "macro_f1", "subset_accuracy", "loss"),
    "token_classification": ("f1", "precision", "recall", "macro_f1", "loss"),
    "relation_extraction": ("f1", "precision", "recall", "accuracy", "macro_f1", "loss"),
    "question_answering": ("f1", "exact_match"),
    "seq2seq": ("rougeL", "rouge1", "rouge2", "bleu", "chrf", "loss"),
    "causal_lm": ("lm_loss", "perplexity", "distinct_1", "distinct_2", "rougeL", "bleu", "chrf", "loss"),
    "pretrain": ("mlm_loss", "perplexity", "masked_accuracy"),
    "pretrain/pair": ("mlm_loss", "perplexity", "masked_accuracy", "pair_accuracy"),
    "pretrain/causal": ("lm_loss", "perplexity", "next_token_accuracy"),
}


def validation_metrics(kind: str, *, multilabel: bool = False, pair: bool = False) -> tuple[str, ...]:
    key = kind + ("/multilabel" if multilabel else "") + ("/pair" if pair else "")
    return VALIDATION_METRICS[key]


def minimized(metric: str) -> bool:
    """Metrics where smaller is better (losses, perplexity): early stopping's default mode is min for them."""
    return metric.endswith("loss") or metric == "perplexity"


def _metric_problems(early: EarlyStoppingConfig, allowed: tuple[str, ...]) -> list[str]:
    watched = early.metric or allowed[0]  # the first listed is the task's own (primary) metric
    if minimized(watched) and early.mode == "max":
        return [f"early_stopping -> mode: 'max' would keep the model with the largest {watched}; losses are "
                "minimised: use mode: min (or leave mode out)"]
    if early.metric is None or early.metric in allowed:
        return []
    return [f"early_stopping -> metric: '{early.metric}' is not a validation metric of this task."
            f"{did_you_mean(early.metric, allowed)} It reports: {', '.join(allowed)}."]


def validate_methods(raw: Any) -> tuple[dict[str, Any], list[str]]:
    """The `methods:` mapping -> {name: its config section}, and every problem with its location."""
    from transferkit import methods as registry

    if raw is None:
        return {}, []
    if not isinstance(raw, dict):
        return {}, [f"methods: a mapping of method names to their settings, e.g. {{fgm: {{epsilon: 1.0}}}} "
                    f"(got {raw!r})"]
    out: dict[str, Any] = {}
    problems: list[str] = []
    known = registry.names()
    for name, section in raw.items():
        if name not in known:
            problems.append(f"methods -> {name}: unknown method.{did_you_mean(str(name), known)} "
                            f"Available: {', '.join(known)}.")
            continue
        cls = registry.config_class(name)
        if section is None or section is True:
            section = {}
        if isinstance(section, cls):
            out[name] = section
            continue
        if not isinstance(section, dict):
            problems.append(f"methods -> {name}: its settings must be a mapping (or {{}} for the defaults), "
                            f"got {section!r}")
            continue
        try:
            out[name] = cls.model_validate(section)
        except ValidationError as err:
            problems += [f"methods -> {name} -> {p}" for p in _problems(err, cls)]
    return out, problems


def _method_problems(cfg: Any, task_type: str) -> list[str]:
    problems: list[str] = []
    enabled = set(cfg.methods)
    pairs = sorted({tuple(sorted((name, other))) for name, section in cfg.methods.items()
                    for other in type(section).conflicts if other in enabled and other != name})
    problems += [f"methods: {a} and {b} cannot be combined; choose one" for a, b in pairs]
    for name, section in cfg.methods.items():
        if type(section).tasks and task_type not in type(section).tasks:
            problems.append(f"methods -> {name}: works for {', '.join(type(section).tasks)}, not for {task_type}")
            continue  # its cross-checks assume one of its tasks
        problems += section.cross_checks(cfg)
    return problems


def _output_dir_problems(template: str) -> list[str]:
    import string

    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as e:  # a lone '{' or '}'
        return [f"output -> dir: {e} in {template!r}; write '{{{{' or '}}}}' for a literal brace"]
    bad = [f for f in fields if f != "name"]
    if bad:
        return [f"output -> dir: unknown placeholder {{{bad[0]}}} in {template!r}; the only placeholder is "
                "{name} (the run's name)"]
    specs = [(c, s) for _, f, s, c in string.Formatter().parse(template) if f is not None and (c or s)]
    if specs:
        return [f"output -> dir: write the placeholder as {{name}}, without a conversion or format ({template!r})"]
    return []


# ---------------------------------------------------------------- pretraining (`transferkit pretrain`)


class PretrainModelConfig(Section):
    path: str | None = Field(
        None,
        description="Checkpoint to continue pretraining (folder, hub name or 'minilm'). Required with "
        "init=pretrained; with init=scratch its tokenizer is reused unless tokenizer.train is true.",
    )
    init: Literal["pretrained", "scratch"] = Field(
        "scratch", description="'scratch': a new BERT of `size`; 'pretrained': continue from `path`."
    )
    size: Literal["tiny", "mini", "small", "base"] = Field("mini", description="BERT size with init=scratch.")
    max_length: int = Field(128, ge=16, le=8192, description="Tokens per packed sequence.")
    dropout: float | None = Field(None, ge=0.0, lt=1.0, description="Override hidden and attention dropout.")

    @model_validator(mode="after")
    def _path_when_continued(self) -> PretrainModelConfig:
        if self.init == "pretrained" and not self.path:
            raise ValueError("init: pretrained needs `path` (the checkpoint to continue, e.g. minilm)")
        return self


class VocabExtensionConfig(Section):
    enabled: bool = Field(False, description="Add frequent corpus words that the tokenizer splits into pieces.")
    max_new_tokens: int = Field(1000, ge=1, description="At most this many new words.")
    min_frequency: int = Field(20, ge=1, description="A word must occur at least this often in the corpus.")
    min_pieces: int = Field(3, ge=2, description="...and be split into at least this many sub-word pieces.")


class TokenizerConfig(Section):
    train: bool = Field(
        True, description="With init=scratch: train a WordPiece tokenizer on the corpus (else reuse model.path's)."
    )
    vocab_size: int = Field(8000, ge=100, le=250000, description="WordPiece vocabulary size when training one.")
    min_frequency: int = Field(2, ge=1, description="Minimum pair frequency for a WordPiece merge.")
    lowercase: bool = Field(True, description="Lowercase (and strip accents) before tokenizing.")
    extend: VocabExtensionConfig = Field(
        default_factory=VocabExtensionConfig, description="Vocabulary extension of an existing tokenizer."
    )


class CorpusConfig(Section):
    sources: list[str] = Field(
        description="Built-in corpora (rotten_tomatoes_text, bbc_news_text, peoples_daily, "
        "chinese_reviews_text, tatoeba_zh_text, chatterbot_zh_text, manpages_zh_text) and/or paths: .txt "
        "(documents separated by blank lines, one sentence or paragraph per line), a folder of .txt (one "
        "document per file), .jsonl (one document per record).",
        min_length=1,
    )
    text_column: str = Field("text", description="Field holding the text in .jsonl records.")
    heldout: float = Field(0.02, gt=0.0, lt=0.5, description="Fraction of documents held out for evaluation.")
    dedupe: bool = Field(True, description="Drop duplicate documents (after whitespace normalisation).")
    max_documents: int | None = Field(None, ge=10, description="Use at most this many documents (quick runs).")
    seed: int = Field(42, description="Seed of the held-out split.")


class ObjectiveConfig(Section):
    kind: Literal["mlm", "causal"] = Field(
        "mlm", description="'mlm': masked language modelling (BERT; the mask settings below apply); 'causal': "
        "next-token prediction (a decoder for causal_lm and seq2seq; a BERT is built or loaded as a decoder)."
    )
    mlm_probability: float = Field(0.15, gt=0.0, lt=1.0, description="Fraction of tokens selected for prediction.")
    mask_fraction: float = Field(0.8, ge=0.0, le=1.0, description="Of the selected tokens: replaced by [MASK].")
    random_fraction: float = Field(
        0.1, ge=0.0, le=1.0, description="Of the selected tokens: replaced by a random token (the rest stay)."
    )
    whole_word: bool = Field(True, description="Select whole words: all sub-word pieces of a word together.")
    chinese_words: Literal["jieba", "characters"] = Field(
        "jieba",
        description="Words of Chinese text for whole-word masking: jieba segmentation, or single characters.",
    )
    pair: Literal["none", "nsp", "sop"] = Field(
        "none",
        description="Sentence-pair objective: 'nsp' next-sentence prediction (BERT), 'sop' sentence-order "
        "prediction (ALBERT). Needs documents of several sentences.",
    )

    @model_validator(mode="after")
    def _fractions(self) -> ObjectiveConfig:
        if self.mask_fraction + self.random_fraction > 1.0 + 1e-9:
            raise ValueError("mask_fraction + random_fraction must be at most 1")
        if self.kind == "causal" and self.pair != "none":
            raise ValueError(f"pair: '{self.pair}' is a sentence-pair head of masked-LM pretraining; with kind: causal "
                             "remove it")
        return self


def _pretrain_train() -> TrainConfig:
    return TrainConfig.model_validate({"optimizer": {"lr": 5e-4}, "epochs": 1, "batch_size": 64,
                                       "eval_every": 200, "checkpoint_every": 200})


def _pretrain_early() -> EarlyStoppingConfig:
    return EarlyStoppingConfig(enabled=False, metric="mlm_loss", mode="min")  # lm_loss with objective.kind: causal


class PretrainConfig(Section):
    name: str = Field("pretrain", description="Name of the run: one folder name (no '/', not '.' or '..').")

    _name = field_validator("name", mode="before")(check_run_name)
    model: PretrainModelConfig = Field(default_factory=PretrainModelConfig, description="What is pretrained.")
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig, description="Vocabulary.")
    corpus: CorpusConfig = Field(description="Unlabelled text.")
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig, description="Pretraining objectives.")
    train: TrainConfig = Field(default_factory=_pretrain_train, description="The training loop.")
    early_stopping: EarlyStoppingConfig = Field(
        default_factory=_pretrain_early, description="Early stopping on the held-out loss of the objective (mlm_loss or lm_loss)."
    )
    methods: dict[str, Any] = Field(default_factory=dict, description=METHODS_HELP)
    output: OutputConfig = Field(default_factory=OutputConfig, description="Where results go.")
    registry: RegistryConfig = Field(default_factory=RegistryConfig, description="Model versions in MLflow.")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="Experiment tracking.")

    @property
    def run_dir(self) -> Path:
        return Path(self.output.dir.format(name=self.name)).expanduser()

    @model_validator(mode="after")
    def _objective_loss(self) -> PretrainConfig:
        if self.objective.kind == "causal" and "early_stopping" not in self.model_fields_set:
            self.early_stopping.metric = "lm_loss"  # the default section watches the objective's own loss
        return self

    def cross_checks(self) -> list[str]:
        return _output_dir_problems(self.output.dir) + _method_problems(self, "pretrain") + _metric_problems(
            self.early_stopping, validation_metrics("pretrain/causal") if self.objective.kind == "causal" else
            validation_metrics("pretrain", pair=self.objective.pair != "none"))


# ---------------------------------------------------------------- loading


def _format_loc(loc: tuple[Any, ...]) -> str:
    return " -> ".join(str(p) for p in loc) if loc else "(top level)"


def _section_at(loc: tuple[Any, ...], root: type[BaseModel] = RunConfig) -> type[BaseModel] | None:
    """The schema class that owns the field at `loc` (for did-you-mean on unknown keys)."""
    cls: type[BaseModel] = root
    for part in loc:
        field = cls.model_fields.get(str(part))
        if field is None:
            return None
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            cls = ann
        else:
            return None
    return cls


def _problems(err: ValidationError, root: type[BaseModel] = RunConfig) -> list[str]:
    out = []
    for e in err.errors():
        loc = tuple(e["loc"])
        if e["type"] == "extra_forbidden":
            owner = _section_at(loc[:-1], root)
            allowed = sorted(owner.model_fields) if owner else []
            hint = did_you_mean(str(loc[-1]), allowed)
            if loc == ("corpus",) and root is RunConfig:
                hint = " This looks like a pretraining config: run it with `transferkit pretrain`."
            out.append(
                f"{_format_loc(loc)}: unknown key.{hint} Allowed here: {', '.join(allowed)}."
            )
            continue
        got = e.get("input")
        got_s = "" if isinstance(got, dict) or e["type"] == "missing" else f" (got {got!r})"
        msg = e["msg"].removeprefix("Value error, ")
        out.append(f"{_format_loc(loc)}: {msg}{got_s}")
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """'train.optimizer.lr=3e-5' -> (['train','optimizer','lr'], 3e-05). Values are parsed as YAML."""
    if "=" not in text:
        raise ConfigError([f"override '{text}': expected KEY=VALUE, e.g. train.optimizer.lr=3e-5"])
    key, _, raw = text.partition("=")
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError([f"override '{text}': empty key"])
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return path, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for part in path[:-1]:
            nxt = node.get(part)
            if not isinstance(nxt, dict):
                nxt = {}
                node[part] = nxt
            node = nxt
        node[path[-1]] = value
    return raw


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if p.is_dir():
        found = sorted(x.name for x in p.glob("*.yaml"))[:6]
        raise ConfigError([f"'{p}' is a folder, not a config file" + (f"; it holds {', '.join(found)}" if found else "")
                           ], source=str(p))
    if not p.is_file():
        raise ConfigError([f"config file '{p}' does not exist"], source=str(p))
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError([f"not UTF-8 text: {e}"], source=str(p)) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError([f"unreadable YAML{where}: {problem}"], source=str(p)) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([f"the top level must be a mapping of sections, got {type(raw).__name__}"], str(p))
    return raw


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                raw: dict[str, Any] | None = None, schema: type[BaseModel] = RunConfig) -> Any:
    """Read, override and validate a run config (`schema`: RunConfig for finetune, PretrainConfig for
    pretrain). Raises ConfigError listing every problem."""
    data = read_yaml(path) if path is not None else dict(raw or {})
    data = apply_overrides(data, list(overrides or []))
    return _validate(data, schema, str(path) if path else None)


def load_pretrain_config(path: str | Path | None = None, overrides: list[str] | None = None,
                         raw: dict[str, Any] | None = None) -> PretrainConfig:
    return load_config(path, overrides, raw, schema=PretrainConfig)


def load_any_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig | PretrainConfig:
    """A pretraining config when the file has a `corpus` section, else a fine-tuning config."""
    raw = read_yaml(path)
    schema = PretrainConfig if "corpus" in raw else RunConfig
    return _validate(apply_overrides(raw, list(overrides or [])), schema, str(path))


def _validate(data: dict[str, Any], schema: type[BaseModel], source: str | None) -> Any:
    data = dict(data)
    has_methods = "methods" in schema.model_fields
    methods, problems = validate_methods(data.pop("methods", None)) if has_methods else ({}, [])
    try:
        cfg = schema.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_problems(err, schema) + problems, source=source) from None
    if problems:
        raise ConfigError(problems, source=source)
    if has_methods:
        cfg.methods = methods  # type: ignore[attr-defined]
    problems = cfg.cross_checks() if hasattr(cfg, "cross_checks") else []
    if problems:
        raise ConfigError(problems, source=source)
    return cfg


def dump_config(cfg: BaseModel) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def explain(cfg: BaseModel) -> list[tuple[str, Any, Any, str]]:
    """(dotted key, value, default, description) for every leaf field, in schema order."""
    rows: list[tuple[str, Any, Any, str]] = []

    def walk(model: BaseModel, prefix: str) -> None:
        for name, field in type(model).model_fields.items():
            value = getattr(model, name)
            key = f"{prefix}{name}"
            if isinstance(value, BaseModel):
                walk(value, key + ".")
                continue
            if isinstance(value, dict) and value and all(isinstance(v, BaseModel) for v in value.values()):
                for sub, section in value.items():  # methods: each enabled method, then its fields
                    rows.append((f"{key}.{sub}", "on", None, getattr(section, "summary", "")))
                    walk(section, f"{key}.{sub}.")
                continue
            default = None if field.is_required() else field.get_default(call_default_factory=True)
            rows.append((key, value, default, field.description or ""))

    walk(cfg, "")
    return rows
