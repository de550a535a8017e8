"""The vLLM (model runner V2) logits processor that records Ponder's per-token stats.

Registered as `AsyncEngineArgs(logits_processors=["ponder.engines.vllm_processor:
PonderStatsProcessor"])`. It never changes the logits: it reduces the rows of the requests
that carry `extra_args["ponder_stats"]` with `vllm_stats.row_stats` and records them in the
worker's `STORE`. Only imported where vLLM is installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vllm.v1.worker.gpu.sample.logits_processor import LogitsProcessor

from .vllm_stats import STATS_KEY, STORE, row_stats

if TYPE_CHECKING:
    from vllm.config import VllmConfig
    from vllm.sampling_params import SamplingParams
    from vllm.v1.worker.gpu.sample.logits_processor import LogitsContext, LogitsProcRequestState


class PonderStatsProcessor(LogitsProcessor):
    """Records kl_uniform, entropy_processed, lse and log-normalizer per tracked request."""

    def __init__(self, vllm_config: VllmConfig, req_states: LogitsProcRequestState) -> None:
        self.req_states = req_states
        # slot -> (key, temperature, top_k, top_p, min_p)
        self.slots: dict[int, tuple[str, float, int, float, float]] = {}

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        key = (sampling_params.extra_args or {}).get(STATS_KEY)
        if key is not None and not isinstance(key, str):
            raise ValueError(f"extra_args[{STATS_KEY!r}] must be a string")

    def add_request(self, req_idx: int, sampling_params: SamplingParams) -> bool:
        key = (sampling_params.extra_args or {}).get(STATS_KEY)
        if key is None:
            self.slots.pop(req_idx, None)
            return False
        sp = sampling_params
        self.slots[req_idx] = (key, sp.temperature, sp.top_k, sp.top_p, sp.min_p)
        return True

    def apply(self, logits: Any, ctx: LogitsContext) -> Any:
        import torch

        slots = ctx.idx_mapping_np
        if logits.shape[0] != len(slots):  # speculative decoding rows: not tracked
            return logits
        rows = [r for r, slot in enumerate(slots) if int(slot) in self.slots]
        if not rows:
            return logits
        params = [self.slots[int(slots[r])] for r in rows]
        dev = logits.device
        stats = row_stats(
            logits[torch.tensor(rows, device=dev)],
            torch.tensor([p[1] for p in params], device=dev, dtype=torch.float32),
            torch.tensor([p[2] for p in params], device=dev, dtype=torch.long),
            torch.tensor([p[3] for p in params], device=dev, dtype=torch.float32),
            torch.tensor([p[4] for p in params], device=dev, dtype=torch.float32),
        )
        prompt_len = self.req_states.prompt_len.np
        positions = [
            int(ctx.seq_lens_upper_bound_np[r]) - int(prompt_len[int(slots[r])]) for r in rows
        ]
        STORE.record([p[0] for p in params], positions, stats)
        return logits
