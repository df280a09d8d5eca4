"""Tests of fcn_captcha.fitting (fit): the whole job on a tiny stand-in folder (CPU, a tiny network).

The folder holds plain-library captchas labelled by file name, one with a label a
symbol too long. The run is shared by the tests; they check the outputs (model,
report, flags), the CLI, and that running again resumes instead of redoing work.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from fcn_captcha.cleanup import Cleanup
from fcn_captcha.confidence import MIN_READINGS
from fcn_captcha.config import Config
from fcn_captcha.dataset import make_generator
from fcn_captcha.generator import generate_one

CFG = Config(alphabet="0123456789", min_length=3, max_length=3, width=96, height=40, font_sizes=(28, 32))
OVERRIDES = {"arch": "cpu", "batch_size": 8}
BAD = "bad_label.png"
BROKEN = "broken.png"  #: a file of the shared run's folder that is not an image
BUDGET = 26  #: seconds of the shared run (and of the runs that must be the same job)
CHOSEN = Cleanup(deskew=True)  #: the clean-up the shared run's probes are made to choose
COLOR = "localdist"  #: and the colour mode


def _write_folder(path, count, seed, broken=False):
    """``count`` labelled images, one of them labelled one symbol too long (``BAD``), and with
    ``broken`` a file that is not an image (``BROKEN``, labelled with the first text)."""
    path.mkdir(parents=True)
    gen = make_generator(CFG)
    texts = []
    for i in range(count):
        s = generate_one(gen, CFG, seed, i)
        name = f"{i:03d}.png"
        s.image.save(path / name)
        texts.append((name, s.text))
    s = generate_one(gen, CFG, seed, count)
    s.image.save(path / BAD)
    texts.append((BAD, s.text + "5"))  # one symbol more than the image shows
    if broken:
        (path / BROKEN).write_bytes(b"not an image")
        texts.append((BROKEN, texts[0][1]))
    (path / "labels.csv").write_text("file,text\n" + "".join(f"{n},{t}\n" for n, t in texts))
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from fcn_captcha.fitting import fit

    root = tmp_path_factory.mktemp("fit")
    data = _write_folder(root / "data", 60, seed=3, broken=True)
    test = _write_folder(root / "test", 20, seed=4)
    wd = root / "wd"
    import fcn_captcha.fitting as fitting

    import inspect

    import fcn_captcha.probe as probe

    def chosen_cleanup(*a, **k):  # the probes' own test is tests/test_probe.py; here the call is checked
        inspect.signature(real_choose).bind(*a, **k)
        return CHOSEN, {"chosen": CHOSEN.to_dict(), "probes": [], "why": "given by the test"}

    def chosen_color(*a, **k):  # likewise (tests/test_probe.py): a mode other than the inferred one
        inspect.signature(real_color).bind(*a, **k)
        return COLOR, {"chosen": COLOR, "probes": [{"color": COLOR, "free_read_accuracy": 0.5}],
                       "why": "given by the test"}

    saved = fitting.MIN_SECOND_PASS_S, fitting._reads_better, probe.choose_cleanup, probe.choose_color
    real_choose, real_color = probe.choose_cleanup, probe.choose_color
    # the probes choose a colour mode and a clean-up (see their tests); the second pass runs in
    # whatever the tiny budget leaves, and is kept (see its test)
    fitting.MIN_SECOND_PASS_S, fitting._reads_better, probe.choose_cleanup, probe.choose_color = (
        -1e9, lambda a, b: True, chosen_cleanup, chosen_color)
    try:
        s = fit(data, wd, test=test, time_budget=BUDGET, device="cpu", overrides=OVERRIDES, cpu_model=True,
                cpu_arch="tiny", second_pass=True, log=lambda *_: None)
    finally:
        fitting.MIN_SECOND_PASS_S, fitting._reads_better, probe.choose_cleanup, probe.choose_color = saved
    return data, test, wd, s


def test_summary_fields(run):
    data, test, wd, s = run
    for k in ("model_dir", "wall_s", "scheme", "calibration", "test", "flagged"):
        assert k in s
    assert s["scheme"]["alphabet"] == "".join(sorted({c for t in (data / "labels.csv").read_text().split()[1:]
                                                       for c in t.split(",")[1]}))
    assert s["train_files"] + s["calibration_files"] == 61
    split = json.loads((wd / "split.json").read_text())
    assert not set(split["train"]) & set(split["calibration"])
    assert 0.0 <= s["calibration"]["sequence_accuracy"] <= 1.0 and s["test"]["count"] == 21


def test_model_loads_and_reads_files_in_their_pixels(run):
    from fcn_captcha.detector import Detector

    data, _, wd, _ = run
    det = Detector.load(wd / "model")
    assert det.scheme is not None and det.config.alphabet == json.loads((wd / "scheme.json").read_text())["alphabet"]
    r = det.read(str(data / "000.png"))
    assert all(-1 <= c.x <= CFG.width and -1 <= c.y <= CFG.height for c in r.chars)


def test_cpu_model_is_distilled_calibrated_and_reported(run):
    from fcn_captcha.checkpoint import load_model
    from fcn_captcha.detector import Detector

    data, test, wd, s = run
    c = s["cpu_model"]
    assert c["arch"] == "tiny" and c["flops"] < c["full_flops"]
    assert c["calibration"]["count"] == s["calibration"]["count"] and c["test"]["count"] == s["test"]["count"] == 21
    det = Detector.load(c["model_dir"])
    assert det.config.arch == "tiny" and det.scheme is not None  # reads files of the scheme as the full model does
    assert det.read(str(data / "000.png")).text is not None
    _, scfg, _, info = load_model(wd / "model-cpu")
    assert scfg.teacher == str(wd / "model") and scfg.teacher_weight == 0.5  # the kept model teaches
    assert info["teacher"] == str(wd / "model")
    assert "## CPU model (`--cpu-model`)" in (wd / "report.md").read_text()
    # its card says what made it, as the full model's does, with its own test figures
    assert info["run"] == load_model(wd / "model")[3]["run"] and info["command"]
    (row,) = info["tests"]
    assert row["sequence_accuracy"] == c["test"]["sequence_accuracy"] and row["count"] == 21
    # its one stage keeps a reserve for its own end, not the presets' 45 s, and no more time than it had
    from fcn_captcha.fitting import _student_reserve

    ccfg = json.loads((wd / "train-cpu" / "config.json").read_text())
    assert ccfg["end_reserve"] == _student_reserve(ccfg["time_budget"]) and ccfg["time_budget"] < BUDGET
    # the full model had three quarters of the budget: its trainer was given less than that, with
    # the device's reserve for its end (not the presets' 45 s)
    from fcn_captcha.fitting import DEVICE_SETTINGS

    tcfg = json.loads((wd / "train" / "config.json").read_text())
    assert tcfg["time_budget"] < BUDGET * 0.75 and tcfg["end_reserve"] == DEVICE_SETTINGS["cpu"]["train_end_s"]
    from fcn_captcha.fitting import FINAL_EPOCHS

    assert tcfg["stage_epochs"][-1] == FINAL_EPOCHS  # the last stage's passes are bounded, not only its time


def test_an_unreadable_file_is_left_out_and_listed_in_the_report(run):
    """A file that is not an image does not stop the fit: the scheme is measured without it,
    it is not prepared, and the report names it with the reason."""
    _, _, wd, s = run
    assert [n for n, _ in s["skipped"]] == [BROKEN] and "cannot" in s["skipped"][0][1]
    assert BROKEN in dict(s["scheme"]["measurements"]["unreadable"])
    report = (wd / "report.md").read_text()
    assert "## Files left out before training (1:" in report and f"- `{BROKEN}`: " in report


def test_wrong_length_label_is_flagged_and_left_out(run):
    _, _, wd, s = run
    split = json.loads((wd / "split.json").read_text())
    flagged = {f["file"] for f in s["flagged"]}
    trusted = s["weak_history"][-1].get("flags_trusted", True)
    if not trusted:  # a tiny run's network may read too few labels back to judge any
        assert not flagged and "not trusted" in (wd / "report.md").read_text()
    elif BAD in split["train"]:
        assert BAD in flagged
    centers = json.loads((wd / "weak" / "centers.json").read_text())["files"]
    assert all(centers[f]["flagged"] for f in flagged)


def test_report_is_written(run):
    _, _, wd, s = run
    text = (wd / "report.md").read_text()
    assert "## Scheme" in text and "## Flagged labels" in text and "Test folder" in text
    for fig in ("losses.png", "threshold.png", "centers.png"):
        assert (wd / "figures" / fig).stat().st_size > 1000, fig
    assert "## Confidence" in text
    if s["calibration"]["count"] >= MIN_READINGS:  # the reliability plots and the ECE of both sets
        assert "| calibration (fitted on it) |" in text and "| test |" in text
        assert (wd / "figures" / "reliability_test.png").stat().st_size > 1000
        assert set(s["confidence"]) == {"calibration", "test"}
    else:
        assert "No confidence calibrator" in text and s["confidence"] == {}


def test_the_model_card_says_what_made_it(run):
    from fcn_captcha.card import lineage, read_model_meta
    from fcn_captcha.fitting import labels_digest

    data, test, wd, s = run
    info = read_model_meta(wd / "model")["info"]
    run_rec = info["run"]
    assert run_rec["device"].startswith("cpu (") and run_rec["time_budget"] == BUDGET
    assert 0 < run_rec["wall_s"] <= s["wall_s"]
    assert run_rec["files"] == len(list(data.glob("*.png"))) and run_rec["labels_sha256"] == labels_digest(data)["labels_sha256"]
    (row,) = info["tests"]  # the test folder's figures, as fit measured them
    assert row["count"] == s["test"]["count"] and row["sequence_accuracy"] == s["test"]["sequence_accuracy"]
    assert lineage(wd / "model")["device"] == run_rec["device"] and lineage(wd / "model")["run"] == run_rec


def test_labels_digest_changes_with_a_label(tmp_path):
    from fcn_captcha.fitting import labels_digest

    d = tmp_path / "d"
    d.mkdir()
    (d / "labels.csv").write_text("file,text\na.png,AB\nb.png,CD\n")
    first = labels_digest(d)
    (d / "labels.csv").write_text("file,text\nb.png,CD\na.png,AB\n")
    assert labels_digest(d) == first  # the order of the lines does not count
    (d / "labels.csv").write_text("file,text\na.png,AB\nb.png,CE\n")
    assert labels_digest(d)["labels_sha256"] != first["labels_sha256"] and labels_digest(d)["files"] == 2


def test_running_again_resumes_and_gives_the_same_model(run):
    from fcn_captcha.checkpoint import load_model
    from fcn_captcha.fitting import fit
    from flax import nnx

    data, test, wd, s = run
    assert fit(data, wd, test=test, time_budget=BUDGET, device="cpu", overrides=OVERRIDES, cpu_model=True,
               cpu_arch="tiny", second_pass=True, log=lambda *_: None) == s

    def params():
        m = load_model(wd / "model")[0]
        return [np.asarray(a) for a in __import__("jax").tree.leaves(nnx.state(m, nnx.Param))]

    before = params()
    # as after a kill during the last steps: the finished stages stay, the outputs are made again
    for p in ("summary.json", "report.md", "train/summary.json"):
        (wd / p).unlink()
    shutil.rmtree(wd / "model")
    shutil.rmtree(wd / "train" / "model")
    lines = []
    s2 = fit(data, wd, test=test, time_budget=BUDGET, device="cpu", overrides=OVERRIDES, cpu_model=True, cpu_arch="tiny",
             second_pass=True, log=lines.append)
    assert not any(l.startswith("weak round") for l in lines)  # the EM stage was not redone
    for a, b in zip(before, params()):
        np.testing.assert_array_equal(a, b)
    assert s2["calibration"] == s["calibration"]


def test_another_job_in_the_same_workdir_is_an_error(run):
    from fcn_captcha.fitting import fit

    data, _, wd, _ = run
    with pytest.raises(ValueError, match="another job"):
        fit(data, wd, time_budget=BUDGET, limit=10, device="cpu", overrides=OVERRIDES, cpu_model=True, cpu_arch="tiny")


def test_a_fit_with_other_starts_is_another_job(run):
    from fcn_captcha.fitting import fit

    data, test, wd, _ = run  # resuming checks the starts: a workdir is never finished from other ones
    with pytest.raises(ValueError, match="another job"):
        fit(data, wd, test=test, time_budget=BUDGET, device="cpu", overrides=OVERRIDES, cpu_model=True, cpu_arch="tiny",
            second_pass=True, starts="prior,ink,ctc")
    with pytest.raises(ValueError, match="another job"):  # nor from other bounds on the passes
        fit(data, wd, test=test, time_budget=BUDGET, device="cpu", overrides=OVERRIDES, cpu_model=True, cpu_arch="tiny",
            second_pass=True, weak_epochs=5)
    with pytest.raises(ValueError, match="must be > 0"):
        fit(data, wd, device="cpu", final_epochs=0)
    with pytest.raises(ValueError, match="another job"):  # nor without the second pass it was asked for
        fit(data, wd, test=test, time_budget=BUDGET, device="cpu", overrides=OVERRIDES, cpu_model=True, cpu_arch="tiny")


def test_a_loss_the_prior_cannot_start_from_is_refused_before_anything_is_written(tmp_path):
    from fcn_captcha.fitting import fit

    wd = tmp_path / "w"
    (tmp_path / "no-data-needed").mkdir()
    with pytest.raises(ValueError, match="'focal' run cannot start from"):
        fit(tmp_path / "no-data-needed", wd, device="cpu", overrides={"loss": "focal"})
    assert not wd.exists()


@pytest.mark.parametrize("missing", ["data", "test"])
def test_a_missing_folder_is_named_before_anything_is_written(tmp_path, missing):
    """A mistyped DATA or --test folder is an error in the first second, naming it, not after
    the training (the test folder is read last)."""
    from fcn_captcha.fitting import fit

    data, wd = tmp_path / "data", tmp_path / "w"
    if missing == "test":
        data.mkdir()
    with pytest.raises(FileNotFoundError, match=("--test .*nosuch" if missing == "test" else "DATA .*data")
                       + ": no such folder"):
        fit(data, wd, test=tmp_path / "nosuch" if missing == "test" else None, device="cpu")
    assert not wd.exists()


def test_schedule_epochs_plan_the_first_stages_by_time_and_the_last_by_passes():
    from fcn_captcha.fitting import FIT_RUNS, schedule_epochs

    # 100 s, 10 ms a step, 12 steps a pass: a tenth of the time is 1,000 steps, shared by the candidates
    assert schedule_epochs(FIT_RUNS, 100.0, 0.01, 12, 300.0) == (FIT_RUNS, (1.0, 2.0, 300.0))  # 333 and 500
    # steps a candidate, bounded at 1 and 2 passes; 36 steps a candidate in the first stage is exactly a pass
    assert schedule_epochs(FIT_RUNS, 10.8, 0.01, 36, 300.0) == (FIT_RUNS, (1.0, 1.5, 300.0))
    assert schedule_epochs((1,), 100.0, 0.01, 12, 250.0) == ((1,), (250.0,))  # one stage: no restarts
    assert schedule_epochs((4, 1), 100.0, 0.01, 12, 300.0) == ((4, 1), (1.0, 300.0))


def test_schedule_epochs_make_one_stage_when_the_first_candidates_get_less_than_a_pass():
    from fcn_captcha.fitting import FIT_RUNS, schedule_epochs

    # 10 s, 100 ms a step, 120 steps a pass: 3.3 steps a candidate is no choice among them
    assert schedule_epochs(FIT_RUNS, 10.0, 0.1, 120, 300.0) == ((1,), (300.0,))
    assert schedule_epochs(FIT_RUNS, 0.0, 0.1, 120, 300.0) == ((1,), (300.0,))
    assert schedule_epochs(FIT_RUNS, 10.7, 0.01, 36, 300.0) == ((1,), (300.0,))  # just under a pass


def test_fit_trains_with_narrower_spots_across_unless_set(run):
    from fcn_captcha.checkpoint import load_model
    from fcn_captcha.fitting import FIT_SIGMA_X, scheme_config
    from fcn_captcha.scheme import infer_scheme

    scheme = infer_scheme(run[0])
    assert FIT_SIGMA_X < Config().sigma_x  # narrower than the seed's spots, which the presets keep
    for device in ("cpu", "gpu"):
        assert scheme_config(scheme, device).sigma_x == FIT_SIGMA_X
        assert scheme_config(scheme, device).sigma_y == Config().sigma_y
    assert scheme_config(scheme, "cpu", sigma_x=1.3).sigma_x == 1.3  # --set sigma_x= is obeyed
    assert load_model(run[2] / "model")[1].sigma_x == FIT_SIGMA_X  # and the fitted model was trained so


def test_schedule_runs_are_one_stage_with_several_networks():
    from fcn_captcha.fitting import FIT_RUNS, schedule_epochs, schedule_runs

    assert schedule_runs(1) == FIT_RUNS and schedule_runs(1, {"arch": "cpu"}) == FIT_RUNS
    for members in (2, 3, 6):  # the networks share the EM network's start: no choice among restarts of it
        assert schedule_runs(members) == (1,)
        assert schedule_epochs(schedule_runs(members), 100.0, 0.01, 12, 300.0) == ((1,), (300.0,))
    assert schedule_runs(3, {"stage_runs": [3, 2, 1]}) == (3, 2, 1)  # --set stage_runs= is obeyed
    assert schedule_runs(1, {"stage_runs": (1,)}) == (1,)


def test_parse_starts():
    from fcn_captcha.fitting import parse_starts

    assert parse_starts(None) == ["prior", "ink-on-prior"] and parse_starts(None, use_prior=False) == ["ink"]
    assert parse_starts(" ctc, ink") == ["ctc", "ink"] and parse_starts(["ink"]) == ["ink"]
    assert parse_starts("ink-on-prior,ink") == ["ink-on-prior", "ink"]
    for bad, match in (("ink,crnn", "crnn"), ("ink,ink", "distinct"), ("", "distinct")):
        with pytest.raises(ValueError, match=match):
            parse_starts(bad)
    with pytest.raises(ValueError, match="no-prior"):
        parse_starts("prior,ctc", use_prior=False)
    with pytest.raises(ValueError, match="no-prior"):
        parse_starts("ink-on-prior", use_prior=False)


def test_the_ctc_start_is_compared_and_written(run, tmp_path):
    """The EM stage alone, on the run's prepared canvases, with the ink and the CTC starts."""
    from fcn_captcha.fitting import _weak_stage, scheme_config
    from fcn_captcha.scheme import SchemeInfo

    _, _, wd, _ = run
    split = json.loads((wd / "split.json").read_text())
    cfg = scheme_config(SchemeInfo.from_dict(json.loads((wd / "scheme.json").read_text())), "cpu",
                        arch="tiny", batch_size=8)
    info = _weak_stage(tmp_path, cfg, wd / "prepared", split["train"], split["calibration"], 5.0, lambda *_: None,
                       use_prior=False, starts=["ink", "ctc"])
    compared = [c["from"] for c in info["start"]["compared"]]
    assert compared == ["ink profile", "CTC alignment"] and info["start"]["from"] in compared
    assert [r["round"] for r in info["history"]] == [1, 2, 3]
    assert (tmp_path / "weak" / "centers.json").exists() and (tmp_path / "weak" / "model" / "model.json").exists()
    assert _weak_stage(tmp_path, cfg, wd / "prepared", [], [], 5.0, lambda *_: None) == info  # done: read back
    # the rounds' passes are bounded (here by the least round of 20 steps, not by the 5 s)
    short = _weak_stage(tmp_path / "short", cfg, wd / "prepared", split["train"], split["calibration"], 60.0,
                        lambda *_: None, use_prior=False, starts=["ink"], epochs=0.5)
    assert short["steps"] == 20


