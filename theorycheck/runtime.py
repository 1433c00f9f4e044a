"""Process-wide runtime settings for bulk work: CPython's cyclic garbage collector and
OpenBLAS's thread count, each switched by a context manager that is safe to enter from several
threads at once (``analyze`` traces the regularization path in a thread beside W^fin and the
Graph-SVM): the first entry changes the setting, the last exit restores it.

* :func:`paused_gc`: building millions of small lists (the per-query SCC lists of
  results.json, the corpus's token lists) triggers a generation-2 collection again and again,
  each scanning everything built so far: query_details at V = 2,000 / T = 32 takes 2.6 s with
  the collector on and 0.66 s with it paused.  The structures built there hold no reference
  cycles, so nothing is deferred that a collection would have freed.
* :func:`single_threaded_blas`: many small LAPACK calls or short dot products (the W^fin block
  solves, CG, the SVM's dual steps): OpenBLAS's threads spin and wait on a busy 2-core machine
  (a 132×132 solve took 94 ms with its threads under load, 0.12 ms with one).  A no-op where
  no OpenBLAS is loaded.
"""

from __future__ import annotations

import ctypes
import gc
import threading
from contextlib import contextmanager

_lock = threading.Lock()
_gc_pauses = 0
_gc_was_enabled = False
_blas_pauses = 0
_blas_saved: list[tuple] = []


@contextmanager
def paused_gc():
    """The cyclic collector disabled inside the block (in every thread: it is process-wide)."""
    global _gc_pauses, _gc_was_enabled
    with _lock:
        if _gc_pauses == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _lock:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_was_enabled:
                gc.enable()


def openblas_thread_setters() -> list[tuple]:
    """(get, set) thread-count functions of every OpenBLAS loaded in this process (numpy's and
    scipy's own copies), found through /proc/self/maps (Linux; elsewhere none)."""
    found: list[tuple] = []
    try:
        with open("/proc/self/maps", encoding="utf-8") as fh:
            mapped = {line.split()[-1] for line in fh if len(line.split()) >= 6}
    except OSError:
        return found
    paths = sorted(p for p in mapped if "openblas" in p.rsplit("/", 1)[-1].lower() and ".so" in p)
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_openblas", "openblas"):
            for suffix in ("64_", ""):
                get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                set_ = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                if get is not None and set_ is not None:
                    found.append((get, set_))
                    break
            else:
                continue
            break
    return found


@contextmanager
def single_threaded_blas():
    """OpenBLAS on one thread inside the block (process-wide); its thread counts restored
    when the last block, in any thread, ends.  The libraries are looked up at each outermost
    entry (about 1 ms): scipy's own OpenBLAS may be loaded after numpy's."""
    global _blas_pauses, _blas_saved
    with _lock:
        if _blas_pauses == 0:
            _blas_saved = [(set_, get()) for get, set_ in openblas_thread_setters()]
        for set_, _ in _blas_saved:  # at every entry: one thread inside, whatever happened meanwhile
            set_(1)
        _blas_pauses += 1
    try:
        yield
    finally:
        with _lock:
            _blas_pauses -= 1
            if _blas_pauses == 0:
                for set_, n in _blas_saved:
                    set_(n)
