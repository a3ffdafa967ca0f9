"""The sweep report and the training video, run as a user runs them: scripts in a subprocess."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, read_events, train_cli


def script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / name), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A small ablation: two train types, two seeds, plus one killed and one interrupted run."""
    sweep_dir = tmp_path_factory.mktemp("report") / "sweep"
    result = train_cli("-m", "task=independence", "train_type=1,5", "seed=0,1", "steps=300",
                       "snapshot_every=100", f"hydra.sweep.dir={sweep_dir}")
    assert result.returncode == 0, result.stderr
    killed = sweep_dir / "killed"
    shutil.copytree(next(sweep_dir.glob("*seed=1*train_type=5")), killed)
    (killed / "metrics.json").unlink()
    interrupted = sweep_dir / "interrupted"
    shutil.copytree(next(sweep_dir.glob("*seed=1*train_type=1")), interrupted)
    (interrupted / "metrics.json").write_text(json.dumps({"status": "interrupted", "step": 120}))
    return sweep_dir


def completed_metrics(sweep_dir, train_type):
    runs = [json.loads(p.read_text()) for p in sweep_dir.glob("*/metrics.json")]
    return [m for m in runs if m.get("status") == "completed" and m["train_type"] == train_type]


def test_report_tabulates_completed_runs_and_lists_the_rest(sweep):
    result = script("report.py", str(sweep))
    assert result.returncode == 0, result.stderr
    assert "missing: killed: no metrics.json" in result.stderr
    assert "missing: interrupted: status 'interrupted', not completed" in result.stderr

    rows = {int(row["train_type"]): row for row in csv.DictReader((sweep / "report.csv").open())}
    assert sorted(rows) == [1, 5]
    for train_type, row in rows.items():
        runs = completed_metrics(sweep, train_type)
        assert int(row["seeds"]) == len(runs) == 2
        for key in ("test_mse", "pruned_test_mse", "connection_cost", "n_active_weights", "components"):
            values = [m[key] for m in runs]
            assert float(row[f"{key}_mean"]) == pytest.approx(np.mean(values))
            assert float(row[f"{key}_std"]) == pytest.approx(np.std(values, ddof=1))
        found = [m["expected_structure_found"] for m in runs]
        assert float(row["expected_structure_found_mean"]) == pytest.approx(np.mean(found))

    report = (sweep / "report.md").read_text()
    assert "| independence | 5 | – | 2 |" in report and "| independence | 1 | – | 2 |" in report
    assert "killed: no metrics.json" in report
    with Image.open(sweep / "networks.png") as image:
        assert image.width > 400 and image.height > 200