def test_cli_parses_and_calls_fit(monkeypatch, tmp_path, capsys):
    import fcn_captcha.fitting as fit_mod
    from fcn_captcha.cli import main

    seen = {}
    monkeypatch.setattr(fit_mod, "fit", lambda data, wd, **kw: seen.update(data=data, wd=wd, **kw) or {"wall_s": 1})
    assert main(["fit", "D", "--workdir", "W", "--test", "T", "--time-budget", "60", "--limit", "5"]) == 0
    assert seen == {"data": "D", "wd": "W", "test": "T", "time_budget": 60.0, "limit": 5, "holdout": 0.22, "seed": 0,
                    "prior": True, "overrides": {}, "cpu_model": False, "starts": None, "second_pass": False,
                    "members": None}
    assert main(["fit", "D", "--workdir", "W", "--weak-epochs", "12", "--final-epochs", "40"]) == 0
    assert (seen["weak_epochs"], seen["final_epochs"]) == (12.0, 40.0)
    assert main(["fit", "D", "--workdir", "W", "--no-prior", "--set", "warp=0", "--set", "min_distance=2,6",
                 "--cpu-model"]) == 0
    assert seen["prior"] is False and seen["overrides"] == {"warp": 0.0, "min_distance": [2.0, 6.0]}
    assert seen["cpu_model"] is True
    assert main(["fit", "D", "--workdir", "W", "--second-pass"]) == 0
    assert seen["second_pass"] is True
    assert main(["fit", "D", "--workdir", "W", "--members", "3"]) == 0
    assert seen["members"] == 3
    assert main(["fit", "D", "--workdir", "W", "--starts", "prior,ink,ctc"]) == 0
    assert seen["starts"] == "prior,ink,ctc"
    assert main(["fit", "D", "--workdir", "W", "--set", "nonsense=1"]) != 0  # refused, naming the field
    assert "nonsense" in capsys.readouterr().err


