"""Engines behind one protocol; the app factory picks one from Settings."""

from __future__ import annotations

from pathlib import Path

from ..config import Settings
from ..errors import EngineError
from ..types import Engine


def _chat_template(settings: Settings) -> str | None:
    """The text of PONDER_CHAT_TEMPLATE (a Jinja file), read at startup."""
    if settings.chat_template is None:
        return None
    if settings.engine == "upstream":
        raise EngineError(
            "PONDER_CHAT_TEMPLATE does not apply to the upstream engine (the upstream server "
            "renders its own prompts)"
        )
    try:
        return Path(settings.chat_template).expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise EngineError(f"PONDER_CHAT_TEMPLATE cannot be read: {exc}") from None


def create_engine(settings: Settings) -> Engine:
    """The engine named by `settings.engine`, not yet started."""
    template = _chat_template(settings)
    if settings.engine == "llamacpp":
        from .llamacpp import LlamaCppEngine

        return LlamaCppEngine(
            settings.model,
            settings.model_name,
            n_ctx=settings.context_tokens,
            max_samples=settings.max_samples,
            n_threads=settings.threads,
            chat_template=template,
        )
    if settings.engine == "vllm":
        from .vllm import VllmEngine, VllmOptions

        if not settings.model:
            raise EngineError("PONDER_ENGINE=vllm needs PONDER_MODEL (a Hugging Face id or path)")
        vllm = settings.group("vllm")
        vllm["max_num_seqs"] = max(settings.vllm_max_num_seqs, settings.max_samples)
        return VllmEngine(
            VllmOptions(model=settings.model, served_name=settings.model_name, **vllm),  # type: ignore[arg-type]
            chat_template=template,
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
