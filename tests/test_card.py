"""Tests of fcn_captcha.card: reading and checking ``model.json`` without JAX."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fcn_captcha.card import (
    MODEL_FORMAT,
    PRETRAINED_DIR,
    CheckpointError,
    card_config,
    check_card,
    lineage,
    read_model_meta,
    resolve_model_dir,
)
from fcn_captcha.config import tiny


def card(**changes) -> dict:
    meta = {"format": MODEL_FORMAT, "config": tiny().to_dict(), "threshold": 0.4, "info": {}}
    meta.update(changes)
    return meta


def test_a_written_card_reads_back(tmp_path):
    (tmp_path / "model.json").write_text(json.dumps(card(threshold=0.37)))
    meta = read_model_meta(tmp_path)
    assert meta["threshold"] == 0.37 and card_config(meta, "here") == tiny()


def test_lineage_names_the_run_and_the_runs_before_it(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    for d in (first, second):
        d.mkdir()
    info = {"trained_by": "fcn_captcha.training", "command": "train --preset tiny",
            "summary": {"device": "cpu", "train_seconds": 12.5, "data_seconds": 1.0},
            "tests": [{"set": "plain", "count": 10, "sequence_accuracy": 0.5}]}
    (first / "model.json").write_text(json.dumps(card(info=info)))
    got = lineage(first)
    assert got["model"] == str(first) and got["name"] == "tiny" and got["device"] == "cpu"
    assert got["train_seconds"] == 12.5 and got["tests"] == info["tests"] and "init" not in got
    assert got["read"]["train_size"] == tiny().train_size and got["teacher"] is None
    cfg = tiny().replace(teacher="big", real_data="/data", real_centers="/c.json").to_dict()
    (second / "model.json").write_text(json.dumps(card(config=cfg, info={**info, "init": got})))
    again = lineage(second)
    assert again["init"] == got and again["teacher"] == "big"
    assert again["read"] == {"real_data": "/data", "real_centers": "/c.json"}
    with pytest.raises(CheckpointError, match="not a model directory"):
        lineage(tmp_path / "none")
    gone = lineage(tmp_path / "none", missing_ok=True)
    assert gone["model"] == str(tmp_path / "none") and "not a model directory" in gone["error"]


@pytest.mark.parametrize("full", ["lib36x4", "lib36var"])
def test_each_shipped_reader_has_a_cpu_model_distilled_from_it(full):
    """Issue 14 part 2: NAME-cpu reads NAME's suite with the `slim` network, taught by NAME's
    maps, made on the GPU; its card names every run its parameters came from."""
    big, small = read_model_meta(PRETRAINED_DIR / full), read_model_meta(PRETRAINED_DIR / f"{full}-cpu")
    assert small["config"]["arch"] == "slim" and small["config"]["teacher"] == full
    for field in ("alphabet", "min_length", "max_length", "width", "height"):
        assert small["config"][field] == big["config"][field], field
    runs, info = [], small["info"]
    while info:
        assert "H200" in (info.get("summary") or info)["device"] and info.get("tests"), info.get("command")
        runs.append(info)
        info = info.get("init")
    assert all(f"teacher={full}" in r["command"] for r in runs)
    assert (len(runs) > 1) == bool(small["config"]["init_from"])  # a continued model names its start


def test_shipped_kaggle_v2_is_a_fit_model_whose_card_says_what_made_it():
    """Issue 13: the shipped kaggle_v2 is remade by ``fit`` from string labels; its card names
    the device, the wall time, the files it read (by their labels' digest) and its test."""
    info = read_model_meta(PRETRAINED_DIR / "kaggle_v2")["info"]
    assert info["trained_by"] == "fcn_captcha.fit" and info["scheme"]["alphabet"] == "2345678bcdefgmnpwxy"
    run = info["run"]
    assert "H100" in run["device"] or "H200" in run["device"]
    assert 0 < run["wall_s"] <= run["time_budget"] and run["files"] == 639 and len(run["labels_sha256"]) == 64
    (test,) = info["tests"]
    assert test["count"] == 161 and info["split"] == {"holdout": 0.22, "limit": 0, "train": 496, "calibration": 143}


def test_kaggle_v2_cpu_is_the_student_of_the_shipped_kaggle_v2_from_the_same_fit():
    """Issue 14 part 2 through ``fit --cpu-model``: kaggle_v2-cpu (the `slim` network) was
    distilled from the shipped kaggle_v2 in the run that made it; both cards name that run
    (device, wall time within its budget, the labels' digest) and the student's own test."""
    big, small = read_model_meta(PRETRAINED_DIR / "kaggle_v2"), read_model_meta(PRETRAINED_DIR / "kaggle_v2-cpu")
    assert small["config"]["arch"] == "slim" and small["config"]["teacher"] == "kaggle_v2"
    assert small["info"]["trained_by"] == "fcn_captcha.fit" and "--cpu-model" in small["info"]["command"]
    assert small["info"]["run"] == big["info"]["run"] and small["info"]["run"]["wall_s"] <= small["info"]["run"]["time_budget"]
    for field in ("alphabet", "min_length", "max_length", "width", "height"):
        assert small["config"][field] == big["config"][field], field
    (test,) = small["info"]["tests"]
    assert test["count"] == 161 and small["info"]["split"] == big["info"]["split"]


@pytest.mark.parametrize("meta, message", [
    ([], "must hold a JSON object"),
    (card(format=2), "model format 2 is not 1"),
    (card(config="tiny"), "field 'config' must be an object"),
    (card(threshold=0.0), "field 'threshold' must be a number in (0, 1]"),
    (card(threshold=True), "field 'threshold'"),
    (card(info=[]), "field 'info' must be an object"),
])
def test_a_bad_card_names_its_field(meta, message):
    with pytest.raises(CheckpointError, match="^where: ") as e:
        check_card(meta, "where")
    assert message in str(e.value)


def test_a_config_missing_a_card_field_is_refused():
    meta = card()
    del meta["config"]["alphabet"]
    with pytest.raises(CheckpointError, match="m/model.json: .*alphabet"):
        card_config(meta, "m/model.json")


def test_missing_and_corrupt_cards(tmp_path):
    with pytest.raises(CheckpointError, match="not a model directory"):
        read_model_meta(tmp_path)
    (tmp_path / "model.json").write_text("{")
    with pytest.raises(CheckpointError, match="corrupt model.json"):
        read_model_meta(tmp_path)


def test_a_half_swapped_save_reads_the_old_directory(tmp_path):
    (tmp_path / "m.old").mkdir()
    (tmp_path / "m.old" / "model.json").write_text(json.dumps(card()))
    assert resolve_model_dir(tmp_path / "m") == (tmp_path / "m.old").absolute()
    assert read_model_meta(tmp_path / "m")["threshold"] == 0.4


def test_card_imports_no_jax():
    code = "import sys, fcn_captcha.card; print(sorted(m for m in ('jax', 'flax', 'orbax') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
