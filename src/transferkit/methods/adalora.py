"""AdaLoRA (Zhang et al. 2023) through peft: LoRA in SVD form whose rank budget is reallocated during training
by importance, from `init_r` per layer down to `target_r` on average. peft's budget schedule needs the total
step count (known to the loop: set at the start of training, the warm-up and final phases given as fractions
of it so they always fit) and `update_and_allocate` after every optimizer step, before the gradients are
cleared; its orthogonality penalty is added here because the tasks compute their own loss."""

from __future__ import annotations

import logging
from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator

from transferkit.methods.base import MethodConfig, StepContext
from transferkit.methods.lora import lora_targets
from transferkit.methods.peft_common import PEFT_METHODS, PeftMethod, peft_model_of

log = logging.getLogger(__name__)


class AdaLoRAConfig(MethodConfig):
    method: ClassVar[str] = "adalora"
    summary: ClassVar[str] = "LoRA whose rank budget is reallocated by importance during training (peft)"
    conflicts: ClassVar[tuple[str, ...]] = tuple(m for m in PEFT_METHODS if m != "adalora")

    init_r: int = Field(12, ge=1, le=1024, description="Rank of each adapter at the start.")
    target_r: int = Field(8, ge=1, le=1024, description="Average rank per adapter after the budget is cut.")
    alpha: float = Field(16.0, gt=0, description="Scaling of the update (alpha / r as in LoRA).")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout on the adapter's input.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        ["query", "value"], description="Linear layers that get adapters, by name suffix, or 'all-linear'.")
    warmup_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="Share of the training steps before the "
                                   "budget starts to shrink (peft's tinit).")
    final_fraction: float = Field(0.2, ge=0.0, lt=1.0, description="Share of the training steps at the end with the "
                                  "budget fixed (peft's tfinal).")
    every: int = Field(1, ge=1, description="Optimizer steps between two budget allocations (peft's deltaT).")
    beta1: float = Field(0.85, gt=0.0, lt=1.0, description="Smoothing of the importance scores.")
    beta2: float = Field(0.85, gt=0.0, lt=1.0, description="Smoothing of the importance uncertainty.")
    orth_reg_weight: float = Field(0.5, ge=0.0, description="Weight of the orthogonality penalty on P and Q.")

    @field_validator("target_r")
    @classmethod
    def _budget_shrinks(cls, v: int, info: ValidationInfo) -> int:
        init = info.data.get("init_r")
        if init is not None and v > init:
            raise ValueError(f"must not exceed init_r ({init}): the budget only shrinks")
        return v

    @field_validator("final_fraction")
    @classmethod
    def _phases_fit(cls, v: float, info: ValidationInfo) -> float:
        warm = info.data.get("warmup_fraction")
        if warm is not None and warm + v >= 1.0:
            raise ValueError(f"with warmup_fraction {warm:g} it leaves no steps for the budget to shrink; keep "
                             "warmup_fraction + final_fraction below 1")
        return v


_ADAPTER = "default"  # peft's adapter name (one adapter per run)


