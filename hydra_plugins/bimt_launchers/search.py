"""`hydra/sweeper=optuna`: Hydra's Optuna sweeper plugin (`pip install -e ".[search]"`), set up for train.py.

`train.py` reads `hydra/sweeper=optuna` as `hydra/sweeper=bimt_optuna`, which this module stores: the
plugin's settings, with this class as the sweeper and the defaults below (one trial at a time, no
failure rate that stops the study). (Storing it under the plugin's own name would race the plugin's
entry: Hydra's plugin scan runs both modules, in no order it promises.) It hands them to the
plugin's own sweeper, which asks Optuna for each batch of `n_jobs` trials, launches them
through the launcher the command chose and tells Optuna what they returned (their `objective`), and
adds what a search of this runner needs:
- the directions follow `objective` (minimize test_loss and active_weights, maximize test_acc and
  modularity_q), so a search is never told twice what it optimises;
- a trial that fails or diverges never stops the study. With one objective it returns the worst value
  (inf, or -inf for a maximised one), which every sampler ranks below the trials that completed; with
  several, where TPE cannot rank infinities, it is a failed trial (Optuna's FAIL state), which the
  samplers leave out. An interrupted trial (Ctrl-C) stops the search: run the same command again to
  continue it, as the study lives in the sweep directory's sqlite file;
- a search space with an empty range is one line and exit code 2, before anything trains.

The plugin (and Optuna) are imported only when a search starts; where the extra is not installed,
`train.py` says which extra to install before Hydra composes anything.
"""

import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import HydraException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig

from bimt.experiment.cli import SEARCH_SWEEPER, JobFailed, fail
from bimt.experiment.objective import directions, worst_value
from bimt.experiment.validate import ConfigError, load_config, validate

# The plugin's settings (its OptunaSweeperConf) with this class as the sweeper and this runner's
# defaults. A plain node, not a subclass of the plugin's dataclass: Hydra's plugin scan runs the plugin's
# modules again, and a class kept from an earlier import would no longer pickle for the batched
# launcher's worker processes.
ConfigStore.instance().store(group="hydra/sweeper", name=SEARCH_SWEEPER, provider="bimt", node={
    "defaults": [{"sampler": "tpe"}],
    "_target_": "hydra_plugins.bimt_launchers.search.OptunaSweeper",
    "direction": None,  # set by `objective`
    "storage": None,  # e.g. sqlite:///outputs/search/study.db, to continue a study later
    "study_name": None,
    "n_trials": 20,
    "n_jobs": 1,  # trials asked for at once, handed to the launcher together
    "max_failure_rate": 1.0,  # failed trials never stop the study (they are counted, see above)
    "search_space": None,
    "custom_search_space": None,
    "params": None,
})


class OptunaSweeper(Sweeper):
    """The plugin's sweeper, with the directions, failures and checks of the module's docstring."""

    def __init__(self, direction: Any = None, **settings: Any) -> None:
        from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl

        self.direction = direction
        self.sweeper = OptunaSweeperImpl(direction=None, **settings)
        self.failed = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            run = load_config(config)
            validate(run)  # the objective's too: one the task lacks fails here, not in every trial
        except ConfigError as error:
            fail(str(error), self.sweep_dir)
        self.objective, self.directions = run.objective, directions(run.objective)
        for key in ("n_trials", "n_jobs"):
            value = config.hydra.sweeper[key]
            if not (isinstance(value, int) and value >= 1):
                fail(f"hydra.sweeper.{key}={value} is not allowed; it must be an integer >= 1", self.sweep_dir)
        if self.direction is not None:
            given = [self.direction] if isinstance(self.direction, str) else list(self.direction)
            if given != self.directions:
                fail(f"hydra.sweeper.direction={self.direction} disagrees with objective={self.objective}, which "
                     f"is {self.directions}; leave the direction out: the objective sets it", self.sweep_dir)
        self.sweeper.direction = self.directions
        self.sampler_config = config.hydra.sweeper.sampler
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.launcher = self.sweeper.launcher
        launch = self.launcher.launch
        self.launcher.launch = lambda overrides, initial_job_idx: self._counted(launch(overrides, initial_job_idx))

    def sweep(self, arguments: list[str]) -> None:
        params = [f"{key}={value}" for key, value in (self.sweeper.params or {}).items()]
        for problem in (_range_problem(override) for override in _parse([*params, *arguments], self.sweep_dir)):
            if problem:
                fail(problem, self.sweep_dir)
        self.sweep_dir.mkdir(parents=True, exist_ok=True)  # the study's sqlite file lives there
        self._continue_study()
        self.sweeper.sweep(arguments)
        if self.failed:
            how = "as the worst value" if len(self.directions) == 1 else "as failed trials"
            print(f"{self.failed} trial(s) failed or diverged (see above), counted {how}; the study went on",
                  file=sys.stderr)

    def _continue_study(self) -> None:
        """Continuing a study from its storage: the trials a Ctrl-C left running are marked failed and
        asked for again first, so that they continue from their checkpoints; and the sampler is
        seeded with `seed` + the trials the study holds, since seeded as at first it would ask for
        the first trials again (same values, same directories). A fresh study keeps the seed as
        given, so that the same command repeats a search exactly. (Without a study name, Optuna names
        every study anew: nothing to continue.)"""
        if self.sweeper.storage is None or self.sweeper.study_name is None:
            return
        import optuna

        try:
            study = optuna.load_study(study_name=self.sweeper.study_name, storage=self.sweeper.storage)
        except KeyError:  # no such study yet
            return
        done = len(study.trials)
        stopped = [trial for trial in study.trials if trial.state == optuna.trial.TrialState.RUNNING]
        again = f"; {len(stopped)} interrupted trial(s) run again first" if stopped else ""
        print(f"continuing study {self.sweeper.study_name}: {done} trials so far{again}", file=sys.stderr)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            for trial in stopped:
                study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
                study.enqueue_trial(trial.params)
        seed = self.sampler_config.get("seed")
        if seed is not None:
            self.sweeper.sampler = instantiate(self.sampler_config, seed=seed + done)

    def _counted(self, returns: Sequence[JobReturn]) -> Sequence[JobReturn]:
        """Failed trials turned into what the study records (see the module's docstring)."""
        for job in returns:
            if job.status != JobStatus.FAILED or not isinstance(job._return_value, JobFailed):
                continue
            if job._return_value.interrupted:
                print("interrupted: run the same command again (same hydra.sweep.dir) to continue the search",
                      file=sys.stderr)
                raise SystemExit(130)
            self.failed += 1
            if len(self.directions) == 1:
                job.status, job.return_value = JobStatus.COMPLETED, worst_value(self.objective)
        return returns


def _parse(arguments: list[str], sweep_dir: Path) -> list[Override]:
    try:
        return OverridesParser.create().parse_overrides(arguments)
    except HydraException as error:
        fail(" ".join(line.strip() for line in str(error).splitlines() if line.strip()), sweep_dir)


def _range_problem(override: Override) -> str | None:
    """Why a search-space entry can give no value, in one line; None if it can."""
    value, line = override.value(), override.input_line
    if isinstance(value, IntervalSweep):
        if not value.start < value.end:
            return f"{line} is an empty range; an interval needs its start below its end"
        if "log" in value.tags and value.start <= 0:
            return f"{line} is not allowed: a log interval needs a start above 0"
    elif isinstance(value, RangeSweep) and not list(override.sweep_string_iterator()):
        return f"{line} is an empty range; it holds no value"
    elif isinstance(value, ChoiceSweep) and not value.list:
        return f"{line} is an empty choice; give at least one value"
    return None
