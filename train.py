"""Run a BIMT experiment: `python train.py task=independence train_type=5`.

Sweeps: `python train.py -m train_type=1,2,3,4,5 seed=0,1,2`. Outputs go under `outputs/`.
Continue a stopped run: `python train.py resume=<run dir>`.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from bimt.analysis import format_dependencies
from bimt.cli import (
    check_configs,
    check_group_choices,
    check_launcher,
    fail,
    quote_formulas,
    resume_overrides,
)
from bimt.config import ConfigError, load_config, resolve_task
from bimt.outputs import METRICS, read_status
from bimt.run import Diverged, config_for_run_dir, result_line, resume_command, run

CONF_DIR = Path(__file__).resolve().parent / "conf"
DIVERGED, WRITE_FAILED, INTERRUPTED = 3, 4, 130


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> dict:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    in_sweep = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        config = config_for_run_dir(load_config(cfg), run_dir)
    except ConfigError as error:
        fail(str(error), run_dir, in_sweep=in_sweep)
    if read_status(run_dir) == "completed":
        print(f"{run_dir} already holds a completed run; see {run_dir / METRICS}")
        return {"status": "completed"}
    try:
        metrics = run(config, run_dir)
    except Diverged as error:
        fail(str(error), code=DIVERGED, in_sweep=in_sweep)
    if metrics["status"] == "failed":
        fail(metrics["error"], code=WRITE_FAILED, in_sweep=in_sweep)
    if metrics["status"] == "interrupted":
        print(f"interrupted after step {metrics['step']}; continue with: {resume_command(run_dir)}",
              file=sys.stderr)
        if not in_sweep:
            sys.exit(INTERRUPTED)
        return metrics
    print(f"{result_line(metrics)} | outputs in {run_dir}")
    if "dependencies" in metrics:
        found = "found" if metrics["expected_structure_found"] else "not found"
        print(f"inputs each output depends on, after pruning |w| < 0.01 (expected structure {found}):")
        print(format_dependencies(np.array(metrics["dependencies"], dtype=bool), resolve_task(config.task)))
    if "active_embedding_dims" in metrics:
        print(f"embedding dimensions in use after pruning |w| < 0.01: {metrics['n_active_embedding_dims']} "
              f"of {config.model.embedding_dim}")
    return metrics


if __name__ == "__main__":
    # conf/hydra/launcher/{joblib,submitit_*}.yaml set this app's defaults for those plugins under the
    # plugins' own names; Hydra validates them against the plugins' schemas, and says so every time.
    warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/\S+' is validated against ConfigStore schema")
    sys.argv[1:] = resume_overrides(quote_formulas(sys.argv[1:]))
    check_group_choices(sys.argv[1:], CONF_DIR)
    check_launcher(sys.argv[1:])
    check_configs(sys.argv[1:], CONF_DIR)
    main()
