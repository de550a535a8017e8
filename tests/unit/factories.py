"""Build plain Sample objects for pure unit tests of selection."""

from __future__ import annotations

import numpy as np

from ponder.types import Sample


def make_sample(
    index: int, text: str, logprobs: list[float] | None = None, kl: list[float] | None = None
) -> Sample:
    lp = np.asarray(logprobs if logprobs is not None else [-1.0, -1.0], dtype=np.float32)
    klu = np.asarray(kl if kl is not None else [1.0] * len(lp), dtype=np.float32)
    n = len(lp)
    return Sample(
        index=index,
        text=text,
        token_ids=list(range(n)),
        finish_reason="stop",
        logprob=lp,
        kl_uniform=klu,
        logprob_processed=lp.copy(),
        entropy_processed=np.zeros(n, dtype=np.float32),
        tokens_text=["t"] * n,
    )


def make_samples(texts: list[str], mean_logprobs: list[float] | None = None) -> list[Sample]:
    mls = mean_logprobs or [-1.0] * len(texts)
    return [make_sample(i, t, [m, m]) for i, (t, m) in enumerate(zip(texts, mls, strict=True))]