def test_a_chosen_cleanup_prepares_again_and_travels_in_the_card(run):
    """When the probes choose a clean-up (the shared run's choice is given), the folder is
    prepared with it, the scheme and the model card carry it, and the detector reads files
    through it (positions in file pixels)."""
    from fcn_captcha.detector import Detector

    data, _, wd, s = run
    assert json.loads((wd / "prepared" / "done.json").read_text())["cleanup"] == CHOSEN.to_dict()
    assert json.loads((wd / "scheme.json").read_text())["cleanup"]["deskew"] is True
    assert s["cleanup"]["why"] == "given by the test"
    det = Detector.load(wd / "model")
    assert det.scheme.cleanups == CHOSEN
    r = det.read(str(data / "000.png"))
    assert all(0 <= c.x < 96 and 0 <= c.y < 40 for c in r.chars)
    assert "deskew" in (wd / "report.md").read_text()


def test_a_chosen_colour_mode_prepares_again_and_travels_in_the_card(run):
    """When the colour probes choose a mode other than the inferred one (given here), the
    folder is prepared in it, the scheme and the card carry it, and the report says why."""
    from fcn_captcha.detector import Detector
    from fcn_captcha.scheme import SchemeInfo

    data, _, wd, s = run
    done = json.loads((wd / "prepared" / "done.json").read_text())
    assert done["color"] == COLOR and done["seconds_per_file"] > 0  # its cost measured again, for the reserve
    scheme = SchemeInfo.from_dict(json.loads((wd / "scheme.json").read_text()))
    assert scheme.color == COLOR and s["color"]["chosen"] == COLOR
    det = Detector.load(wd / "model")
    assert det.scheme.color == COLOR
    np.testing.assert_array_equal(det.scheme.prepare(str(data / "001.png")),
                                  np.asarray(Image.open(wd / "prepared" / "001.png")))
    assert f"{COLOR}: 50.0%" in (wd / "report.md").read_text()


