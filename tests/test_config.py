"""Tests of fcn_captcha.config: presets, overrides, validation, derived values, round trips."""

from __future__ import annotations

import dataclasses
import json

import pytest

from fcn_captcha.config import ARCHITECTURES, PRESETS, Config, get_config, lib36x4, parse_arch
from fcn_captcha.style import KAGGLE_STYLE


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_build(name):
    cfg = get_config(name)
    assert isinstance(cfg, Config)
    assert cfg == PRESETS[name]()
    assert cfg.name == name
    assert cfg.num_classes == len(cfg.alphabet) == len(set(cfg.alphabet))
    assert 1 <= cfg.min_length <= cfg.max_length
    assert cfg.out_width * cfg.stride >= cfg.width > (cfg.out_width - 1) * cfg.stride
    assert cfg.out_height * cfg.stride >= cfg.height > (cfg.out_height - 1) * cfg.stride
    assert (PRESETS[name].__doc__ or "").strip(), "a preset says what it is for"


def test_suites_match_benchmarks_md():
    """The suites of shared/BENCHMARKS.md: alphabet, lengths and size."""
    expect = {"lib36x4": ("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", 4, 4, 192, 64),
              "lib36var": ("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", 4, 7, 256, 64),
              "lib10x4": ("0123456789", 4, 4, 160, 60),
              "kaggle_v2": ("2345678bcdefgmnpwxy", 5, 5, 200, 50)}
    for name, (alphabet, lo, hi, w, h) in expect.items():
        c = get_config(name)
        assert (c.alphabet, c.min_length, c.max_length, c.width, c.height) == (alphabet, lo, hi, w, h), name
    assert get_config("lib36x4").font_sizes == (42, 50, 56) and get_config("lib36x4").fonts == ()


@pytest.mark.parametrize("name, stride, out_h, out_w", [
    ("lib36x4", 4, 16, 48),    # 64/4, 192/4
    ("lib36var", 4, 16, 64),   # 256/4
    ("lib10x4", 4, 15, 40),    # 60/4, 160/4
    ("kaggle_v2", 4, 13, 50),  # ceil(50/4) = 13
    ("tiny", 4, 8, 24),        # 32/4, 96/4
])
def test_derived_sizes(name, stride, out_h, out_w):
    cfg = get_config(name)
    assert (cfg.stride, cfg.out_height, cfg.out_width) == (stride, out_h, out_w)


def test_derived_from_explicit_arch_and_schedule():
    cfg = Config(arch="c3x4 p p p c3x4", width=100, height=30)
    assert cfg.arch_spec == "c3x4 p p p c3x4"
    assert (cfg.stride, cfg.out_width, cfg.out_height) == (8, 13, 4)  # ceil(100/8), ceil(30/8)
    assert Config(arch="c3x4").stride == 1
    assert Config(arch="tiny").arch_spec == ARCHITECTURES["tiny"]
    cfg = Config(train_size=1000, batch_size=64, stage_epochs=(1, 2.5), stage_runs=(2, 1), stage_scale=2.0)
    assert cfg.steps_per_epoch == 15  # 1000 // 64
    assert cfg.stage_steps == (30, 75)  # round(e * 2 * 15)
    assert Config(epoch_images=128, batch_size=64).steps_per_epoch == 2
    assert Config(train_size=10, batch_size=64).steps_per_epoch == 1
    derived = {"stride", "out_height", "out_width", "num_classes", "steps_per_epoch", "stage_steps", "arch_spec"}
    assert not derived & {f.name for f in dataclasses.fields(Config)}, "derived values are not stored"


def test_overrides_parse_each_type():
    cfg = get_config("tiny", ["batch_size=7", "learning_rate=1e-3", "arch=c3x4 p c3x8", "name=mine",
                              "font_sizes=20,24 28", "min_distance=1.5,2", "stage_epochs=0.5,1,2.5",
                              "fonts=a.ttf,b.ttf", "alphabet=abc", "shift=2", "seed=-3"])
    assert cfg.batch_size == 7 and isinstance(cfg.batch_size, int)
    assert cfg.learning_rate == 1e-3
    assert cfg.arch == "c3x4 p c3x8" and cfg.stride == 2
    assert cfg.name == "mine" and cfg.alphabet == "abc" and cfg.seed == -3
    assert cfg.font_sizes == (20, 24, 28) and all(isinstance(v, int) for v in cfg.font_sizes)
    assert cfg.min_distance == (1.5, 2.0)
    # tiny's stage_epochs are written as ints; a fractional override still parses
    assert cfg.stage_epochs == (0.5, 1.0, 2.5)
    assert cfg.fonts == ("a.ttf", "b.ttf")
    assert cfg.shift == 2.0 and isinstance(cfg.shift, float)
    # untouched fields keep the preset's values
    assert cfg.width == get_config("tiny").width


def test_overrides_as_dict():
    cfg = get_config("lib10x4", {"batch_size": 3, "font_sizes": [30, 40], "learning_rate": "2e-4"})
    assert cfg.batch_size == 3 and cfg.font_sizes == (30, 40) and cfg.learning_rate == 2e-4
    assert get_config("lib10x4", {}) == get_config("lib10x4") == get_config("lib10x4", None)


