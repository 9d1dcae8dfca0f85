"""Evaluation: inference over a split, metrics, reports, baselines."""