def test_second_pass_trains_from_the_em_network_with_the_first_as_teacher_and_replaces_it(run):
    """The shared run forces the choice to the second network (``_reads_better``): it is
    distilled from the first, starts where the first started, and becomes the model; the
    CPU model learns from it. (The resume test checks that a resumed run keeps it.)"""
    import jax
    from flax import nnx

    from fcn_captcha.checkpoint import load_model

    data, test, wd, s = run
    sp = s["second_pass"]
    assert sp["kept"] == "second" and json.loads((wd / "second_pass.json").read_text()) == sp
    assert sp["calibration"]["first"]["count"] == s["calibration"]["count"]
    assert sp["calibration"]["second"] == {k: s["calibration"][k] for k in sp["calibration"]["second"]}
    assert set(sp["test"]) == {"first", "second"} and sp["test"]["second"]["count"] == 21
    _, scfg, _, _ = load_model(wd / "model-2")
    assert scfg.teacher == str(wd / "train" / "model") and scfg.init_from == str(wd / "weak" / "model")
    assert scfg.arch == OVERRIDES["arch"] and scfg.stage_runs == (1,) and scfg.teacher_weight == 0.5

    def params(d):
        return [np.asarray(a) for a in jax.tree.leaves(nnx.state(load_model(d)[0], nnx.Param))]

    for a, b in zip(params(wd / "model"), params(wd / "model-2")):
        np.testing.assert_array_equal(a, b)
    assert any((a != b).any() for a, b in zip(params(wd / "model"), params(wd / "train" / "model")))
    assert load_model(wd / "model")[3]["second_pass"]["kept"] == "second"
    assert "## Second pass" in (wd / "report.md").read_text()


