"""Tests of fcn_captcha.scope against figures derived by hand."""

import dataclasses
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from fcn_captcha.config import ARCHITECTURES, get_config
from fcn_captcha.model import HEAD_KERNEL, receptive_field
from fcn_captcha.scope import ISO_LEVELS, character_coverage, iso_diameter, measure_scope, plot_scope, scope_report

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("n", [1, 2, 5])
def test_plain_3x3_stack_support_is_2n_plus_1_counting_the_head(n):
    # n 3x3 convolutions plus the 3x3 head are n + 1 convolutions: support 2(n+1)+1 cells,
    # stride 1, so support_px == field == analytic receptive field.
    assert HEAD_KERNEL == 3
    res = measure_scope(" ".join(["c3x4"] * n))
    want = 2 * (n + 1) + 1
    assert res.stride == 1
    assert res.support_cells == (want, want)
    assert res.support_px == (want, want)
    assert res.field_px == (want, want)
    assert res.receptive_field_px == want
    assert res.field_offset_px == (0.0, 0.0)
    assert res.consistent


def test_pools_and_5x5_by_hand():
    # c5 p c5 + head: an input pixel reaches 5 pixels, 3 pooled cells always (5 consecutive
    # integers cover 3 pairs), 3 + 4 = 7 after the 5x5, 7 + 2 = 9 after the head. 9 * 2 = 18
    # = analytic 1 + 4 + 1 + 2*4 + 2*2.
    res = measure_scope("c5x4 p c5x4")
    assert res.stride == 2
    assert res.phase_support_cells == ((9, 9), (9, 9))
    assert res.support_px == (18, 18) and res.receptive_field_px == 18 and res.field_px == (18, 18)

    # c3 p c3 p + head: pixel c reaches [c-1, c+1], 2 pooled cells [a, a+1] with a = (c-1)//2,
    # [a-1, a+2] after the 3x3, then 3 pooled cells if a is even else 2, +2 for the head:
    # phases c % 4 = 0, 1, 2, 3 give 4, 5, 5, 4 cells. Analytic field 18 = 4 + 5 + 5 + 4.
    res = measure_scope("c3x4 p c3x4 p")
    assert res.stride == 4
    assert res.phase_support_cells == ((4, 5, 5, 4), (4, 5, 5, 4))
    assert res.support_cells == (4, 4) and res.support_px == (16, 16)  # reference = phase 0
    assert res.receptive_field_px == 18 and res.field_px == (18, 18)


