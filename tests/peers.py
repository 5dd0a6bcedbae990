"""Peer implementations the numbers tests compare against."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest


def verl_module(name: str) -> ModuleType:
    """verl's module ``name``. Without verl the calling test module is skipped, except under CI (``CI`` set),
    which installs verl (``tests/test_parity_verl.py`` has the pip line): there a missing verl fails loudly."""
    if os.environ.get("CI"):
        return importlib.import_module(name)
    return pytest.importorskip(name, reason="verl not installed; see tests/test_parity_verl.py for the pip line")
