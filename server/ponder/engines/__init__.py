"""Engines behind one protocol; the app factory picks one from Settings."""

from __future__ import annotations

from ..config import Settings
from ..errors import EngineError
from ..types import Engine


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
    if settings.engine == "vllm":
        from .vllm import VllmEngine, VllmOptions

        if not settings.model:
            raise EngineError("PONDER_ENGINE=vllm needs PONDER_MODEL (a Hugging Face id or path)")
        vllm = settings.group("vllm")
        vllm["max_num_seqs"] = max(settings.vllm_max_num_seqs, settings.max_samples)
        return VllmEngine(
            VllmOptions(model=settings.model, served_name=settings.model_name, **vllm)  # type: ignore[arg-type]
        )
    if settings.engine == "upstream":
        from .upstream import UpstreamEngine

        if not settings.upstream_url:
            raise EngineError("PONDER_ENGINE=upstream needs PONDER_UPSTREAM_URL")
        upstream = settings.group("upstream")  # every PONDER_UPSTREAM_* setting, whole
        return UpstreamEngine(
            **upstream,  # type: ignore[arg-type]
            served_name=settings.upstream_model,
            max_context=settings.context_tokens,
        )
    raise EngineError(f"unknown engine {settings.engine!r}")


__all__ = ["create_engine"]
