"""The benchmark harness on a tiny simulated case: runs through process.py and the evaluation code."""
import json

import numpy as np

from benchmarks import run_benchmark
from simulation.cases import make_simulated_case, write_dataset


def test_identity_row_equals_initial_tre(tmp_path):
    case = make_simulated_case(3, shape=(40, 40, 40), spacing=3.2)
    dataset = write_dataset([case], str(tmp_path / "data"))
    dataset_dir = str(tmp_path / "data")
    assert run_benchmark.main(["--cases", dataset_dir, "--out", str(tmp_path / "out"), "--methods", "identity"]) == 0
    rows = json.loads((tmp_path / "out" / "benchmark.json").read_text())
    assert [r["method"] for r in rows] == ["identity"]
    row = rows[0]
    # identity: u = 0 everywhere, so TRE is the initial landmark error, no folds, SDlogJ 0
    initial = np.linalg.norm((case["fixed_landmarks"] - case["moving_landmarks"]) * 3.2, axis=1).mean()
    assert row["pairs"] == 2 and row["failed"] == 0
    assert abs(row["TRE"] - initial) < 1e-4
    assert row["folds"] == 0 and row["SDlogJ"] == 0.0
    assert row["total_s"] >= row["register_s"] >= 0
    assert "| identity | 2 |" in (tmp_path / "out" / "benchmark.md").read_text()
    assert dataset.endswith(".json")


def test_keep_merges_rows_of_earlier_runs(tmp_path):
    write_dataset([make_simulated_case(4, shape=(40, 40, 40), spacing=3.2)], str(tmp_path / "data"))
    out = str(tmp_path / "out")
    assert run_benchmark.main(["--cases", str(tmp_path / "data"), "--out", out, "--methods", "identity"]) == 0
    first = json.loads((tmp_path / "out" / "benchmark.json").read_text())
    assert run_benchmark.main(["--cases", str(tmp_path / "data"), "--out", out, "--methods", "sitk-mi",
                               "--keep"]) == 0
    merged = json.loads((tmp_path / "out" / "benchmark.json").read_text())
    assert [r["method"] for r in merged] == ["identity", "sitk-mi"]
    assert merged[0]["TRE"] == first[0]["TRE"] and merged[0]["worse_than_identity"] == 0
    # the later row is still compared with the earlier identity run
    assert 0 <= merged[1]["worse_than_identity"] <= merged[1]["pairs"] == 2


def test_rows_run_before_identity_get_their_worse_count(tmp_path):
    write_dataset([make_simulated_case(5, shape=(40, 40, 40), spacing=3.2)], str(tmp_path / "data"))
    out = str(tmp_path / "out")
    assert run_benchmark.main(["--cases", str(tmp_path / "data"), "--out", out, "--methods", "sitk-mi,identity"]) == 0
    rows = {r["method"]: r for r in json.loads((tmp_path / "out" / "benchmark.json").read_text())}
    assert rows["identity"]["worse_than_identity"] == 0
    assert 0 <= rows["sitk-mi"]["worse_than_identity"] <= 2


def test_every_model_method_sets_only_options_the_model_config_has():
    # a method whose overrides name a removed or misspelt option would stop a benchmark run at that method
    from model.config import load_config

    for method, overrides in run_benchmark.CONFIGS.items():
        load_config(overrides=overrides)  # raises, naming the key, on an option the config does not have


def test_io_overlap_benchmark_runs_both_modes_with_identical_files(tmp_path, capsys, monkeypatch):
    import os

    from benchmarks import io_overlap

    monkeypatch.delenv("REMIND2REG_OVERLAP_IO", raising=False)

    write_dataset([make_simulated_case(5, shape=(40, 40, 40), spacing=3.2)], str(tmp_path / "data"))
    assert io_overlap.main(["--input", str(tmp_path / "data" / "imagesTr"), "--register-seconds", "0.05",
                            "--work", str(tmp_path / "work")]) == 0
    text = capsys.readouterr().out
    assert "| off | 2 | 0 |" in text and "| on | 2 | 0 |" in text
    assert "fields byte-identical in both modes: True (2 files)" in text
    assert "REMIND2REG_OVERLAP_IO" not in os.environ  # the setting is put back


def test_device_check_parses_process_logs(tmp_path, capsys, monkeypatch):
    """device_check reads its figures from process.py's own log lines: keep the two formats in step."""
    import process
    from benchmarks import device_check
    from benchmarks.io_overlap import SleepingRegistration

    write_dataset([make_simulated_case(6, shape=(40, 40, 40), spacing=3.2)], str(tmp_path / "data"))
    monkeypatch.setenv("REMIND2REG_OVERLAP_IO", "1")
    capsys.readouterr()
    assert process.run(str(tmp_path / "data" / "imagesTr"), str(tmp_path / "bench" / "model"),
                       registration=SleepingRegistration(0.1)) == 0
    (tmp_path / "bench" / "model.log").write_text(capsys.readouterr().out)
    pairs, runs = device_check.log_lines(str(tmp_path / "bench")), device_check.log_runs(str(tmp_path / "bench"))
    assert [p["device"] for p in pairs] == ["stand-in (sleep)"] * 2 and all(p["register_s"] > 0 for p in pairs)
    assert len(runs) == 1 and runs[0]["pairs"] == 2 and runs[0]["failed"] == 0 and runs[0]["overlap"]
    assert 0 < runs[0]["wall_per_pair_s"] <= runs[0]["total_s"]
    assert "| model | 2 | 0 | True |" in device_check.report("", [], pairs, runs)


def test_a_crashed_method_fails_the_benchmark_run(tmp_path, capsys):
    # every other test here asserts main(...) == 0: that means something only if a crash gives non-zero
    write_dataset([make_simulated_case(3, shape=(40, 40, 40), spacing=3.2)], str(tmp_path / "data"))
    code = run_benchmark.main(["--cases", str(tmp_path / "data"), "--out", str(tmp_path / "out"),
                               "--methods", "identity", "--sequences", "flair"])  # a setup error: exit 2
    assert code == 1
    assert "ERROR: method(s) exited non-zero: identity (exit code 2)" in capsys.readouterr().err
    assert json.loads((tmp_path / "out" / "benchmark.json").read_text())[0]["method"] == "identity"


def test_speed_benchmark_reports_each_layout_from_the_runs_timings(tmp_path, capsys):
    from benchmarks import speed
    write_dataset([make_simulated_case(6, shape=(40, 40, 40), spacing=3.2)], str(tmp_path / "data"))
    case = str(tmp_path / "data" / "imagesTr" / "ReMIND2Reg_0001")
    out = tmp_path / "speed.json"
    assert speed.main(["--case", case, "--repeats", "1", "--layouts", "one,all", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert f"| {speed.LAYOUTS['one'][2]} | 1 |" in table and f"| {speed.LAYOUTS['all'][2]} | 2 |" in table
    results = json.loads(out.read_text())
    assert set(results) == {"one", "all"} and results["all"]["pairs"] == 2
    for layout in results.values():  # the model's stages come from timings.json: a missing key would read as 0
        median = layout["median"]
        assert median["features"] > 0 and median["refine"] > 0 and median["peak_gb"] > 0.05
        assert median["wall"] >= median["seconds"] >= median["register"] > 0
