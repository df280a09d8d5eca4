"""Tests of fcn_captcha.checkpoint: trainer checkpoints, model directories, shipped models.

Round trips compare arrays bit for bit. A corrupt, truncated or incompatible checkpoint
must be a :class:`CheckpointError` naming the folder, never a silent load. The shipped
models in ``fcn_captcha/pretrained`` were saved on a GPU machine (Python 3.12, jax 0.11.2,
a newer Orbax): loading them here is the cross-version fixture test, checked by reading
freshly generated captchas of their suites.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fcn_captcha.checkpoint import MODEL_FORMAT, CheckpointError, TrainCheckpointer, load_model, read_model_meta, \
    save_model
from fcn_captcha.config import tiny
from fcn_captcha.dataset import generate_arrays
from fcn_captcha.decoder import decode
from fcn_captcha.detector import PRETRAINED_DIR, pretrained_names
from fcn_captcha.model import build_model, count_params

_apply = jax.jit(lambda graphdef, state, x: nnx.merge(graphdef, state)(x), static_argnums=0)


def run(model, images) -> np.ndarray:
    """Maps of uint8 ``[N, H, W]`` images through one jitted call."""
    graphdef, state = nnx.split(model)
    return np.asarray(_apply(graphdef, state, jnp.asarray(images, jnp.float32)[..., None] / 255.0))


def numpy_model(config, seed: int = 0):
    """The config's network with random NumPy parameters (no JAX initialiser to compile)."""
    graphdef, state = nnx.split(nnx.eval_shape(lambda: build_model(config)))
    rng = np.random.default_rng(seed)
    return nnx.merge(graphdef, jax.tree.map(lambda a: jnp.asarray(rng.normal(0, 0.3, a.shape), a.dtype), state))


def leaves(model) -> list[np.ndarray]:
    return [np.asarray(a) for a in jax.tree.leaves(nnx.state(model, nnx.Param))]