def test_members_train_from_the_em_network_and_read_as_their_mean(run, tmp_path, monkeypatch):
    """``_members_stage`` on a copy of the shared run's work: a second network trained on its
    own (another seed, from the EM network, one candidate), the two read as their mean,
    calibrated, recorded, and read back when done; the model saves, loads and reads files."""
    import jax
    from flax import nnx

    import fcn_captcha.fitting as fitting
    from fcn_captcha.checkpoint import load_model, save_model
    from fcn_captcha.detector import Detector
    from fcn_captcha.model import MeanNet, networks

    data, _, src, s = run
    wd = tmp_path / "wd"
    for part in ("train", "weak", "prepared"):
        shutil.copytree(src / part, wd / part, ignore=shutil.ignore_patterns("checkpoints"))
    tcfg = Config.from_dict(json.loads((src / "train" / "config.json").read_text()))
    split = json.loads((src / "split.json").read_text())
    args = (wd, tcfg, 2, lambda: 1.0, wd / "prepared", split["train"], split["calibration"], lambda *_: None)
    with monkeypatch.context() as m:  # the tiny run's second network: 1 s (its trainer's least steps)
        m.setattr(fitting, "MIN_MEMBER_S", 0.5)
        model, cfg, thr, rec = fitting._members_stage(*args)
    assert isinstance(model, MeanNet) and cfg.members == 2 and 0 < thr <= 1
    _, mcfg, _, _ = load_model(wd / "train-m1" / "model")
    assert mcfg.seed == tcfg.seed + 1 and mcfg.init_from == str(wd / "weak" / "model") and mcfg.stage_runs == (1,)
    assert mcfg.stage_epochs == (tcfg.stage_epochs[-1],) and mcfg.members == 1
    # its share of the time left (1 s here) and the schedule's reserve: nothing borrowed from the others
    assert mcfg.time_budget == 1.0 and mcfg.end_reserve == tcfg.end_reserve
    assert rec["members"] == 2 and [e["dir"] for e in rec["each"]] == [str(wd / "train"), str(wd / "train-m1")]
    assert rec["calibration"]["count"] > 0 and json.loads((wd / "members.json").read_text()) == rec
    for net, d in zip(networks(model), ("train", "train-m1")):  # the mean is of these two networks
        want = [np.asarray(a) for a in jax.tree.leaves(nnx.state(load_model(wd / d / "model")[0], nnx.Param))]
        for a, b in zip(want, jax.tree.leaves(nnx.state(net, nnx.Param))):
            np.testing.assert_array_equal(a, np.asarray(b))
    stamp = (wd / "train-m1" / "summary.json").stat().st_mtime_ns
    again = fitting._members_stage(*args)  # done: read back, nothing trained again
    assert again[2] == thr and again[3] == rec and (wd / "train-m1" / "summary.json").stat().st_mtime_ns == stamp
    save_model(wd / "model", model, cfg, thr, {"scheme": s["scheme"]})
    det = Detector.load(wd / "model")
    assert isinstance(det.model, MeanNet) and det.read(str(data / "000.png")).text is not None
    # with less than MIN_MEMBER_S a network each, no more are trained: the schedule's network is the model
    short = (tmp_path / "short", tcfg, 3, lambda: 2 * fitting.MIN_MEMBER_S - 1, wd / "prepared", split["train"],
             split["calibration"], lambda *_: None)
    for part in ("train", "weak"):
        shutil.copytree(wd / part, tmp_path / "short" / part, ignore=shutil.ignore_patterns("checkpoints"))
    one, ocfg, othr, orec = fitting._members_stage(*short)
    assert not isinstance(one, MeanNet) and ocfg.members == 1 and orec["members"] == 1
    assert othr == load_model(wd / "train" / "model")[2] and not (tmp_path / "short" / "train-m1").exists()
    assert "networks 2-3 not trained" in orec["skipped"] and fitting._members_stage(*short)[3] == orec
    assert not (tmp_path / "short" / "train-m1").exists()  # read back: nothing trained on the second call
    assert "One network" in "\n".join(fitting._members_lines(orec, {"sequence_accuracy": 0.5}, None))
    lines = "\n".join(fitting._members_lines(rec | {"each": [e | {"test": 0.5} for e in rec["each"]]},
                                              {"sequence_accuracy": 0.75}, None))
    assert "mean of 2 networks" in lines and "| the mean |" in lines and "50.00%" in lines


