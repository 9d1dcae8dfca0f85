"""Methods: plug-ins of the one training loop (see base.py for the hooks).

The registry maps a name (the key under `methods:` in a run config) to the class that implements it; each
class carries its config section as `Config`. Modules here import torch only inside hooks, so that the
config (and `transferkit config validate`) stays instant. `register()` adds a method from outside the
package (a user's own, or a test's).
"""

from __future__ import annotations

import importlib

from transferkit.methods.base import Method, MethodConfig

#: name -> "module:Class" (built in); classes registered at run time are kept in _EXTRA
BUILTIN: dict[str, str] = {
    "lora": "transferkit.methods.lora:LoRA",
    "adalora": "transferkit.methods.adalora:AdaLoRA",
    "ia3": "transferkit.methods.ia3:IA3",
    "prompt_tuning": "transferkit.methods.prompt_tuning:PromptTuning",
    "prefix_tuning": "transferkit.methods.prefix_tuning:PrefixTuning",
    "layerwise_lr": "transferkit.methods.layerwise_lr:LayerwiseLR",
    "gradual_unfreezing": "transferkit.methods.unfreeze:GradualUnfreezing",
    "head_warmup": "transferkit.methods.unfreeze:HeadWarmup",
    "fgm": "transferkit.methods.adversarial:FGM",
    "pgd": "transferkit.methods.adversarial:PGD",
    "freelb": "transferkit.methods.adversarial:FreeLB",
    "label_smoothing": "transferkit.methods.label_smoothing:LabelSmoothing",
    "class_weights": "transferkit.methods.class_weights:ClassWeights",
    "focal_loss": "transferkit.methods.focal_loss:FocalLoss",
    "balanced_sampler": "transferkit.methods.balanced_sampler:BalancedSampler",
    "threshold_tuning": "transferkit.methods.threshold:ThresholdTuning",
    "temperature_scaling": "transferkit.methods.temperature:TemperatureScaling",
    "eda": "transferkit.methods.eda:EDA",
    "mlm_substitution": "transferkit.methods.mlm_substitution:MLMSubstitution",
    "back_translation": "transferkit.methods.back_translation:BackTranslation",
    "replay": "transferkit.methods.replay:Replay",
    "l2sp": "transferkit.methods.anchor:L2SP",
    "ewc": "transferkit.methods.anchor:EWC",
    "contrastive": "transferkit.methods.contrastive:Contrastive",
    "description_init": "transferkit.methods.description_init:DescriptionInit",
}
_EXTRA: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Make a Method subclass available under `cls.Config.method` (usable as a decorator)."""
    name = cls.Config.method
    if not name or not name.isidentifier():
        raise ValueError(f"a method needs a Config.method name that is an identifier, got {name!r}")
    _EXTRA[name] = cls
    return cls


def names() -> list[str]:
    return sorted({*BUILTIN, *_EXTRA})


def method_class(name: str) -> type[Method]:
    if name in _EXTRA:
        return _EXTRA[name]
    module, _, cls = BUILTIN[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def config_class(name: str) -> type[MethodConfig]:
    return method_class(name).Config


def build(configs: dict[str, MethodConfig]) -> list[Method]:
    """The enabled methods, in composition order (stage, then name)."""
    methods = [method_class(name)(cfg) for name, cfg in configs.items()]
    return sorted(methods, key=lambda m: (m.order, m.name))


__all__ = ["Method", "MethodConfig", "build", "config_class", "method_class", "names", "register"]
