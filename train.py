"""Run a BIMT experiment: `python train.py task=independence train_type=5`.

Sweeps: `python train.py -m train_type=1,2,3,4,5 seed=0,1,2`. Outputs go under `outputs/`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from bimt.cli import check_group_choices, check_sweep_configs, fail, quote_formulas
from bimt.config import ConfigError, load_config
from bimt.run import run

CONF_DIR = Path(__file__).resolve().parent / "conf"


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> dict:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        config = load_config(cfg)
    except ConfigError as error:
        fail(str(error), run_dir)
    metrics = run(config, run_dir)
    print(
        f"{metrics['task']} train_type={metrics['train_type']} seed={metrics['seed']}: "
        f"train MSE {metrics['train_mse']:.3e} | test MSE {metrics['test_mse']:.3e} | "
        f"connection cost {metrics['connection_cost']:.3f} | outputs in {run_dir}"
    )
    return metrics


if __name__ == "__main__":
    sys.argv[1:] = quote_formulas(sys.argv[1:])
    check_group_choices(sys.argv[1:], CONF_DIR)
    if {"-m", "--multirun"} & set(sys.argv[1:]):
        check_sweep_configs(sys.argv[1:], CONF_DIR)
    main()