def truncate_files(folder: Path, names=None) -> int:
    """Cut every regular file under ``folder`` (or those named ``names``) to half its size."""
    n = 0
    for f in sorted(folder.rglob("*")):
        if f.is_file() and (names is None or f.name in names) and f.stat().st_size > 1:
            data = f.read_bytes()
            f.write_bytes(data[: len(data) // 2])
            n += 1
    return n


def data_files(folder: Path) -> list[Path]:
    """The array data files of an Orbax (OCDBT) checkpoint folder."""
    return [f for f in folder.rglob("*") if f.is_file() and f.parent.name == "d"]


IMAGES = np.random.default_rng(1).integers(0, 256, (3, 32, 96), dtype=np.uint8)


# ----- model directories --------------------------------------------------------------------------
def test_model_round_trip_gives_identical_outputs(tmp_path):
    cfg = tiny().replace(threshold=0.37)
    model = build_model(cfg, seed=3)
    info = {"trained_by": "test", "summary": {"chosen": 2}}
    out = save_model(tmp_path / "m", model, cfg, 0.42, info)
    assert out == (tmp_path / "m").absolute()
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "params"]
    loaded, cfg2, thr, info2 = load_model(tmp_path / "m")
    assert cfg2 == cfg and thr == 0.42 and info2 == info
    assert read_model_meta(tmp_path / "m")["format"] == MODEL_FORMAT
    for a, b in zip(leaves(model), leaves(loaded)):
        assert a.dtype == b.dtype == np.float32
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(run(model, IMAGES), run(loaded, IMAGES))


def test_model_of_several_networks_round_trip(tmp_path):
    from fcn_captcha.model import MeanNet

    cfg = tiny().replace(members=2)
    model = build_model(cfg, seed=3)
    save_model(tmp_path / "m", model, cfg, 0.3)
    loaded, cfg2, thr, _ = load_model(tmp_path / "m")
    assert isinstance(loaded, MeanNet) and cfg2.members == 2 and thr == 0.3
    np.testing.assert_array_equal(run(model, IMAGES), run(loaded, IMAGES))


def test_bfloat16_model_round_trip(tmp_path):
    cfg = tiny().replace(compute_dtype="bfloat16")
    model = numpy_model(cfg, seed=4)
    save_model(tmp_path / "m", model, cfg, 0.5)
    loaded, cfg2, _, info = load_model(tmp_path / "m")
    assert cfg2.compute_dtype == "bfloat16" and loaded.dtype == jnp.bfloat16 and info == {}
    for a, b in zip(leaves(model), leaves(loaded)):
        assert b.dtype == np.float32  # parameters are stored and loaded as float32
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(run(model, IMAGES), run(loaded, IMAGES))


def test_save_model_replaces_an_existing_directory(tmp_path):
    cfg = tiny()
    first, second = numpy_model(cfg, seed=1), numpy_model(cfg, seed=2)
    save_model(tmp_path / "m", first, cfg, 0.3)
    save_model(tmp_path / "m", second, cfg, 0.6)
    loaded, _, thr, _ = load_model(tmp_path / "m")
    assert thr == 0.6
    for a, b in zip(leaves(second), leaves(loaded)):
        np.testing.assert_array_equal(a, b)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no .tmp / .old left


@pytest.fixture
def saved(tmp_path):
    cfg = tiny()
    save_model(tmp_path / "m", numpy_model(cfg), cfg, 0.4)
    return tmp_path / "m"


def _edit_meta(model_dir: Path, **config_changes):
    meta = json.loads((model_dir / "model.json").read_text())
    meta["config"].update(config_changes)
    (model_dir / "model.json").write_text(json.dumps(meta))


def test_missing_directory_or_meta(tmp_path, saved):
    with pytest.raises(CheckpointError, match="no model.json"):
        load_model(tmp_path / "nothing")
    (saved / "model.json").unlink()
    with pytest.raises(CheckpointError, match="no model.json"):
        load_model(saved)


def test_corrupt_meta(saved):
    (saved / "model.json").write_text('{"format": 1, "config": {')
    with pytest.raises(CheckpointError, match="corrupt model.json"):
        load_model(saved)


def test_other_format(saved):
    meta = json.loads((saved / "model.json").read_text())
    meta["format"] = MODEL_FORMAT + 1
    (saved / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=f"format {MODEL_FORMAT + 1}"):
        load_model(saved)


@pytest.mark.parametrize("change,message", [
    ({"arch": "small"}, "params: cannot restore"),                        # other layers: another tree
    ({"arch": "c3x8 p c3x16 p c3x32"}, r"params: .*shapes.*convs.*2"),    # same tree, wider last conv
    ({"alphabet": "0123456789AB"}, r"params: .*shapes.*head.*16, 10\).*16, 12\)"),  # more maps
    ({"alphabet": "01234567"}, r"params: .*shapes.*head"),                # fewer maps
])
def test_params_of_another_config_are_an_error(saved, change, message):
    # Orbax alone restores arrays at their stored shapes: a model.json and params that
    # disagree must still fail, not load a network of another shape.
    _edit_meta(saved, **change)
    with pytest.raises(CheckpointError, match=message):
        load_model(saved)


def test_missing_params(saved):
    shutil.rmtree(saved / "params")
    with pytest.raises(CheckpointError, match="params"):
        load_model(saved)


def test_truncated_params(saved):
    assert data_files(saved / "params")
    for f in data_files(saved / "params"):
        f.write_bytes(f.read_bytes()[:10])
    with pytest.raises(CheckpointError, match="params"):
        load_model(saved)


# ----- trainer checkpoints -------------------------------------------------------------------------
def _state(seed: int):
    rng = np.random.default_rng(seed)
    return {"params": {"w": jnp.asarray(rng.normal(size=(3, 4, 2)), jnp.float32),
                       "b": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32)},
            "opt_state": (jnp.asarray(seed, jnp.int32), {"mu": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32)})}


def _meta(step: int):
    return {"stage": 1, "step": step, "uids": [2, 0, 1], "history": {"log": [{"loss": 0.5}], "elapsed": 1.25}}


def _equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert np.asarray(x).dtype == np.asarray(y).dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_train_checkpoint_round_trip_and_retention(tmp_path):
    ck = TrainCheckpointer(tmp_path / "ckpt", max_to_keep=2)
    assert ck.latest_step() is None
    for step in (2, 4, 6):
        ck.save(step, _state(step), _meta(step))
    assert ck.latest_step() == 6
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["4", "6"]
    target = jax.eval_shape(lambda: _state(0))
    _equal(ck.restore_state(6, target), _state(6))
    _equal(ck.restore_state(4, target), _state(4))
    assert ck.restore_meta(6) == _meta(6)
    ck.close()
    # a new checkpointer on the same folder (a resumed process) sees the same
    ck2 = TrainCheckpointer(tmp_path / "ckpt")
    assert ck2.latest_step() == 6
    _equal(ck2.restore_state(6, target), _state(6))
    ck2.close()


