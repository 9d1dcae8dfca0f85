"""transferkit: transfer learning for NLP, end to end."""

__version__ = "0.1.0"