def test_report_never_averages_unlike_runs_and_survives_unreadable_files(tmp_path):
    """Runs that differ in lambda are separate rows named by it; a run with a damaged metrics.json is
    listed with the reason, and one with a damaged checkpoint only loses its picture."""
    sweep = tmp_path / "lambdas"
    result = train_cli("-m", "hydra/launcher=batched", "schedule.lambda0=1e-4,1e-2", "seed=0,1", "steps=100",
                       "snapshot_every=0", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr
    damaged_metrics = next(sweep.glob("schedule.lambda0=0.01,seed=1*"))
    (damaged_metrics / "metrics.json").write_text("{not json")
    (next(sweep.glob("schedule.lambda0=0.0001,seed=0*")) / "checkpoint.pt").write_bytes(b"not a checkpoint")

    result = script("report.py", str(sweep))
    assert result.returncode == 0, result.stderr
    rows = {row["swept"]: row for row in csv.DictReader((sweep / "report.csv").open())}
    assert sorted(rows) == ["schedule.lambda0=0.0001", "schedule.lambda0=0.01"]
    assert (rows["schedule.lambda0=0.0001"]["seeds"], rows["schedule.lambda0=0.01"]["seeds"]) == ("2", "1")
    expected = json.loads(next(sweep.glob("schedule.lambda0=0.01,seed=0*/metrics.json")).read_text())["test_mse"]
    assert float(rows["schedule.lambda0=0.01"]["test_mse_mean"]) == pytest.approx(expected)
    assert f"missing: {damaged_metrics.name}: unreadable metrics.json (JSONDecodeError" in result.stderr
    assert "no completed run for task=independence train_type=5 schedule.lambda0=0.01 seed=1" in result.stderr
    with Image.open(sweep / "networks.png") as image:
        assert image.width > 400


def test_report_names_what_is_missing_from_a_partial_sweep(sweep, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(sweep, partial)
    for run in partial.glob("*seed=0*train_type=5"):
        shutil.rmtree(run)
    result = script("report.py", str(partial))
    assert result.returncode == 0, result.stderr
    assert "missing: no completed run for task=independence train_type=5 seed=0" in result.stderr


@pytest.mark.parametrize("make,message", [
    (lambda root: root / "nope", "is not a directory"),
    (lambda root: root, "no runs under"),
])
def test_report_on_a_bad_directory_is_one_line(tmp_path, make, message):
    result = script("report.py", str(make(tmp_path)))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr


def test_report_with_only_unfinished_runs_says_so(sweep, tmp_path):
    only_killed = tmp_path / "only"
    shutil.copytree(sweep / "killed", only_killed / "killed")
    result = script("report.py", str(only_killed))
    assert result.returncode == 2
    assert "no completed runs under" in result.stderr and "killed: no metrics.json" in result.stderr


def test_video_has_one_frame_per_snapshot(sweep):
    run_dir = next(sweep.glob("*seed=0*train_type=5"))
    result = script("video.py", str(run_dir))
    assert result.returncode == 0, result.stderr
    snapshots = read_events(run_dir).Images("network")
    with Image.open(run_dir / "network.gif") as gif:
        assert gif.n_frames == len(snapshots) == 4  # steps 0, 100, 200 and the final 300


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="MP4 output needs ffmpeg, an optional tool")
def test_video_is_also_an_mp4_where_ffmpeg_exists(sweep):
    run_dir = next(sweep.glob("*seed=1*train_type=5"))
    result = script("video.py", str(run_dir))
    assert result.returncode == 0, result.stderr
    probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                            "stream=nb_read_frames", "-of", "csv=p=0", str(run_dir / "network.mp4")],
                           capture_output=True, text=True, check=True)
    assert int(probe.stdout.strip()) == 4


def test_video_of_a_directory_without_snapshots_is_one_line(tmp_path):
    result = script("video.py", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "no 'network' snapshots" in result.stderr


def test_reproduce_script_tabulates_the_three_paper_tasks(tmp_path):
    out = tmp_path / "reproduce"
    result = script("reproduce.py", "--steps", "30", "--out", str(out))
    assert result.returncode == 0, result.stderr
    table = json.loads((out / "reproduce.json").read_text())
    assert sorted(table) == ["compositionality", "feature_sharing", "independence"]
    for task, row in table.items():
        metrics = json.loads(next(out.glob(f"paper_seed/*task={task}*/metrics.json")).read_text())
        assert row["test_mse"]["this_run"] == metrics["test_mse"] and row["steps"] == 30
        assert task in result.stdout


def test_reproduce_script_summarises_a_seed_sweep(tmp_path):
    out = tmp_path / "reproduce"
    result = script("reproduce.py", "--tasks", "two_moons", "--steps", "30", "--seeds", "3", "--out", str(out))
    assert result.returncode == 0, result.stderr
    row = json.loads((out / "reproduce.json").read_text())["two_moons"]["test_acc"]
    accuracies = [json.loads(path.read_text())["test_acc"] for path in sorted(out.glob("seeds/*/metrics.json"))]
    assert len(accuracies) == 3 and row["seeds"] == 3
    assert row["mean"] == pytest.approx(np.mean(accuracies)) and row["std"] == pytest.approx(np.std(accuracies, ddof=1))
