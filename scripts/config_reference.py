"""Write docs/configuration.md, the configuration reference, from the schema and conf/.

The schema (`bimt.experiment.schema`) gives every key's type and its one line of documentation; the
composed default config gives its default; each task's config gives the values it changes. Nothing is
written by hand, so the reference follows every change of either (a test checks that the file is
current):

    python scripts/config_reference.py            # rewrites docs/configuration.md
    python scripts/config_reference.py --check    # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from bimt.experiment.schema import RunConfig, flatten

REPO = Path(__file__).resolve().parents[1]
TARGET = REPO / "docs" / "configuration.md"


def schema_rows(cls: type, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, type, documentation) of every leaf field of a schema dataclass, in order."""
    rows = []
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        kind = hints[field.name]
        if dataclasses.is_dataclass(kind):
            rows += schema_rows(kind, f"{prefix}{field.name}.")
        else:
            name = getattr(kind, "__name__", None) if typing.get_origin(kind) is None else None
            rows.append((f"{prefix}{field.name}", name or str(kind).replace("typing.", ""), field.metadata.get("doc", "")))
    return rows


def composed(*overrides: str) -> dict[str, Any]:
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        config = compose("config", list(overrides))
    return flatten(OmegaConf.to_container(config))


def plain(value: Any) -> str:
    """A value as YAML writes it on the command line."""
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def shown(value: Any) -> str:
    return f"`{plain(value)}`"


def cell(text: str) -> str:
    """Text for a Markdown table cell: its pipes escaped."""
    return text.replace("|", "\\|")


def reference() -> str:
    defaults = composed()
    tasks = sorted(path.stem for path in (REPO / "conf" / "task").glob("*.yaml"))
    lines = [
        "# Configuration reference",
        "",
        "Every key of `python train.py KEY=VALUE`, with its type, its default (`python train.py` with no",
        "override, the paper's independence task) and what it means. A task's config (`conf/task/`) changes",
        "some of them: see [each task's values](#what-each-task-changes). This page is written by",
        "`python scripts/config_reference.py` from the schema (`bimt/experiment/schema.py`) and `conf/`.",
        "",
        "| key | type | default | meaning |",
        "|---|---|---|---|",
    ]
    for key, kind, text in schema_rows(RunConfig):
        if key == "train_types":
            lines.append(f"| `train_types.<n>.l1`, `.local`, `.swap` | bool | see below | {text} |")
            continue
        lines.append(f"| `{key}` | {kind.replace('|', 'or')} | {shown(defaults.get(key))} | {cell(text)} |")
    lines += ["", "The train types:", "", "| train_type | l1 | local | swap |", "|---|---|---|---|"]
    for number in sorted({key.split(".")[1] for key in defaults if key.startswith("train_types.")}, key=int):
        lines.append(f"| {number} | " + " | ".join(shown(defaults[f"train_types.{number}.{switch}"])
                                                 for switch in ("l1", "local", "swap")) + " |")
    lines += ["", "## What each task changes", "",
              "`task=NAME` sets these values (and the task's own `task.*` settings) in place of the defaults above.", ""]
    for task in tasks:
        values = composed(f"task={task}")
        changed = [f"`{key}={plain(values[key])}`" for key in values
                   if not key.startswith(("task.", "hydra")) and values[key] != defaults.get(key)]
        settings = [f"`{key}={plain(value)}`" for key, value in values.items()
                    if key.startswith("task.") and value is not None and key != "task.name"]
        lines.append(f"- **{task}**: {', '.join(settings)}" + (f"; {', '.join(changed)}" if changed else ""))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/configuration.md is out of date")
    args = parser.parse_args(argv)
    text = reference()
    if args.check:
        current = TARGET.read_text() if TARGET.is_file() else ""
        if current != text:
            print(f"{TARGET} is out of date: run python scripts/config_reference.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
