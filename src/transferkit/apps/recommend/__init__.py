"""`transferkit recommend`: interest scoring from text (issue 18). docs/applications.md."""

from transferkit.apps.recommend.settings import RecommendConfig

__all__ = ["RecommendConfig"]
