"""Tests of fcn_captcha.batching: one chunk shape, padding values, and bad arguments."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fcn_captcha.batching import fixed_chunks


def test_every_chunk_has_one_shape_and_the_real_rows_come_back_in_order():
    x = np.arange(10 * 3).reshape(10, 3)
    chunks = list(fixed_chunks([x], 4))
    assert [n for n, _ in chunks] == [4, 4, 2]
    assert {c[0].shape for _, c in chunks} == {(4, 3)}
    np.testing.assert_array_equal(np.concatenate([c[0][:n] for n, c in chunks]), x)
    np.testing.assert_array_equal(chunks[-1][1][0][2:], 0)


def test_fewer_rows_than_the_size_give_one_unpadded_chunk():
    (n, (c,)), = fixed_chunks([np.ones((3, 2))], 64)
    assert n == 3 and c.shape == (3, 2)
    assert list(fixed_chunks([np.ones((0, 2))], 8)) == []


def test_fills_per_array_and_jax_arrays_stay_jax():
    a, b = jnp.arange(5.0), jnp.zeros((5, 2), jnp.int32)
    *_, (n, (ca, cb)) = fixed_chunks([a, b], 3, fills=[-1.0, 7])
    assert n == 2 and isinstance(ca, jax.Array) and isinstance(cb, jax.Array)
    assert ca.tolist() == [3.0, 4.0, -1.0] and cb[2].tolist() == [7, 7]


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="at least 1"):
        list(fixed_chunks([np.ones(3)], 0))
    with pytest.raises(ValueError, match="different lengths"):
        list(fixed_chunks([np.ones(3), np.ones(4)], 2))
