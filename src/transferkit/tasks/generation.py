"""What the two text-generation tasks (seq2seq, causal_lm) share: targets that are texts, the language of
the targets, the generation settings, and the report's samples."""

from __future__ import annotations

from typing import Any

from transferkit.data.sources import Examples
from transferkit.errors import DataError


class TextTargets:
    """Mixin: needs `chinese_target`, `generation` and `texts_of(scores)` on the task."""

    chinese_target: bool | None
    generation: dict[str, Any]
    #: what the data's label column holds, in error messages
    target_name: str = "target"

    def texts_of(self, scores: Any) -> list[str]:
        raise NotImplementedError

    def fit_labels(self, train: Examples) -> None:
        self.check(train)
        if self.chinese_target is None:
            from transferkit.evaluation.textgen import is_chinese

            self.chinese_target = is_chinese([str(y) for y in train.labels])

    def check(self, split: Examples) -> None:
        empty = [split.origin[i] for i, y in enumerate(split.labels) if y is None or not str(y).strip()]
        if empty:
            raise DataError(f"{len(empty)} example(s) of the {split.name} split have an empty {self.target_name} "
                            f"(data -> label_column holds the {self.target_name}), e.g. {', '.join(empty[:3])}")

    def generation_kwargs(self) -> dict[str, Any]:
        """The configured generation settings transformers' GenerationConfig takes (the seed is ours)."""
        return {k: v for k, v in self.generation.items() if v is not None and k != "seed"}

    def report_samples(self, split: Examples, scores: Any, n: int = 20) -> list[dict[str, str]]:
        """The first n test examples: input, reference and generated output side by side."""
        outputs = self.texts_of(scores[:n])
        return [{"input": split.texts[i], "reference": str(split.labels[i]), "output": outputs[i]}
                for i in range(min(n, len(outputs)))]
