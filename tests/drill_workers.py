"""Test-only program for ``tests/test_drills.py``: rlvr-train that dies by SIGKILL in the middle of a save.

``python tests/drill_workers.py STEP [hydra overrides]``
    rlvr-train as usual, except that saving the checkpoint of step STEP kills the process (kill -9 of
    itself) once the weights and the optimizer state are written and just before the metadata file
    that completes the checkpoint: the latest point at which a save can be cut.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any


def main() -> None:
    step, overrides = int(sys.argv[1]), sys.argv[2:]
    import train.checkpoint as checkpoint
    import train.main as entry

    write_json = checkpoint._write_json

    def write_or_die(path: Path, payload: dict[str, Any]) -> None:
        if payload.get("step") == step:
            os.kill(os.getpid(), signal.SIGKILL)
        write_json(path, payload)

    checkpoint._write_json = write_or_die
    sys.argv = [sys.argv[0], *overrides]
    entry.main()


if __name__ == "__main__":
    main()
