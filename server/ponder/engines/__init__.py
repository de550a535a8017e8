"""Engines behind one protocol; the app factory picks one from Settings."""

from __future__ import annotations

from ..config import Settings
from .base import (
    Engine,
    EngineError,
    EngineNotReady,
    Generation,
    RequestTooLarge,
    Sample,
    SamplingParams,
    StreamDelta,
)


def create_engine(settings: Settings) -> Engine:
    """The engine named by `settings.engine`, not yet started."""
    if settings.engine == "llamacpp":
        from .llamacpp import LlamaCppEngine

        return LlamaCppEngine(
            settings.model,
            settings.model_name,
            n_ctx=settings.context_tokens,
            max_samples=settings.max_samples,
            n_threads=settings.threads,
        )
    raise EngineError(f"unknown engine {settings.engine!r}")


__all__ = [
    "Engine",
    "EngineError",
    "EngineNotReady",
    "Generation",
    "RequestTooLarge",
    "Sample",
    "SamplingParams",
    "StreamDelta",
    "create_engine",
]
