"""Run a BIMT experiment: `python train.py task=independence train_type=5`.

Sweeps: `python train.py -m train_type=1,2,3,4,5 seed=0,1,2`. Outputs go under `outputs/`.
Continue a stopped run: `python train.py resume=<run dir>`. `python train.py --help` lists the tasks.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from bimt.experiment.cli import (
    check_configs,
    check_group_choices,
    check_launcher,
    check_renamed,
    end_with,
    fail,
    print_structure,
    quote_formulas,
    resume_overrides,
    search_overrides,
)
from bimt.experiment.objective import objective_value
from bimt.experiment.outcome import Status, outcome
from bimt.experiment.run import run_group
from bimt.experiment.rundir import METRICS, config_for_run_dir, read_metrics, read_status
from bimt.experiment.validate import ConfigError, load_config, validate

CONF_DIR = Path(__file__).resolve().parent / "conf"


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | list[float]:
    """One run; returns its `objective` (what a sweeper such as Optuna's optimises)."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    in_sweep = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        config = config_for_run_dir(load_config(cfg), run_dir)
        task = validate(config)
        if read_status(run_dir) == Status.COMPLETED:
            print(f"{run_dir} already holds a completed run; see {run_dir / METRICS}")
            return objective_value(read_metrics(run_dir), config.objective)
        (metrics,) = run_group([config], [run_dir], task)
    except ConfigError as error:
        fail(str(error), run_dir, in_sweep=in_sweep)
    result = outcome(metrics, run_dir, in_sweep)
    if result.is_error:
        end_with(result, in_sweep)
    print(result.line)
    print_structure(metrics, task, config)
    return objective_value(metrics, config.objective)


if __name__ == "__main__":
    # conf/hydra/launcher/{joblib,submitit_*}.yaml set this app's defaults for those plugins under the
    # plugins' own names; Hydra validates them against the plugins' schemas, and says so every time.
    warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/\S+' is validated against ConfigStore schema")
    sys.argv[1:] = search_overrides(resume_overrides(quote_formulas(sys.argv[1:])))
    check_renamed(sys.argv[1:])
    check_group_choices(sys.argv[1:], CONF_DIR)
    check_launcher(sys.argv[1:])
    check_configs(sys.argv[1:], CONF_DIR)
    main()