class AdaLoRA(PeftMethod):
    Config = AdaLoRAConfig

    def peft_config(self, model: Any, task: Any, head: list[str]) -> Any:
        from peft import AdaLoraConfig

        cfg: AdaLoRAConfig = self.cfg  # type: ignore[assignment]
        alpha: Any = cfg.alpha
        # total_step is a placeholder until on_train_start (peft checks it at construction)
        extra: dict[str, Any] = {}
        if self._new_tokens:  # tokens the task added (relation markers) train as rows of the embedding
            extra["trainable_token_indices"] = {"word_embeddings": self._new_tokens}
        return AdaLoraConfig(**extra, init_r=cfg.init_r, target_r=cfg.target_r, lora_alpha=alpha, lora_dropout=cfg.dropout,
                             target_modules=lora_targets(self.name, model, cfg.target_modules),
                             modules_to_save=head, total_step=1000, tinit=0, tfinal=0, deltaT=cfg.every,
                             beta1=cfg.beta1, beta2=cfg.beta2, orth_reg_weight=cfg.orth_reg_weight)

    def _adapter_config(self, model: Any) -> Any:
        m = peft_model_of(model)
        return m.peft_config[m.active_adapter]

    def on_train_start(self, *, model: Any, total_steps: int, steps_per_epoch: int) -> None:
        cfg: AdaLoRAConfig = self.cfg  # type: ignore[assignment]
        pc = self._adapter_config(model)
        pc.total_step = total_steps
        pc.tinit = int(cfg.warmup_fraction * total_steps)
        pc.tfinal = int(cfg.final_fraction * total_steps)
        # importance averages restored from a checkpoint load on the CPU: to the parameters' device
        ra = peft_model_of(model).base_model.rankallocator
        device = next(model.parameters()).device
        for d in (ra.ipt, ra.exp_avg_ipt, ra.exp_avg_unc):
            for k, v in d.items():
                d[k] = v.to(device)
        log.info("AdaLoRA budget: %d steps; rank %d -> %d between steps %d and %d", total_steps, cfg.init_r,
                 cfg.target_r, pc.tinit, total_steps - pc.tfinal)

    def train_step(self, ctx: StepContext, inner: Any) -> Any:
        loss = inner()
        weight = float(self.cfg.orth_reg_weight)  # type: ignore[attr-defined]
        if weight > 0:
            ctx.backward(weight * orthogonality(ctx.model) * ctx.scale)
        return loss

    def on_step_end(self, *, step: int, model: Any, optimizer: Any) -> None:
        # the gradients of this step are still there (the loop clears them after this hook)
        peft_model_of(model).base_model.update_and_allocate(step)

    def prepare_model(self, model: Any, *, task: Any) -> Any:
        self._model = super().prepare_model(model, task=task)
        return self._model

    def on_train_end(self, *, model: Any, result: Any) -> None:
        """The best checkpoint may come from before the budget was fixed, with more ranks in use than the final
        rank pattern keeps: the pattern saved with the adapter (peft drops the ranks it masks) is made the
        one the restored weights actually use, so the saved adapter is exactly the model that was tested."""
        inner = peft_model_of(model).base_model.model
        pattern = {}
        for name, module in inner.named_modules():
            e = getattr(module, "lora_E", None)
            if e is not None and len(e) and _ADAPTER in e:
                pattern[f"{name}.lora_E"] = (e[_ADAPTER].detach().view(-1) != 0).tolist()
        self._adapter_config(model).rank_pattern = pattern

    # resumable state: the rank allocator's importance averages and the rank pattern once the budget is fixed
    def state_dict(self) -> dict[str, Any]:
        ra = peft_model_of(self._model).base_model.rankallocator
        return {"ipt": ra.ipt, "exp_avg_ipt": ra.exp_avg_ipt, "exp_avg_unc": ra.exp_avg_unc,
                "rank_pattern": self._adapter_config(self._model).rank_pattern}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        ra = peft_model_of(self._model).base_model.rankallocator
        ra.ipt, ra.exp_avg_ipt, ra.exp_avg_unc = state["ipt"], state["exp_avg_ipt"], state["exp_avg_unc"]
        self._adapter_config(self._model).rank_pattern = state["rank_pattern"]


def orthogonality(model: Any) -> Any:
    """peft's AdaLoRA penalty: mean over adapters of ||P P^T - I||_F (and Q^T Q for B)."""
    import torch

    terms = []
    for n, p in peft_model_of(model).named_parameters():
        if ("lora_A" in n or "lora_B" in n) and p.requires_grad:
            cov = p @ p.T if "lora_A" in n else p.T @ p
            terms.append(torch.linalg.matrix_norm(cov - torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)))
    return torch.stack(terms).mean() if terms else torch.zeros(())
