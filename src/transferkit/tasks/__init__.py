"""Tasks: the single place where tasks differ. See base.Task for the protocol."""

from __future__ import annotations

import importlib
from typing import Any

from transferkit.tasks.base import Task

#: task type -> "module:class"; each class has from_config(cfg) and from_description(task.json)
TASKS = {
    "text_classification": "transferkit.tasks.classification:ClassificationTask",
    "token_classification": "transferkit.tasks.ner:TokenClassificationTask",
    "relation_extraction": "transferkit.tasks.relation:RelationExtractionTask",
    "question_answering": "transferkit.tasks.qa:QuestionAnsweringTask",
    "seq2seq": "transferkit.tasks.seq2seq:Seq2SeqTask",
    "causal_lm": "transferkit.tasks.causal_lm:CausalLMTask",
}


def task_class(name: str) -> Any:
    module, _, cls = TASKS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def build_task(cfg) -> Task:
    """RunConfig -> the Task object for cfg.task.type."""
    return task_class(cfg.task.type).from_config(cfg)
