"""Data: sources (files, built-ins, hub), checks, splits."""
