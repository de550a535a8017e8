"""One Settings object, read from PONDER_* environment variables; CLI flags map onto it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Server configuration. Every field can be set as PONDER_<FIELD> (e.g. PONDER_MODEL)."""

    model_config = SettingsConfigDict(env_prefix="PONDER_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    engine: Literal["llamacpp", "vllm", "upstream"] = "llamacpp"
    model: str | None = Field(
        None,
        description="llamacpp: path of a GGUF model (default: the embedded SmolLM2-135M-Instruct);"
        " vllm: a Hugging Face model id or local path (required).",
    )
    model_name: str = Field("smollm2", description="Name the model is served under.")
    chat_template: str | None = Field(
        None,
        description="A Jinja chat template file used instead of the model's own (llamacpp, "
        "vllm), e.g. one whose tools the model was trained on.",
    )
    context_tokens: int = Field(
        32768, ge=256, description="KV cache cells shared by all samples of one request."
    )
    threads: int | None = Field(
        None, ge=1, description="llama.cpp threads; default: every core but one."
    )

    vllm_tensor_parallel_size: int = Field(1, ge=1)
    vllm_gpu_memory_utilization: float = Field(0.9, gt=0.0, le=1.0)
    vllm_max_model_len: int | None = Field(None, ge=16)
    vllm_dtype: str = "auto"
    vllm_max_num_seqs: int = Field(256, ge=1, description="vLLM batch slots; >= max_samples.")
    vllm_exact_stats: bool = Field(
        True, description="Exact kl_uniform/entropy through Ponder's vLLM logits processor."
    )
    vllm_max_num_batched_tokens: int | None = Field(
        None, ge=16, description="Tokens per vLLM step (chunked prefill); default: vLLM's."
    )
    vllm_pipeline_parallel_size: int = Field(1, ge=1, description="vLLM pipeline stages.")
    vllm_data_parallel_size: int = Field(1, ge=1, description="vLLM data-parallel replicas.")
    vllm_distributed_executor_backend: Literal["mp", "ray", "uni"] | None = Field(
        None, description="vLLM's executor: mp (one node), ray (several nodes); default: vLLM's."
    )
    vllm_load_format: str = Field(
        "auto", description="vLLM load format: auto, safetensors, ... or dummy (random weights)."
    )
    vllm_enforce_eager: bool = Field(False, description="Skip CUDA graphs / torch.compile.")
    vllm_chunked_prefill: bool | None = Field(
        None,
        description="vLLM chunked prefill; default: vLLM's, except off on vLLM's CPU build "
        "(docs/engines.md 'vLLM on a CPU').",
    )

    upstream_url: str | None = Field(
        None, description="Base URL of an OpenAI-compatible server (with or without /v1)."
    )
    upstream_api_key: str | None = None
    upstream_model: str | None = Field(None, description="Default: the upstream's first model.")
    upstream_timeout_s: float = Field(600.0, gt=0.0)
    upstream_top_logprobs: int = Field(20, ge=1, le=20)
    upstream_vocab_size: int = Field(
        32000, ge=2, description="Vocabulary size used by the top-k approximations."
    )

    default_strategy: str = "none"
    default_samples: int = Field(8, ge=1)
    max_samples: int = Field(64, ge=1)
    default_max_tokens: int = Field(512, ge=1)
    selection_temperature: float = Field(
        0.7, ge=0.0, le=2.0, description="Temperature of selection strategies when unset."
    )
    symbolic_timeout_s: float = Field(2.0, gt=0.0)
    responses_stored: int = Field(
        1000,
        ge=0,
        le=100_000,
        description="Responses API: the last this many responses kept in memory for "
        "previous_response_id and GET /v1/responses/{id} (each readable by its caller only); "
        "0 = none.",
    )
    verifiers: str | None = Field(
        None,
        description="External verifiers for strategy verify, by name: a JSON object "
        '{"name": {"kind": "judge"|"reward", "url", "model", "timeout_s", "retries", '
        '"api_key_env"}}, or @path of a file holding one.',
    )
    aliases: str | None = Field(
        None,
        description="Named aliases, listed by /v1/models: name=model+strategy[@N][:tT], "
        "comma-separated, or @/path/to/file with one per line (e.g. vote8=smollm2+"
        "majority_vote@8:t0.7: a vote of 8 at temperature 0.7 whatever the client sends).",
    )
    calibration: str | None = Field(
        None,
        description="A calibration.json written by `ponder eval --calibrate`: responses then "
        "report the calibrated confidence, and the raw one as confidence_raw.",
    )

    # Security and limits (docs/security.md)
    api_keys: str | None = Field(
        None,
        description="Comma-separated API keys, or @/path/to/file with one key per line; when "
        "set, every /v1 route needs `Authorization: Bearer <key>`.",
    )
    metrics_require_key: bool = False
    playground: bool = Field(
        True,
        description="Serve the playground page at /playground (static; its calls use the API key).",
    )
    trace_content: bool = Field(
        False,
        description="With tracing on (OTEL_EXPORTER_OTLP_ENDPOINT): also record the answer and "
        "the chosen text (cut to 256 characters) in the request's trace.",
    )
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    max_tokens_limit: int = Field(4096, ge=1, description="Upper bound on max_tokens.")
    max_request_tokens: int = Field(
        65536, ge=1, description="Upper bound on samples x max_tokens of one request."
    )
    max_prompt_tokens: int = Field(8192, ge=1)
    max_messages: int = Field(
        2048, ge=1, description="Messages per chat request; checked before any rendering."
    )
    max_prompt_chars: int = Field(
        262144,
        ge=1,
        description="Characters of prompt text per request (all messages, or the prompt); "
        "checked before rendering and tokenizing.",
    )
    rate_limit_per_minute: int = Field(0, ge=0, description="Per key (or client); 0 = off.")
    concurrency_limit: int = Field(0, ge=0, description="Per key (or client); 0 = off.")
    max_queue: int = Field(64, ge=1, description="Requests admitted to the engine at once.")
    request_timeout_s: float = Field(600.0, ge=0.0, description="Per-request deadline; 0 = off.")
    shutdown_grace_s: float = Field(
        30.0, ge=0.0, description="Seconds in-flight requests may finish after SIGTERM; 0 = none."
    )
    trusted_proxies: str | None = Field(
        None,
        description="Comma-separated proxy addresses whose X-Forwarded-For names the client "
        "(for per-address limits and logs); default: none, the peer address counts.",
    )

    def group(self, prefix: str) -> dict[str, object]:
        """The settings named `<prefix>_*`, without the prefix (e.g. `group("vllm")`: every
        PONDER_VLLM_* setting, which the vLLM engine's options take whole)."""
        cut = len(prefix) + 1
        return {k[cut:]: v for k, v in self.model_dump().items() if k.startswith(prefix + "_")}

    def key_set(self) -> frozenset[str]:
        """The configured API keys (empty: auth off)."""
        raw = (self.api_keys or "").strip()
        if raw.startswith("@"):
            with open(raw[1:], encoding="utf-8") as fh:
                items = fh.read().splitlines()
        else:
            items = raw.split(",")
        return frozenset(k.strip() for k in items if k.strip() and not k.startswith("#"))
