"""Tests of fcn_captcha.prior: the shipped generic prior moved onto a scheme."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from fcn_captcha.config import Config
from fcn_captcha.dataset import generate_arrays
from fcn_captcha.model import build_model
from fcn_captcha.prior import check_prior_loss, load_prior, prior_centers, scheme_maps, transfer


def test_shipped_priors_load():
    for arch in ("cpu", "wide"):
        m, pcfg = load_prior(Config(arch=arch))
        assert pcfg.arch == arch and len(pcfg.alphabet) == 62
    assert load_prior(Config(arch="tiny")) is None


def test_transfer_copies_known_maps_exactly():
    prior_cfg = Config(alphabet="0123456789abc", arch="tiny")
    prior = build_model(prior_cfg, seed=1)
    cfg = Config(alphabet="9ab@", arch="tiny", width=64, height=32)
    model, known = transfer(prior, prior_cfg, cfg, seed=2)
    assert known == "9ab"
    x = jnp.asarray(np.random.default_rng(0).random((2, 32, 64, 1)), jnp.float32)
    a, b = np.asarray(prior(x)), np.asarray(model(x))
    np.testing.assert_allclose(b[..., :3], a[..., [9, 10, 11]], atol=1e-6)
    fresh = build_model(cfg, seed=2).head.kernel.value[..., 3]  # '@' is new: its fresh initialisation
    np.testing.assert_array_equal(np.asarray(model.head.kernel.value[..., 3]), np.asarray(fresh))
    with pytest.raises(ValueError, match="architecture"):
        transfer(prior, prior_cfg, cfg.replace(arch="cpu"))
    with pytest.raises(ValueError, match="trained with the 'mse' loss, this run has 'focal'"):
        transfer(prior, prior_cfg, cfg.replace(loss="focal"))


def test_a_loss_the_shipped_prior_was_not_trained_with_is_refused():
    """A focal-loss fit from the MSE prior read 0% (one H100): refused, naming the way out."""
    for arch in ("wide", "cpu"):
        check_prior_loss(arch, "mse")
        with pytest.raises(ValueError, match=f"prior of the '{arch}' network .* 'mse' loss.*--no-prior"):
            check_prior_loss(arch, "focal")
    check_prior_loss("tiny", "focal")  # no prior ships for it: nothing to refuse


def test_scheme_maps_case_and_unknown():
    pm = np.random.default_rng(0).random((1, 2, 3, 4)).astype(np.float32)  # prior symbols "aAbB"
    out = scheme_maps(pm, "aAbB", "AbB#")
    np.testing.assert_array_equal(out[..., 0], np.maximum(pm[..., 1], pm[..., 0]))  # 'a' is not in the scheme
    np.testing.assert_array_equal(out[..., 1], pm[..., 2])  # both cases in the scheme: its own map
    np.testing.assert_array_equal(out[..., 3], pm.max(-1))  # unknown: any character


def test_prior_centers_within_2px_on_plain_library():
    """Centers from strings alone (the prior's forced alignment): most within 2 px across of the
    generator's exact ones (the ink profile alone placed 49% there, weak.py's doc)."""
    cfg = Config(alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", arch="cpu", width=160, height=60,
                 min_length=4, max_length=4)
    ds = generate_arrays(cfg, 24, seed=5, workers=1)
    m, pcfg = load_prior(cfg)
    c = prior_centers(m, pcfg, cfg, ds)
    assert c.shape == ds.centers.shape
    assert np.nanmean(np.abs(c - ds.centers)[..., 0] < 2.0) >= 0.65


def test_start_for_gives_the_prior_with_its_own_or_the_ink_centers():
    """``centers="ink"``: the same transferred network as the prior start, the ink profile's
    centers instead of the prior's alignment; no prior for the network: a fresh one and the ink."""
    from fcn_captcha.prior import start_for
    from fcn_captcha.weak import initial_centers

    cfg = Config(alphabet="0123456789", arch="cpu", width=96, height=40, min_length=3, max_length=3,
                 font_sizes=(28, 32))
    ds = generate_arrays(cfg, 6, seed=2, workers=1)
    m_p, c_p, r_p = start_for(cfg, ds)
    m_i, c_i, r_i = start_for(cfg, ds, centers="ink")
    assert r_p["from"] == "generic prior" and r_i["from"] == "generic prior, ink-profile centers"
    assert r_i["symbols_known"] == "0123456789"
    x = jnp.asarray(ds.images[:2, ..., None], jnp.float32) / 255.0
    np.testing.assert_array_equal(np.asarray(m_p(x)), np.asarray(m_i(x)))
    np.testing.assert_array_equal(c_i, initial_centers(ds))
    assert not np.array_equal(c_p, c_i)
    _, c_t, r_t = start_for(cfg.replace(arch="tiny"), ds, centers="ink")
    assert r_t["from"] == "ink profile" and np.array_equal(c_t, c_i)
    with pytest.raises(ValueError, match="centers"):
        start_for(cfg, ds, centers="ctc")
