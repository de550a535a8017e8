"""Per-token statistics and sampling over raw logits rows, in numpy (docs/strategies.md table).

Pure functions: a logits matrix (one row per live sequence) in, scalars per row out. The
llama.cpp engine calls them on every decode step; the vLLM logits processor mirrors the math.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ..types import SamplingParams

_NUCLEUS_START = 64


@dataclass
class RowStats:
    """Statistics of the distribution rows that produced one token per sequence."""

    token: npt.NDArray[np.int64]
    lse: npt.NDArray[np.float32]
    logprob: npt.NDArray[np.float32]
    kl_uniform: npt.NDArray[np.float32]
    logprob_processed: npt.NDArray[np.float32]
    entropy_processed: npt.NDArray[np.float32]


def raw_stats(logits: npt.NDArray[np.float32]) -> tuple[np.ndarray, np.ndarray]:
    """Per row: logsumexp(z) and KL(U || softmax z) = logsumexp(z) - mean(z) - log V (float32)."""
    z = np.asarray(logits, dtype=np.float32)
    zmax = z.max(axis=1, keepdims=True)
    lse = (zmax[:, 0] + np.log(np.exp(z - zmax).sum(axis=1, dtype=np.float32))).astype(np.float32)
    kl = lse - z.mean(axis=1, dtype=np.float32) - np.float32(np.log(z.shape[1]))
    return lse, kl.astype(np.float32)


def _nucleus(p: np.ndarray, top_p: float) -> np.ndarray:
    """Indices of the smallest set of most probable tokens whose mass reaches top_p."""
    k = min(_NUCLEUS_START, p.size)
    while True:
        idx = np.argpartition(-p, k - 1)[:k] if k < p.size else np.arange(p.size)
        idx = idx[np.argsort(-p[idx], kind="stable")]
        csum = np.cumsum(p[idx])
        if csum[-1] >= top_p or k >= p.size:
            cut = int(np.searchsorted(csum, top_p)) + 1
            return idx[: min(cut, idx.size)]
        k = min(k * 4, p.size)


def processed_distribution(
    row: npt.NDArray[np.float32], params: SamplingParams
) -> tuple[np.ndarray, np.ndarray]:
    """The distribution actually sampled from: temperature, then top-k, top-p, min-p.

    Returns (candidate token ids, their probabilities summing to 1). Greedy is the one-hot
    distribution on the arg-max.
    """
    if params.temperature <= 0:
        return np.array([int(np.argmax(row))]), np.ones(1, dtype=np.float64)
    z = row.astype(np.float64) / params.temperature
    ids: np.ndarray | None = None
    if 0 < params.top_k < z.size:
        ids = np.argpartition(-z, params.top_k - 1)[: params.top_k]
        z = z[ids]
    p = np.exp(z - z.max())
    p /= p.sum()
    if params.top_p < 1.0:
        keep = _nucleus(p, params.top_p)
        ids = keep if ids is None else ids[keep]
        p = p[keep]
    if params.min_p > 0.0:
        keep = np.nonzero(p >= params.min_p * p.max())[0]
        ids = keep if ids is None else ids[keep]
        p = p[keep]
    if ids is None:
        ids = np.arange(p.size)
    return ids, p / p.sum()


_BLOCK = 256


def _draw(weights: np.ndarray, u: float) -> int:
    """Inverse-CDF draw from unnormalized weights with u in [0, 1), in two levels (block sums,
    then one block) so a full-vocabulary float64 cumsum is not needed per token."""
    nb = weights.size // _BLOCK
    head = weights[: nb * _BLOCK].reshape(nb, _BLOCK).sum(axis=1, dtype=np.float64)
    sums = np.append(head, weights[nb * _BLOCK :].sum(dtype=np.float64))
    csum = np.cumsum(sums)
    target = u * csum[-1]
    b = min(int(np.searchsorted(csum, target, side="right")), sums.size - 1)
    while sums[b] <= 0 and b > 0:  # float rounding can land on an empty block
        b -= 1
    block = weights[b * _BLOCK : (b + 1) * _BLOCK].astype(np.float64)
    inner = np.cumsum(block)
    rest = target - (csum[b - 1] if b > 0 else 0.0)
    j = min(int(np.searchsorted(inner, rest, side="right")), block.size - 1)
    while block[j] <= 0 and j > 0:
        j -= 1
    return b * _BLOCK + j


def _is_plain(params: SamplingParams) -> bool:
    """Temperature only: no top-k / top-p / min-p truncation."""
    return params.top_k <= 0 and params.top_p >= 1.0 and params.min_p <= 0.0


BANNED = np.float32(-1e30)
"""The logit of a masked token: finite (so entropy sums have no inf * 0), yet exp() of it
relative to any real logit is 0 in float32, at any temperature down to 1e-6."""


def sample_rows(
    logits: npt.NDArray[np.float32],
    params: SamplingParams,
    rngs: list[np.random.Generator],
    banned: tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64]] | None = None,
    allowed: npt.NDArray[np.bool_] | None = None,
) -> RowStats:
    """Sample one token per row and record the four per-token stats of docs/strategies.md.

    Greedy and plain-temperature sampling (the common case) are vectorized over all rows;
    truncated sampling (top-k/top-p/min-p) builds each row's candidate set. `banned` (rows,
    token ids): those tokens are masked out of those rows' processed distribution (`min_tokens`);
    `allowed` (rows x vocabulary): only these tokens stay in it (a grammar's mask). The raw
    stats stay the model's own.
    """
    lse, kl = raw_stats(logits)
    raw = logits
    if allowed is not None:
        logits = np.where(allowed, logits, BANNED)  # float32 both: one new array
    if banned is not None and banned[0].any():
        logits = logits.copy() if logits is raw else logits
        logits[np.ix_(banned[0], banned[1])] = BANNED  # exp() is 0; no inf to make a nan
    m = logits.shape[0]
    rows = np.arange(m)
    if params.temperature <= 0:
        tokens = logits.argmax(axis=1).astype(np.int64)
        lp_proc = np.zeros(m, dtype=np.float32)
        ent = np.zeros(m, dtype=np.float32)
    elif _is_plain(params):
        zt = (logits - logits.max(axis=1, keepdims=True)) * np.float32(1.0 / params.temperature)
        et = np.exp(zt)
        total = et.sum(axis=1)
        # -sum q log q, with q = et / total and log q = zt - log(total)
        ent = np.maximum(np.log(total) - (et * zt).sum(axis=1) / total, 0.0).astype(np.float32)
        tokens = np.array([_draw(et[r], rngs[r].random()) for r in rows], dtype=np.int64)
        lp_proc = (zt[rows, tokens] - np.log(total)).astype(np.float32)
    else:
        tokens = np.empty(m, dtype=np.int64)
        lp_proc = np.empty(m, dtype=np.float32)
        ent = np.empty(m, dtype=np.float32)
        for r in range(m):
            ids, pq = processed_distribution(logits[r], params)
            j = 0
            if ids.size > 1:
                j = int(np.searchsorted(np.cumsum(pq), rngs[r].random() * pq.sum(), side="right"))
                j = min(j, ids.size - 1)
            tokens[r] = ids[j]
            lp_proc[r] = np.log(pq[j])
            nz = pq[pq > 0]
            ent[r] = max(0.0, float(-(nz * np.log(nz)).sum()))
    logprob = (raw[rows, tokens] - lse).astype(np.float32)
    return RowStats(tokens, lse, np.minimum(logprob, 0.0), kl, lp_proc, ent)


def token_confidence(
    logits: npt.NDArray[np.float32], lse: npt.NDArray[np.float32], k: int
) -> npt.NDArray[np.float32]:
    """DeepConf's token confidence per row: minus the mean raw logprob of the row's k most
    probable tokens (Fu et al. 2025; docs/strategies.md section 6)."""
    k = min(k, logits.shape[1])
    top = np.partition(logits, logits.shape[1] - k, axis=1)[:, -k:]
    mean = top.mean(axis=1, dtype=np.float64) - lse
    return np.maximum(-mean, 0.0).astype(np.float32)


def top_logprobs(row: npt.NDArray[np.float32], lse: float, k: int) -> list[tuple[int, float]]:
    """The k most probable tokens of a raw row with their raw logprobs, best first."""
    k = min(k, row.size)
    idx = np.argpartition(-row, k - 1)[:k]
    idx = idx[np.argsort(-row[idx], kind="stable")]
    return [(int(i), float(row[i] - lse)) for i in idx]


def score_rows(
    rows: npt.NDArray[np.float32], next_ids: list[int], k: int
) -> list[tuple[float, list[tuple[int, float]]]]:
    """Prompt scoring: row i's raw logprob of `next_ids[i]` (the token that followed it) and
    its top-k. Rows beyond `next_ids` (the prompt's last row predicts the first generated
    token) are not scored."""
    m = min(len(next_ids), rows.shape[0])
    if m == 0:
        return []
    lse, _ = raw_stats(rows[:m])
    out = []
    for i in range(m):
        lp = min(float(rows[i, next_ids[i]] - lse[i]), 0.0)
        top = top_logprobs(rows[i], float(lse[i]), k) if k > 0 else []
        # clamped alike, so a greedy token's logprob equals its top-1 value exactly
        out.append((lp, [(t, min(v, 0.0)) for t, v in top]))
    return out
