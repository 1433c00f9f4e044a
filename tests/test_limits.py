"""theorycheck.limits: the remaining-distance bound covers the true distance to the limit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from theorycheck.limits import remaining_distance, validated_remainder
from theorycheck.train import checkpoint_steps

STEPS = checkpoint_steps(20_000, 40)[1:].astype(float)


@settings(max_examples=150, deadline=None)
@given(p=st.floats(0.3, 2.5), b=st.floats(1e-2, 1e3), limit=st.floats(-10, 10),
       sign=st.sampled_from([-1.0, 1.0]))
def test_bound_covers_a_power_law_approach(p, b, limit, sign):
    """x(t) = x_inf + b t^-p from either side (the model of the module docstring): the bound
    at the last checkpoint is at least the true remaining distance |x_K - x_inf|."""
    x = limit + sign * b * STEPS ** -p
    r = remaining_distance(STEPS, np.abs(x[:-1] - x[-1]), scale=max(1.0, abs(limit)))
    true = abs(x[-1] - limit)
    assert r.located and r.bound >= true


@pytest.mark.parametrize("p", [0.5, 1.0, 2.0])
def test_bound_is_not_wildly_loose(p):
    x = 5.0 * STEPS ** -p
    r = remaining_distance(STEPS, np.abs(x[:-1] - x[-1]))
    assert x[-1] <= r.bound <= 5 * x[-1]


def test_non_decaying_or_stopped_sequences():
    growing = np.log(STEPS)  # no limit
    assert not remaining_distance(STEPS, np.abs(growing[:-1] - growing[-1])).located
    assert remaining_distance(STEPS, np.zeros(STEPS.size - 1)).bound == 0.0  # stopped exactly
    assert not remaining_distance(STEPS[:3], [1.0, 0.5]).located  # too few points
    with pytest.raises(ValueError):
        remaining_distance(STEPS, [1.0])


def test_backtest_rejects_a_sequence_that_turns_into_a_new_regime():
    """A plateau that suddenly starts to drop: the bound fitted on the plateau is refuted by
    the later movement, so the limit is not located."""
    x = np.where(STEPS < 17_000, 1.0 + 1e-3 / STEPS, 1.0 - 0.3 * (STEPS - 17_000) / 3000)
    r = validated_remainder(STEPS, lambda a, b: abs(float(x[a] - x[b])))
    assert not r.located
    smooth = 1.0 / STEPS
    assert validated_remainder(STEPS, lambda a, b: abs(float(smooth[a] - smooth[b]))).located


def test_a_sequence_that_settles_inside_the_window_is_located_at_the_floor():
    # split-ngd's increments become exactly parallel: the distances to the last point drop to 0.
    from theorycheck.limits import remaining_distance

    clock = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]
    settled = remaining_distance(clock, [1e-2, 1e-3, 1e-4, 1e-5, 2e-7, 0.0], negligible=1e-6)
    assert settled.located and settled.bound == 1e-6
    # one of the last two still moving: nothing to fit through the exact zero, not located
    moving = remaining_distance(clock, [1e-2, 1e-3, 1e-4, 1e-5, 5e-6, 0.0], negligible=1e-6)
    assert not moving.located
