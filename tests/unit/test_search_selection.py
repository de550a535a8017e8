"""Step-level search's pure parts (issue 28): log-weights, softmax with a temperature,
multinomial resampling that a seed fixes, the top-k of scores, the weighted vote and the beam
decision, and the settings refused before any work."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from ponder.answers import AnswerSpec
from ponder.errors import InvalidRequest, UnsupportedRequest
from ponder.strategies import AdaptiveOptions, SelectOptions
from ponder.strategies.search import (
    BeamOptions,
    ParticlesOptions,
    beam_decision,
    beam_width,
    log_weight,
    resample,
    softmax,
    top,
    weighted_vote,
)
from ponder.strategies.search_run import BEAM, PARTICLES
from ponder.types import Sample

pytestmark = pytest.mark.unit

NUM = SelectOptions(answer=AnswerSpec("number"))


def sample(i: int, text: str) -> Sample:
    z = np.zeros(1, dtype=np.float32)
    return Sample(i, text, [1], "stop", z, z, z, z)


def test_log_weights() -> None:
    assert log_weight(0.5, "verify") == 0.0
    assert log_weight(0.9, "verify") == pytest.approx(math.log(9))
    assert log_weight(1.0, "verify") == pytest.approx(math.log((1 - 1e-7) / 1e-7))
    assert log_weight(3.25, "self_certainty") == 3.25  # already log-scale
    assert log_weight(None, "verify") == -math.inf


def test_softmax_with_a_temperature() -> None:
    w = softmax([0.0, math.log(3)])
    assert w == pytest.approx([0.25, 0.75])
    hot = softmax([0.0, math.log(3)], temperature=100.0)
    assert hot[1] - hot[0] < 0.01  # a high temperature flattens
    assert softmax([-math.inf, -math.inf]) == [0.5, 0.5]  # nothing scored: uniform
    assert softmax([-math.inf, 1.0]) == [0.0, 1.0]


def test_resampling_follows_the_weights_and_the_seed() -> None:
    a = resample([0.1, 0.9], 1000, np.random.default_rng(3))
    b = resample([0.1, 0.9], 1000, np.random.default_rng(3))
    assert a == b and a == sorted(a)
    assert 850 < a.count(1) < 950
    assert resample([0.0, 1.0, 0.0], 5, np.random.default_rng(0)) == [1] * 5


def test_top_puts_unscored_last_and_keeps_ties_in_order() -> None:
    assert top([0.2, None, 0.9, 0.2], 3) == [2, 0, 3]
    assert top([None, 0.1], 2) == [1, 0]


def test_weighted_vote() -> None:
    samples = [sample(0, "so 8"), sample(1, "it is 3"), sample(2, "8 apples")]
    d = weighted_vote("particles", samples, NUM, [0.2, 0.5, 0.3])
    assert d.answer == "8" and d.confidence == pytest.approx(0.5)
    assert d.chosen == 2  # the heaviest member of the winning answer
    d = weighted_vote("particles", samples, NUM, [0.1, 0.8, 0.1])
    assert d.answer == "3" and d.confidence == pytest.approx(0.8)
    none = weighted_vote("particles", [sample(0, "no"), sample(1, "idea")], NUM, [0.4, 0.6])
    assert none.answer is None and none.chosen == 1 and none.confidence == 0.0


def test_beam_decision_by_score_and_by_vote() -> None:
    samples = [sample(0, "8"), sample(1, "8"), sample(2, "3")]
    by_score = beam_decision("beam", samples, NUM, [0.1, 0.2, 0.7], "score")
    assert by_score.chosen == 2 and by_score.answer == "3"
    assert by_score.confidence == pytest.approx(1 / 3)
    assert by_score.tally[0].answer == "3" and by_score.ranking[0] == 2
    by_vote = beam_decision("beam", samples, NUM, [0.1, 0.2, 0.7], "vote")
    assert by_vote.answer == "8" and by_vote.confidence == pytest.approx(2 / 3)


def test_beam_width_defaults() -> None:
    assert beam_width(BeamOptions(), 8) == 2 and beam_width(BeamOptions(), 5) == 1
    assert beam_width(BeamOptions(beams=4), 8) == 4


def test_settings_refused_before_any_work() -> None:
    with pytest.raises(InvalidRequest) as e:
        BEAM.check(SelectOptions(own=BeamOptions(beams=3)), 8)
    assert e.value.param == "ponder.beam.beams"
    with pytest.raises(InvalidRequest) as e:
        BEAM.check(SelectOptions(own=BeamOptions(beams=2, expand=3)), 8)
    assert e.value.param == "ponder.beam.expand"
    with pytest.raises(InvalidRequest) as e:
        PARTICLES.check(SelectOptions(own=ParticlesOptions(verifier="judge")), 4)
    assert e.value.param == "ponder.particles.verifier"
    with pytest.raises(UnsupportedRequest):
        PARTICLES.check(SelectOptions(adaptive=AdaptiveOptions()), 4)
    with pytest.raises(UnsupportedRequest):  # nothing to vote on
        PARTICLES.check(SelectOptions(answer=AnswerSpec("none")), 4)
    for bad in ({"delimiter": ""}, {"delimiter": "x" * 17}, {"max_steps": 65}, {"temperature": 0}):
        with pytest.raises(ValidationError):
            ParticlesOptions(**bad)


def test_the_token_bound_covers_every_step() -> None:
    opts = SelectOptions(own=BeamOptions(max_steps=10, max_step_tokens=50))
    # 8 candidates x 10 steps x 50 tokens, beyond the 8 x 100 of the samples' own budget
    assert BEAM.followup_tokens(opts, 8, 100) == 8 * 10 * 50 - 8 * 100
    verify = SelectOptions(own=BeamOptions(max_steps=10, max_step_tokens=50, scorer="verify"))
    assert BEAM.followup_tokens(verify, 8, 100) == 8 * 10 * 50 - 8 * 100 + 8 * 10
    assert BEAM.progress_total(opts, 8) == 10