def test_unfinished_save_is_ignored(tmp_path):
    ck = TrainCheckpointer(tmp_path / "ckpt")
    ck.save(2, _state(2), _meta(2))
    ck.close()
    # what a kill during the next save leaves: a temporary folder, never renamed
    junk = tmp_path / "ckpt" / "4.orbax-checkpoint-tmp-123"
    (junk / "state").mkdir(parents=True)
    (junk / "state" / "partial").write_bytes(b"\0" * 10)
    ck = TrainCheckpointer(tmp_path / "ckpt")
    assert ck.latest_step() == 2
    _equal(ck.restore_state(2, jax.eval_shape(lambda: _state(0))), _state(2))


def test_train_checkpoint_of_another_structure_is_an_error(tmp_path):
    ck = TrainCheckpointer(tmp_path / "ckpt")
    ck.save(2, _state(2), _meta(2))
    other = jax.eval_shape(lambda: _state(0))
    other["params"]["w"] = jax.ShapeDtypeStruct((2, 4, 2), jnp.float32)  # 2 candidates, not 3
    with pytest.raises(CheckpointError, match="ckpt/2: .*stored shape"):
        ck.restore_state(2, other)
    extra = jax.eval_shape(lambda: _state(0))
    extra["params"]["z"] = jax.ShapeDtypeStruct((3,), jnp.float32)
    with pytest.raises(CheckpointError, match="ckpt/2"):
        ck.restore_state(2, extra)


def test_corrupt_train_checkpoint_is_an_error(tmp_path):
    ck = TrainCheckpointer(tmp_path / "ckpt")
    ck.save(2, _state(2), _meta(2))
    ck.close()
    step_dir = tmp_path / "ckpt" / "2"
    assert data_files(step_dir / "state")
    for f in data_files(step_dir / "state"):
        f.write_bytes(f.read_bytes()[:10])
    ck = TrainCheckpointer(tmp_path / "ckpt")
    assert ck.latest_step() == 2
    with pytest.raises(CheckpointError, match="ckpt/2"):
        ck.restore_state(2, jax.eval_shape(lambda: _state(0)))
    assert truncate_files(step_dir / "meta", names={"metadata"}) == 1
    with pytest.raises(CheckpointError, match="ckpt/2: cannot read checkpoint metadata"):
        ck.restore_meta(2)


# ----- the shipped models (cross-version fixture) --------------------------------------------------
def test_shipped_model_names():
    assert {"lib36x4", "lib36var"} <= set(pretrained_names())


@pytest.mark.parametrize("name", ["lib36x4", "lib36var", "lib36x4-cpu", "lib36var-cpu"])
def test_shipped_model_loads_and_reads(name):
    model, cfg, thr, info = load_model(PRETRAINED_DIR / name)
    assert cfg.name == name and 0.0 < thr < 1.0
    # written by the trainer before its module was renamed train -> training
    assert info.get("trained_by") in ("fcn_captcha.train", "fcn_captcha.training")
    assert info["summary"]["chosen"] == info["summary"]["stages"][-1]["kept"][0]
    params = leaves(model)
    assert all(p.dtype == np.float32 and np.isfinite(p).all() for p in params)
    assert sum(p.size for p in params) == count_params(cfg.arch_spec, cfg.num_classes)
    abstract = nnx.state(nnx.eval_shape(lambda: build_model(cfg)), nnx.Param)
    assert [p.shape for p in params] == [a.shape for a in jax.tree.leaves(abstract)]
    ds = generate_arrays(cfg, 6, seed=777, workers=1)
    maps = run(model, ds.images)
    assert maps.shape == (6, cfg.out_height, cfg.out_width, cfg.num_classes) == (6, 16, cfg.width // 4, 36)
    assert maps.dtype == np.float32 and np.isfinite(maps).all()
    reads = decode(maps, cfg.alphabet, thr, cfg.stride, min_distance=cfg.min_distance,
                   max_candidates=cfg.max_candidates)
    correct = sum(r.text == t for r, t in zip(reads, ds.texts))
    assert correct >= 5, ([r.text for r in reads], ds.texts)


# ----- reliability: the card, the swap, corrupt parameters ---------------------------------------------
def test_a_save_killed_between_its_renames_leaves_a_loadable_model_and_is_cleaned_up(tmp_path, saved):
    """Issue 12 case 3: model -> model.old done, model.tmp -> model not yet."""
    import os

    os.replace(saved, saved.with_name("m.old"))
    cfg = tiny()
    _, _, thr, _ = load_model(saved)  # read from m.old
    assert thr == 0.4 and read_model_meta(saved)["threshold"] == 0.4
    save_model(saved, numpy_model(cfg, seed=3), cfg, 0.7)
    assert load_model(saved)[2] == 0.7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.pop("config"), "field 'config' must be an object"),
    (lambda m: m.pop("threshold"), "field 'threshold' must be a number in \\(0, 1\\]"),
    (lambda m: m.update(threshold=None), "field 'threshold'"),
    (lambda m: m.update(threshold=1.5), "field 'threshold'"),
    (lambda m: m["config"].update(width="192"), "config field 'width' is '192'; it must be int"),
    (lambda m: m["config"].update(width=191.5), "config field 'width' is 191.5; it must be int"),
    (lambda m: m["config"].pop("alphabet"), r"config fields \['alphabet'\] are missing"),
    (lambda m: m["config"].pop("compute_dtype"), r"config fields \['compute_dtype'\] are missing"),
    (lambda m: m.update(config=[1, 2]), "field 'config' must be an object"),
])
def test_a_bad_card_names_the_field(saved, edit, message):
    """Issue 12 case 12: no KeyError/TypeError tracebacks, no silent defaults."""
    meta = json.loads((saved / "model.json").read_text())
    edit(meta)
    (saved / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=message):
        load_model(saved)


