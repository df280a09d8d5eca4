"""Tests of fcn_captcha.probe: the colour mode and the clean-ups chosen by short probe trainings."""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fcn_captcha import probe
from fcn_captcha.cleanup import Cleanup
from fcn_captcha.config import Config
from fcn_captcha.scheme import infer_scheme

CFG = dict(arch="tiny", batch_size=8)


def _folder(path, n, shear_range=0.0, seed=0):
    """Labelled dark-on-light digit images; with ``shear_range`` each image is sheared by its own amount."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True)
    font = ImageFont.load_default(26)
    rows = []
    for i in range(n):
        text = "".join(str(d) for d in rng.integers(0, 10, 3))
        im = Image.new("L", (96, 40), 255)
        ImageDraw.Draw(im).text((8, 6), text, font=font, fill=0)
        a = np.asarray(im)
        k = rng.uniform(-shear_range, shear_range)
        if k:
            a = np.stack([np.roll(a[:, c], int(round(k * (c - 48)))) for c in range(a.shape[1])], 1)
        Image.fromarray(a).save(path / f"{i:03d}.png")
        rows.append(f"{i:03d}.png,{text}")
    (path / "labels.csv").write_text("file,text\n" + "\n".join(rows) + "\n")
    return [tuple(r.split(",")) for r in rows]


def _config(scheme):
    return Config(alphabet=scheme.alphabet, min_length=scheme.min_length, max_length=scheme.max_length,
                  width=scheme.width, height=scheme.height, **CFG)


def test_plain_text_runs_no_probe(tmp_path):
    entries = _folder(tmp_path / "d", 24)
    scheme = infer_scheme(tmp_path / "d")
    chosen, rec = probe.choose_cleanup(scheme, _config(scheme), tmp_path / "d", entries[:16], entries[16:], 5.0,
                                       log=lambda *_: None)
    assert chosen.off and rec["probes"] == [] and len(rec["candidates"]) == 1


def test_sheared_text_is_probed_and_the_margin_decides(tmp_path, monkeypatch):
    entries = _folder(tmp_path / "d", 40, shear_range=0.25)
    scheme = infer_scheme(tmp_path / "d")
    cfg = _config(scheme)
    chosen, rec = probe.choose_cleanup(scheme, cfg, tmp_path / "d", entries[:28], entries[28:], 20.0,
                                       log=lambda *_: None)
    assert any(c["deskew"] for c in rec["candidates"])
    assert len(rec["probes"]) == len(rec["candidates"]) >= 2
    assert all(0.0 <= p["free_read_accuracy"] <= 1.0 for p in rec["probes"])
    # the choice, with scores given: a gain under the margin keeps all-off, one above it wins
    for gain, wins in ((0.2, False), (0.4, True)):  # 12 calibration images: the bar is 3 of them (0.25)
        def fake(sch, *a, gain=gain, **k):  # a probe's "sets" are its scheme here
            return (0.5 + (gain if not sch.cleanups.off else 0.0), 0.01)
        monkeypatch.setattr(probe, "_sets", lambda sch, *a, **k: sch)
        monkeypatch.setattr(probe, "_probe", fake)
        chosen, rec = probe.choose_cleanup(scheme, cfg, tmp_path / "d", entries[:28], entries[28:], 1.0,
                                           log=lambda *_: None)
        assert chosen.off != wins
        assert (Cleanup.from_dict(rec["chosen"]) == chosen)


def test_gray_text_keeps_its_colour_mode_without_a_probe(tmp_path):
    entries = _folder(tmp_path / "d", 24)
    scheme = infer_scheme(tmp_path / "d")
    mode, rec = probe.choose_color(scheme, _config(scheme), tmp_path / "d", entries[:16], entries[16:], 5.0,
                                   log=lambda *_: None)
    assert mode == scheme.color == "luma" and rec["probes"] == [] and rec["luma_loss"] == 0.0


def test_a_scheme_of_an_earlier_version_is_not_probed_and_says_so(tmp_path):
    entries = _folder(tmp_path / "d", 24)
    scheme = dataclasses.replace(infer_scheme(tmp_path / "d"), measurements={})  # no luma_loss
    mode, rec = probe.choose_color(scheme, _config(scheme), tmp_path / "d", entries[:16], entries[16:], 5.0,
                                   log=lambda *_: None)
    assert mode == "luma" and rec["probes"] == [] and rec["luma_loss"] is None and "not measured" in rec["why"]


def test_colour_carrying_ink_probes_every_mode_and_the_margin_decides(tmp_path, monkeypatch):
    entries = _folder(tmp_path / "d", 40)
    scheme = dataclasses.replace(infer_scheme(tmp_path / "d"),
                                 measurements={"luma_loss": 2 * probe.COLOR_BAR})  # as a colour scheme measures
    cfg = _config(scheme)
    # real probes: each mode once, the inferred one first, scores in range
    mode, rec = probe.choose_color(scheme, cfg, tmp_path / "d", entries[:28], entries[28:], 10.0, log=lambda *_: None)
    assert [p["color"] for p in rec["probes"]] == ["luma", "bgdist", "localdist"]
    assert all(0.0 <= p["free_read_accuracy"] <= 1.0 for p in rec["probes"]) and rec["luma_loss"] == 0.1
    # the choice, with scores given: a gain under the margin keeps the inferred mode, one above it wins
    for gain, wins in ((0.2, False), (0.4, True)):  # 12 calibration images: the bar is 3 of them (0.25)
        monkeypatch.setattr(probe, "_sets", lambda sch, *a, **k: sch)
        monkeypatch.setattr(probe, "_probe", lambda sch, *a, gain=gain, **k: (
            0.5 + (gain if sch.color == "localdist" else 0.0), 0.01))
        mode, rec = probe.choose_color(scheme, cfg, tmp_path / "d", entries[:28], entries[28:], 1.0,
                                       log=lambda *_: None)
        assert mode == ("localdist" if wins else "luma") == rec["chosen"]


def test_the_network_is_the_first_that_affords_the_steps_and_reads_else_the_cheapest(tmp_path, monkeypatch):
    entries = _folder(tmp_path / "d", 24)
    scheme = infer_scheme(tmp_path / "d")
    cfg = _config(scheme)
    arch, rec = probe.choose_network(scheme, cfg, tmp_path / "d", entries, ("slim", "tiny"), 1e6, 10, reads=100,
                                     log=lambda *_: None)  # real timings: a million seconds afford them
    assert arch == rec["chosen"] == "slim" and [t["arch"] for t in rec["timed"]] == ["slim"]
    t = rec["timed"][0]
    assert t["seconds_per_step"] > 0 and t["seconds_per_read"] > 0 and t["affordable_steps"] >= 10
    # measured costs given: 2 s a step and 0.1 s a read; 100 s afford 40 steps after 200 reads, not 50
    monkeypatch.setattr(probe, "_step_seconds", lambda *a, **k: 2.0)
    monkeypatch.setattr(probe, "_forward_seconds", lambda *a, **k: 0.1)
    for need, want in ((40, "slim"), (41, "tiny")):
        arch, rec = probe.choose_network(scheme, cfg, tmp_path / "d", entries, ("slim", "tiny"), 100.0, need,
                                         reads=200, log=lambda *_: None)
        assert arch == want and rec["timed"] == [{"arch": "slim", "seconds_per_step": 2.0, "seconds_per_read": 0.1,
                                                  "need_s": 2.0 * need + 20.0, "affordable_steps": 40}]
        assert ("cheapest" in rec["why"]) == (want == "tiny")
    arch, rec = probe.choose_network(scheme, cfg, tmp_path / "d", entries, ("tiny",), 1.0, 10 ** 6,
                                     log=lambda *_: None)  # one candidate: chosen untimed
    assert arch == "tiny" and rec["timed"] == [] and "only candidate" in rec["why"]


def test_probes_too_slow_for_the_network_run_on_the_cheap_one_or_not_at_all(tmp_path, monkeypatch):
    entries = _folder(tmp_path / "d", 40, shear_range=0.25)
    scheme = infer_scheme(tmp_path / "d")
    cfg = _config(scheme)
    step_s = {"slim": 1.0, "tiny": 0.001}  # seconds a step, by network; a probe's "sets" are its config here
    monkeypatch.setattr(probe, "_sets", lambda sch, c, *a, **k: c)
    monkeypatch.setattr(probe, "_probe", lambda c, _, steps: (0.5, steps * step_s[c.arch]))
    slim = cfg.replace(arch="slim")
    chosen, rec = probe.choose_cleanup(scheme, slim, tmp_path / "d", entries[:28], entries[28:], 5.0,
                                       log=lambda *_: None, cheap="tiny")
    assert rec["arch"] == "tiny" and len(rec["probes"]) == len(rec["candidates"]) and "'slim'" in rec["too_slow"][0]
    chosen, rec = probe.choose_cleanup(scheme, slim, tmp_path / "d", entries[:28], entries[28:], 5.0,
                                       log=lambda *_: None)  # no cheap network: the base stands, unprobed
    assert chosen.off and rec["probes"] == [] and rec["why"].startswith("not probed")


def test_a_network_known_too_slow_is_passed_over_untimed(tmp_path, monkeypatch):
    entries = _folder(tmp_path / "d", 40, shear_range=0.25)
    scheme = infer_scheme(tmp_path / "d")
    timed = []
    monkeypatch.setattr(probe, "_sets", lambda sch, c, *a, **k: timed.append(c.arch) or c)
    monkeypatch.setattr(probe, "_probe", lambda c, _, steps: (0.5, steps * 0.001))
    chosen, rec = probe.choose_cleanup(scheme, _config(scheme).replace(arch="slim"), tmp_path / "d", entries[:28],
                                       entries[28:], 5.0, log=lambda *_: None, cheap="tiny", step_s={"slim": 1.0})
    assert set(timed) == {"tiny"} and rec["arch"] == "tiny" and "measured step" in rec["too_slow"][0]
