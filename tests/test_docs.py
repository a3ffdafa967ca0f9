"""Docs that cannot rot: every Python block of the README and the docs runs, every `python train.py`
command in them composes and validates (Hydra's compose API, nothing trained), and the configuration
reference is the one the schema generates. (`.ci/run` builds the site with `mkdocs build --strict`.)"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from bimt.experiment.cli import quote_formulas, representative_jobs, search_overrides
from bimt.experiment.plan import check_memory
from bimt.experiment.validate import ConfigError, load_config, validate

from conftest import REPO, train_cli

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
COMMAND = re.compile(r"python train\.py( [^`\n]*)?")


def python_blocks() -> list[tuple[str, str]]:
    return [(f"{page.name}#{n}", block) for page in PAGES
            for n, block in enumerate(PYTHON_BLOCK.findall(page.read_text()))]


def train_commands() -> list[tuple[str, list[str], str | None]]:
    """Every `python train.py ...` command of the pages, as argv (comments and placeholders dropped),
    with the error line the page shows it printing, if it shows one."""
    commands = []
    for page in PAGES:
        text = page.read_text()
        for match in COMMAND.finditer(text):
            command = match.group(0).split(" # ")[0].split("  #")[0].strip()
            argv = shlex.split(command)[2:]
            if any("<" in arg or arg == "..." or arg.startswith(("KEY=", "resume=")) for arg in argv):
                continue  # a placeholder to fill in, or a run directory to continue
            after = text[match.end():].split("\n", 2)[1:2]
            error = after[0] if after and after[0].startswith("error: ") else None
            commands.append((f"{page.name}: {command}", argv, error))
    return commands


def test_the_pages_hold_python_blocks_and_commands():
    assert len(python_blocks()) >= 4
    assert len(COMMANDS) >= 20 and len(MISTAKES) >= 3


@pytest.mark.parametrize("name,code", python_blocks(), ids=[name for name, _ in python_blocks()])
def test_every_python_block_runs(name, code, monkeypatch):
    """Each block runs as a reader would paste it, from the repository root, in a namespace of its own."""
    monkeypatch.chdir(REPO)
    exec(compile(code, name, "exec"), {"__name__": "__main__"})


def jobs(argv: list[str]) -> list[list[str]]:
    """The job overrides of a command, each swept value once (as train.py checks a sweep), with its
    choice of sweeper, whose settings a search preset sets."""
    argv = search_overrides(quote_formulas(argv))
    sweeper = [arg for arg in argv if arg.startswith("hydra/sweeper=")]
    return [[*sweeper, *job] for job in representative_jobs(OverridesParser.create().parse_overrides(
        [arg for arg in argv if "=" in arg and not arg.startswith(("-", "hydra"))]))]


COMMANDS = [(name, argv) for name, argv, error in train_commands() if error is None]
MISTAKES = [(name, argv, error) for name, argv, error in train_commands() if error is not None]


@pytest.mark.parametrize("name,argv", COMMANDS, ids=[name for name, _ in COMMANDS])
def test_every_train_command_composes_and_validates(name, argv):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        for overrides in jobs(argv):
            validate(load_config(compose(config_name="config", overrides=overrides)))


@pytest.mark.parametrize("name,argv,error", MISTAKES, ids=[name for name, _, _ in MISTAKES])
def test_every_mistake_shown_is_the_error_a_user_gets(name, argv, error):
    """The shown error is the one validation (or the plan's memory check) gives; test_config.py runs
    such mistakes through train.py itself."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        (overrides,) = jobs(argv)
        config = load_config(compose(config_name="config", overrides=overrides))
    with pytest.raises(ConfigError) as raised:
        check_memory(config, validate(config))
    assert f"error: {raised.value}".split()[:5] == error.split()[:5]  # (the rest may name this machine's memory)


def test_the_configuration_reference_is_generated_from_the_schema():
    result = subprocess.run([sys.executable, "scripts/config_reference.py", "--check"], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def test_help_says_what_bimt_does_lists_every_task_and_points_to_the_docs():
    result = train_cli("--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("bimt: Brain-Inspired Modular Training")
    listed = {line.split()[0] for line in result.stdout.split("Tasks (task=NAME):")[1].split("\n\n")[0].splitlines()
              if line.strip()}
    assert listed == {path.stem for path in (REPO / "conf" / "task").glob("*.yaml")}
    assert "python train.py" in result.stdout and "docs/" in result.stdout