def test_default_members_by_device_and_for_old_work(tmp_path):
    from fcn_captcha.fitting import DEVICE_SETTINGS, default_members

    assert default_members(tmp_path, "gpu") == DEVICE_SETTINGS["gpu"]["members"] == 3
    assert default_members(tmp_path, "cpu") == 1 and default_members(tmp_path, "gpu", second_pass=True) == 1
    (tmp_path / "job.json").write_text(json.dumps({"device": "gpu"}))  # begun by a version of one network
    assert default_members(tmp_path, "gpu") == 1
    (tmp_path / "job.json").write_text(json.dumps({"device": "gpu", "members": 3}))
    assert default_members(tmp_path, "gpu") == 3


def test_a_gpu_scales_close_characters_up_and_a_resumed_run_keeps_its_canvas(tmp_path):
    from fcn_captcha.fitting import _pitch_note, _scheme_stage

    data = tmp_path / "data"
    data.mkdir()
    texts = ["1234", "3456", "6712"]  # 90 x 36 files: 22.5 px a character, under MIN_PITCH
    for i in range(len(texts)):
        Image.new("RGB", (90, 36), "white").save(data / f"{i}.png")
    (data / "labels.csv").write_text("file,text\n" + "".join(f"{i}.png,{t}\n" for i, t in enumerate(texts)))
    heights = {}
    for device in ("gpu", "cpu"):
        wd = tmp_path / device
        wd.mkdir()
        heights[device] = _scheme_stage(data, wd / "scheme.json", device).height
        assert json.loads((wd / "scheme.json").read_text())["height"] == heights[device]
    assert heights == {"gpu": 64, "cpu": 36}  # scaled up to the GPU prior's canvas; a CPU keeps the files'
    # a work directory begun with another canvas (an earlier version, or the other device) keeps it
    assert _scheme_stage(data, tmp_path / "cpu" / "scheme.json", "gpu").height == 36
    notes = {d: _pitch_note(json.loads((tmp_path / d / "scheme.json").read_text())) for d in ("gpu", "cpu")}
    assert notes == {"gpu": "; 22.5 px a character at the files' median height, under 32: scaled up from 36 px high",
                     "cpu": "; 22.5 px a character at the files' median height"}
    assert _pitch_note({"measurements": {}}) == ""  # a scheme.json of a version before the pitch


