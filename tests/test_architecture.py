"""The package's layering (import-linter's contracts in pyproject.toml) and the scripts' independence
from the tests."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from conftest import REPO


def test_the_import_contracts_hold():
    lint_imports = Path(sys.executable).parent / "lint-imports"  # import-linter's command, beside this Python
    result = subprocess.run([str(lint_imports), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_scripts_import_nothing_from_the_tests():
    for script in sorted((REPO / "scripts").glob("*.py")):
        tree = ast.parse(script.read_text())
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom) and node.module}
        assert not imported & {"tests", "conftest", "reference"}, script.name
        assert "sys.path" not in script.read_text(), f"{script.name} changes sys.path"
