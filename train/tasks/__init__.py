"""Tasks: problems with gold answers, split into train and test, loaded by name.

A task loader has one signature, ``(cfg: TaskConfig, split: str) -> list[Problem]``, and is
registered in ``TASKS`` under the name ``task.name`` selects. Only the built-in ``arithmetic``
task exists so far; real datasets register beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

from algorithms.registry import Registry

if TYPE_CHECKING:  # the config module imports Hydra; the task code only reads fields
    from train.config import TaskConfig

SPLITS = ("train", "test")


@dataclass(frozen=True)
class Problem:
    """One problem: the prompt a policy sees and the gold answer a verifier compares with.

    ``metadata`` is task-specific detail (e.g. the teacher's slip table); it takes no part in
    equality or hashing, so two problems are the same problem when id, prompt and answer are.
    """

    id: str  # unique within a task, stable across runs (derived from the content)
    prompt: str  # fed verbatim to the model: no chat template
    answer: str  # gold final answer, compared by the task's verifier
    metadata: Mapping[str, Any] = field(default_factory=dict, compare=False)


TaskLoader = Callable[["TaskConfig", str], list[Problem]]
TASKS: Registry[TaskLoader] = Registry("task")


def load_task(cfg: TaskConfig, split: str) -> list[Problem]:
    """The problems of ``cfg.name``'s ``split`` ("train" or "test"), deterministic from the config.

    Raises ValueError naming the known tasks or splits when either is unknown.
    """
    if cfg.name not in TASKS:
        raise ValueError(f"task.name={cfg.name!r} is unknown; known tasks: {', '.join(TASKS.names())}")
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is unknown; known splits: {', '.join(SPLITS)}")
    return TASKS[cfg.name](cfg, split)


# Registered here, after Problem exists, so that every task the framework knows is listed in one place.
from train.tasks import arithmetic  # noqa: E402

TASKS.register("arithmetic")(arithmetic.load)

__all__ = ["SPLITS", "TASKS", "Problem", "TaskLoader", "load_task"]
