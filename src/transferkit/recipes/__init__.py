"""Recipes: wiring of the components, top to bottom, one per command."""
