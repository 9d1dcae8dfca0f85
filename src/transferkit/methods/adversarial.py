"""Adversarial training on the word embeddings, for any task: FGM (Miyato et al. 2017) and PGD (Madry et
al. 2018, the K-step variant used for BERT fine-tuning). After the normal backward pass, the embedding
matrix is moved along its gradient, the loss of a second forward pass is added to the gradients, and the
embeddings are restored exactly (a copy, not a subtraction)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from transferkit.methods.base import STEP, Method, MethodConfig, StepContext


def word_embeddings(model: Any) -> Any:
    module = getattr(model, "module", model)  # DDP wraps the model
    for attr in ("lm", "model"):  # the MLM task wraps the LM
        if not hasattr(module, "get_input_embeddings") and hasattr(module, attr):
            module = getattr(module, attr)
    return module.get_input_embeddings().weight


def require_trainable_embeddings(method: str, model: Any) -> None:
    """The perturbation follows the gradient of the embedding matrix: with frozen embeddings (freeze.mode
    embeddings/bottom/all_but_head, or lora) there is none, and the method would silently do nothing."""
    if not word_embeddings(model).requires_grad:
        from transferkit.errors import ConfigError

        raise ConfigError([f"methods -> {method}: the word embeddings are frozen (by freeze.mode or lora), so there "
                           "is no embedding gradient to perturb along; train the embeddings or drop the method"])


class EmbeddingAttack(Method):
    """What FGM and PGD share: the step stage, and the check that the embeddings train (before the run starts,
    after freeze and lora, which are earlier stages)."""

    order = STEP

    def prepare_model(self, model: Any, *, task: Any) -> Any:
        require_trainable_embeddings(self.name, model)
        return model


class FGMConfig(MethodConfig):
    method: ClassVar[str] = "fgm"
    summary: ClassVar[str] = "fast gradient method: one adversarial step on the word embeddings per batch"
    conflicts: ClassVar[tuple[str, ...]] = ("pgd",)

    epsilon: float = Field(1.0, gt=0.0, description="Size of the perturbation (L2 norm over the embedding matrix).")


class FGM(EmbeddingAttack):
    Config = FGMConfig

    def train_step(self, ctx: StepContext, inner: Any) -> Any:
        loss = inner()
        emb = word_embeddings(ctx.model)
        if emb.grad is None:
            return loss
        import torch

        backup = emb.detach().clone()
        norm = torch.linalg.vector_norm(emb.grad)
        if torch.isfinite(norm) and norm > 0:
            with torch.no_grad():
                emb.add_(emb.grad, alpha=float(self.cfg.epsilon) / float(norm))  # type: ignore[attr-defined]
            ctx.backward(ctx.forward_loss())
            with torch.no_grad():
                emb.copy_(backup)
        return loss


class PGDConfig(MethodConfig):
    method: ClassVar[str] = "pgd"
    summary: ClassVar[str] = "projected gradient descent: K adversarial steps on the word embeddings per batch"
    conflicts: ClassVar[tuple[str, ...]] = ("fgm",)

    epsilon: float = Field(1.0, gt=0.0, description="Radius of the ball the perturbation is projected onto (L2).")
    alpha: float = Field(0.3, gt=0.0, description="Size of each ascent step.")
    steps: int = Field(3, ge=1, le=20, description="Ascent steps K; the gradients of the last one are kept.")


class PGD(EmbeddingAttack):
    Config = PGDConfig

    def train_step(self, ctx: StepContext, inner: Any) -> Any:
        import torch

        cfg: PGDConfig = self.cfg  # type: ignore[assignment]
        loss = inner()
        emb = word_embeddings(ctx.model)
        if emb.grad is None:
            return loss
        # the clean gradients (all earlier chunks included), restored before the last adversarial pass
        clean = [(p.grad, p.grad.detach().clone()) for p in ctx.model.parameters() if p.grad is not None]
        backup = emb.detach().clone()
        for k in range(cfg.steps):
            norm = torch.linalg.vector_norm(emb.grad)
            if not torch.isfinite(norm) or norm == 0:
                break
            with torch.no_grad():
                emb.add_(emb.grad, alpha=cfg.alpha / float(norm))
                delta = emb - backup
                dn = torch.linalg.vector_norm(delta)
                if dn > cfg.epsilon:
                    emb.copy_(backup + delta * (cfg.epsilon / dn))
            for grad, saved in clean:
                if k < cfg.steps - 1:
                    grad.zero_()  # the next ascent direction is the adversarial loss's alone
                else:
                    grad.copy_(saved)
            ctx.backward(ctx.forward_loss())
        with torch.no_grad():
            emb.copy_(backup)
        return loss
