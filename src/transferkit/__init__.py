"""transferkit: transfer learning for NLP, end to end.

    import transferkit as tk
    result = tk.finetune("configs/sentiment.yaml", ["name=nb", "train.epochs=1"])
    tk.Predictor.load(result.run_dir).predict(["a moving film"])

Names are imported on first use, so `import transferkit` stays light (no torch until it is needed).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_config": "transferkit.config", "load_pretrain_config": "transferkit.config",
    "RunConfig": "transferkit.config", "PretrainConfig": "transferkit.config", "explain": "transferkit.config",
    "finetune": "transferkit.api", "pretrain": "transferkit.api", "RunResult": "transferkit.api",
    "PretrainResult": "transferkit.api", "Predictor": "transferkit.deploy.predictor",
    "Method": "transferkit.methods.base", "MethodConfig": "transferkit.methods.base",
    "register_method": "transferkit.methods",
    "TransferkitError": "transferkit.errors", "ConfigError": "transferkit.errors", "DataError": "transferkit.errors",
}
__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'transferkit' has no attribute {name!r}")
    import importlib

    module = importlib.import_module(_EXPORTS[name])
    return getattr(module, "register" if name == "register_method" else name)
