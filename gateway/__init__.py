"""An OpenAI-compatible inference gateway with swappable backends."""

__version__ = "0.1.0"
