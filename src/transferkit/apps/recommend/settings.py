"""What `transferkit recommend` is told: the encoder, the cold-start experiment (movies' approval from their plot
text) and the personalised-ranking experiment (simulated readers of BBC News), and how the towers train (the
fine-tuning config's own `train` and `early_stopping` sections)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from transferkit.config import EarlyStoppingConfig, TrainConfig


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Encoder(_Section):
    path: str = Field("minilm", description="Pretrained encoder of both towers and of the frozen baseline.")
    max_length: int = Field(128, ge=8, description="Tokens per item text.")
    user_max_length: int = Field(256, ge=8, description="Tokens of a user's history text (the user tower's input).")


class ColdStart(_Section):
    min_reviews: int = Field(5, ge=1, description="Movies need this many critics' reviews for a reliable approval.")
    fresh: float = Field(0.6, gt=0, lt=1, description="Approval ratio from which a movie counts as liked (Rotten "
                         "Tomatoes certifies a movie 'fresh' from 60% positive reviews): the fine-tuned classifier's label.")
    folds: int = Field(5, ge=2, description="Cross-validation folds over movies (every movie is tested once).")
    validation: float = Field(0.2, gt=0, lt=0.5, description="Share of each fold's training movies held out to choose "
                              "settings (ridge strength; the fine-tuning's best epoch).")
    seed: int = 42
    epochs: int = Field(10, ge=1, description="Epochs of the fine-tuned classifier.")
    lr: float = Field(5e-5, gt=0, description="Learning rate of the fine-tuned classifier.")


class Personal(_Section):
    users: int = Field(600, ge=10, description="Simulated users (no real interaction data installs offline).")
    history: int = Field(10, ge=1, description="Articles each user read before (the user tower's input).")
    future: int = Field(5, ge=1, description="Articles each user reads next (the positives to rank).")
    negatives: int = Field(45, ge=1, description="Unread articles ranked with the positives of each evaluated user.")
    concentration: float = Field(0.3, gt=0, description="Dirichlet concentration of each user's topic preferences "
                                 "(small: users keep to one or two topics).")
    validation_users: float = Field(0.15, gt=0, lt=0.5)
    test_users: float = Field(0.25, gt=0, lt=0.5)
    seed: int = 42


class RecommendConfig(_Section):
    name: str = "recommend"
    output_dir: str = Field("runs/{name}", description="Folder of the results (report.md, results.json, towers).")
    encoder: Encoder = Field(default_factory=Encoder)
    cold_start: ColdStart = Field(default_factory=ColdStart)
    personal: Personal = Field(default_factory=Personal)
    train: TrainConfig = Field(default_factory=TrainConfig, description="How the two towers fine-tune.")
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)

    @property
    def folder(self) -> Path:
        return Path(self.output_dir.replace("{name}", self.name))
