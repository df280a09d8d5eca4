"""Tests of the ``fcn-captcha`` command line (fcn_captcha.cli.main), in process, with capsys.

Loading a model is not what these tests check, so ``Detector.load`` is cached for the
module: every command that reads images shares one loaded ``lib36x4`` per backend and
reads two good images at a time, so the network compiles once. About 30 s on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

import pytest
from captcha.image import ImageCaptcha
from PIL import Image

from fcn_captcha.cli import build_parser, main
from fcn_captcha.detector import Detector

TEXTS = ("K7QF", "20XA")


def subcommands() -> list[str]:
    actions = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return sorted(actions[0].choices)


@pytest.fixture(scope="module", autouse=True)
def cached_load():
    load = functools.lru_cache(maxsize=None)(Detector.load)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Detector, "load", staticmethod(lambda name, backend="jax": load(str(name), backend)))
        yield


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Two good plain-library captchas named by their texts, and a corrupt PNG."""
    d = tmp_path_factory.mktemp("predict")
    gen = ImageCaptcha(width=192, height=64)
    for t in TEXTS:
        gen.write(t, str(d / f"{t}.png"))
    data = (d / f"{TEXTS[0]}.png").read_bytes()
    (d / "corrupt.png").write_bytes(data[: len(data) // 3])
    return d


def test_subcommands_listed():
    assert {"generate", "train", "calibrate", "evaluate", "predict", "demo", "samples"} <= set(subcommands())


@pytest.mark.parametrize("command", [None] + subcommands())
def test_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main(([command] if command else []) + ["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: fcn-captcha" + (f" {command}" if command else ""))


def test_usage_errors(capsys):
    with pytest.raises(SystemExit) as e:
        main(["evaluate", "--model", "lib36x4"])  # neither --data nor --plain
    assert e.value.code == 2
    assert "--data" in capsys.readouterr().err


def test_unknown_model(folder, capsys):
    assert main(["predict", "--model", "no-such-model", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "fcn-captcha predict: error" in err and "no-such-model" in err and "lib36x4" in err


def test_predict_folder_with_a_corrupt_file(folder, capsys, recwarn):
    rc = main(["predict", "--model", "lib36x4", str(folder)])
    out, err = capsys.readouterr()
    assert not [w for w in recwarn if "corrupt.png" in str(w.message)]  # said once, on stderr, not also warned
    assert err.count("corrupt.png") == 1
    assert rc == 1
    lines = out.splitlines()
    assert [ln.split("\t")[0] for ln in lines] == [str(folder / f"{t}.png") for t in sorted(TEXTS)]
    for ln in lines:
        path, text = ln.split("\t")
        assert len(text) == 4 and set(text) <= set("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    assert sum(Path(p).stem == t for p, t in (ln.split("\t") for ln in lines)) >= 1  # ~99.7% each
    assert str(folder / "corrupt.png") in err


def test_predict_json(folder, capsys):
    files = [str(folder / f"{t}.png") for t in TEXTS]
    assert main(["predict", "--model", "lib36x4", "--json", *files]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    for f, ln in zip(files, lines):
        rec = json.loads(ln)
        assert rec["file"] == f and isinstance(rec["length_forced"], bool)
        assert rec["text"] == "".join(c["symbol"] for c in rec["chars"])
        xs = [c["x"] for c in rec["chars"]]
        assert xs == sorted(xs) and all(0 <= x < 192 for x in xs)
        assert all(0 <= c["y"] < 64 and 0 < c["score"] < 2 for c in rec["chars"])


def test_predict_length(folder, capsys):
    f = str(folder / f"{TEXTS[0]}.png")
    assert main(["predict", "--model", "lib36x4", "--threshold", "1.0", "--length", "4", f, f]) == 0
    texts = [ln.split("\t")[1] for ln in capsys.readouterr().out.splitlines()]
    assert len(texts) == 2 and all(len(t) == 4 for t in texts)


def test_predict_backends_read_alike(folder, capsys):
    files = [str(folder / f"{t}.png") for t in TEXTS]
    recs = {}
    for backend in ("jax", "onnx", "auto"):
        assert main(["predict", "--model", "lib36x4", "--json", "--backend", backend, *files]) == 0
        recs[backend] = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    assert recs["auto"] == recs["onnx"]  # lib36x4 ships its model.onnx
    for a, b in zip(recs["jax"], recs["onnx"]):
        assert a["text"] == b["text"]
        assert all(abs(c["x"] - d["x"]) <= 0.5 and abs(c["y"] - d["y"]) <= 0.5 for c, d in zip(a["chars"], b["chars"]))


def test_export_command(tmp_path, capsys):
    pytest.importorskip("onnx", reason="exporting needs onnx: pip install -e '.[test,onnx]'")
    from fcn_captcha.checkpoint import save_model
    from fcn_captcha.config import tiny
    from fcn_captcha.model import build_model

    cfg = tiny()
    save_model(tmp_path / "m", build_model(cfg), cfg, 0.4)
    assert main(["export", "--model", str(tmp_path / "m")]) == 0
    assert f"wrote {(tmp_path / 'm' / 'model.onnx').absolute()} (" in capsys.readouterr().out
    assert main(["export", "--model", str(tmp_path / "m"), "--out", str(tmp_path / "x.onnx")]) == 0
    assert (tmp_path / "x.onnx").read_bytes() == (tmp_path / "m" / "model.onnx").read_bytes()
    assert main(["export", "--model", str(tmp_path / "nope")]) == 2
    assert "nope: no model directory" in capsys.readouterr().err


def test_many_files_stream_chunk_by_chunk():
    """Each chunk's lines are written (and flushed) before the next chunk is read."""
    import io

    from fcn_captcha.cli import read_files
    from fcn_captcha.decoder import Reading

    events = []

    class Reader:
        def read(self, paths, **kw):
            events.append(("read", len(paths)))
            return [Reading("", error=f"{p}: bad") if p.endswith("x") else Reading(p.upper()) for p in paths]

    class Stream(io.StringIO):
        def flush(self):
            events.append(("flush", self.getvalue().count("\n")))

    stream = Stream()
    paths = ["a", "b", "c", "d", "x"]
    assert read_files(Reader(), paths, stream=stream, chunk=2) == 1
    assert stream.getvalue().splitlines() == ["a\tA", "b\tB", "c\tC", "d\tD"]
    assert events == [("read", 2), ("flush", 2), ("read", 2), ("flush", 4), ("read", 1), ("flush", 4)]


def test_the_progress_bar_counts_to_the_end(capsys):
    from fcn_captcha.cli import _progress

    with _progress(5, show=True) as advance:
        advance(2)
        advance(3)
    with _progress(5, show=False) as advance:
        advance(5)
    assert capsys.readouterr().out == ""  # the bar never writes to stdout, where the readings go


def test_evaluate_folder(folder, tmp_path, capsys):
    rc = main(["evaluate", "--model", "lib36x4", "--data", str(folder), "--json", str(tmp_path / "m.json")])
    out, err = capsys.readouterr()
    assert rc == 0
    assert out.startswith("images 2: sequence accuracy ")
    assert "skipped 1 files" in err and "corrupt.png" in err
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["count"] == 2 and 0.0 <= m["sequence_accuracy"] <= 1.0
    assert "readings" not in m


def test_evaluate_plain(capsys):
    assert main(["evaluate", "--model", "lib36x4", "--plain", "2", "--seed", "1"]) == 0
    assert capsys.readouterr().out.startswith("images 2: sequence accuracy ")


def test_generate(tmp_path, capsys):
    out = tmp_path / "ds"
    assert main(["generate", "--preset", "tiny", "--count", "8", "--out", str(out), "--workers", "1",
                 "--png", "2"]) == 0
    assert "wrote 8 captchas" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["count"] == 8 and manifest["config"]["name"] == "tiny"
    assert len(list((out / "png").glob("*.png"))) == 2


def test_samples(tmp_path, capsys):
    path = tmp_path / "s.png"
    assert main(["samples", "--preset", "tiny", "--count", "2", "--out", str(path)]) == 0
    assert str(path) in capsys.readouterr().out
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > 96


def test_demo(tmp_path, capsys):
    path = tmp_path / "demo.png"
    assert main(["demo", "--count", "2", "--out", str(path), "--seed", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    for ln in lines[:2]:
        assert ln.split()[-4] in ("OK", "WRONG") and "mean score" in ln
    assert lines[2].startswith("lib36x4: ") and str(path) in lines[2]
    with Image.open(path) as im:
        assert im.format == "PNG"


def test_annotate_command(tmp_path, capsys):
    from fcn_captcha.checkpoint import save_model
    from fcn_captcha.config import tiny
    from fcn_captcha.model import build_model

    cfg = tiny()
    save_model(tmp_path / "m", build_model(cfg, seed=0), cfg, 0.4)
    d = tmp_path / "real"
    d.mkdir()
    gen = ImageCaptcha(width=96, height=32, font_sizes=(22, 26))
    for t in ("12", "345", "67"):
        gen.write(t, str(d / f"{t}.png"))
    code = main(["annotate", "--model", str(tmp_path / "m"), "--data", str(d), "--out", str(tmp_path / "c.json"),
                 "--split", "all", "--rounds", "0", "--synthetic", "0", "--sheet", str(tmp_path / "c.png")])
    out = capsys.readouterr().out
    assert code == 0 and "3 images" in out and (tmp_path / "c.png").exists()
    files = json.loads((tmp_path / "c.json").read_text())["files"]
    assert sorted(files) == ["12.png", "345.png", "67.png"] and len(files["345.png"]["centers"]) == 3
    code = main(["annotate", "--model", str(tmp_path / "m"), "--data", str(tmp_path / "nope"), "--out", "x.json"])
    assert code == 2 and "nope" in capsys.readouterr().err


# ----- reliability --------------------------------------------------------------------------------------
def test_calibrate_on_no_usable_image_refuses_and_changes_nothing(tmp_path, capsys):
    """Issue 12 case 1: labels outside the alphabet, or an empty labels.csv."""
    from fcn_captcha.checkpoint import save_model
    from fcn_captcha.config import tiny
    from fcn_captcha.model import build_model

    cfg = tiny()
    save_model(tmp_path / "m", build_model(cfg), cfg, 0.42, {"calibration": {"keep": 1}})
    card = (tmp_path / "m" / "model.json").read_text()
    bad = tmp_path / "bad"
    bad.mkdir()
    Image.new("L", (cfg.width, cfg.height)).save(bad / "XYZ.png")  # tiny's alphabet is digits
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "labels.csv").write_text("file,text\n")
    for data in (bad, empty):
        assert main(["calibrate", "--model", str(tmp_path / "m"), "--data", str(data)]) == 2
        assert "calibration needs at least 10 usable labelled images, got 0" in capsys.readouterr().err
        assert (tmp_path / "m" / "model.json").read_text() == card


def test_evaluate_with_no_usable_image_is_an_error(tmp_path, capsys):
    """Issue 12 case 14: no more "n/a" and exit 0."""
    (tmp_path / "labels.csv").write_text("file,text\nmissing.png,ABCD\n")
    assert main(["evaluate", "--model", "lib36x4", "--data", str(tmp_path)]) == 2
    assert "no usable labelled image to evaluate (1 skipped" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["-1", "0", "5-3", "x", "2.5"])
def test_a_bad_length_is_a_usage_error(folder, value, capsys):
    with pytest.raises(SystemExit) as e:
        main(["predict", "--model", "lib36x4", "--length", value, str(folder / f"{TEXTS[0]}.png")])
    assert e.value.code == 2 and "--length" in capsys.readouterr().err


def test_predict_reports_an_image_over_the_pixel_limit_and_reads_the_others(folder, tmp_path, capsys, monkeypatch):
    """Issue 12 case 11: one decompression bomb does not abort the batch."""
    from PIL import Image as PILImage

    big = tmp_path / "big.png"
    PILImage.new("L", (400, 400)).save(big)
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 20_000)  # 400x400 is over twice the limit: an error
    good = str(folder / f"{TEXTS[0]}.png")
    rc = main(["predict", "--model", "lib36x4", good, str(big)])
    out, err = capsys.readouterr()
    assert rc == 1 and out.startswith(good + "\t") and len(out.splitlines()) == 1
    assert err.count(str(big)) == 1


# ----- confidence -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """A tiny random model with a hand-made calibrator, the same without one (an old card), and 3 images."""
    import numpy as np

    from fcn_captcha.checkpoint import save_model
    from fcn_captcha.confidence import FEATURES, Calibrator
    from fcn_captcha.config import tiny
    from fcn_captcha.model import build_model

    d = tmp_path_factory.mktemp("conf")
    cfg = tiny()
    cal = Calibrator("logistic", FEATURES, (3.0, 2.0, 1.0, 0.5), -2.0, (0.01, 0.99), 0.4)
    net = build_model(cfg)
    save_model(d / "new", net, cfg, 0.4, {"confidence": cal.to_dict()})
    save_model(d / "old", net, cfg, 0.4)
    rng = np.random.default_rng(0)
    files = []
    for i in range(3):
        files.append(str(d / f"{i}.png"))
        Image.fromarray(rng.integers(0, 255, (32, 96), dtype=np.uint8)).save(files[-1])
    return d, files


def test_predict_min_confidence_marks_and_drops_nothing(tiny_models, capsys):
    d, files = tiny_models
    for p, mark in (("0", "sure"), ("1", "unsure")):  # every confidence lies in the calibrator's (0.01, 0.99)
        assert main(["predict", "--model", str(d / "new"), "--min-confidence", p, *files]) == 0
        rows = [ln.split("\t") for ln in capsys.readouterr().out.splitlines()]
        assert [r[0] for r in rows] == files and all(len(r) == 4 and r[3] == mark for r in rows)
        assert all(0.01 <= float(r[2]) <= 0.99 for r in rows)
    assert main(["predict", "--model", str(d / "new"), "--json", "--min-confidence", "1", *files]) == 0
    recs = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    assert len(recs) == 3 and all(r["unsure"] is True and 0.01 <= r["confidence"] <= 0.99 for r in recs)
    assert main(["predict", "--model", str(d / "new"), "--json", *files]) == 0  # no mark unless asked
    assert all("unsure" not in json.loads(ln) for ln in capsys.readouterr().out.splitlines())
    assert main(["predict", "--model", str(d / "new"), "--min-confidence", "1.5", *files]) == 2
    assert "must be a probability in [0, 1]" in capsys.readouterr().err


def test_predict_min_confidence_without_a_calibrator_marks_everything_unsure(tiny_models, capsys):
    d, files = tiny_models
    assert main(["predict", "--model", str(d / "old"), "--min-confidence", "0", *files]) == 0
    out, err = capsys.readouterr()
    assert all(ln.split("\t")[2:] == ["none", "unsure"] for ln in out.splitlines()) and len(out.splitlines()) == 3
    assert "has no confidence calibrator" in err
    assert main(["predict", "--model", str(d / "new"), "--threshold", "0.5", "--min-confidence", "0", *files]) == 0
    out, err = capsys.readouterr()
    assert all(ln.endswith("\tnone\tunsure") for ln in out.splitlines()) and "calibrated at threshold 0.4" in err


def test_calibrate_plain_keep_threshold_fits_the_confidence_only(tmp_path, capsys):
    from fcn_captcha.card import card_calibrator, read_model_meta
    from fcn_captcha.checkpoint import save_model
    from fcn_captcha.config import tiny
    from fcn_captcha.model import build_model

    cfg = tiny()
    save_model(tmp_path / "m", build_model(cfg), cfg, 0.42)
    assert main(["calibrate", "--model", str(tmp_path / "m"), "--plain", "24", "--seed", "5", "--keep-threshold"]) == 0
    out = capsys.readouterr().out
    assert "kept threshold 0.420" in out and "confidence calibrator" in out
    meta = read_model_meta(tmp_path / "m")
    cal = card_calibrator(meta, "m")
    assert meta["threshold"] == 0.42 and cal.threshold == 0.42 and cal.count == 24 and "text seed 5" in cal.fitted_on
