"""theorycheck.runtime: the collector pause and the one-thread OpenBLAS block restore what they
changed, also when blocks in two threads overlap (the path thread beside W^fin in analyze)."""

from __future__ import annotations

import gc
import threading

import numpy as np
import pytest

from theorycheck.runtime import openblas_thread_setters, paused_gc, single_threaded_blas


def overlapping(context, inside_both, inside_second_only):
    """Thread A enters, thread B enters, A leaves, B checks, B leaves (the order a path thread
    and W^fin's solver can take); returns what the checks saw."""
    seen = {}
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

    def first():
        with context():
            a_in.set()
            b_in.wait(5)
            seen["both"] = inside_both()
        a_out.set()

    def second():
        a_in.wait(5)
        with context():
            b_in.set()
            a_out.wait(5)
            seen["second only"] = inside_second_only()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return seen


def test_paused_gc_restores_the_collector_and_holds_while_any_thread_is_inside():
    assert gc.isenabled()
    seen = overlapping(paused_gc, lambda: gc.isenabled(), lambda: gc.isenabled())
    assert seen == {"both": False, "second only": False}
    assert gc.isenabled()
    gc.disable()
    try:  # a collector that was off stays off
        with paused_gc():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_single_threaded_blas_restores_the_thread_count():
    setters = openblas_thread_setters()
    if not setters:
        pytest.skip("no OpenBLAS loaded in this process")
    for _, set_ in setters:  # a count above one, so that a missed restore shows
        set_(2)
    try:
        before = [get() for get, _ in setters]
        with single_threaded_blas():
            assert all(get() == 1 for get, _ in setters)
            A = np.random.default_rng(0).normal(size=(200, 200)) + 200 * np.eye(200)
            x = np.linalg.solve(A, np.ones(200))
        assert [get() for get, _ in setters] == before
        np.testing.assert_allclose(A @ x, np.ones(200), atol=1e-12)
        # overlapping blocks: one thread until the last leaves, then the count from before the first
        one_thread = lambda: all(get() == 1 for get, _ in setters)  # noqa: E731
        assert overlapping(single_threaded_blas, one_thread, one_thread) == {"both": True, "second only": True}
        assert [get() for get, _ in setters] == before
    finally:
        for _, set_ in setters:
            set_(before[0] if before else 1)
