"""Guidance and sampling (lpd_engine.sampling) against hand-worked values and distributions."""

import math

import numpy as np
import pytest

from lpd_engine.errors import InvalidSamplingError
from lpd_engine.sampling import SamplingParams, apply_guidance, guidance_weights, sample


def test_linear_and_constant_guidance_weights():
    p = SamplingParams(cfg=4.0)
    w = guidance_weights(p, np.array([0, 128, 255]), 256)
    assert w.dtype == np.float32
    np.testing.assert_array_equal(w, np.float32([1.0, 2.5, 1 + 3 * 255 / 256]))
    c = guidance_weights(SamplingParams(cfg=4.0, cfg_schedule="constant"), np.array([0, 9]), 256)
    np.testing.assert_array_equal(c, np.float32([4.0, 4.0]))


def test_apply_guidance_formula():
    cond = np.float32([[[1.0, 2.0]]])
    uncond = np.float32([[[0.5, -1.0]]])
    out = apply_guidance(cond, uncond, np.float32([3.0]))
    np.testing.assert_array_equal(out, np.float32([[[2.0, 8.0]]]))


def test_greedy_modes_take_first_maximum():
    logits = np.float32([[[0.1, 3.0, 3.0, -1.0]]])
    for p in (SamplingParams(temperature=0.0), SamplingParams(top_k=1, seed=5)):
        assert sample(logits, p, [0], [0])[0, 0] == 1


def _draws(logits, params, n):
    """n independent draws for one query: generation indices 0..n-1 give independent noise."""
    tiled = np.repeat(logits[None, None, :], n, axis=1)
    return sample(tiled, params, [0], np.arange(n))[0]


def test_sampling_matches_softmax_distribution():
    logits = np.float32([2.0, 1.0, 0.0, -1.0, 0.5])
    params = SamplingParams(temperature=1.3, seed=11)
    n = 20000
    counts = np.bincount(_draws(logits, params, n), minlength=5)
    p = np.exp(logits / 1.3) / np.exp(logits / 1.3).sum()
    chi2 = ((counts - n * p) ** 2 / (n * p)).sum()
    assert chi2 < 18.5  # 4 dof, p ~ 1e-3


def test_top_k_keeps_only_the_k_largest():
    logits = np.float32([0.0, 5.0, 4.0, 4.5, -2.0, 1.0])
    draws = _draws(logits, SamplingParams(top_k=2, temperature=5.0, seed=3), 3000)
    assert set(np.unique(draws)) == {1, 3}


def test_top_p_keeps_smallest_prefix_exceeding_p():
    # probabilities 0.5, 0.3, 0.15, 0.05 (indices 2, 0, 3, 1)
    probs = np.array([0.3, 0.05, 0.5, 0.15])
    logits = np.log(probs).astype(np.float32)
    assert set(np.unique(_draws(logits, SamplingParams(top_p=0.6, seed=1), 3000))) == {2, 0}
    assert set(np.unique(_draws(logits, SamplingParams(top_p=0.85, seed=1), 3000))) == {2, 0, 3}
    assert set(np.unique(_draws(logits, SamplingParams(top_p=0.4, seed=1), 500))) == {2}


def test_same_seed_same_tokens_different_seed_differs():
    logits = np.random.default_rng(0).normal(size=(3, 4, 50)).astype(np.float32)
    a = sample(logits, SamplingParams(seed=9), [0, 1, 2], [4, 5, 6, 7])
    b = sample(logits, SamplingParams(seed=9), [0, 1, 2], [4, 5, 6, 7])
    c = sample(logits, SamplingParams(seed=10), [0, 1, 2], [4, 5, 6, 7])
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # Row 1 alone, with its image index, gives the same tokens as inside the batch.
    assert np.array_equal(sample(logits[1:2], SamplingParams(seed=9), [1], [4, 5, 6, 7]), a[1:2])


@pytest.mark.parametrize("kwargs", [
    dict(cfg=math.nan), dict(cfg=math.inf), dict(cfg=-1.0), dict(cfg="4"),
    dict(temperature=-0.1), dict(temperature=math.nan),
    dict(top_k=-1), dict(top_k=2.5), dict(top_p=0.0), dict(top_p=1.5), dict(top_p=math.nan),
    dict(seed=-1), dict(seed=2**64), dict(seed=1.0), dict(cfg_schedule="cosine"),
])
def test_bad_parameters_raise_typed_error(kwargs):
    with pytest.raises(InvalidSamplingError):
        SamplingParams(**kwargs)
