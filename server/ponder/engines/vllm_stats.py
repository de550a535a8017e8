"""Exact per-token stats for the vLLM engine, computed where the logits live.

Import-light (no torch, no vllm at import): vLLM loads the processor module in its frontend
process too. Three parts:
- `row_stats`: the torch reduction of a logits batch (raw, after penalties, before temperature)
  into kl_uniform, entropy_processed, lse and the processed log-normalizer, mirroring the
  order vLLM samples in (temperature, min-p, then top-k/top-p);
- `StatsStore` / `STORE`: per-request bookkeeping in the worker process, keyed by the request
  key carried in `SamplingParams.extra_args["ponder_stats"]`;
- `StatsWorkerExtension`: the `worker_extension_cls` whose `ponder_pop_stats` hands the stats
  back to the frontend through `AsyncLLM.collective_rpc`.
`combine` and `approximate` turn them (or, without the processor, top-k logprobs) into the
engine's per-token arrays.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

STATS_KEY = "ponder_stats"
FIELDS = ("kl_uniform", "entropy_processed", "lse", "log_z_processed")
FLUSH_EVERY = 64


MIN_TEMPERATURE = 0.01
"""vLLM raises a temperature in (0, 0.01) to 0.01 (`SamplingParams`); Ponder's maths follow."""

MAX_KEYS = 16384
"""Requests whose stats the store keeps at most; past it the oldest are dropped (a frontend
that died without popping must not grow the worker without bound)."""


def effective_temperature(temperature: float) -> float:
    """The temperature vLLM samples with: 0 (greedy) stays 0, (0, 0.01) becomes 0.01."""
    return 0.0 if temperature <= 0 else max(float(temperature), MIN_TEMPERATURE)


def row_stats(
    logits: Any, temperature: Any, top_k: Any, top_p: Any, min_p: Any, *, sort: bool = True
) -> Any:
    """[rows, 4] float32 tensor: kl_uniform, entropy_processed, lse, log_z_processed.

    `logits` is [rows, V] float32 (raw); the other arguments are [rows] tensors. Greedy rows
    (temperature 0) get entropy 0 and log-normalizer = their max logit (a one-hot q).
    `sort=False` skips the top-k/top-p pass: only right when no row truncates by them (the
    caller knows from its host-side parameters, so no device value is read).
    """
    import torch

    z = logits.float()
    v = z.shape[-1]
    lse = torch.logsumexp(z, dim=-1)
    kl = lse - z.mean(dim=-1) - math.log(v)
    greedy = temperature <= 0
    t = torch.where(greedy, torch.ones_like(temperature), temperature).unsqueeze(-1)
    zt = z / t
    probs = torch.softmax(zt, dim=-1)
    kept = probs >= (min_p.unsqueeze(-1) * probs.max(dim=-1, keepdim=True).values)
    if sort:
        sorted_z, order = torch.sort(zt.masked_fill(~kept, -math.inf), dim=-1, descending=True)
        ranks = torch.arange(v, device=z.device).unsqueeze(0)
        k = torch.where(top_k <= 0, torch.full_like(top_k, v), top_k).clamp(max=v).unsqueeze(-1)
        in_top_k = ranks < k
        sp = torch.softmax(sorted_z.masked_fill(~in_top_k, -math.inf), dim=-1)
        before = torch.cumsum(sp, dim=-1) - sp  # mass strictly before each rank
        in_top_p = before < top_p.unsqueeze(-1)
        kept_sorted = in_top_k & in_top_p & torch.isfinite(sorted_z)
        kept = torch.zeros_like(kept).scatter(-1, order, kept_sorted)
    zk = zt.masked_fill(~kept, -math.inf)
    log_z = torch.logsumexp(zk, dim=-1)
    q = torch.softmax(zk, dim=-1)
    ent = -(q * torch.where(kept, zk - log_z.unsqueeze(-1), torch.zeros_like(zk))).sum(dim=-1)
    zmax = z.max(dim=-1).values
    ent = torch.where(greedy, torch.zeros_like(ent), ent.clamp(min=0.0))
    log_z = torch.where(greedy, zmax, log_z)
    return torch.stack([kl, ent, lse, log_z], dim=-1)


def _to_host(stats: Any) -> tuple[Any, Any]:
    """Start copying a [rows, 4] tensor to the host without waiting; (host, event|None).

    On a GPU the copy goes to pinned memory behind a CUDA event (nothing waits now); on the
    CPU the tensor is already host memory; numpy input is kept as it is."""
    if not hasattr(stats, "device") or getattr(stats.device, "type", "cpu") != "cuda":
        return stats, None
    import torch

    host = torch.empty(stats.shape, dtype=stats.dtype, pin_memory=True)
    host.copy_(stats, non_blocking=True)
    event = torch.cuda.Event()
    event.record()
    return host, event


