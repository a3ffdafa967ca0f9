"""task=table: your own data from a .csv, .npy or .npz file trains, sweeps, reports and resumes as a
paper task does; every bad file is one line and exit 2 before anything is written."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bimt.experiment.validate import ConfigError
from bimt.tasks.table import read_table

from conftest import REPO, job_dirs, metrics_without_timing, read_events, train_cli

COLUMNS = ["a", "b", "c", "y"]


def formula_rows(count: int, seed: int = 0) -> np.ndarray:
    """(count, 4): three inputs and y = a * b, c unused."""
    x = np.random.default_rng(seed).uniform(-1, 1, (count, 3))
    return np.concatenate([x, (x[:, 0] * x[:, 1])[:, None]], axis=1)


def write_csv(path: Path, rows: np.ndarray | list, header: list[str] | None = COLUMNS) -> Path:
    lines = [",".join(header)] if header else []
    lines += [",".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    return write_csv(tmp_path_factory.mktemp("table") / "data.csv", formula_rows(60))


def run(*overrides: str, multirun: bool = False) -> subprocess.CompletedProcess:
    return train_cli(*(["-m"] if multirun else []), "task=table", "steps=400", "log_every=100", *overrides)


def test_a_csv_trains_and_writes_every_output(table, tmp_path):
    result = run(f"task.path={table}", "task.inputs=[a,b,c]", "task.targets=[y]", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["test_mse"] < 0.1
    assert metrics["config"]["task"]["targets"] == ["y"]
    for name in ("network.png", "pred_vs_true.png", "checkpoint.pt"):
        assert (tmp_path / name).is_file()
    events = read_events(tmp_path)
    assert [e.step for e in events.Scalars("loss/train")] == [0, 100, 200, 300]
    assert events.Images("network")


def test_the_split_is_seeded_and_standardised_on_the_training_rows(table):
    from bimt.experiment.fit import compose_run_config
    from bimt.experiment.validate import validate
    from bimt.tasks.table import table_data

    config = compose_run_config(["task=table", f"task.path={table}", "task.targets=[y]"])
    validate(config)
    data = table_data(config.task, 0)
    assert (len(data.train_x), len(data.test_x)) == (48, 12)  # test_fraction 0.2 of 60
    np.testing.assert_allclose(data.train_x.mean(dim=0).numpy(), 0, atol=1e-6)
    np.testing.assert_allclose(data.train_x.std(dim=0, unbiased=False).numpy(), 1, atol=1e-5)
    again, other = table_data(config.task, 0), table_data(config.task, 1)
    assert (again.test_y == data.test_y).all() and not (other.test_y == data.test_y).all()
    rows = formula_rows(60)
    assert sorted(data.train_y[:, 0].tolist() + data.test_y[:, 0].tolist()) == \
        pytest.approx(sorted(rows[:, 3].astype(np.float32).tolist()))


def test_npy_and_npz_tables_read_by_index_and_by_name(tmp_path):
    rows = formula_rows(10)
    np.save(tmp_path / "t.npy", rows)
    np.savez(tmp_path / "one.npz", rows)
    np.savez(tmp_path / "named.npz", **{name: rows[:, j] for j, name in enumerate(COLUMNS)})
    for name, columns in (("t.npy", ("0", "1", "2", "3")), ("one.npz", ("0", "1", "2", "3")), ("named.npz", tuple(COLUMNS))):
        loaded = read_table(tmp_path / name)
        assert loaded.columns == columns and np.array_equal(loaded.values, rows)
    write_csv(tmp_path / "bare.csv", rows, header=None)
    assert read_table(tmp_path / "bare.csv").columns == ("0", "1", "2", "3")


def test_classification_from_npz_with_minibatches_reports_accuracy(tmp_path):
    x = np.random.default_rng(1).uniform(-1, 1, (80, 2))
    np.savez(tmp_path / "cls.npz", u=x[:, 0], v=x[:, 1], label=np.where(x[:, 0] > 0, 7, 3))
    result = run(f"task.path={tmp_path / 'cls.npz'}", "task.targets=[label]", "task.kind=classification",
                 "batch_size=16", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["test_acc"] >= 0.8 and "test_loss" in metrics


def test_a_batched_sweep_trains_every_job_and_the_report_tabulates_them(table, tmp_path):
    result = run(f"task.path={table}", "task.targets=[y]", "seed=0,1", "train_type=1,5", "hydra/launcher=batched",
                 f"hydra.sweep.dir={tmp_path}", multirun=True)
    assert result.returncode == 0, result.stderr
    jobs = job_dirs(tmp_path)
    assert len(jobs) == 4 and all((job / "metrics.json").is_file() for job in jobs)
    report = subprocess.run([sys.executable, str(REPO / "scripts" / "report.py"), str(tmp_path)], capture_output=True,
                            text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    rows = [line for line in (tmp_path / "report.md").read_text().splitlines() if line.startswith("| table |")]
    assert len(rows) == 2  # one row per train type, two seeds each


def test_a_killed_run_resumes_to_the_numbers_of_an_uninterrupted_run(table, tmp_path):
    args = ["task=table", f"task.path={table}", "task.targets=[y]", "steps=2000", "log_every=250", "checkpoint_every=250"]
    assert train_cli(*args, f"hydra.run.dir={tmp_path / 'whole'}").returncode == 0
    process = subprocess.Popen([sys.executable, str(REPO / "train.py"), *args, f"hydra.run.dir={tmp_path / 'killed'}"],
                               cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = tmp_path / "killed" / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.kill()
    process.wait()
    assert checkpoint.exists() and not (tmp_path / "killed" / "metrics.json").exists()
    resumed = train_cli(*args, f"hydra.run.dir={tmp_path / 'killed'}")
    assert resumed.returncode == 0, resumed.stderr
    assert metrics_without_timing(tmp_path / "killed") == metrics_without_timing(tmp_path / "whole")


def bad_files(folder: Path) -> list[tuple[list[str], str]]:
    """(overrides, what the one line must say) for each kind of bad file or column."""
    rows = formula_rows(10).tolist()
    text = [list(r) for r in rows]
    text[3][1] = "oops"
    infinite = [list(r) for r in rows]
    infinite[5][2] = "inf"
    (folder / "bytes.npy").write_bytes(b"not numpy")
    np.save(folder / "strings.npy", np.array([["a", "b"], ["c", "d"]]))
    fractions = formula_rows(10)
    return [
        ([f"task.path={folder / 'missing.csv'}", "task.targets=[y]"], "does not exist"),
        ([f"task.path={folder / 'data.txt'}", "task.targets=[y]"], "is a .csv, .npy, .npz file"),
        ([f"task.path={folder / 'bytes.npy'}", "task.targets=[0]"], "cannot be read as a .npy file"),
        ([f"task.path={folder / 'strings.npy'}", "task.targets=[0]"], "not numbers"),
        ([f"task.path={write_csv(folder / 'ok.csv', rows)}", "task.targets=[z]"], "column 'z' is not in the table"),
        ([f"task.path={folder / 'ok.csv'}", "task.inputs=[a,q]", "task.targets=[y]"], "column 'q' is not in the table"),
        ([f"task.path={folder / 'ok.csv'}", "task.targets=[9]"], "column 9 is not in the table"),
        ([f"task.path={write_csv(folder / 'text.csv', text)}", "task.targets=[y]"], "line 5 column 'b' is 'oops', not a number"),
        ([f"task.path={write_csv(folder / 'inf.csv', infinite)}", "task.targets=[y]"], "line 7 column 'c' is 'inf', not a finite"),
        ([f"task.path={write_csv(folder / 'tiny.csv', rows[:4])}", "task.targets=[y]"], "each split needs at least 2"),
        ([f"task.path={folder / 'ok.csv'}", "task.targets=[y]", "task.kind=classification"], "not an integer class label"),
        ([f"task.path={write_csv(folder / 'one.csv', [[*r[:3], 1] for r in fractions.tolist()])}", "task.targets=[y]",
          "task.kind=classification"], "a single class"),
        ([f"task.path={folder / 'ok.csv'}"], "task.targets=None"),
        ([f"task.path={folder / 'ok.csv'}", "task.targets=[y]", "task.kind=ranking"], "task.kind='ranking' is not allowed"),
        ([f"task.path={folder / 'ok.csv'}", "task.targets=[y]", "task.test_fraction=1.5"], "task.test_fraction=1.5"),
        ([f"task.path={folder / 'ok.csv'}", "task.targets=[y]", "+task.n_train=5"], "task.n_train=5 does not apply"),
    ]


def refusal(overrides: list[str]) -> str:
    """The one-line error train.py gives for these overrides, from its own checks run in-process:
    composition, validation and the plan's reading of the file."""
    from bimt.experiment.fit import compose_run_config
    from bimt.experiment.plan import with_sample_counts
    from bimt.experiment.validate import validate

    with pytest.raises(ConfigError) as error:
        config = compose_run_config(["task=table", *overrides])
        with_sample_counts(config, validate(config))
    return str(error.value)


def test_every_bad_file_is_refused_in_one_line_naming_what_is_wrong(tmp_path):
    (tmp_path / "data.txt").write_text("a,b\n1,2\n")
    for overrides, message in bad_files(tmp_path):
        line = refusal(overrides)
        assert "\n" not in line and message in line, (overrides, line)


@pytest.mark.parametrize("case", [0, 7])
def test_a_bad_file_exits_2_with_that_line_before_anything_is_written(tmp_path, case):
    (tmp_path / "data.txt").write_text("a,b\n1,2\n")
    overrides, message = bad_files(tmp_path)[case]
    run_dir = tmp_path / "run"
    result = run(*overrides, f"hydra.run.dir={run_dir}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {refusal(overrides)}"]
    assert message in result.stderr and not run_dir.exists()


def test_fit_refuses_a_bad_file_with_the_same_line(tmp_path):
    import bimt

    with pytest.raises(ConfigError, match="does not exist"):
        bimt.fit(task="table", overrides=[f"task.path={tmp_path / 'nothing.csv'}", "task.targets=[y]"],
                 run_dir=tmp_path / "run")
