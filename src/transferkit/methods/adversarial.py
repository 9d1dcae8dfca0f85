"""Adversarial training on the word embeddings, for any task: FGM (Miyato et al. 2017), PGD (Madry et al.
2018, the K-step variant used for BERT fine-tuning) and FreeLB (Zhu et al. 2020).

FGM and PGD perturb either the embedding *matrix* (`target: weights`, the variant popular for BERT
fine-tuning: moved along its gradient, then restored exactly from a copy, not by a subtraction) or the
embedding *output* of the batch (`target: output`: a perturbation added by a forward hook, nothing to
restore), which also works when the embeddings are frozen (freeze.mode, LoRA and the other adapters);
`auto` takes the matrix when it trains and the output otherwise. FreeLB always perturbs the output: K
ascent steps from a random start inside the ball, the gradients of every step averaged ("free" training)."""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar, Literal

from pydantic import Field

from transferkit.methods.base import STEP, Method, MethodConfig, StepContext

ATTACKS = ("fgm", "pgd", "freelb")


def embedding_module(model: Any) -> Any:
    module = getattr(model, "module", model)  # DDP wraps the model
    for attr in ("lm", "model"):  # the MLM task wraps the LM
        if not hasattr(module, "get_input_embeddings") and hasattr(module, attr):
            module = getattr(module, attr)
    return module.get_input_embeddings()


def word_embeddings(model: Any) -> Any:
    return embedding_module(model).weight


class OutputHook:
    """While active, adds `delta` to the word-embedding module's output. After `probe()`, the next forward pass
    creates the delta (zeros, or what `start` builds from the output) as a leaf that requires grad, so its
    backward pass gives the gradient of the loss w.r.t. the embedding output."""

    def __init__(self, module: Any) -> None:
        self.module = module
        self.delta: Any = None
        self.start: Any = None

    def _hook(self, module: Any, inputs: Any, output: Any) -> Any:
        if self.delta is None and self.start is not None:
            self.delta, self.start = self.start(output).requires_grad_(True), None
        return output if self.delta is None else output + self.delta

    def probe(self, start: Any = None) -> None:
        import torch

        self.delta, self.start = None, start or torch.zeros_like

    @contextlib.contextmanager
    def active(self):
        handle = self.module.register_forward_hook(self._hook)
        try:
            yield self
        finally:
            handle.remove()
            self.delta = self.start = None


def per_example_norm(t: Any) -> Any:
    import torch

    return torch.linalg.vector_norm(t.reshape(t.shape[0], -1), dim=1).clamp_min(1e-12).view(-1, *[1] * (t.dim() - 1))


def token_mask(batch: dict[str, Any], like: Any) -> Any:
    """1 on real tokens, 0 on padding, shaped to broadcast over the embedding output."""
    mask = batch.get("attention_mask")
    if mask is None or mask.shape != like.shape[:2]:
        return like.new_ones(like.shape[:2]).unsqueeze(-1)
    return mask.to(like.dtype).unsqueeze(-1)


class AttackConfig(MethodConfig):
    conflicts: ClassVar[tuple[str, ...]] = ATTACKS

    target: Literal["auto", "weights", "output"] = Field(
        "auto", description="Perturb the embedding matrix ('weights', needs trainable embeddings) or the batch's "
        "embedding output ('output', works with frozen embeddings and adapters); 'auto': weights when they train.")


class EmbeddingAttack(Method):
    """What the attacks share: the step stage, and the choice of target once the model is prepared (after
    freeze and the adapters, which are earlier stages)."""

    order = STEP
    _target = "output"

    def prepare_model(self, model: Any, *, task: Any) -> Any:
        target = getattr(self.cfg, "target", "output")
        trainable = word_embeddings(model).requires_grad
        if target == "weights" and not trainable:
            from transferkit.errors import ConfigError

            raise ConfigError([f"methods -> {self.name} -> target: the word embeddings are frozen (by freeze.mode "
                               "or an adapter), so there is no embedding gradient to perturb along; use target: "
                               "output (or auto), or train the embeddings"])
        self._target = "weights" if target == "weights" or (target == "auto" and trainable) else "output"
        return model

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "perturbs": self._target}


class FGMConfig(AttackConfig):
    method: ClassVar[str] = "fgm"
    summary: ClassVar[str] = "fast gradient method: one adversarial step on the word embeddings per batch"

    epsilon: float = Field(1.0, gt=0.0, description="Size of the perturbation (L2 norm: over the embedding matrix "
                           "with target weights, per example with target output).")


class FGM(EmbeddingAttack):
    Config = FGMConfig

    def train_step(self, ctx: StepContext, inner: Any) -> Any:
        import torch

        eps = float(self.cfg.epsilon)  # type: ignore[attr-defined]
        if self._target == "output":
            hook = OutputHook(embedding_module(ctx.model))
            with hook.active():
                hook.probe()
                loss = inner()
                g = hook.delta.grad if hook.delta is not None else None
                if g is None:
                    return loss
                hook.delta = (eps * g / per_example_norm(g)).detach()
                ctx.backward(ctx.forward_loss())
            return loss
        loss = inner()
        emb = word_embeddings(ctx.model)
        if emb.grad is None:
            return loss
        backup = emb.detach().clone()
        norm = torch.linalg.vector_norm(emb.grad)
        if torch.isfinite(norm) and norm > 0:
            with torch.no_grad():
                emb.add_(emb.grad, alpha=eps / float(norm))
            ctx.backward(ctx.forward_loss())
            with torch.no_grad():
                emb.copy_(backup)
        return loss


