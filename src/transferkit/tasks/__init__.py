"""Tasks: the single place where tasks differ. See base.Task for the protocol."""

from __future__ import annotations

from transferkit.tasks.base import Task


def build_task(cfg) -> Task:
    """RunConfig -> the Task object for cfg.task.type."""
    if cfg.task.type == "text_classification":
        from transferkit.tasks.classification import ClassificationTask

        return ClassificationTask.from_config(cfg)
    raise ValueError(f"unknown task type {cfg.task.type!r}")  # unreachable: the schema restricts it
