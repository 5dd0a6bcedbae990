"""Tasks: problems with gold answers, split into train and test, loaded by name.

A task loader has one signature, ``(cfg: TaskConfig, split: str) -> list[Problem]``, and is
registered in ``TASKS`` under the name ``task.loader`` selects: ``arithmetic``, the built-in task, or
``dataset``, which reads any hub dataset or local file as the preset (``conf/task/``) describes.
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
    prompt: str  # fed verbatim to the model (task.chat: the caller wraps it with templates.apply_chat)
    answer: str  # gold final answer, compared by the task's verifier
    metadata: Mapping[str, Any] = field(default_factory=dict, compare=False)


TaskLoader = Callable[["TaskConfig", str], list[Problem]]
TASKS: Registry[TaskLoader] = Registry("task")


def load_task(cfg: TaskConfig, split: str) -> list[Problem]:
    """The problems of the task's ``split`` ("train" or "test"), deterministic from the config.

    Raises ValueError naming the known loaders or splits when either is unknown.
    """
    if cfg.loader not in TASKS:
        raise ValueError(f"task.loader={cfg.loader!r} is unknown; known loaders: {', '.join(TASKS.names())}")
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is unknown; known splits: {', '.join(SPLITS)}")
    return TASKS[cfg.loader](cfg, split)


# Registered here, after Problem exists, so that every task the framework knows is listed in one place.
from train.tasks import arithmetic, datasets  # noqa: E402

TASKS.register("arithmetic")(arithmetic.load)
TASKS.register("dataset")(datasets.load)

__all__ = ["SPLITS", "TASKS", "Problem", "TaskLoader", "load_task"]
