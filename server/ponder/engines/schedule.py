"""How a decode step is shared while several requests decode (pure: no llama.cpp, no state
but the fitted cost): `StepCost` learns how a decode call's time grows with its rows, and
`quotas` divides a step's rows among the requests so that no step costs more than
LATENCY_FACTOR times what the smallest request's rows would cost alone."""

from __future__ import annotations

FA_QUERY_TILE = 64
"""llama.cpp's CPU flash attention (ggml-cpu ops.cpp, GGML_FA_TILE_Q in llama-cpp-python
0.3.36) runs calls of this many query rows or more through a tiled kernel, which sums each
64-cell tile of the shared cache at once: its rounding then depends on which tiles a
sequence's cells share with other sequences. Calls below it take the per-row kernel, which
reads a row's own cells one by one and skips every other sequence's exactly."""
DECODE_ROWS = FA_QUERY_TILE - 1
"""Most rows one llama_decode of a decode step carries (more are split into calls)."""
LATENCY_FACTOR = 2.5
"""While several requests decode, a step may cost at most this many times what the smallest
one's rows would cost alone (`quotas`): a short request beside a large one stays within about
3x its solo latency, prefill included."""


class StepCost:
    """How a decode call's seconds grow with its rows, t(k) = a + b·k, fitted online by least
    squares over an exponentially weighted history of decode calls. Until the calls have
    varied enough to fit, t(k) is taken as proportional to k + 1 (what this project's CPU
    measures: ~15 ms + ~15 ms per row on one thread)."""

    def __init__(self, decay: float = 0.99) -> None:
        self.decay = decay
        self._w = self._k = self._t = self._kk = self._kt = 0.0

    def observe(self, rows: int, seconds: float) -> None:
        d = self.decay
        self._w = self._w * d + 1.0
        self._k = self._k * d + rows
        self._t = self._t * d + seconds
        self._kk = self._kk * d + rows * rows
        self._kt = self._kt * d + rows * seconds

    def fit(self) -> tuple[float, float]:
        """(a, b) of t(k) = a + b·k; (1, 1) until there is a fit."""
        w = self._w
        if w < 4:
            return 1.0, 1.0
        mk, mt = self._k / w, self._t / w
        var = self._kk / w - mk * mk
        if var < 0.25:  # calls of (nearly) one size: no slope to fit
            return 1.0, 1.0
        b = (self._kt / w - mk * mt) / var
        a = mt - b * mk
        if b <= 0:
            return 1.0, 0.0
        return max(a, 0.0), b

    def rows_within(self, factor: float, rows: int) -> int:
        """The most rows a call may carry while costing at most `factor` times a call of
        `rows` rows."""
        a, b = self.fit()
        if b <= 0:
            return DECODE_ROWS
        return max(rows, min(DECODE_ROWS, int((factor * (a + b * rows) - a) / b + 1e-9)))


def quotas(demand: dict[int, int], cost: StepCost) -> dict[int, int]:
    """Rows per request for one step, from the rows each wants. One request takes them all.
    Several share a budget: the most rows a step may carry while costing at most
    LATENCY_FACTOR times the smallest request's rows alone (at least one row each), divided
    max-min fairly (a request wanting less than an equal part leaves the rest to the others)."""
    if len(demand) <= 1:
        return dict(demand)
    budget = max(len(demand), cost.rows_within(LATENCY_FACTOR, min(demand.values())))
    out: dict[int, int] = {}
    left = budget
    order = sorted(demand, key=lambda k: demand[k])
    for i, key in enumerate(order):
        give = max(1, min(demand[key], left // (len(order) - i)))
        out[key] = give
        left -= give
    return out