@pytest.mark.parametrize("arch", ["c5x4 p c3x4 p c5x4", "c3x4 c5x4 p p c3x4", *ARCHITECTURES])
def test_measured_support_and_analytic_field_exact_relation(arch):
    res = measure_scope(arch)
    r, s = receptive_field(res.arch), res.stride
    assert res.receptive_field_px == r
    for phases in res.phase_support_cells:
        assert len(phases) == s
        assert sum(phases) == r  # exact: the s phases count every offset of the window once
        assert set(phases) <= {r // s, -(-r // s)}  # floor or ceil of r / s
    assert all(abs(p - r) <= s - 1 for p in res.support_px)  # the seed's figure: within stride - 1
    assert res.field_px == (r, r) and res.consistent
    assert res.field_offset_px == (0.0, 0.0)  # the window is centered on its cell


def test_seed_architecture_figures():
    res = measure_scope("seed")
    assert res.receptive_field_px == 58  # 1+4+2, +1 pool, +2*(2+2), +2 pool, +4*(4+2+2), +4*2 head
    assert res.phase_support_cells[0] == (14, 15, 15, 14)
    assert res.support_px == (56, 56)


def test_gaussian_width_grows_like_sqrt_depth():
    sig = {}
    for n in (4, 8, 16):
        res = measure_scope(" ".join(["c3x4"] * n))
        sig[n] = res.sigma_cells[0]
        # A stack of n + 1 constant 3x3 kernels: the variance of a sum of n + 1 uniforms on {-1, 0, 1}.
        assert res.sigma_cells[0] == pytest.approx(math.sqrt(2 * (n + 1) / 3), rel=1e-4)
        assert res.sigma_cells[1] == pytest.approx(res.sigma_cells[0], rel=1e-4)
        assert res.sigma_lsq_cells[0] == pytest.approx(res.sigma_cells[0], rel=0.15)
        assert res.min_positive > 1e-30
    assert sig[8] / sig[4] == pytest.approx(math.sqrt(2), rel=0.10)
    assert sig[16] / sig[8] == pytest.approx(math.sqrt(2), rel=0.10)


def test_isolines_and_pixels_scale_with_stride():
    res = measure_scope("c3x4 p c3x4")
    assert res.sigma_px == pytest.approx(tuple(2 * s for s in res.sigma_cells))
    for q in ISO_LEVELS:
        want = 2 * res.sigma_px[0] * math.sqrt(2 * math.log(1 / q))
        assert res.iso_px[q][0] == pytest.approx(want)
    assert iso_diameter(2.0, 0.03) == pytest.approx(4 * math.sqrt(2 * math.log(1 / 0.03)))
    assert res.spot.max() == 1.0 and res.spot[0].max() == 0.0 and res.spot[:, -1].max() == 0.0
    d = res.to_dict()
    json.dumps(d)
    assert d["consistent"] and set(d["iso_px"]) == {"35%", "3%"} and "spot" not in d


def test_config_input_and_bad_inputs():
    cfg = get_config("tiny")
    res = measure_scope(cfg)
    assert res.arch == ARCHITECTURES["tiny"]
    with pytest.raises(ValueError, match="border"):
        measure_scope("c3x4 c3x4 c3x4", size=4)
    with pytest.raises(TypeError):
        measure_scope(3)
    with pytest.raises(ValueError, match="not 'cKxC'"):
        measure_scope("c4x4")


def test_character_coverage_shares_and_ordering():
    cfg = get_config("tiny")
    small = character_coverage(measure_scope("c3x4"), cfg, count=40)
    big = character_coverage(measure_scope("small"), cfg, count=40)
    for cov in (small, big):
        assert cov["characters"] == 40
        for key in ("in_square", "in_iso3", "in_cell_window"):
            assert 0.0 <= cov[key] <= 1.0
    assert small["in_square"] == 0.0  # a 5-pixel field cannot hold a 13x25 character
    assert big["in_square"] > small["in_square"]
    assert big["in_cell_window"] > small["in_cell_window"]
    # A field bigger than the image holds every character, whatever the center.
    res = measure_scope("c3x4")
    huge = dataclasses.replace(res, field_px=(400, 400), iso_px={q: (800.0, 800.0) for q in ISO_LEVELS})
    cov = character_coverage(huge, cfg, count=40)
    assert cov["in_square"] == cov["in_iso3"] == cov["in_cell_window"] == 1.0
    assert cov["box_h_px"]["max"] <= cfg.height and cov["box_w_px"]["median"] > 0


def test_plot_and_report_write_files(tmp_path):
    res = measure_scope("c3x4 p c3x4")
    img = np.zeros((32, 96))
    img[8:24, 40:52] = 1.0
    path = plot_scope(res, img, (46.0, 15.5), tmp_path / "a" / "scope.png", box=(40, 8, 51, 23))
    assert Path(path).stat().st_size > 1000
    assert Path(plot_scope(res, path=tmp_path / "spot.png")).stat().st_size > 1000

    rep = scope_report("tiny", tmp_path / "rep", count=30)
    assert (tmp_path / "rep" / "scope.png").stat().st_size > 1000
    on_disk = json.loads((tmp_path / "rep" / "scope.json").read_text())
    assert on_disk["scope"]["field_px"] == [26, 26] and on_disk["coverage"]["characters"] == 30
    assert rep["arch"] == "tiny" and set(rep) >= {"suite", "arch_spec", "data", "scope", "coverage", "png"}


def test_tool_wraps_the_library(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("measure_scope_tool", ROOT / "tools" / "measure_scope.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tool.main(["--preset", "tiny", "--arch", "c3x8 p c3x8", "--out", str(tmp_path / "one"), "--count", "20"])
    assert json.loads(capsys.readouterr().out)["scope"]["receptive_field_px"] == 12
    tool.main(["--preset", "tiny", "--arch", "tiny", "c3x8 p c3x8", "--out", str(tmp_path / "many"), "--count", "20"])
    table = (tmp_path / "many" / "table.md").read_text()
    assert "| tiny |" in table and "c3x8_p_c3x8" in {p.name for p in (tmp_path / "many").iterdir()}