@pytest.mark.parametrize("override, named", [
    (["bogus=1"], "bogus"),
    (["stride=8"], "stride"),  # a derived value, not a field
    (["batch_size"], "batch_size"),  # no '='
    (["batch_size=abc"], "batch_size"),
    ({"nope": 3}, "nope"),
])
def test_bad_override_names_it(override, named):
    with pytest.raises(ValueError, match=named):
        get_config("tiny", override)


def test_unknown_preset_names_it():
    with pytest.raises(ValueError, match="no_such_preset"):
        get_config("no_such_preset")


@pytest.mark.parametrize("kwargs, named", [
    ({"alphabet": "aab"}, "alphabet"),
    ({"alphabet": ""}, "alphabet"),
    ({"min_length": 5, "max_length": 4}, "length"),
    ({"min_length": 0}, "length"),
    ({"width": 0}, "size"),
    ({"loss": "l1"}, "l1"),
    ({"compute_dtype": "float16"}, "float16"),
    ({"stage_runs": (2, 1), "stage_epochs": (1,)}, "stage"),
    ({"stage_runs": (1, 2), "stage_epochs": (1, 1)}, "stage_runs"),
    ({"arch": "c3x8 q"}, "'q'"),
    ({"arch": "c4x8"}, "c4x8"),  # even kernel
    ({"alphabet": "AB0", "hard_symbols": "O0"}, "not in it: \\['O'\\]"),
    ({"alphabet": "AB0", "hard_symbols": "00"}, "hard_symbols"),
    ({"alphabet": "AB0", "hard_symbols": "0", "hard_share": 1.0}, "hard_share"),
    ({"alphabet": "AB0", "hard_share": 0.2}, "needs hard_symbols"),
])
def test_invalid_values_are_named(kwargs, named):
    with pytest.raises(ValueError, match=named):
        Config(**kwargs)


def test_parse_arch():
    assert parse_arch("c5x8 p c3x16") == [("conv", 5, 8), ("pool", 2, 0), ("conv", 3, 16)]
    for spec in ARCHITECTURES.values():
        layers = parse_arch(spec)
        assert layers and all(kind in ("conv", "pool") for kind, _, _ in layers)
    with pytest.raises(ValueError, match="xx"):
        parse_arch("c3x8 xx")


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_dict_and_json_round_trip(name):
    cfg = get_config(name, ["fonts=x.ttf"])
    d = cfg.to_dict()
    assert set(d) == {f.name for f in dataclasses.fields(Config)}
    assert Config.from_dict(d) == cfg
    back = Config.from_dict(json.loads(cfg.to_json()))
    assert back == cfg and back.fonts == ("x.ttf",) and isinstance(back.stage_runs, tuple)
    assert json.loads(cfg.to_json()) == json.loads(json.dumps(d))


def test_from_dict_unknown_key_is_named():
    d = get_config("tiny").to_dict()
    d["extra_field"] = 1
    with pytest.raises(ValueError, match="extra_field"):
        Config.from_dict(d)


def test_config_is_frozen_and_replace():
    cfg = get_config("tiny")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.batch_size = 3  # type: ignore[misc]
    assert cfg.replace(batch_size=3).batch_size == 3 and cfg.batch_size == 8


def test_kaggle_v2_preset_style_and_known_length():
    v = get_config("kaggle_v2")
    assert v.style == KAGGLE_STYLE and v.real_data == ""
    assert v.length_range == (5, 5) and get_config("lib36x4").length_range is None
    assert v.synth_mix > 0 and v.stage_runs == (1,) and v.holdout == 0.22
    assert Config.from_dict(json.loads(v.to_json())) == v  # the style survives JSON
    assert get_config("kaggle_v2", ["style=none"]).style is None
    assert get_config("kaggle_v2", ["real_data=/x/y", "real_limit=25"]).real_limit == 25
    with pytest.raises(ValueError, match="synth_mix"):
        Config(synth_mix=1.5)
    with pytest.raises(ValueError, match="holdout"):
        Config(holdout=0.0)


@pytest.mark.parametrize("field, value, kind", [
    ("width", "192", "int"), ("width", 191.5, "int"), ("alphabet", None, "str"), ("holdout", True, "float"),
    ("stage_runs", [3, "2"], r"tuple\[int, ...\]"), ("sigma_x", "1.3", "float"), ("force_length", 1, "bool")])
def test_from_dict_names_a_value_of_the_wrong_type(field, value, kind):
    d = {**lib36x4().to_dict(), field: value}
    with pytest.raises(ValueError, match=f"config field '{field}' is .*; it must be {kind}"):
        Config.from_dict(d)


def test_from_dict_required_fields_and_ints_for_floats():
    d = lib36x4().to_dict()
    assert Config.from_dict({**d, "learning_rate": 1}).learning_rate == 1  # JSON may write 1.0 as 1
    del d["alphabet"]
    with pytest.raises(ValueError, match=r"config fields \['alphabet'\] are missing"):
        Config.from_dict(d, required=("alphabet", "width"))


@pytest.mark.parametrize("change, message", [
    ({"max_candidates": 0}, "max_candidates 0 must be in"), ({"max_candidates": 10**6}, "max_candidates"),
    ({"batch_size": 0}, "batch_size 0"), ({"batch_size": -1}, "batch_size -1")])
def test_unbounded_or_empty_sizes_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        lib36x4().replace(**change)
