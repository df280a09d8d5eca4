"""Tests of fcn_captcha.input_pipeline: batches against NumPy targets, augmentation
moving centers with the image, the synthetic share and padding (CPU, tiny config)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fcn_captcha.config import tiny
from fcn_captcha.dataset import generate_arrays
from fcn_captcha.input_pipeline import FAR, augment, make_batch, to_device
from fcn_captcha.targets import render_center_maps

# the tiny config of test_training, shrunk (no augmentation unless a test turns it on)
CFG = tiny().replace(train_size=32, val_size=8, calib_size=8, batch_size=4, stage_runs=(3, 2, 1),
                     stage_epochs=(1, 1, 1), log_every=1, checkpoint_every=2, shift=0.0, scale=0.0, rotate=0.0)


@pytest.fixture(scope="module")
def small_data():
    return generate_arrays(CFG, 6, seed=99, workers=1)


def test_make_batch_targets_match_numpy(small_data):
    data = to_device(small_data, CFG)
    aug_cfg = CFG.replace(shift=3.0)  # augmentation on in the config, off in the call
    x, y = jax.jit(lambda k, d: make_batch(d, k, aug_cfg, augmented=False))(jax.random.key(3), data)
    x, y = np.asarray(x), np.asarray(y)
    assert x.shape == (CFG.batch_size, CFG.height, CFG.width, 1) and x.dtype == np.float32
    assert y.shape == (CFG.batch_size, CFG.out_height, CFG.out_width, CFG.num_classes)
    images = small_data.images.astype(np.float32) / 255.0
    for b in range(CFG.batch_size):
        i = int(np.argmin(np.abs(images - x[b, ..., 0]).sum(axis=(1, 2))))
        np.testing.assert_allclose(x[b, ..., 0], images[i], atol=1e-6)
        text = small_data.texts[i]
        want = render_center_maps(small_data.centers[i, :len(text)], text, CFG.alphabet,
                                  (CFG.out_height, CFG.out_width), CFG.stride, (CFG.sigma_x, CFG.sigma_y))
        np.testing.assert_allclose(y[b], want, atol=1e-5)


def _blob(cfg):
    """Pixel grids, and one bright Gaussian blob at (40, 14) on a canvas of ``cfg``'s size."""
    ys, xs = np.mgrid[0:cfg.height, 0:cfg.width]
    cx, cy = 40.0, 14.0
    return xs, ys, cx, cy, np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * 1.5 ** 2)).astype(np.float32)


def test_augment_moves_centers_with_the_image():
    # one bright Gaussian blob at a known center: after augmentation its intensity
    # centroid is where the returned center says
    cfg = CFG.replace(shift=3.0, scale=0.1, rotate=10.0)
    xs, ys, cx, cy, image = _blob(cfg)
    centers = np.array([[cx, cy], [FAR, FAR]], np.float32)
    aug = jax.jit(lambda k, im, c: augment(k, im, c, cfg))
    moved_any = False
    for seed in range(4):
        out, moved = (np.asarray(a) for a in aug(jax.random.key(seed), jnp.asarray(image), jnp.asarray(centers)))
        centroid = np.array([(out * xs).sum(), (out * ys).sum()]) / out.sum()
        np.testing.assert_allclose(moved[0], centroid, atol=0.2)
        assert np.array_equal(moved[1], [FAR, FAR])  # absent characters stay absent
        moved_any |= bool(np.abs(moved[0] - [cx, cy]).max() > 0.5)
    assert moved_any


def test_augment_stretch_moves_centers_and_contrast_noise_stay_in_range():
    cfg = CFG.replace(shift=2.0, scale=0.05, rotate=5.0, stretch=0.2, contrast=0.3, noise=0.05)
    xs, ys, cx, cy, image = _blob(cfg)
    centers = np.array([[cx, cy]], np.float32)
    geo = jax.jit(lambda k, im, c: augment(k, im, c, cfg.replace(contrast=0.0, noise=0.0)))
    full = jax.jit(lambda k, im, c: augment(k, im, c, cfg))
    for seed in range(3):
        out, moved = (np.asarray(a) for a in geo(jax.random.key(seed), jnp.asarray(image), jnp.asarray(centers)))
        centroid = np.array([(out * xs).sum(), (out * ys).sum()]) / out.sum()
        np.testing.assert_allclose(moved[0], centroid, atol=0.25)
        out2, moved2 = (np.asarray(a) for a in full(jax.random.key(seed), jnp.asarray(image), jnp.asarray(centers)))
        np.testing.assert_array_equal(moved2, moved)  # photometric changes do not move centers
        assert out2.min() >= 0.0 and out2.max() <= 1.0 and not np.allclose(out2, out)


def test_augment_warp_moves_centers_with_the_image_and_thickness_changes_ink_only():
    # the elastic warp moves a blob and its center together (to within the field's
    # linearisation); the stroke-width blend changes the ink, never the centers
    cfg = CFG.replace(shift=0.0, scale=0.0, rotate=0.0, warp=3.0)
    xs, ys, cx, cy, image = _blob(cfg)
    centers = np.array([[cx, cy], [FAR, FAR]], np.float32)
    warp = jax.jit(lambda k, im, c: augment(k, im, c, cfg))
    thick = jax.jit(lambda k, im, c: augment(k, im, c, cfg.replace(thickness=1.0)))
    moves = []
    for seed in range(4):
        out, moved = (np.asarray(a) for a in warp(jax.random.key(seed), jnp.asarray(image), jnp.asarray(centers)))
        centroid = np.array([(out * xs).sum(), (out * ys).sum()]) / out.sum()
        np.testing.assert_allclose(moved[0], centroid, atol=0.3)
        assert np.array_equal(moved[1], [FAR, FAR])
        moves.append(np.abs(moved[0] - [cx, cy]).max())
        out2, moved2 = (np.asarray(a) for a in thick(jax.random.key(seed), jnp.asarray(image), jnp.asarray(centers)))
        np.testing.assert_array_equal(moved2, moved)
        assert not np.allclose(out2, out) and out2.min() >= 0.0 and out2.max() <= 1.0 + 1e-6
    assert max(moves) > 0.5 and max(moves) <= 3.0 + 1e-4


def test_make_batch_mixes_synthetic_share_and_never_draws_padding(small_data):
    other = generate_arrays(CFG, 6, seed=7, workers=1)
    cfg = CFG.replace(batch_size=8, synth_mix=0.25)
    data = to_device(small_data.subset([0, 1]), cfg, other, pad_to=5)
    assert data.images.shape[0] == 2 + 3 + 6 and int(data.n_main) == 2 and int(data.syn_start) == 5
    main = small_data.images[:2].astype(np.float32) / 255
    syn = other.images.astype(np.float32) / 255
    for seed in range(5):
        x, _ = make_batch(data, jax.random.key(seed), cfg, augmented=False)
        x = np.asarray(x)[..., 0]
        src = [("main" if np.abs(main - im).sum(axis=(1, 2)).min() < 1e-3 else
                "syn" if np.abs(syn - im).sum(axis=(1, 2)).min() < 1e-3 else "other") for im in x]
        assert src == ["main"] * 6 + ["syn"] * 2