class StatsStore:
    """Stats per request key and output position, recorded step by step in the worker."""

    def __init__(self, max_keys: int = MAX_KEYS) -> None:
        self._lock = threading.Lock()
        self._rows: dict[str, dict[int, npt.NDArray[np.float32]]] = {}
        self._pending: list[tuple[list[str], list[int], Any, Any, list[int] | None]] = []
        self.max_keys = max_keys
        self.dropped = 0

    def record(
        self,
        keys: Sequence[str | None],
        positions: Sequence[int],
        stats: Any,
        rows: Sequence[int] | None = None,
    ) -> None:
        """Remember row rows[i] (default i) of `stats` ([rows, 4], numpy or a tensor) for
        (keys[i], positions[i]). Device tensors are copied to the host asynchronously and read
        only when older steps are flushed, so recording never waits for the device."""
        host, event = _to_host(stats)
        with self._lock:
            self._pending.append(
                ([str(k) for k in keys], list(positions), host, event, list(rows or []) or None)
            )
            if len(self._pending) >= FLUSH_EVERY:
                self._flush(keep=2)

    def _flush(self, keep: int = 0) -> None:
        """Move pending rows into the table, all but the newest `keep` steps (whose copies
        may still be in flight)."""
        cut = max(len(self._pending) - keep, 0)
        done, self._pending = self._pending[:cut], self._pending[cut:]
        for keys, positions, host, event, rows in done:
            if event is not None:
                event.synchronize()
            table = host.numpy() if hasattr(host, "numpy") else np.asarray(host)
            picked = table[rows] if rows is not None else table
            for key, pos, row in zip(keys, positions, picked, strict=True):
                self._rows.setdefault(key, {})[int(pos)] = np.asarray(row, dtype=np.float32)
        while len(self._rows) > self.max_keys:
            self._rows.pop(next(iter(self._rows)))
            self.dropped += 1

    def pop(self, keys: Sequence[str]) -> dict[str, dict[str, list[float]]]:
        """The stats of `keys` as {key: {"position": [...], field: [...]}}; forgets them."""
        with self._lock:
            self._flush()
            out: dict[str, dict[str, list[float]]] = {}
            for key in keys:
                rows = self._rows.pop(key, {})
                positions = sorted(rows)
                entry: dict[str, list[float]] = {"position": [float(p) for p in positions]}
                for j, name in enumerate(FIELDS):
                    entry[name] = [float(rows[p][j]) for p in positions]
                out[key] = entry
            return out

    def __len__(self) -> int:
        with self._lock:
            self._flush()
            return len(self._rows)


STORE = StatsStore()


class StatsWorkerExtension:
    """Mixed into vLLM's worker (`worker_extension_cls`); called via `collective_rpc`."""

    def ponder_pop_stats(self, keys: list[str]) -> dict[str, dict[str, list[float]]]:
        return STORE.pop(keys)

    def ponder_stats_count(self) -> int:
        """Requests whose stats the worker still holds (0 once every request was popped)."""
        return len(STORE)


def combine(
    raw_logprob: npt.NDArray[np.float32],
    stats: dict[str, list[float]],
    temperature: float,
) -> dict[str, npt.NDArray[np.float32]] | None:
    """Per-token arrays from the processor's stats and vLLM's raw sampled-token logprobs.

    logprob_processed = (z_t / T) - log_z_processed with z_t = raw logprob + lse. Returns None
    when positions are missing (the caller then falls back to the approximation)."""
    n = len(raw_logprob)
    if [int(p) for p in stats.get("position", [])][:n] != list(range(n)):
        return None
    lse = np.asarray(stats["lse"][:n], dtype=np.float64)
    log_z = np.asarray(stats["log_z_processed"][:n], dtype=np.float64)
    z_t = raw_logprob.astype(np.float64) + lse
    temperature = effective_temperature(temperature)
    if temperature > 0:
        lpp = z_t / temperature - log_z
    else:
        lpp = np.where(np.isclose(z_t, log_z, atol=1e-4), 0.0, -np.inf)
    return {
        "kl_uniform": np.asarray(stats["kl_uniform"][:n], dtype=np.float32),
        "entropy_processed": np.asarray(stats["entropy_processed"][:n], dtype=np.float32),
        "logprob_processed": np.minimum(lpp, 0.0).astype(np.float32),
    }


def approximate(
    top: Sequence[dict[int, float]],
    sampled: Sequence[int],
    vocab: int,
    temperature: float,
) -> dict[str, npt.NDArray[np.float32]]:
    """Per-token stats from top-k raw logprobs only (no logits): the mass outside the top k is
    spread evenly over the other V - k tokens. Not self-certainty proper (the unseen tail
    dominates the mean of log p); responses using it say `exact: false`."""
    kl, ent, lpp = [], [], []
    t = temperature if temperature > 0 else 1.0
    for pos, tok in enumerate(sampled):
        d = top[pos]
        lp = np.array(list(d.values()), dtype=np.float64)
        rest = max(vocab - lp.size, 0)
        tail = max(1.0 - float(np.exp(lp).sum()), 1e-12)
        tail_lp = math.log(tail / rest) if rest else -math.inf
        mean_logp = (lp.sum() + (rest * tail_lp if rest else 0.0)) / vocab
        kl.append(-math.log(vocab) - mean_logp)
        # processed distribution over the seen tokens plus `rest` equal tail tokens
        scaled = lp / t
        buckets = np.append(scaled, math.log(rest) + tail_lp / t) if rest else scaled
        log_z = float(np.logaddexp.reduce(buckets))
        q = np.exp(scaled - log_z)
        h = -float((q * (scaled - log_z)).sum())
        if rest:
            q_tail = math.exp(buckets[-1] - log_z)
            h -= q_tail * (tail_lp / t - log_z)
        ent.append(0.0 if temperature <= 0 else max(h, 0.0))
        own = d.get(tok)
        if temperature <= 0:
            lpp.append(0.0)
        else:
            lpp.append((own if own is not None else tail_lp) / t - log_z)
    return {
        "kl_uniform": np.asarray(kl, dtype=np.float32),
        "entropy_processed": np.asarray(ent, dtype=np.float32),
        "logprob_processed": np.minimum(np.asarray(lpp), 0.0).astype(np.float32),
    }
