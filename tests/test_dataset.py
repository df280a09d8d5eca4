"""Tests of fcn_captcha.dataset: real folders, centers files, shards, splits, labels."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcn_captcha.config import get_config
from fcn_captcha.dataset import (Dataset, generate_arrays, generate_dataset, is_complete, folder_entries, load_dataset,
                                 load_folder, pad_centers, real_split, split_names, write_dataset)
from fcn_captcha.generator import CenterCaptcha
from fcn_captcha.preprocess import ImageError, to_model_input

CFG = get_config("tiny")  # digits, 96 x 32
REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "captcha_images_v2"


def captcha(text: str, size=(96, 32), seed: int = 0):
    """A synthetic captcha of ``text`` at ``size`` (width, height) with its centers."""
    gen = CenterCaptcha(size[0], size[1], font_sizes=(int(size[1] * 0.7),))
    return gen.generate_sample(text, seed=seed)


def save(image: Image.Image, path: Path, mode: str | None = None):
    im = image.convert(mode) if mode else image
    im.save(path)


def truncated_png() -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (32, 96, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()[:500]


# ----- folders of <label>.<ext> ---------------------------------------------------------------------------
@pytest.fixture
def label_folder(tmp_path):
    """Images in several modes, sizes and formats, named by their label."""
    files = {"12.png": ("12", (96, 32), "L"), "345.png": ("345", (150, 50), "RGB"),
             "907.jpg": ("907", (96, 32), "RGB"), "56.bmp": ("56", (80, 40), "P"),
             "88.png": ("88", (192, 64), "RGBA"), "0123.gif": ("0123", (120, 32), "P")}
    for name, (text, size, mode) in files.items():
        save(captcha(text, size, seed=len(name)).image, tmp_path / name, mode)
    (tmp_path / "notes.txt").write_text("not an image, not listed")
    return tmp_path, files


def test_load_label_folder(label_folder):
    folder, files = label_folder
    ds = load_folder(folder, CFG)
    names = sorted(files)
    assert ds.names == names
    assert ds.texts == [files[n][0] for n in names]
    assert ds.images.shape == (len(files), CFG.height, CFG.width) and ds.images.dtype == np.uint8
    assert ds.centers is None and ds.skipped == [] and len(ds) == len(files)
    for img, name in zip(ds.images, names):
        np.testing.assert_array_equal(img, to_model_input(folder / name, CFG.width, CFG.height))
        assert np.median(img) == 0 and img.max() > 200  # bright text on zero
    # a split of the folder, in the order given
    sub = load_folder(folder, CFG, files=["88.png", "12.png"])
    assert sub.names == ["88.png", "12.png"] and sub.texts == ["88", "12"]
    np.testing.assert_array_equal(sub.images[1], ds.images[ds.names.index("12.png")])
    with pytest.raises(FileNotFoundError, match="nope.png"):
        load_folder(folder, CFG, files=["nope.png"])


def test_load_csv_folder(tmp_path):
    rows = [("a.png", "12"), ("b b.png", "771"), ("c.jpg", "0")]
    for i, (name, text) in enumerate(rows):
        save(captcha(text, (96 + 10 * i, 32), seed=i).image, tmp_path / name)
    save(captcha("999").image, tmp_path / "999.png")  # not in labels.csv: not loaded
    (tmp_path / "labels.csv").write_text("file,text\n" + "".join(f"{n}, {t}\n" for n, t in rows) + "\n")
    ds = load_folder(tmp_path, CFG)
    assert ds.names == [n for n, _ in rows] and ds.texts == [t for _, t in rows]
    assert ds.images.shape == (3, CFG.height, CFG.width)
    # a byte-order mark (as spreadsheets save it) keeps the first row
    (tmp_path / "labels.csv").write_bytes(b"\xef\xbb\xbf" + f"file,text\n{rows[0][0]},{rows[0][1]}\n".encode())
    assert load_folder(tmp_path, CFG).names == [rows[0][0]]
    # the header is required: without it the first row would be taken as one
    (tmp_path / "labels.csv").write_text("".join(f"{n},{t}\n" for n, t in rows))
    with pytest.raises(ValueError, match="labels.csv:1: the first line must be the header 'file,text'"):
        load_folder(tmp_path, CFG)
    (tmp_path / "labels.csv").write_text("name,label\na.png,12\n")
    with pytest.raises(ValueError, match="labels.csv:1: .*'name,label'"):
        load_folder(tmp_path, CFG)
    for bad, why in ((f"../{rows[0][0]}", "not a path inside"), ("/etc/passwd", "not a path inside")):
        (tmp_path / "labels.csv").write_text(f"file,text\n{rows[1][0]},1\n{bad},12\n")
        with pytest.raises(ValueError, match=f"labels.csv:3: file .* is {why}"):
            load_folder(tmp_path, CFG)
    (tmp_path / "labels.csv").write_text(f"file,text\n{rows[0][0]},1\n{rows[1][0]},2\n{rows[0][0]},1\n")
    with pytest.raises(ValueError, match="labels.csv:4: file .* is listed again \\(first on line 2\\)"):
        load_folder(tmp_path, CFG)
    (tmp_path / "labels.csv").write_text("file,text\na.png\n")
    with pytest.raises(ValueError, match="labels.csv:2"):
        load_folder(tmp_path, CFG)


@pytest.fixture
def bad_folder(tmp_path):
    for text in ("12", "345", "6789"):
        save(captcha(text).image, tmp_path / f"{text}.png")
    (tmp_path / "111.png").write_bytes(truncated_png())
    (tmp_path / "222.png").write_text("this is a text file named .png\n")
    save(captcha("12").image, tmp_path / "1x2.png")  # 'x' is not a digit
    return tmp_path


def test_bad_files_raise_naming_them(bad_folder, tmp_path_factory):
    for bad in ("111.png", "222.png", "1x2.png"):
        folder = tmp_path_factory.mktemp("one_bad")
        save(captcha("45").image, folder / "45.png")
        (folder / bad).write_bytes((bad_folder / bad).read_bytes())
        with pytest.raises(ValueError) as e:  # ImageError is a ValueError
            load_folder(folder, CFG, on_error="raise")
        assert bad in str(e.value)
        if bad == "1x2.png":
            assert "'x'" in str(e.value) and not isinstance(e.value, ImageError)
        else:
            assert isinstance(e.value, ImageError)


def test_bad_files_skipped_and_reported(bad_folder, capsys):
    ds = load_folder(bad_folder, CFG, on_error="skip")
    assert ds.names == ["12.png", "345.png", "6789.png"] and ds.texts == ["12", "345", "6789"]
    assert len(ds.images) == 3
    skipped = dict(ds.skipped)
    assert sorted(skipped) == ["111.png", "1x2.png", "222.png"]
    assert "truncated" in skipped["111.png"] and "outside the alphabet" in skipped["1x2.png"]
    assert all(name in why for name, why in ds.skipped)
    assert "skipped 3 of 6" in capsys.readouterr().err
    with pytest.raises(ValueError, match="on_error"):
        load_folder(bad_folder, CFG, on_error="ignore")
    with pytest.raises(FileNotFoundError):
        load_folder(bad_folder / "nope", CFG)


# ----- centers files --------------------------------------------------------------------------------------
def test_centers_json_scaled_to_model_size(tmp_path):
    samples = {"12.png": captcha("12", (192, 64), seed=1),  # twice the model size
               "305.png": captcha("305", (96, 32), seed=2),  # the model size
               "77.png": captcha("77", (150, 40), seed=3)}
    ann = {"files": {}}
    for name, s in samples.items():
        s.image.save(tmp_path / name)
        ann["files"][name] = {"text": s.text, "centers": s.centers.tolist()}
    path = tmp_path / "centers.json"
    path.write_text(json.dumps(ann))
    ds = load_folder(tmp_path, CFG, centers_json=path)
    assert ds.centers.shape == (3, CFG.max_length, 2)
    for n, name in enumerate(ds.names):
        s = samples[name]
        w, h = s.image.size
        # by hand: pixel k's center is at k; scale about pixel edges
        expect = np.stack([(s.centers[:, 0] + 0.5) * CFG.width / w - 0.5,
                           (s.centers[:, 1] + 0.5) * CFG.height / h - 0.5], -1)
        np.testing.assert_allclose(ds.centers[n, : len(s.text)], expect, rtol=0, atol=1e-4)
        assert np.isnan(ds.centers[n, len(s.text):]).all()
    np.testing.assert_allclose(ds.centers[ds.names.index("305.png"), :3], samples["305.png"].centers, atol=1e-5)
    # and the JSON itself round-trips
    assert json.loads(path.read_text()) == ann

    # a file without an entry, or with the wrong number of centers
    del ann["files"]["77.png"]
    ann["files"]["12.png"]["centers"] = ann["files"]["12.png"]["centers"][:1]
    path.write_text(json.dumps(ann))
    with pytest.raises(ValueError, match="12.png"):
        load_folder(tmp_path, CFG, centers_json=path)
    ds = load_folder(tmp_path, CFG, centers_json=path, on_error="skip")
    assert ds.names == ["305.png"] and sorted(dict(ds.skipped)) == ["12.png", "77.png"]


def test_centers_json_flagged_entries_and_text_mismatch(tmp_path):
    samples = {"12.png": captcha("12", (96, 32), seed=1), "305.png": captcha("305", (96, 32), seed=2)}
    ann = {"files": {}}
    for name, s in samples.items():
        s.image.save(tmp_path / name)
        ann["files"][name] = {"text": s.text, "centers": s.centers.tolist(), "flagged": name == "12.png",
                              "reason": "label has 2 symbols, the image shows 1"}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(ann))
    ds = load_folder(tmp_path, CFG, centers_json=path)  # flagged: left out and listed, not an error
    assert ds.names == ["305.png"] and "flagged" in dict(ds.skipped)["12.png"]
    assert ds.sizes == [(96, 32)] and ds.subset([0]).sizes == [(96, 32)]  # the file's size, as read
    assert load_folder(tmp_path, CFG, centers_json=path, skip_flagged=False).names == ["12.png", "305.png"]
    ann["files"]["305.png"]["text"] = "306"
    path.write_text(json.dumps(ann))
    with pytest.raises(ValueError, match="305.png.*'306'"):
        load_folder(tmp_path, CFG, centers_json=path)


def test_real_split_limit_and_missing_folder(tmp_path):
    for t in ("11", "22", "33", "44", "55", "66", "77", "88", "99", "100"):
        captcha(t, (96, 32), seed=int(t)).image.save(tmp_path / f"{t}.png")
    train, hold = real_split(tmp_path, 0.3)
    assert (train, hold) == split_names(sorted(p.name for p in tmp_path.iterdir()), 0.3)
    assert real_split(tmp_path, 0.3, limit=2) == (train[:2], hold)
    with pytest.raises(FileNotFoundError, match="nope"):
        real_split(tmp_path / "nope", 0.2)


# ----- shards ---------------------------------------------------------------------------------------------
def assert_same(a: Dataset, b: Dataset):
    assert a.texts == b.texts and a.names == b.names
    np.testing.assert_array_equal(a.images, b.images)
    if a.centers is None:
        assert b.centers is None
    else:
        np.testing.assert_array_equal(a.centers, b.centers)


def test_write_load_round_trip(tmp_path):
    ds = generate_arrays(CFG, 10, seed=3, workers=1)
    out = write_dataset(ds, tmp_path / "d", CFG, seed=3, shard_size=4)
    assert sorted(os.listdir(out)) == ["manifest.json", "shard-00000.npz", "shard-00001.npz", "shard-00002.npz"]
    assert is_complete(out, CFG, count=10, seed=3)
    assert not is_complete(out, CFG, count=11) and not is_complete(out, CFG, seed=4)
    assert not is_complete(out, get_config("lib10x4"))
    assert_same(load_dataset(out), ds)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["count"] == 10 and manifest["config"] == CFG.to_dict()
    # without centers (string-only real data)
    strings = Dataset(ds.images, ds.texts, None, ds.names)
    assert_same(load_dataset(write_dataset(strings, tmp_path / "s", CFG)), strings)
    # an empty dataset
    empty = generate_arrays(CFG, 0, seed=0, workers=1)
    assert len(load_dataset(write_dataset(empty, tmp_path / "e", CFG))) == 0


def test_generate_dataset_on_disk(tmp_path):
    out = generate_dataset(CFG, 6, seed=2, out_dir=tmp_path / "g", workers=1, png=3, progress=False)
    pngs = sorted(p for p in os.listdir(out / "png") if p.endswith(".png"))
    ds = load_dataset(out)
    assert len(pngs) == 3 and pngs[0].startswith("000000_") and pngs[0].endswith(f"_{ds.texts[0]}.png")
    # the PNGs are a string-labelled folder (what fit reads): labels.csv names each with its text
    assert folder_entries(out / "png") == [(p, t) for p, t in zip(pngs, ds.texts[:3])]
    assert_same(ds, generate_arrays(CFG, 6, seed=2, workers=1))
    assert is_complete(out, CFG, count=6, seed=2)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "delete"])
def test_corrupt_shard_is_named(tmp_path, damage):
    ds = generate_arrays(CFG, 6, seed=1, workers=1)
    out = write_dataset(ds, tmp_path, CFG, shard_size=3)
    shard = out / "shard-00001.npz"
    data = shard.read_bytes()
    if damage == "truncate":
        shard.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        shard.write_bytes(b"\x00not a zip file at all" * 10)
    elif damage == "empty":
        shard.write_bytes(b"")
    else:
        shard.unlink()
    with pytest.raises(ValueError, match="shard-00001.npz"):
        load_dataset(out)
    if damage == "delete":
        assert not is_complete(out)


@pytest.mark.parametrize("text, field", [("{not json", "JSONDecodeError"), ("[1, 2]", "a JSON object"),
                                         ('{"count": "10"}', "field 'count'"),
                                         ('{"count": 1, "width": 8, "height": 8, "alphabet": "0", "shards": ["../x"]}',
                                          "shards must be file names")])
def test_garbage_manifest_is_named(tmp_path, text, field):
    (tmp_path / "manifest.json").write_text(text)
    with pytest.raises(ValueError, match=f"manifest.json: corrupt manifest .*{field}"):
        load_dataset(tmp_path)
    assert not is_complete(tmp_path)  # so a run writes the set again


def test_not_a_dataset_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest"):
        load_dataset(tmp_path)
    assert not is_complete(tmp_path)


# ----- splits, labels, helpers ------------------------------------------------------------------------------
def test_split_names_deterministic_and_disjoint():
    names = [f"{i:05d}.png" for i in range(2000)]
    train, hold = split_names(names, holdout=0.2)
    assert (train, hold) == split_names(list(reversed(names)), holdout=0.2)  # order-free
    assert not set(train) & set(hold) and sorted(train + hold) == names
    assert train == sorted(train) and hold == sorted(hold)
    assert 0.17 < len(hold) / len(names) < 0.23
    # a name's side does not depend on the other names
    _, h2 = split_names(names[:500], holdout=0.2)
    assert set(h2) == set(hold) & set(names[:500])
    assert split_names(names, holdout=0.2, salt="other")[1] != hold
    assert split_names(names, holdout=0.0)[1] == [] and split_names(names, holdout=1.0)[0] == []


def test_labels_and_subset():
    ds = Dataset(np.zeros((3, 4, 5), np.uint8), ["12", "3", "450"], None, ["a", "b", "c"])
    np.testing.assert_array_equal(ds.labels("0123456789"), [[1, 2, -1], [3, -1, -1], [4, 5, 0]])
    assert ds.labels("0123456789").dtype == np.int32
    np.testing.assert_array_equal(ds.labels("543210"), [[4, 3, -1], [2, -1, -1], [1, 0, 5]])
    with pytest.raises(ValueError, match=r"c: symbol '0'"):
        ds.labels("12345")
    centers = pad_centers([np.ones((2, 2)), np.ones((1, 2)), np.ones((3, 2))], 5)
    withc = Dataset(ds.images, ds.texts, centers, ds.names)
    assert withc.labels("0123456789").shape == (3, 5)  # as wide as the centers
    sub = withc.subset([2, 0])
    assert sub.texts == ["450", "12"] and sub.names == ["c", "a"] and sub.centers.shape == (2, 5, 2)
    np.testing.assert_array_equal(sub.centers, centers[[2, 0]])


def test_pad_centers():
    out = pad_centers([np.array([[1.0, 2.0]]), np.zeros((0, 2))], 3)
    assert out.shape == (2, 3, 2) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0, 0], [1.0, 2.0])
    assert np.isnan(out[0, 1:]).all() and np.isnan(out[1]).all()


# ----- the real captchas (skipped where ../shared/data is absent) -------------------------------------------
@pytest.mark.skipif(not REAL.is_dir(), reason=f"{REAL} is absent")
def test_real_kaggle_v2_folder():
    cfg = get_config("kaggle_v2")
    names = sorted(p.name for p in REAL.iterdir() if p.suffix == ".png")
    assert len(names) >= 100
    pick = names[:: len(names) // 8][:8]
    ds = load_folder(REAL, cfg, files=pick)
    assert ds.names == pick and ds.texts == [Path(n).stem for n in pick]
    assert ds.images.shape == (8, cfg.height, cfg.width) and ds.images.dtype == np.uint8
    assert all(len(t) == 5 and set(t) <= set(cfg.alphabet) for t in ds.texts)
    for img in ds.images:  # dark text on light was turned into bright text on zero
        assert np.median(img) == 0 and img.max() == 255 and (img > 128).mean() > 0.02
    np.testing.assert_array_equal(ds.labels(cfg.alphabet) >= 0, True)
    train, hold = split_names(names)
    assert not set(train) & set(hold) and len(train) + len(hold) == len(names) and hold
    # the project's split of the 800 files: at most 640 to train on, at least 160 held out
    train, hold = real_split(REAL, cfg.holdout)
    if len(names) == 800:
        assert (len(train), len(hold)) == (639, 161)


def test_a_folder_that_is_one_side_of_a_split_still_splits_with_another_salt(tmp_path):
    """The training side of a hash split, split again by the same salt, has no held-out file:
    fit uses its own salt (found when bench_fit handed fit the kaggle training split)."""
    names = [f"{i:04d}.png" for i in range(300)]
    train, _ = split_names(names, holdout=0.22)
    (tmp_path / "labels.csv").write_text("file,text\n" + "".join(f"{n},1\n" for n in train))
    assert real_split(tmp_path, 0.22)[1] == []
    tr, ho = real_split(tmp_path, 0.22, salt="fcn_captcha.fit")
    assert 0.15 < len(ho) / len(train) < 0.3 and sorted(tr + ho) == sorted(train)


def test_labels_csv_may_name_symbolic_links_to_files_elsewhere(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    Image.new("L", (10, 10)).save(src / "a.png")
    d = tmp_path / "linked"
    d.mkdir()
    (d / "a.png").symlink_to(src / "a.png")
    (d / "labels.csv").write_text("file,text\na.png,1\n")
    assert [n for n, _ in folder_entries(d)] == ["a.png"]
