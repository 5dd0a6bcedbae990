"""Reward functions (verifiers), registered by name, and their weighted combination.

One signature, TRL's: ``fn(prompts: list[str], completions: list[str], **dataset_columns) ->
list[float | None]`` (None = this function does not apply to the sample), so a TRL reward
function plugs in unchanged. Gold answers arrive in the ``answer`` column.

``task.reward`` names the verifier: its verdict (1.0 = right) is what accuracy and pass@k count.
``task.rewards`` (name -> weight) makes the training reward a weighted sum of several functions,
as TRL's ``reward_funcs`` with ``reward_weights``; empty means the verifier alone. A name is a
registered one or an import path ``package.module.function``, as in TRL's GRPO script.
"""

from __future__ import annotations

import importlib
import math as _math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from algorithms.registry import Registry
from train.rewards import arithmetic, code, format_rewards, math

RewardFn = Callable[..., list[float | None]]
REWARDS: Registry[RewardFn] = Registry("reward function")

REWARDS.register("arithmetic")(arithmetic.arithmetic_reward)
REWARDS.register("code")(code.code_reward)
REWARDS.register("math")(math.math_reward)
REWARDS.register("boxed_format")(format_rewards.boxed_format)
REWARDS.register("r1_format")(format_rewards.r1_format)


def resolve(name: str) -> RewardFn:
    """The reward function called ``name``: a registered one, or one imported from ``package.module.function``."""
    if name in REWARDS:
        return REWARDS[name]
    module_name, _, attribute = name.rpartition(".")
    if not module_name:
        raise KeyError(
            f"unknown reward function {name!r}; known: {', '.join(REWARDS.names())}, "
            "or give an import path such as my_package.rewards.my_reward"
        )
    try:
        fn = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as err:
        raise KeyError(f"reward function {name!r} cannot be imported ({err}); is its package on PYTHONPATH?") from err
    if not callable(fn):
        raise KeyError(f"reward function {name!r} is a {type(fn).__name__}, not a function")
    return fn


@dataclass(frozen=True)
class RewardScores:
    verdicts: list[float]  # (B,) the verifier's reward; None (cannot judge) counts as 0.0
    rewards: list[float]  # (B,) sum of weight * reward over the functions that applied; 0.0 when none did
    per_function: dict[str, list[float | None]] = field(default_factory=dict)  # name -> (B,) its raw rewards


@dataclass(frozen=True)
class WeightedRewards:
    """The verifier and the weighted reward functions of a task, each called once per batch."""

    verifier: str
    weights: Mapping[str, float]  # empty = {verifier: 1.0}
    functions: dict[str, RewardFn] = field(init=False, repr=False)  # each name once, the verifier first

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", dict(self.weights) or {self.verifier: 1.0})
        bad = {name: w for name, w in self.weights.items() if not _math.isfinite(float(w))}
        if bad:
            raise ValueError(f"reward weights must be finite numbers: {bad}")
        object.__setattr__(self, "functions", {name: resolve(name) for name in dict.fromkeys([self.verifier, *self.weights])})

    @classmethod
    def of_task(cls, task: Any, verifier_only: bool = False) -> "WeightedRewards":
        """From ``task.reward`` and ``task.rewards``; ``verifier_only`` for evaluation, which counts verdicts only."""
        return cls(task.reward, {} if verifier_only else dict(task.rewards))

    def __call__(self, prompts: list[str], completions: list[str], **columns: Any) -> RewardScores:
        per_function = {}
        for name, fn in self.functions.items():
            got = list(fn(prompts=prompts, completions=completions, **columns))
            if len(got) != len(completions):
                raise ValueError(f"reward function {name!r} returned {len(got)} rewards for {len(completions)} completions")
            per_function[name] = got
        rewards = [
            sum(w * per_function[name][i] for name, w in self.weights.items() if per_function[name][i] is not None)
            for i in range(len(completions))
        ]
        verdicts = [0.0 if r is None else float(r) for r in per_function[self.verifier]]
        return RewardScores(verdicts=verdicts, rewards=[float(r) for r in rewards], per_function=per_function)


__all__ = ["REWARDS", "RewardFn", "RewardScores", "WeightedRewards", "resolve"]
