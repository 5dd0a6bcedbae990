"""Tasks: problems with gold answers, split into train and test, loaded by name.

A task loader has one signature, ``(cfg: TaskConfig, split: str) -> list[Problem]``, and is
registered in ``TASKS`` under the name ``task.loader`` selects: the built-in tasks ``routes`` (the
default study's) and ``arithmetic``, or ``dataset``, which reads any hub dataset or local file as the
preset (``conf/task/``) describes.

Two more registries, keyed by ``task.name``, hold what only some tasks have:
``TEACHERS``, the built-in tasks' teachers (the base model's SFT data, and the stronger teacher
``algorithm=distill`` learns from), and ``DIAGNOSTICS``, per-sample metrics of a task's mechanism
that the training loop logs for each step's rollouts (``train/<name>``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence

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


TraceFn = Callable[[Problem, random.Random], str]  # a teacher: one trace (completion) of a problem
Sampler = Callable[[list[str], int], list[list[str]]]  # (prompts, n) -> n completions per prompt


@dataclass(frozen=True)
class Teachers:
    """What the built-in base model and the distillation arm need from a built-in task."""

    alphabet: str  # every character its prompts and traces use: the built-in tokenizer's vocabulary
    weak: TraceFn  # the noisy teacher whose traces the built-in base model is SFT'd on
    strong: TraceFn  # the stronger teacher algorithm=distill learns from (algorithm.distill.path unset)
    build_fields: tuple[str, ...]  # TaskConfig fields the base's SFT data depends on: part of its cache key
    # the base model before RL, held to its weak teacher: (task config, sampler) -> {"stats", "failures", "passed", ...}
    check: Optional[Callable[["TaskConfig", Sampler], dict[str, Any]]] = None
    # the problems the weak teacher's SFT traces cycle through; None = the train split as it is
    sft_problems: Optional[Callable[["TaskConfig"], list[Problem]]] = None


TEACHERS: Registry[Any] = Registry("built-in teacher")

# A task's rollout diagnostics: per-sample values of named metrics, None where a metric does not apply
# (the reward functions' convention); the loop logs each one's mean over all processes as train/<name>.
Diagnostic = Callable[[Sequence[Problem], Sequence[str]], dict[str, list[Optional[float]]]]
DIAGNOSTICS: Registry[Diagnostic] = Registry("rollout diagnostic")


# Registered here, after Problem exists, so that every task the framework knows is listed in one place.
from train.tasks import arithmetic, datasets, routes  # noqa: E402

TASKS.register("arithmetic")(arithmetic.load)
TASKS.register("dataset")(datasets.load)
TASKS.register("routes")(routes.load)

# The arithmetic task's SFT data depends on these fields; keep the tuple as it is, or every cached base changes.
TEACHERS.register("arithmetic")(Teachers(
    alphabet=arithmetic.ALPHABET, weak=arithmetic.teacher_trace, strong=arithmetic.noise_free_trace,
    build_fields=("name", "seed", "train_size", "min_digits", "max_digits", "slip_rate", "slip_concentration"),
))
TEACHERS.register("routes")(Teachers(
    alphabet=routes.ALPHABET, weak=routes.teacher_trace, strong=routes.strong_teacher_trace,
    build_fields=("name", "seed", "train_size", "min_digits", "max_digits", "slip_rate", "slip_concentration",
                  "route_r_share", "route_r_slip", "gap_total", "gap_written", "sft_h_share"),
    check=routes.base_check, sft_problems=routes.sft_problems,
))
DIAGNOSTICS.register("routes")(routes.diagnostics)

__all__ = ["DIAGNOSTICS", "SPLITS", "TASKS", "TEACHERS", "Diagnostic", "Problem", "Sampler", "TaskLoader",
           "Teachers", "TraceFn", "load_task"]
