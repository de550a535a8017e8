"""Ponder: an OpenAI-compatible inference-time scaling server."""

__version__ = "0.1.0"
