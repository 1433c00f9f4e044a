"""The optional torch backend agrees with numpy (CPU) to 1e-8."""

import numpy as np
import pytest

import theorycheck
from theorycheck.corpus.synthetic import synthetic
from theorycheck.train import TrainConfig, train

torch = pytest.importorskip("torch", reason="torch is an optional extra: pip install 'theorycheck[torch]'")


@pytest.mark.parametrize("embeddings", ["orthonormal", "unit-norm"])
@pytest.mark.parametrize("optimizer,lr,width", [("gd", 0.5, None), ("ngd", 0.01, None), ("adam", 0.01, None), ("gd", 0.5, 3)])
def test_torch_cpu_matches_numpy(embeddings, optimizer, lr, width):
    pred = theorycheck.analyze(synthetic(n=6, T=4, K=6, d=8, embeddings=embeddings, graphs="cyclic", seed=1), radii=None)
    cfg = TrainConfig(optimizer=optimizer, lr=lr, steps=300, factorized_width=width, seed=2)
    a = train(pred.stats, pred.score_map, pred.orthonormal, cfg)
    b = train(pred.stats, pred.score_map, pred.orthonormal, TrainConfig(**{**cfg.__dict__, "backend": "torch", "device": "cpu"}))
    assert a.parametrization == b.parametrization
    np.testing.assert_allclose(b.W, a.W, atol=1e-8, rtol=0)