def test_members_are_checked_and_part_of_the_job(run):
    from fcn_captcha.fitting import fit

    data, test, wd, _ = run
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="members"):
            fit(data, wd, device="cpu", members=bad)
    with pytest.raises(ValueError, match="choose one"):
        fit(data, wd, device="cpu", members=2, second_pass=True)
    with pytest.raises(ValueError, match="another job"):  # a workdir is never finished with other members
        fit(data, wd, test=test, time_budget=BUDGET, device="cpu", overrides=OVERRIDES, cpu_model=True, cpu_arch="tiny",
            members=2)


def test_second_pass_choice_and_skip(tmp_path):
    import fcn_captcha.fitting as fitting

    m = {"sequence_accuracy": 0.9, "character_accuracy": 0.97}
    assert not fitting._reads_better(m, dict(m))  # a tie keeps the first
    assert fitting._reads_better(m, m | {"sequence_accuracy": 0.91, "character_accuracy": 0.9})
    assert not fitting._reads_better(m, m | {"sequence_accuracy": 0.89, "character_accuracy": 1.0})
    rec, reads = fitting._second_pass(tmp_path, Config(), fitting.MIN_SECOND_PASS_S - 1, {}, tmp_path, [], None, None,
                                      lambda *_: None)
    assert reads == {}  # nothing read: fit reads the files itself
    assert rec == {"kept": "first", "skipped": f"{fitting.MIN_SECOND_PASS_S - 1:.0f} s left, under "
                                               f"{fitting.MIN_SECOND_PASS_S:.0f} s"}
    assert json.loads((tmp_path / "second_pass.json").read_text()) == rec
    assert f"Skipped: {rec['skipped']}" in "\n".join(fitting._second_pass_lines(rec))
    (tmp_path / "f").mkdir()
    assert "'focal' loss" in fitting._second_pass(tmp_path / "f", Config(loss="focal"), 1e9, {}, tmp_path, [], None,
                                                  None, lambda *_: None)[0]["skipped"]


def test_the_report_says_where_the_em_rounds_started():
    from fcn_captcha.fitting import _start_sentence

    on_prior = {"arch": "wide", "symbols_known": "0123", "symbols_new": "AB"}
    assert "alignment on its maps" in _start_sentence({"from": "generic prior", **on_prior})
    s = _start_sentence({"from": "generic prior, ink-profile centers", "why": "it read more", **on_prior})
    assert "4 symbols known" in s and "`AB`" in s and "from the ink profile (it read more)" in s
    assert "CTC" in _start_sentence({"from": "CTC alignment", "ctc_steps": 5, "network": "cpu",
                                     "ctc_read_agreement": 0.5, "why": "w"})
    assert _start_sentence({"from": "ink profile", "why": "no prior asked for"}) == (
        "Started from a fresh network and the ink profile (no prior asked for).")


