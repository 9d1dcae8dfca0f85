"""What `transferkit monitor` is told: the models that classify each text, the database, the time window, the
alert rules, where alerts go, and the web service. Loaded by the same config machinery as a run config
(`transferkit config`-style errors: every problem at once, with its location)."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_SPAN = re.compile(r"^\s*(\d+)\s*(m|h|d|w)\s*$")
_UNIT = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_span(text: str) -> timedelta:
    """'15m', '1h', '1d', '7d', '2w' -> a timedelta."""
    m = _SPAN.match(str(text))
    if not m or int(m.group(1)) <= 0:
        raise ValueError(f"'{text}' is not a time span: write a positive number and a unit m/h/d/w, e.g. 1h, 1d, 7d")
    return timedelta(seconds=int(m.group(1)) * _UNIT[m.group(2)])


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelRef(_Section):
    path: str = Field(..., description="Run folder (or model / export folder, or models:/NAME@ALIAS) of a "
                      "classification model; every text gets its label and score.")
    int8: bool = Field(False, description="Run this model with int8 weights (CPU).")


class Rule(_Section):
    name: str = Field(..., description="Name shown with every alert of this rule.")
    kind: Literal["share_rise", "volume_spike"] = Field(
        ..., description="share_rise: a label's share of a window rises `points` above its trailing baseline; "
        "volume_spike: a window holds `factor` times the baseline's mean count.")
    model: str | None = Field(None, description="share_rise: the model (a key of `models`) whose label is watched.")
    label: str | None = Field(None, description="share_rise: the watched label; '*' watches every label of the "
                              "model, each on its own (a topic's share jumping).")
    points: float = Field(10.0, gt=0, le=100, description="share_rise: rise in percentage points that fires.")
    factor: float = Field(2.0, gt=1, description="volume_spike: window count / baseline mean count that fires.")
    baseline_windows: int = Field(4, ge=1, description="How many earlier windows form the trailing baseline.")
    min_baseline: int = Field(2, ge=1, description="Fewest earlier windows (each with at least min_count texts for "
                              "share_rise) needed before the rule can fire.")
    min_count: int = Field(20, ge=1, description="Fewest texts a window needs to be judged (and to count in a "
                           "share baseline): small windows are noise.")

    @model_validator(mode="after")
    def _fields_of_kind(self) -> Rule:
        if self.kind == "share_rise" and (not self.model or not self.label):
            raise ValueError(f"rule '{self.name}': share_rise needs `model` (a key of models) and `label` (or '*')")
        if self.min_baseline > self.baseline_windows:
            raise ValueError(f"rule '{self.name}': min_baseline ({self.min_baseline}) is more than baseline_windows "
                             f"({self.baseline_windows})")
        return self


class Webhook(_Section):
    url: str = Field(..., description="Receives each alert as a JSON POST.")
    secret: str | None = Field(None, description="When set, each POST carries X-Transferkit-Signature: "
                               "sha256=<HMAC of the body with this secret>.")
    timeout_s: float = Field(5.0, gt=0, description="Seconds per attempt.")
    retries: int = Field(3, ge=0, description="Attempts after the first, with exponential back-off (0.5 s, 1 s...).")


class Alerts(_Section):
    log: str | None = Field("alerts.jsonl", description="File (in the monitor's folder unless absolute) that gets "
                            "one JSON line per alert; null: none.")
    webhooks: list[Webhook] = Field(default_factory=list, description="URLs that receive every alert.")
    evidence: int = Field(10, ge=1, description="Texts kept as the evidence of an alert (the most confident "
                          "of the watched label; for volume, the latest).")


class Ingest(_Section):
    text_column: str = Field("text", description="Column / field with the text.")
    time_column: str = Field("date", description="Column / field with the timestamp (ISO 8601 date or time; "
                             "naive times are UTC). Texts without one get the time they arrive.")
    id_column: str | None = Field(None, description="Column with a stable id of each text; default: a hash of "
                                  "its time and text (ingesting the same file twice stores nothing twice).")
    watch: str | None = Field(None, description="Folder watched by `monitor serve`: each new .csv / .jsonl / "
                              ".txt file in it is ingested once (remembered in the database).")
    poll_s: float = Field(2.0, gt=0, description="How often the watched folder is looked at, in seconds.")
    batch_size: int = Field(64, ge=1, description="Texts classified per forward pass.")
    max_chars: int = Field(10_000, ge=1, description="Longest text accepted (longer: refused with its position).")


class Web(_Section):
    host: str = Field("127.0.0.1", description="Address of the dashboard and the ingest endpoint.")
    port: int = Field(8100, ge=1, le=65535)
    api_keys: Path | None = Field(None, description="API keys file (docs/deploy.md); an `ingest` or `admin` key "
                                  "posts texts, `predict` keys read the dashboard's data. Also TRANSFERKIT_API_KEYS.")
    auth: bool = Field(True, description="Require keys; false only on a trusted network.")
    refresh_s: float = Field(2.0, gt=0, description="How often the dashboard asks for new data.")
    max_texts: int = Field(256, ge=1, description="Most texts in one POST /v1/ingest (413 beyond).")


class MonitorConfig(_Section):
    name: str = Field("monitor", description="Name of the monitor; its folder is output_dir/{name}.")
    output_dir: str = Field("runs/{name}", description="The monitor's folder (database, alert log, report).")
    database: str | None = Field(None, description="SQLAlchemy URL (sqlite:///..., postgresql+psycopg://...); "
                                 "default: SQLite file monitor.db in the monitor's folder.")
    models: dict[str, ModelRef] = Field(..., min_length=1, description="name -> classification model; each text "
                                        "is classified by every one (e.g. sentiment and topic).")
    window: str = Field("1d", description="Aggregation window (15m, 1h, 1d, 7d...); weekly windows start on Monday "
                        "00:00 UTC, daily ones at midnight UTC.")
    lateness: str | None = Field(None, description="How long after its end a window waits for late texts before "
                                 "its rules are judged (default: none; texts arriving later are stored, not judged).")
    clock: Literal["event", "wall"] = Field("event", description="event: windows close when a later text arrives "
                                            "(replays); wall: also when the wall clock passes their end (live).")
    rules: list[Rule] = Field(default_factory=list, description="Alert rules, judged on every closed window.")
    alerts: Alerts = Field(default_factory=Alerts)
    ingest: Ingest = Field(default_factory=Ingest)
    web: Web = Field(default_factory=Web)

    @field_validator("window", "lateness")
    @classmethod
    def _span(cls, v: str | None) -> str | None:
        if v is not None:
            parse_span(v)
        return v

    @model_validator(mode="after")
    def _rules_name_models(self) -> MonitorConfig:
        names = [r.name for r in self.rules]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"rules: names must differ; repeated: {', '.join(dup)}")
        for r in self.rules:
            if r.model is not None and r.model not in self.models:
                raise ValueError(f"rule '{r.name}': model '{r.model}' is not one of models ({', '.join(self.models)})")
        return self

    @property
    def folder(self) -> Path:
        return Path(self.output_dir.replace("{name}", self.name))

    @property
    def window_span(self) -> timedelta:
        return parse_span(self.window)

    @property
    def lateness_span(self) -> timedelta:
        return parse_span(self.lateness) if self.lateness else timedelta(0)

    def database_url(self) -> str:
        return self.database or f"sqlite:///{(self.folder / 'monitor.db').resolve()}"
