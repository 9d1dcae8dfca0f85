"""What a service can be told: limits, batching, authentication. Every field says what it does."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ServeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: Path = Field(description="Run folder, model folder or export folder (ONNX) to serve.")
    int8: bool = Field(False, description="Serve the int8 model (an export's model.int8.onnx; else torch dynamic int8).")
    api_keys: Path | None = Field(None, description="YAML/JSON file of API keys (see docs/deploy.md); also read from "
                                  "the TRANSFERKIT_API_KEYS environment variable.")
    auth: bool = Field(True, description="Require an API key on /v1/*; false only for a trusted network.")
    max_texts: int = Field(64, ge=1, description="Most inputs in one request (413 beyond).")
    max_chars: int = Field(10_000, ge=1, description="Most characters in one input text (413 beyond).")
    max_queue: int = Field(512, ge=1, description="Most inputs waiting to be batched; a request that would exceed "
                           "it gets 429 with Retry-After instead of waiting.")
    max_batch_tokens: int = Field(8192, ge=64, description="Token budget of one model batch (estimated from "
                                  "characters before tokenizing).")
    max_batch_inputs: int = Field(256, ge=1, description="Most inputs in one model batch.")
    max_wait_ms: float = Field(5.0, ge=0, description="How long the first request of a batch waits for others to "
                               "join it.")
    timeout_s: float = Field(30.0, gt=0, description="A request still unanswered after this many seconds gets 504.")
    log_texts: bool = Field(False, description="Log request texts (e-mail addresses, phone and ID numbers masked).")
    batch_size: int = Field(64, ge=1, description="Forward-pass batch size inside one model batch.")

    @model_validator(mode="after")
    def _queue_holds_a_request(self) -> ServeSettings:
        if self.max_queue < self.max_texts:
            raise ValueError(f"max_queue ({self.max_queue}) must be at least max_texts ({self.max_texts}): a "
                             "full-size request could never be queued")
        return self