def test_the_network_is_given_or_chosen_by_its_step_and_a_resumed_run_keeps_it(run, tmp_path, monkeypatch):
    import fcn_captcha.fitting as fitting
    import fcn_captcha.probe as probe
    from fcn_captcha.scheme import infer_scheme

    _, _, wd, s = run
    assert s["network"]["chosen"] == "cpu" and "given" in s["network"]["why"]  # OVERRIDES name the network
    assert json.loads((wd / "network.json").read_text()) == s["network"]
    data = run[0]
    scheme = infer_scheme(data)
    cfg = fitting.scheme_config(scheme, "cpu")
    calls = []

    def choose(sch, c, d, pairs, archs, seconds, min_steps, reads, **k):  # the choice itself: tests/test_probe.py
        calls.append((archs, seconds, min_steps, reads))
        return "wide", {"chosen": "wide", "why": "given by the test", "timed": []}

    monkeypatch.setattr(probe, "choose_network", choose)
    for _ in range(2):  # the second call resumes: the record is read, nothing is timed again
        c, rec = fitting._network_stage(tmp_path, scheme, cfg, data, [], {}, "cpu", 500.0, True, lambda *_: None,
                                        reads=300.0)
        assert c.arch == "wide" == rec["chosen"]
    # the time the probes leave; the reads passed on
    assert calls == [(fitting.DEVICE_SETTINGS["cpu"]["archs"], (1 - 2 * fitting.PROBE_SHARE) * 500.0,
                      fitting.MIN_NET_STEPS, 300.0)]
    (tmp_path / "gpu").mkdir()
    c, rec = fitting._network_stage(tmp_path / "gpu", scheme, fitting.scheme_config(scheme, "gpu"), data, [], {},
                                    "gpu", 500.0, True, lambda *_: None)
    assert c.arch == "wide" and rec == {"chosen": "wide", "why": "the gpu's network"} and len(calls) == 1


def test_the_suppression_distance_is_chosen_on_the_calibration_files_and_recorded(run):
    from fcn_captcha.calibration import SPACINGS
    from fcn_captcha.checkpoint import load_model
    from fcn_captcha.fitting import _spacing_stage

    _, _, wd, _ = run
    model, mcfg, thr, info = load_model(wd / "model")
    assert "spacing" in info  # the shared run's tiny budget: run or skipped, it is said in the card
    calib = json.loads((wd / "split.json").read_text())["calibration"]
    lines = []
    cfg2, thr2, info2 = _spacing_stage(model, mcfg.replace(min_distance=(1.0, 8.0)), thr, info, wd / "prepared",
                                       calib, lines.append)
    rec = info2["spacing"]
    assert rec["configured"] == (1.0, 8.0) and set(rec["best"]) == {str(float(x)) for x in SPACINGS}
    assert cfg2.min_distance == tuple(rec["min_distance"]) and rec["count"] == len(calib)
    assert rec["changed"] == (cfg2.min_distance != (1.0, 8.0))
    if rec["changed"]:  # the threshold and the confidence are fitted again at the new distance
        assert thr2 == rec["threshold"] and rec["best"][str(cfg2.min_distance[0])] > rec["best"]["1.0"]
    else:
        assert thr2 == thr and info2.get("confidence") == info.get("confidence")
    assert len(lines) == 2 and lines[0].startswith("spacing: ") and lines[1].startswith("split: ")
    split = info2["split_peaks"]  # then the split, at the distance and threshold chosen; on only when it reads more
    assert split["count"] == len(calib) + split["flagged"] and cfg2.split_width == split["split_width"]
    assert split["split_width"] == 0.0 or max(split["right"].values()) > split["off"]
    # no time beyond reading the files: the configured distance alone is tried, and the record says so
    _, thr3, info3 = _spacing_stage(model, mcfg.replace(min_distance=(1.0, 8.0)), thr, info, wd / "prepared",
                                    calib, lines.append, seconds=0.0)
    rec = info3["spacing"]
    assert list(rec["best"]) == ["1.0"] and rec["untried"] == [x for x in SPACINGS if x != 1.0]
    assert not rec["changed"] and thr3 == thr and "not tried, for the budget: 2, 3, 4, 5, 6" in lines[-2]
    assert info3["split_peaks"]["split_width"] == 0.0 and "s needed" in info3["split_peaks"]["skipped"]
    assert lines[-1].startswith("split: not tried (")
    # the flagged training files join the calibration files as the split's evidence
    flagged = [{"file": n, "text": "?", "read": "?", "reason": "a test's"} for n in calib[:3]]
    _, _, info4 = _spacing_stage(model, mcfg, thr, info | {"flagged": flagged}, wd / "prepared", calib, lines.append)
    assert info4["split_peaks"]["flagged"] == 3 and info4["split_peaks"]["count"] == len(calib) + 3
    assert "calibration and flagged training files (3 flagged)" in lines[-1]
