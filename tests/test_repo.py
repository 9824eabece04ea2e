"""The README's commands are the ones CI runs, and the installed names stay under physai."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    ci_lines = [line for line in (REPO / ".ci" / "run").read_text().splitlines()
                if line and not line.startswith("#") and not line.startswith(("set ", "cd "))]
    assert len(ci_lines) == 1
    assert f"```bash\n{ci_lines[0]}\n```" in readme
    assert ci_lines[0].endswith("pytest -q")
    assert ci_lines[0].replace("-m pytest -q", "train.py") in readme


def test_no_generic_top_level_import_names(tmp_path):
    probe = ("import importlib.util as u; "
             "print([n for n in ('envs', 'synthetic', 'configs') if u.find_spec(n)]); "
             "print([n for n in ('physai.envs', 'physai.synthetic', 'physai.configs') if not u.find_spec(n)])")
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.stdout.split("\n")[:2] == ["[]", "[]"], result.stdout + result.stderr
