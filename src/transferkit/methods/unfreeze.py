"""Gradual unfreezing (Howard & Ruder 2018, ULMFiT): training starts with the head (and whatever the freeze
policy leaves trainable above the encoder) and the top `start_layers` encoder layers; every `every` optimizer
steps one more layer below is unfrozen, then the embeddings. Composes with `freeze`: a parameter the freeze
policy froze is never unfrozen here. The frozen parameters are in the optimizer from the start (with no
gradient they are not updated, not even by weight decay), so nothing is rebuilt when a layer thaws, and a
resumed run thaws the same layers at the same steps."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from transferkit.methods.base import MODEL, Method, MethodConfig
from transferkit.methods.layerwise_lr import depth_of
from transferkit.methods.peft_common import PEFT_METHODS


class GradualUnfreezingConfig(MethodConfig):
    method: ClassVar[str] = "gradual_unfreezing"
    summary: ClassVar[str] = "train the top first, unfreeze one more encoder layer every N steps (ULMFiT)"
    conflicts: ClassVar[tuple[str, ...]] = PEFT_METHODS

    every: int = Field(50, ge=1, description="Optimizer steps between two unfreezings.")
    start_layers: int = Field(0, ge=0, description="Encoder layers trainable from the start (counted from the top).")


class GradualUnfreezing(Method):
    Config = GradualUnfreezingConfig
    order = MODEL

    def __init__(self, cfg: GradualUnfreezingConfig) -> None:
        super().__init__(cfg)
        self.thawed = 0  # encoder depths unfrozen so far, counted from the top (embeddings last)
        self._groups: dict[int, list[Any]] = {}  # depth -> parameters this method froze
        self._n_layers = 0

    def prepare_model(self, model: Any, *, task: Any) -> Any:
        cfg: GradualUnfreezingConfig = self.cfg  # type: ignore[assignment]
        config = getattr(getattr(model, "lm", model), "config", None)  # the pretraining task wraps the LM
        self._n_layers = int(getattr(config, "num_hidden_layers", 0))
        self._groups = {}
        for name, p in model.named_parameters():
            depth = depth_of(name, self._n_layers)
            if depth <= self._n_layers and p.requires_grad:  # encoder layers and embeddings, not the head
                self._groups.setdefault(depth, []).append(p)
        self.thawed = min(getattr(cfg, "start_layers", 0), self._n_layers + 1)  # head warm-up: none
        self._apply()
        return model

    def _apply(self) -> None:
        top = self._n_layers  # depth of the top encoder layer; embeddings are depth 0
        for depth, params in self._groups.items():
            trainable = depth > top - self.thawed
            for p in params:
                p.requires_grad_(trainable)

    def param_groups(self, model: Any, groups: list[dict[str, Any]], *, lr: float) -> list[dict[str, Any]]:
        """Put the parameters this method froze into the optimizer now (in the groups their names belong to)."""
        from transferkit.training.optim import decays

        present = {id(p) for g in groups for p in g["params"]}
        names = {id(p): n for n, p in model.named_parameters()}
        frozen = [p for ps in self._groups.values() for p in ps if id(p) not in present]
        if not frozen or len(groups) < 2:
            return groups
        decay, no_decay = groups[0], groups[1]
        for p in frozen:
            (decay if decays(names[id(p)], p) else no_decay)["params"].append(p)
        return groups

    def on_train_start(self, *, model: Any, total_steps: int, steps_per_epoch: int) -> None:
        if type(model).__name__ == "DistributedDataParallel":
            from transferkit.errors import ConfigError

            raise ConfigError([f"methods -> {self.name}: runs in a single process only (DDP fixes the set of "
                               "trainable parameters when it wraps the model); run without torchrun, or use "
                               "freeze.mode instead"])

    def on_step_end(self, *, step: int, model: Any, optimizer: Any) -> None:
        cfg: GradualUnfreezingConfig = self.cfg  # type: ignore[assignment]
        if step % cfg.every == 0 and self.thawed <= self._n_layers:
            self.thawed += 1
            self._apply()

    def state_dict(self) -> dict[str, Any]:
        return {"thawed": self.thawed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.thawed = int(state.get("thawed", self.thawed))
        self._apply()


class HeadWarmupConfig(MethodConfig):
    method: ClassVar[str] = "head_warmup"
    summary: ClassVar[str] = "train only the head for N steps, then everything (LP-FT; an MLM head before DAPT)"
    conflicts: ClassVar[tuple[str, ...]] = (*PEFT_METHODS, "gradual_unfreezing")

    steps: int = Field(100, ge=1, description="Optimizer steps with the encoder and embeddings frozen (a tied "
                       "output embedding, as in an MLM head, stays frozen with them).")


class HeadWarmup(GradualUnfreezing):
    """The head first, then the whole model at once (Kumar et al. 2022, "Fine-Tuning can Distort Pretrained
    Features": linear probing, then fine-tuning). For continued MLM pretraining of a checkpoint that ships without
    an MLM head (MiniLM), the randomly initialised head is trained before its gradients reach the encoder."""

    Config = HeadWarmupConfig  # type: ignore[assignment]

    def on_step_end(self, *, step: int, model: Any, optimizer: Any) -> None:
        cfg: HeadWarmupConfig = self.cfg  # type: ignore[assignment]
        if step >= cfg.steps and self.thawed <= self._n_layers:
            self.thawed = self._n_layers + 1
            self._apply()
