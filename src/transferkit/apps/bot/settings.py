"""What `transferkit bot` is told: the language, the intent classifier (a run folder, trained from a fine-tuning
config when missing), the sentence encoder and the FAQ index, the hand-off threshold, the multi-turn context and
the web service. Loaded by the same config machinery as a run config (every problem at once, with its location)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

LANGUAGES = {"en": "english", "zh": "chinese"}
HANDOFF = {"en": "I am not sure I understood. I am passing you to a human colleague, who will answer here shortly.",
           "zh": "抱歉，我不太确定您的意思。我已为您转接人工客服，请稍候。"}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Intents(_Section):
    run: str = Field(..., description="Run folder of the intent classifier (text_classification over the corpus "
                     "categories). `bot build` trains it from `config` when the folder holds no model yet.")
    config: str | None = Field(None, description="Fine-tuning config that makes `run` (e.g. "
                               "configs/bot_intents_en.yaml); its run folder must be `run`.")


class Encoder(_Section):
    path: str = Field(..., description="Sentence encoder of the FAQ index: an alias (minilm, zh-mini), a model "
                      "folder, or 'intents' (the encoder of the fine-tuned intent classifier). Mean pooling.")
    max_length: int = Field(64, ge=8, le=512, description="Tokens per question embedded.")
    batch_size: int = Field(64, ge=1)


class Index(_Section):
    kind: Literal["auto", "exact", "hnsw"] = Field(
        "auto", description="exact: cosine over every question (numpy); hnsw: approximate nearest neighbours "
        "(hnswlib); auto: exact below `exact_below` questions, hnsw from there on.")
    exact_below: int = Field(20_000, ge=0, description="auto: index sizes below this use exact search.")
    hnsw_m: int = Field(16, ge=4, description="hnsw: links per node.")
    hnsw_ef: int = Field(100, ge=10, description="hnsw: search breadth (higher: better recall, slower).")
    candidates: int = Field(5, ge=1, le=50, description="Candidates retrieved per message (and returned by "
                            "/v1/chat).")


class Answer(_Section):
    intent_weight: float = Field(0.2, ge=0, le=1, description="Score of a candidate = (1 - w) * cosine + w * "
                                 "P(the candidate's intent | message) from the intent classifier; 0: retrieval only.")
    threshold: float | None = Field(None, ge=-1, le=1, description="Hand-off below this score. null: the "
                                    "threshold `bot evaluate` chose on the validation paraphrases (threshold.json "
                                    "in the bot folder), else 0.5.")
    handoff_message: str | None = Field(None, description="Reply on hand-off (default: a sentence in the bot's "
                                        "language).")


class Context(_Section):
    followup_max_words: int = Field(6, ge=0, description="A message of at most this many words (Chinese: "
                                    "characters / 2) is a possible follow-up: it is also embedded together with the "
                                    "session's previous user message, and the better-scoring reading is kept. "
                                    "0: no context.")
    turns_kept: int = Field(20, ge=1, description="Turns per session kept in memory (all are in the database).")


class Web(_Section):
    host: str = Field("127.0.0.1", description="Address of the chat page and /v1/chat.")
    port: int = Field(8200, ge=1, le=65535)
    api_keys: Path | None = Field(None, description="API keys file (docs/deploy.md); `predict` (or `admin`) "
                                  "keys may chat. Also TRANSFERKIT_API_KEYS.")
    auth: bool = Field(True, description="Require keys; false only on a trusted network.")
    max_chars: int = Field(1000, ge=1, description="Longest message accepted (413 beyond).")
    max_session_chars: int = Field(128, ge=1, description="Longest session id accepted (422 beyond).")


class BotConfig(_Section):
    name: str = Field("bot", description="Name of the bot; its folder is output_dir/{name}.")
    output_dir: str = Field("runs/{name}", description="The bot's folder (FAQ index, conversation database, "
                            "evaluation).")
    language: Literal["en", "zh"] = Field(..., description="en: English chatterbot-corpus; zh: Chinese.")
    database: str | None = Field(None, description="SQLAlchemy URL of the conversation log; default: SQLite file "
                                 "bot.db in the bot's folder.")
    intents: Intents
    encoder: Encoder
    index: Index = Field(default_factory=Index)
    answer: Answer = Field(default_factory=Answer)
    context: Context = Field(default_factory=Context)
    web: Web = Field(default_factory=Web)

    @property
    def folder(self) -> Path:
        return Path(self.output_dir.replace("{name}", self.name))

    @property
    def corpus_language(self) -> str:
        return LANGUAGES[self.language]

    def database_url(self) -> str:
        return self.database or f"sqlite:///{(self.folder / 'bot.db').resolve()}"

    def handoff_text(self) -> str:
        return self.answer.handoff_message or HANDOFF[self.language]
