"""End to end: organisers' flat folder and Grand Challenge layout give the same numbers; metrics.json shape;
runtime; every validation error of issue 4 item 5 (one line naming pair and file, other pairs still done)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy.ndimage import map_coordinates

from evaluation import metrics as M
from evaluation.evaluate import run
from evaluation.tests import synth

PAIRS = [("0099", 1), ("0099", 2), ("0100", 1), ("0100", 2)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    gt = str(root / "gt")
    points = synth.make_ground_truth(gt)
    fields = {pair: synth.smooth_field(seed=n + 1) for n, pair in enumerate(PAIRS)}
    return root, gt, points, fields


def reference_tre(points, field):
    fix, mov = points
    u = np.stack([map_coordinates(field[..., c].astype(np.float64), fix.T) for c in range(3)], axis=1)
    return np.linalg.norm((fix + u - mov) * 0.5, axis=1)


def evaluate(inp, gt, out, **kw):
    code = run(str(inp), str(gt), str(out), quiet=True, **kw)
    with open(out) as handle:
        return code, json.load(handle)


def test_organisers_layout_end_to_end(dataset, tmp_path):
    root, gt, points, fields = dataset
    inp = tmp_path / "in"
    for n, ((case, m), field) in enumerate(fields.items()):
        synth.write_nifti_field(str(inp), case, m, field, ".npz" if n == 1 else ".nii.gz")
    with open(inp / "timings.json", "w") as handle:
        json.dump({"pairs": {"0099_0000<--0099_0001": {"seconds": 12.5, "device": "cpu"}}}, handle)
    code, data = evaluate(inp, gt, tmp_path / "out" / "metrics.json", workers=2)
    assert code == 0 and data["errors"] == [] and data["layout"] == "organisers"
    # Learn2Reg shape (docs/CONVENTIONS.md §4)
    assert {"name", "aggregates", "cases", "eval_version"} <= set(data)
    assert set(data["cases"]) == {f"{c}_0000<--{c}_{m:04d}" for c, m in PAIRS}
    for metric, agg in data["aggregates"].items():
        assert set(agg) == {"mean", "std", "30"}, metric
    for key, case in data["cases"].items():
        for metric, value in case.items():
            assert set(value) == {"mean", "detailed"}
        (c, m) = key[:4], int(key[-1])
        expected = reference_tre(points[(c, m)], fields[(c, m)])
        np.testing.assert_allclose(case[M.TRE]["detailed"], expected, atol=1e-6)
        assert case[M.TRE]["mean"] == pytest.approx(expected.mean(), abs=1e-6)
    means = [data["cases"][k][M.TRE]["mean"] for k in sorted(data["cases"])]
    assert data["aggregates"][M.TRE]["30"] == pytest.approx(np.quantile(means, 0.3))
    assert data["aggregates"][M.TRE]["std"] == pytest.approx(np.std(means))
    assert set(data["aggregates_by_sequence"]) == {"ceT1", "T2"}
    ce = [data["cases"][k][M.TRE]["mean"] for k in data["cases"] if k.endswith("0001")]
    assert data["aggregates_by_sequence"]["ceT1"][M.TRE]["mean"] == pytest.approx(np.mean(ce))
    assert data["pooled_landmarks"]["all"]["n_landmarks"] == 24
    # the organisers' names (their ReMIND2Reg_VAL_evaluation_config.json and evaluation.py) beside our extras
    official = {"TRE_lm", "LogJacDetStd", "num_foldings"}
    for names in (set(data["cases"]["0100_0000<--0100_0002"]), set(data["aggregates"])):
        assert official <= names and not {"TRE", "SDlogJ"} & names, names
        assert {"TRE_initial", "TRE_worst30", "num_folds_true", "fold_fraction_true"} <= names
    assert set(data["pooled_landmarks"]["all"]) == {"n_landmarks", "TRE_lm", "TRE_worst30"}
    assert data["cases"]["0099_0000<--0099_0001"][M.RUNTIME]["mean"] == 12.5
    assert M.RUNTIME not in data["cases"]["0100_0000<--0100_0001"]
    assert data["runtime_source"].startswith("timings.json")
    assert not [f for f in os.listdir(tmp_path / "out") if f != "metrics.json"]  # no temp file left


def test_grand_challenge_layout_same_numbers(dataset, tmp_path):
    root, gt, points, fields = dataset
    durations = {pair: 10.0 + n for n, pair in enumerate(PAIRS)}
    inp = synth.write_gc_layout(str(tmp_path / "in"), fields, synth.oblique_grid(), durations)
    code, data = evaluate(inp, gt, tmp_path / "metrics.json")
    assert code == 0 and data["layout"] == "grand-challenge", data["errors"]
    for key, case in data["cases"].items():
        c, m = key[:4], int(key[-1])
        np.testing.assert_allclose(case[M.TRE]["detailed"], reference_tre(points[(c, m)], fields[(c, m)]), atol=1e-4)
        # the organisers' layout scores the voxel field itself: the DSPF, converted back, gives the same SDlogJ
        # (computed here, not read from an earlier test's result, so this test also checks it when run alone)
        assert case[M.SDLOGJ]["mean"] == pytest.approx(M.plausibility(fields[(c, m)])[M.SDLOGJ], abs=1e-4)
        assert case[M.RUNTIME]["mean"] == pytest.approx(durations[(c, m)])
    assert data["runtime_source"].startswith("Grand Challenge job exec_duration")


def test_grand_challenge_missing_job_and_geometry_mismatch(dataset, tmp_path):
    root, gt, points, fields = dataset
    wrong = synth.oblique_grid()
    wrong = type(wrong)(wrong.shape, wrong.spacing, (0.0, 0.0, 0.0), wrong.direction)
    inp = synth.write_gc_layout(str(tmp_path / "in"), {("0099", 1): fields[("0099", 1)]}, wrong)
    code, data = evaluate(inp, gt, tmp_path / "metrics.json")
    assert code == 1
    assert "geometry" in data["failed_cases"]["0099_0000<--0099_0001"]
    assert "no displacement field" in data["failed_cases"]["0100_0000<--0100_0002"]


def test_no_config_evaluates_every_landmark_pair(tmp_path):
    gt = tmp_path / "gt"
    points = synth.make_ground_truth(str(gt), cases=("0101",), modalities=(2,), config=False)
    synth.write_nifti_field(str(tmp_path / "in"), "0101", 2, np.zeros(synth.SHAPE + (3,), np.float32))
    code, data = evaluate(tmp_path / "in", gt, tmp_path / "m.json")
    assert code == 0 and list(data["cases"]) == ["0101_0000<--0101_0002"]
    fix, mov = points[("0101", 2)]
    assert data["cases"]["0101_0000<--0101_0002"][M.TRE]["mean"] == pytest.approx(
        np.linalg.norm((fix - mov) * 0.5, axis=1).mean())


BAD = {
    "missing": ("missing displacement field", None),
    "channel_first": ("channel-first", lambda f: np.ascontiguousarray(np.moveaxis(f, -1, 0))),
    "wrong_shape": ("expected (32, 30, 28, 3)", lambda f: f[:-1]),
    "nan": ("NaN/Inf", lambda f: np.where(np.arange(f.size).reshape(f.shape) == 7, np.nan, f).astype(np.float32)),
    "inf": ("NaN/Inf", lambda f: np.where(np.arange(f.size).reshape(f.shape) == 9, np.inf, f).astype(np.float32)),
}


@pytest.mark.parametrize("kind", list(BAD) + ["truncated", "garbage_npz", "npz_wrong_key"])
def test_validation_errors(dataset, tmp_path, kind):
    root, gt, points, fields = dataset
    inp = tmp_path / "in"
    for case, m in PAIRS[1:]:
        synth.write_nifti_field(str(inp), case, m, fields[(case, m)])
    bad_case, bad_m = PAIRS[0]
    if kind in BAD and BAD[kind][1] is not None:
        synth.write_nifti_field(str(inp), bad_case, bad_m, BAD[kind][1](fields[(bad_case, bad_m)]))
    elif kind == "truncated":
        path = synth.write_nifti_field(str(inp), bad_case, bad_m, fields[(bad_case, bad_m)])
        blob = open(path, "rb").read()
        open(path, "wb").write(blob[: len(blob) // 2])
    elif kind == "garbage_npz":
        open(inp / "disp_0099_0000_0099_0001.npz", "wb").write(b"PK\x03\x04 not really a zip")
    elif kind == "npz_wrong_key":
        np.savez(inp / "disp_0099_0000_0099_0001.npz", field=fields[(bad_case, bad_m)])
    code, data = evaluate(inp, gt, tmp_path / "metrics.json")
    assert code == 1
    assert len(data["errors"]) == 1 and "\n" not in data["errors"][0]
    message = data["failed_cases"]["0099_0000<--0099_0001"]
    assert message.startswith("0099_0000<--0099_0001: disp_0099_0000_0099_0001.")
    expected = {"truncated": "truncated", "garbage_npz": "not a valid .npz", "npz_wrong_key": "arr_0"}.get(kind) or BAD[kind][0]
    assert expected in message, message
    assert len(data["cases"]) == 3
    assert data["counts"] == {"pairs": 4, "evaluated": 3, "failed": 1, "scored_as_identity": 0}


def test_cli_help_and_exit_status(dataset, tmp_path):
    root, gt, points, fields = dataset
    script = os.path.join(os.path.dirname(__file__), "..", "evaluate.py")
    out = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--ground-truth" in out.stdout
    inp = tmp_path / "in"
    for (case, m), field in list(fields.items())[:2]:
        synth.write_nifti_field(str(inp), case, m, field)
    out = subprocess.run([sys.executable, script, "--input", str(inp), "--ground-truth", gt, "--output",
                          str(tmp_path / "m.json")], capture_output=True, text=True)
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]  # what the platform shows for a failed job
    assert last.startswith("ERROR: evaluation failed: 2 of 4 pairs not scored"), last
    assert "0100_0000<--0100_0001" in last and "0100_0000<--0100_0002" in last and "missing" in last
    assert len(json.load(open(tmp_path / "m.json"))["cases"]) == 2
    assert "TRE_lm" in out.stdout and "ERROR" not in out.stdout  # INFO on stdout, errors on stderr only
    out = subprocess.run([sys.executable, script, "--input", str(inp), "--ground-truth", str(tmp_path / "nowhere"),
                          "--output", str(tmp_path / "m2.json")], capture_output=True, text=True)
    assert out.returncode == 2 and "does not exist" in out.stderr.strip().splitlines()[-1]
    assert json.load(open(tmp_path / "m2.json"))["errors"]


def test_report_pngs(dataset, tmp_path):
    pytest.importorskip("matplotlib")
    root, gt, points, fields = dataset
    inp = tmp_path / "in"
    synth.write_nifti_field(str(inp), "0099", 1, fields[("0099", 1)])
    code, data = evaluate(inp, gt, tmp_path / "m.json", report_dir=str(tmp_path / "report"), workers=1)
    pngs = sorted(os.listdir(tmp_path / "report"))
    assert "0099_0000_from_0099_0001.png" in pngs and "summary_TRE_lm.png" in pngs


def test_grand_challenge_job_with_both_mr_is_scored_as_ceT1(dataset, tmp_path):
    # the algorithm writes the ceT1 field for a job carrying both MRs (interfaces.grand_challenge.choose_target);
    # the evaluation must pair that job the same way
    root, gt, points, fields = dataset
    inp = synth.write_gc_layout(str(tmp_path / "in"), {("0099", 1): fields[("0099", 1)]}, synth.oblique_grid())
    with open(os.path.join(inp, "predictions.json")) as handle:
        jobs = json.load(handle)
    key = "interface" if "interface" in jobs[0]["inputs"][0] else "socket"
    jobs[0]["inputs"].append({key: {"slug": "preoperative-t2-mri", "relative_path": "images/preoperative-t2-mri"},
                              "image": {"name": "ReMIND2Reg_0099_0002.nii.gz"}})
    with open(os.path.join(inp, "predictions.json"), "w") as handle:
        json.dump(jobs, handle)
    code, data = evaluate(inp, gt, tmp_path / "metrics.json")
    assert "0099_0000<--0099_0001" in data["cases"], data["failed_cases"]
    np.testing.assert_allclose(data["cases"]["0099_0000<--0099_0001"][M.TRE]["detailed"],
                               reference_tre(points[("0099", 1)], fields[("0099", 1)]), atol=1e-4)


def test_grand_challenge_job_with_both_mr_follows_the_t2_image(dataset, tmp_path, monkeypatch):
    # the T2 image (REMIND2REG_SEQUENCES=T2 baked in) writes the T2 field for a job carrying both MRs; an
    # evaluation told the same sequence pairs the job with T2
    root, gt, points, fields = dataset
    inp = synth.write_gc_layout(str(tmp_path / "in"), {("0099", 2): fields[("0099", 2)]}, synth.oblique_grid())
    with open(os.path.join(inp, "predictions.json")) as handle:
        jobs = json.load(handle)
    key = "interface" if "interface" in jobs[0]["inputs"][0] else "socket"
    jobs[0]["inputs"].append({key: {"slug": "preoperative-t1-contrast-mri",
                                    "relative_path": "images/preoperative-t1-contrast-mri"},
                              "image": {"name": "ReMIND2Reg_0099_0001.nii.gz"}})
    with open(os.path.join(inp, "predictions.json"), "w") as handle:
        json.dump(jobs, handle)
    monkeypatch.setenv("REMIND2REG_SEQUENCES", "T2")
    code, data = evaluate(inp, gt, tmp_path / "metrics.json")
    assert list(data["cases"]) == ["0099_0000<--0099_0002"], data["failed_cases"]
    np.testing.assert_allclose(data["cases"]["0099_0000<--0099_0002"][M.TRE]["detailed"],
                               reference_tre(points[("0099", 2)], fields[("0099", 2)]), atol=1e-4)


def test_shard_timings_files_are_merged(dataset, tmp_path):
    # shards of one algorithm run (process.py --shard K/N) write timings.K-of-N.json beside their fields
    root, gt, points, fields = dataset
    inp = tmp_path / "in"
    for (case, m), field in fields.items():
        synth.write_nifti_field(str(inp), case, m, field)
    (inp / "timings.0-of-2.json").write_text(json.dumps({"pairs": {"0099_0000<--0099_0001": {"seconds": 3.0},
                                                                   "0099_0000<--0099_0002": {"seconds": 4.0}}}))
    (inp / "timings.1-of-2.json").write_text(json.dumps({"pairs": {"0100_0000<--0100_0001": {"seconds": 5.0},
                                                                   "0100_0000<--0100_0002": {"seconds": 6.0}}}))
    code, data = evaluate(inp, gt, tmp_path / "metrics.json")
    assert code == 0 and data["warnings"] == []
    assert {k: v[M.RUNTIME]["mean"] for k, v in data["cases"].items()} == {
        "0099_0000<--0099_0001": 3.0, "0099_0000<--0099_0002": 4.0,
        "0100_0000<--0100_0001": 5.0, "0100_0000<--0100_0002": 6.0}
    assert data["runtime_source"].startswith("timings.0-of-2.json + timings.1-of-2.json")
    (inp / "timings.json").write_text(json.dumps({"pairs": {"0100_0000<--0100_0002": {"seconds": 7.0}}}))
    code, data = evaluate(inp, gt, tmp_path / "metrics2.json")
    assert any("also timed in another timings file" in w for w in data["warnings"]), data["warnings"]


@pytest.mark.parametrize("content, row", [("1,2,3\n4,nan,6\n", "row 2: non-finite"),
                                          ("1,2,3\n\n4,5,6\n7,8,inf\n", "row 4: non-finite"),
                                          ("1,2,3\n4,5\n", "row 2: 2 values, expected 3"),
                                          ("1,2,3\n4,x,6\n", "row 2: not a number"),
                                          ("", "no landmarks")])
def test_bad_landmark_file_named_with_its_row(dataset, tmp_path, content, row):
    import shutil
    root, gt, points, fields = dataset
    gt2 = tmp_path / "gt"
    shutil.copytree(gt, gt2)
    (gt2 / "landmarksTr" / "ReMIND2Reg_0099_0001.csv").write_text(content)
    inp = tmp_path / "in"
    for (case, m), field in fields.items():
        synth.write_nifti_field(str(inp), case, m, field)
    code, data = evaluate(inp, gt2, tmp_path / "metrics.json")
    assert code == 1
    message = data["failed_cases"]["0099_0000<--0099_0001"]
    assert message.startswith("0099_0000<--0099_0001: ReMIND2Reg_0099_0001.csv: " + row), message
    assert "\n" not in message and len(data["cases"]) == 3


def _split_identity_case(dataset, tmp_path):
    """0099 ceT1 missing, 0099 T2 channel-first (invalid), the two 0100 pairs fine."""
    root, gt, points, fields = dataset
    inp = tmp_path / "in"
    for (case, m), field in fields.items():
        if case == "0100":
            synth.write_nifti_field(str(inp), case, m, field)
    synth.write_nifti_field(str(inp), "0099", 2, np.ascontiguousarray(np.moveaxis(fields[("0099", 2)], -1, 0)))
    return inp


def test_missing_identity_scores_missing_and_invalid_as_no_registration(dataset, tmp_path, capsys):
    root, gt, points, fields = dataset
    inp = _split_identity_case(dataset, tmp_path)
    code = run(str(inp), gt, str(tmp_path / "metrics.json"), missing="identity")
    captured = capsys.readouterr()
    data = json.load(open(tmp_path / "metrics.json"))
    assert code == 0 and data["errors"] == [] and data["failed_cases"] == {}
    assert data["missing_policy"] == "identity"
    assert sorted(data["scored_as_identity"]) == ["0099_0000<--0099_0001", "0099_0000<--0099_0002"]
    assert "missing displacement field" in data["scored_as_identity"]["0099_0000<--0099_0001"]
    assert "channel-first" in data["scored_as_identity"]["0099_0000<--0099_0002"]
    assert data["counts"] == {"pairs": 4, "evaluated": 4, "failed": 0, "scored_as_identity": 2}
    for m in (1, 2):  # by hand: u = 0, so TRE = |p_fix - p_mov| * 0.5 mm; the zero field's SDlogJ is 0
        fix, mov = points[("0099", m)]
        case = data["cases"][f"0099_0000<--0099_000{m}"]
        expected = np.linalg.norm((fix - mov) * 0.5, axis=1)
        np.testing.assert_allclose(case["TRE_lm"]["detailed"], expected, atol=1e-12)
        assert case["TRE_lm"]["mean"] == pytest.approx(expected.mean()) == case["TRE_initial"]["mean"]
        assert case["LogJacDetStd"]["mean"] == 0.0 and case["num_foldings"]["mean"] == 0.0
        assert case["num_folds_true"]["mean"] == 0.0 and "runtime_s" not in case
    means = [c["TRE_lm"]["mean"] for c in data["cases"].values()]
    assert data["aggregates"]["TRE_lm"]["mean"] == pytest.approx(np.mean(means))  # identity pairs included
    last = captured.err.strip().splitlines()[-1]
    assert last.startswith("WARNING: evaluation finished, exit status 0") and "0099_0000<--0099_0001" in last
    assert "ERROR" not in captured.err


def test_missing_fail_is_strict_and_still_writes_metrics(dataset, tmp_path, capsys):
    inp = _split_identity_case(dataset, tmp_path)
    code = run(str(inp), dataset[1], str(tmp_path / "metrics.json"))
    captured = capsys.readouterr()
    data = json.load(open(tmp_path / "metrics.json"))
    assert code == 1 and data["missing_policy"] == "fail" and data["scored_as_identity"] == {}
    assert sorted(data["failed_cases"]) == ["0099_0000<--0099_0001", "0099_0000<--0099_0002"]
    assert sorted(data["cases"]) == ["0100_0000<--0100_0001", "0100_0000<--0100_0002"]
    lines = captured.err.strip().splitlines()
    assert len([line for line in lines if line.startswith("ERROR: evaluation failed")]) == 1
    assert lines[-1].startswith("ERROR: evaluation failed: 2 of 4 pairs not scored")
    assert "0099_0000<--0099_0001" in lines[-1] and "channel-first" in lines[-1] and "--missing identity" in lines[-1]


def test_identity_does_not_hide_a_ground_truth_problem(dataset, tmp_path, capsys):
    import shutil
    root, gt, points, fields = dataset
    gt2 = tmp_path / "gt"
    shutil.copytree(gt, gt2)
    (gt2 / "landmarksTr" / "ReMIND2Reg_0099_0001.csv").write_text("1,2,3\n4,nan,6\n")
    inp = _split_identity_case(dataset, tmp_path)
    code = run(str(inp), str(gt2), str(tmp_path / "metrics.json"), missing="identity")
    data = json.load(open(tmp_path / "metrics.json"))
    assert code == 1 and list(data["failed_cases"]) == ["0099_0000<--0099_0001"]
    assert list(data["scored_as_identity"]) == ["0099_0000<--0099_0002"]
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "ReMIND2Reg_0099_0001.csv: row 2: non-finite" in last and "--missing identity would" not in last


def test_success_with_a_warning_does_not_end_like_a_failure(dataset, tmp_path):
    root, gt, points, fields = dataset
    inp = tmp_path / "in"
    for (case, m), field in fields.items():
        synth.write_nifti_field(str(inp), case, m, field)
    (inp / "timings.json").write_text("{not json")
    script = os.path.join(os.path.dirname(__file__), "..", "evaluate.py")
    out = subprocess.run([sys.executable, script, "--input", str(inp), "--ground-truth", gt, "--output",
                          str(tmp_path / "m.json"), "--workers", "1"], capture_output=True, text=True)
    assert out.returncode == 0
    lines = out.stderr.strip().splitlines()
    assert lines[0].startswith("WARNING: timings.json: ignored")
    assert lines[-1].startswith("WARNING: evaluation finished, exit status 0: all 4 pairs scored")
    assert not [line for line in lines if line.startswith("ERROR")]
    assert "TRE_lm mean" in out.stdout


def test_identity_plausibility_is_the_zero_fields():
    for shape in ((9, 8, 7), (32, 30, 28)):  # J = 1 everywhere: std of a constant (0 up to rounding), no folds
        values = M.plausibility(np.zeros(shape + (3,), np.float32))
        assert values == pytest.approx(M.IDENTITY_PLAUSIBILITY, abs=1e-15)


def test_iso_durations_as_the_platform_writes_them():
    from evaluation.layouts import parse_iso_duration
    # the platform's own test vectors (grand-challenge.org app/tests/algorithms_tests/test_api.py)
    assert parse_iso_duration("P0DT00H22M17S") == 1337.0
    assert parse_iso_duration("P0DT00H31M14S") == 1874.0
    assert parse_iso_duration("P1DT02H03M04.500000S") == 86400 + 2 * 3600 + 3 * 60 + 4.5
    assert parse_iso_duration("-P0DT00H00M01S") == -1.0
    assert parse_iso_duration(None) is None and parse_iso_duration("soon") is None and parse_iso_duration("P") is None
    assert synth.django_duration(1337) == "P0DT00H22M17S" and synth.django_duration(12.25) == "P0DT00H00M12.250000S"


def test_grand_challenge_runtime_only_from_exec_duration(dataset, tmp_path):
    # started_at/completed_at are no longer in the platform's job JSON: if a job still carried them they are
    # ignored; a null exec_duration (not measured) means no runtime, said in runtime_source
    root, gt, points, fields = dataset
    inp = synth.write_gc_layout(str(tmp_path / "in"), fields, synth.oblique_grid(), {p: 7.0 for p in fields})
    jobs = json.load(open(os.path.join(inp, "predictions.json")))
    for job in jobs:
        job["exec_duration"] = None
        job["started_at"], job["completed_at"] = "2026-11-24T10:00:00Z", "2026-11-24T10:00:42Z"
    jobs[0]["exec_duration"] = "P0DT00H01M05.500000S"
    json.dump(jobs, open(os.path.join(inp, "predictions.json"), "w"))
    code, data = evaluate(inp, gt, tmp_path / "metrics.json")
    assert code == 0
    with_runtime = {k: c[M.RUNTIME]["mean"] for k, c in data["cases"].items() if M.RUNTIME in c}
    assert with_runtime == {"0099_0000<--0099_0001": 65.5}
    assert data["aggregates"][M.RUNTIME]["mean"] == 65.5
    for job in jobs:
        job["exec_duration"] = None
    json.dump(jobs, open(os.path.join(inp, "predictions.json"), "w"))
    code, data = evaluate(inp, gt, tmp_path / "metrics2.json")
    assert data["runtime_source"] is None and M.RUNTIME not in data["aggregates"]


def test_npz_float64_is_sampled_in_float64_like_remind2reg(dataset, tmp_path):
    # ReMIND2Reg's load_disp casts .npz to float64 (Learn2Reg main: float32); a float64 field whose values
    # float32 cannot hold must give the float64 TRE to 1e-12, not a float32-rounded one
    root, gt, points, fields = dataset
    field = fields[("0099", 1)].astype(np.float64) + 1e-4 / 3
    synth.write_nifti_field(str(tmp_path / "in"), "0099", 1, field, ".npz")
    code, data = evaluate(tmp_path / "in", gt, tmp_path / "m.json", missing="identity")
    expected = reference_tre(points[("0099", 1)], field)
    np.testing.assert_allclose(data["cases"]["0099_0000<--0099_0001"][M.TRE]["detailed"], expected, atol=1e-12,
                               rtol=0)
    rounded = reference_tre(points[("0099", 1)], field.astype(np.float32))
    assert np.abs(rounded - expected).max() > 1e-9  # the check above can tell the two apart


def test_per_pair_lines_show_progress_and_time_left(dataset, tmp_path, capsys):
    root, gt, points, fields = dataset
    inp = tmp_path / "in"
    for (case, m), field in fields.items():
        if (case, m) != ("0100", 1):  # one missing: its error line counts too
            synth.write_nifti_field(str(inp), case, m, field)
    code = run(str(inp), str(gt), str(tmp_path / "m.json"), workers=1)
    captured = capsys.readouterr()
    assert code == 1
    steps = [line for line in captured.out.splitlines() if "TRE_lm" in line and "<--" in line]
    import re
    assert [re.sub(r"about [\d a-z]+ left", "about T left", line.split("]")[0].strip()) for line in steps] == [
        "[1/4, about T left", "[2/4, about T left", "[4/4"]
    assert re.search(r"ERROR: \[3/4, about [\d a-z]+ left\] 0100_0000<--0100_0001: ", captured.err), captured.err
