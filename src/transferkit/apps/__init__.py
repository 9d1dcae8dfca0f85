"""Applications built on the run folders, predictor and service of transferkit (docs/applications.md)."""

from __future__ import annotations

from typing import Any


def config_schema(raw: dict[str, Any]) -> tuple[str, Any] | None:
    """(kind, schema) of an application's config (monitor, bot, recommend), told by its sections; None for a
    fine-tuning or pretraining config."""
    if "models" in raw and "model" not in raw:
        from transferkit.apps.monitor.settings import MonitorConfig

        return "monitor", MonitorConfig
    if "intents" in raw and "language" in raw:
        from transferkit.apps.bot.settings import BotConfig

        return "bot", BotConfig
    if "cold_start" in raw or "personal" in raw:
        from transferkit.apps.recommend.settings import RecommendConfig

        return "recommend", RecommendConfig
    return None
