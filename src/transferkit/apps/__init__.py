"""Applications built on the run folders, predictor and service of transferkit (docs/applications.md)."""
