"""Models: loading checkpoints or building from scratch, heads, freezing."""