class PGDConfig(AttackConfig):
    method: ClassVar[str] = "pgd"
    summary: ClassVar[str] = "projected gradient descent: K adversarial steps on the word embeddings per batch"

    epsilon: float = Field(1.0, gt=0.0, description="Radius of the ball the perturbation is projected onto (L2).")
    alpha: float = Field(0.3, gt=0.0, description="Size of each ascent step.")
    steps: int = Field(3, ge=1, le=20, description="Ascent steps K; the gradients of the last one are kept.")


class PGD(EmbeddingAttack):
    Config = PGDConfig

    def train_step(self, ctx: StepContext, inner: Any) -> Any:
        cfg: PGDConfig = self.cfg  # type: ignore[assignment]
        return (self._on_output if self._target == "output" else self._on_weights)(ctx, inner, cfg)

    def _on_output(self, ctx: StepContext, inner: Any, cfg: PGDConfig) -> Any:
        import torch

        hook = OutputHook(embedding_module(ctx.model))
        with hook.active():
            hook.probe()
            loss = inner()
            if hook.delta is None or hook.delta.grad is None:
                return loss
            g, delta = hook.delta.grad, torch.zeros_like(hook.delta)
            for k in range(cfg.steps):
                delta = delta + cfg.alpha * g / per_example_norm(g)
                delta = delta * (cfg.epsilon / per_example_norm(delta)).clamp(max=1.0)  # project onto the ball
                if k == cfg.steps - 1:  # the last adversarial pass adds its gradients to the clean ones
                    hook.delta = delta.detach()
                    ctx.backward(ctx.forward_loss())
                else:  # intermediate passes only find the direction: no parameter gradients (and under DDP
                    hook.delta = delta.detach().requires_grad_(True)  # no gradient reduction either)
                    with ctx.no_sync():
                        (g,) = torch.autograd.grad(ctx.forward_loss(), hook.delta)
        return loss

    def _on_weights(self, ctx: StepContext, inner: Any, cfg: PGDConfig) -> Any:
        import torch

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


class FreeLBConfig(MethodConfig):
    method: ClassVar[str] = "freelb"
    summary: ClassVar[str] = "FreeLB: K ascent steps on the embedding output, gradients of all steps averaged"
    conflicts: ClassVar[tuple[str, ...]] = ATTACKS

    steps: int = Field(3, ge=1, le=20, description="Ascent steps K (each a forward and backward pass).")
    adv_lr: float = Field(0.1, gt=0.0, description="Size of each ascent step (per-example L2 norm).")
    init_mag: float = Field(0.6, ge=0.0, description="Magnitude of the random start (uniform, scaled by "
                            "1/sqrt(tokens x hidden) per example, padding excluded).")
    max_norm: float = Field(0.0, ge=0.0, description="Radius of the ball the perturbation is projected onto "
                            "(per-example L2); 0: no projection.")


class FreeLB(EmbeddingAttack):
    """Replaces the clean pass: the loss of each of the K perturbed passes, divided by K, is backpropagated
    (so the parameter gradients are their average), and the mean loss is logged."""

    Config = FreeLBConfig

    def train_step(self, ctx: StepContext, inner: Any) -> Any:
        cfg: FreeLBConfig = self.cfg  # type: ignore[assignment]
        hook = OutputHook(embedding_module(ctx.model))
        total: Any = 0.0
        with hook.active():
            hook.probe(lambda out: random_start(out, ctx.batch, cfg.init_mag))
            for k in range(cfg.steps):
                loss = ctx.forward_loss()
                ctx.backward(loss / cfg.steps)
                total = total + loss.detach()
                d = hook.delta
                if k == cfg.steps - 1 or d is None or d.grad is None:
                    break
                delta = d.detach() + cfg.adv_lr * d.grad / per_example_norm(d.grad)
                if cfg.max_norm > 0:
                    delta = delta * (cfg.max_norm / per_example_norm(delta)).clamp(max=1.0)
                hook.delta = delta.requires_grad_(True)
        return total / (k + 1)


def random_start(output: Any, batch: dict[str, Any], init_mag: float) -> Any:
    """FreeLB's start: uniform in [-1, 1] on real tokens, scaled by init_mag / sqrt(tokens x hidden) per example."""
    import torch

    if init_mag <= 0:
        return torch.zeros_like(output)
    mask = token_mask(batch, output)
    n = (mask.sum(dim=(1, 2), keepdim=True) * output.shape[-1]).clamp_min(1)
    return (torch.rand_like(output) * 2 - 1) * mask * (init_mag / n.sqrt())