def test_flipped_parameter_bytes_giving_nan_are_refused_at_load(tmp_path):
    """Issue 12 case 5: a model whose parameters hold NaN does not load (and read '')."""
    cfg = tiny()
    model = numpy_model(cfg)
    state = nnx.state(model, nnx.Param)
    first = jax.tree.leaves(state)[0]
    nnx.update(model, jax.tree.map(lambda a: a.at[(0,) * a.ndim].set(jnp.nan) if a is first else a, state))
    assert not np.isfinite(np.asarray(jax.tree.leaves(nnx.state(model, nnx.Param))[0])).all()
    save_model(tmp_path / "m", model, cfg, 0.4)
    with pytest.raises(CheckpointError, match="non-finite values in .* the file is corrupt"):
        load_model(tmp_path / "m")


def test_card_updates_are_atomic_and_checked(saved):
    from fcn_captcha.checkpoint import record_test, update_model_card

    update_model_card(saved, threshold=0.55, info={"calibration": {"count": 3}})
    record_test(saved, {"count": 2, "sequence_accuracy": 0.5, "character_accuracy": 0.75,
                        "length_error_rate": 0.0}, "a set")
    meta = read_model_meta(saved)
    assert meta["threshold"] == 0.55 and meta["info"]["calibration"] == {"count": 3}
    assert meta["info"]["tests"][-1]["set"] == "a set"
    assert "confidence" not in meta["info"]["tests"][-1]  # no calibrated confidences: nothing recorded
    conf = {"count": 2, "ece": 0.01, "accuracy": 0.5, "mean_confidence": 0.6, "above": 0.99, "share_above": 0.5,
            "accuracy_above": 1.0, "errors_above": 0}
    record_test(saved, {"count": 2, "sequence_accuracy": 0.5, "character_accuracy": 0.75,
                        "length_error_rate": 0.0, "confidence": conf}, "another set")
    assert read_model_meta(saved)["info"]["tests"][-1]["confidence"] == {
        "ece": 0.01, "above": 0.99, "share_above": 0.5, "accuracy_above": 1.0, "errors_above": 0}
    none_above = conf | {"share_above": 0.0, "accuracy_above": float("nan")}  # no reading above the cut
    record_test(saved, {"count": 2, "sequence_accuracy": 0.5, "character_accuracy": 0.75,
                        "length_error_rate": 0.0, "confidence": none_above}, "a third set")
    assert json.loads((saved / "model.json").read_text(), parse_constant=pytest.fail)["info"]["tests"][-1][
        "confidence"]["accuracy_above"] is None  # null, not NaN: the card stays JSON
    with pytest.raises(CheckpointError, match="threshold"):
        update_model_card(saved, threshold=float("nan"))
    assert read_model_meta(saved)["threshold"] == 0.55  # unchanged by the refused write
    assert not (saved / "model.json.tmp").exists()
