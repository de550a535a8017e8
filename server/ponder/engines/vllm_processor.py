"""The vLLM logits processor that records Ponder's exact per-token stats, on both runners.

Registered as `AsyncEngineArgs(logits_processors=["ponder.engines.vllm_processor:
PonderStatsProcessor"])`. vLLM has two logits-processor interfaces and picks the model runner
at start-up (V2 needs Triton, so CPU builds, some speculative and pipeline setups,
`VLLM_USE_V2_MODEL_RUNNER=0`, and every 0.24 release run V1):

- V1 (`vllm.v1.sample.logits_processor.LogitsProcessor`, 0.24 on): `__init__(vllm_config,
  device, is_pin_memory)`, `update_state(BatchUpdate)` with added/removed/moved batch
  indices, `apply(logits)`; a non-argmax-invariant processor sees the raw logits before
  penalties and temperature.
- V2 (`vllm.v1.worker.gpu.sample.logits_processor.LogitsProcessor`, 0.3x): `__init__(
  vllm_config, req_states)`, `add_request(slot, params)`, `apply(logits, ctx)`; it sees the
  logits after penalties, before temperature.

`PonderStatsProcessor` subclasses whichever of the two the installed vLLM has, so vLLM's own
subclass check accepts it on either runner; the constructor's arguments say which one is
calling. It never changes the logits. Per slot it keeps the request key and sampling
parameters in host arrays and, on the device, in tensors updated only when the batch changes,
so a step costs no host->device copy and no device sync: the stats of the whole batch are one
`row_stats` call on the device, and the rows of tracked requests are copied to the host
asynchronously (`StatsStore`). Rows of partial prefill chunks (no token is sampled from them)
are skipped on V2 and overwritten by the real step on V1.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from .vllm_stats import STATS_KEY, STORE, effective_temperature, row_stats


def _interfaces() -> tuple[type, ...]:
    """The logits-processor base classes of the installed vLLM (V1 first)."""
    found = []
    for module in ("vllm.v1.sample.logits_processor", "vllm.v1.worker.gpu.sample.logits_processor"):
        try:
            found.append(importlib.import_module(module).LogitsProcessor)
        except (ImportError, AttributeError):
            continue
    return tuple(found)


INTERFACES = _interfaces()


class _SlotTable:
    """Per-slot key and sampling parameters: host arrays, mirrored to the device on change."""

    def __init__(self, size: int, device: Any) -> None:
        import torch

        self.keys: list[str | None] = [None] * size
        self.outputs: list[Any] = [None] * size  # V1: the request's live output-token list
        self.host = np.zeros((4, size), dtype=np.float32)  # temperature, top_k, top_p, min_p
        self.host[0], self.host[2] = 1.0, 1.0
        self.device = torch.from_numpy(self.host.copy()).to(device)
        self.dirty = False

    def set(self, slot: int, params: Any, outputs: Any = None) -> bool:
        key = (params.extra_args or {}).get(STATS_KEY) if params is not None else None
        self.keys[slot] = key
        self.outputs[slot] = outputs
        if key is not None:
            self.host[:, slot] = (
                effective_temperature(params.temperature),
                max(int(params.top_k or 0), 0),
                params.top_p,
                params.min_p,
            )
            self.dirty = True
        return key is not None

    def move(self, a: int, b: int, swap: bool) -> None:
        self.keys[a], self.keys[b] = (self.keys[b] if swap else None), self.keys[a]
        self.outputs[a], self.outputs[b] = (self.outputs[b] if swap else None), self.outputs[a]
        col_a, col_b = self.host[:, a].copy(), self.host[:, b].copy()
        self.host[:, b] = col_a
        if swap:
            self.host[:, a] = col_b
        self.dirty = True

    def params_on_device(self) -> Any:
        """[4, size] device tensor; copied from the host only after a batch change."""
        if self.dirty:
            import torch

            self.device.copy_(torch.from_numpy(self.host), non_blocking=True)
            self.dirty = False
        return self.device

    def needs_sort(self, slots: Any) -> bool:
        """Whether any of these slots truncates by top-k or top-p (host arrays, no sync)."""
        return bool(np.any(self.host[1, slots] > 0) or np.any(self.host[2, slots] < 1.0))


class PonderStatsProcessor(*INTERFACES):  # type: ignore[misc]
    """Records kl_uniform, entropy_processed, lse and log-normalizer per tracked request."""

    def __init__(self, vllm_config: Any, *args: Any) -> None:
        self.req_states: Any
        if len(args) == 2:  # V1: (device, is_pin_memory)
            self.runner = "v1"
            device, self.req_states = args[0], None
        else:  # V2: (req_states)
            self.runner = "v2"
            self.req_states = args[0]
            device = self.req_states.device
        size = int(vllm_config.scheduler_config.max_num_seqs)
        if self.req_states is not None:
            size = max(size, int(self.req_states.max_num_reqs))
        self.table = _SlotTable(size, device)
        self.batch_size = 0

    @classmethod
    def validate_params(cls, sampling_params: Any) -> None:
        key = (sampling_params.extra_args or {}).get(STATS_KEY)
        if key is not None and not isinstance(key, str):
            raise ValueError(f"extra_args[{STATS_KEY!r}] must be a string")

    def is_argmax_invariant(self) -> bool:
        """False on purpose: V1 then applies it before temperature, on the raw logits."""
        return False

    # ---------------------------------------------------------------- V1 interface

    def update_state(self, batch_update: Any) -> None:
        if batch_update is None:
            return
        for index in batch_update.removed:
            self.table.set(index, None)
        for index, params, _prompt, outputs in batch_update.added:
            self.table.set(index, params, outputs)
        for a, b, direction in batch_update.moved:
            self.table.move(a, b, swap=direction.name == "SWAP")
        self.batch_size = batch_update.batch_size

    # ---------------------------------------------------------------- V2 interface

    def add_request(self, req_idx: int, sampling_params: Any) -> bool:
        return self.table.set(req_idx, sampling_params)

    # ---------------------------------------------------------------- both

    def apply(self, logits: Any, ctx: Any = None) -> Any:
        if ctx is None:
            rows, slots, positions, select = self._v1_rows(logits)
        else:
            rows, slots, positions, select = self._v2_rows(logits, ctx)
        if not rows:
            return logits
        params = self.table.params_on_device()
        per_row = params[:, select]
        stats = row_stats(
            logits,
            per_row[0],
            per_row[1].long(),
            per_row[2],
            per_row[3],
            sort=self.table.needs_sort(slots),
        )
        STORE.record([self.table.keys[s] for s in slots], positions, stats, rows)
        return logits

    def _v1_rows(self, logits: Any) -> tuple[list[int], list[int], list[int], Any]:
        """Row r is batch index r; the position is the length of the request's output so far
        (a partial prefill chunk records position 0 and is overwritten by the real step)."""
        n = int(logits.shape[0])
        if n != self.batch_size:  # speculative-decoding rows: not tracked
            return [], [], [], None
        keys, outputs = self.table.keys, self.table.outputs
        rows = [r for r in range(n) if keys[r] is not None]
        positions = [len(outputs[r]) if outputs[r] is not None else 0 for r in rows]
        return rows, rows, positions, slice(0, n)

    def _v2_rows(self, logits: Any, ctx: Any) -> tuple[list[int], list[int], list[int], Any]:
        """Rows map to slots through the context; positions from host-side lengths. Rows of a
        partial prefill chunk (sequence shorter than the prefill) sample nothing: skipped."""
        slots = ctx.idx_mapping_np
        if int(logits.shape[0]) != len(slots):  # speculative-decoding rows: not tracked
            return [], [], [], None
        keys = self.table.keys
        prompt_len = self.req_states.prompt_len.np
        prefill_len = self.req_states.prefill_len.np
        seq_lens = ctx.seq_lens_upper_bound_np
        rows, tracked, positions = [], [], []
        for r, slot in enumerate(slots):
            s = int(slot)
            if keys[s] is None or int(seq_lens[r]) < int(prefill_len[s]):
                continue
            rows.append(r)
            tracked.append(s)
            positions.append(int(seq_lens[r]) - int(prompt_len[s]))
        return rows, tracked, positions, ctx.expanded_idx_mapping
