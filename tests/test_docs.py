"""The README's two commands stay true: CI runs the test command verbatim, and what they name exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    """The indented command lines under the README's "Two commands" heading."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    return [line.strip() for line in section.splitlines() if line.startswith("    ") and line.strip()]


def test_ci_runs_the_readme_test_command_verbatim_and_the_app_command_names_real_files():
    app_cmd, test_cmd = readme_commands()
    assert test_cmd.endswith("python -m pytest -q") and "requirements-dev.txt" in test_cmd
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert [line for line in ci if line.strip()][-1] == test_cmd, "CI must end by running the README's test command"
    assert app_cmd.endswith("python app.py") and "requirements.txt" in app_cmd
    for name in re.findall(r"-r (\S+)", app_cmd + " " + test_cmd):
        assert (ROOT / name).is_file(), name
