"""The commit recorded with every run and report: outputs under results/ do not make the code dirty."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")

SCRIPT = "from ltbench.runs import code_version; print(code_version()['commit'])"


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def _commit_of(repo: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k != "LTBENCH_COMMIT"}
    env["PYTHONPATH"] = str(repo)
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=repo, capture_output=True, text=True, check=True,
                         env=env)
    return out.stdout.strip()


def test_results_changes_keep_the_commit_clean_code_changes_do_not(tmp_path):
    repo = tmp_path / "clone"
    shutil.copytree(ROOT / "ltbench", repo / "ltbench", ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "results").mkdir()
    (repo / "results" / "README.md").write_text("old\n")
    _git(repo, "init", "-q")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "c")
    clean = _commit_of(repo)
    assert len(clean) == 12 and not clean.endswith("+dirty")

    (repo / "results" / "README.md").write_text("regenerated\n")  # a report rewrote a tracked output
    assert _commit_of(repo) == clean

    with open(repo / "ltbench" / "runs.py", "a") as f:
        f.write("\n# a local edit\n")
    assert _commit_of(repo) == clean + "+dirty"
