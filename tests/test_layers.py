"""The layering of ../shared/STYLE.md: algorithms is pure math; train does not reach into eval."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    exe = shutil.which("lint-imports") or pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    proc = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Contracts: 2 kept, 0 broken" in proc.stdout


def test_algorithms_import_only_torch():
    code = "import sys, algorithms; print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in ('transformers', 'trl', 'accelerate', 'deepspeed', 'train', 'eval'))))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""
