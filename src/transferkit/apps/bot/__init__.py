"""`transferkit bot`: a customer-service bot over chatterbot-corpus: intents from a fine-tuned classifier, answers
retrieved from an FAQ index by sentence-embedding similarity, hand-off to a human under a confidence threshold
(recorded), multi-turn context, `/v1/chat` and a chat page. English and Chinese. docs/applications.md."""

from transferkit.apps.bot.settings import BotConfig

__all__ = ["BotConfig"]
