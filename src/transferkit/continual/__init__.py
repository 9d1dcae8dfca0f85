"""Continual learning: what a run keeps so that a later run can update it (the replay sample), and the update
recipe's measurements (before vs after on the parent's and the new test split)."""
