"""Reward functions (verifiers), registered by name; ``task.reward`` picks one.

One signature, TRL's: ``fn(prompts: list[str], completions: list[str], **dataset_columns) ->
list[float | None]`` (None = this function does not apply to the sample), so a TRL reward
function plugs in unchanged. Gold answers arrive in the ``answer`` column.
"""

from __future__ import annotations

from typing import Callable

from algorithms.registry import Registry
from train.rewards import arithmetic, code, math

RewardFn = Callable[..., list[float | None]]
REWARDS: Registry[RewardFn] = Registry("reward function")

REWARDS.register("arithmetic")(arithmetic.arithmetic_reward)
REWARDS.register("code")(code.code_reward)
REWARDS.register("math")(math.math_reward)

__all__ = ["REWARDS", "RewardFn"]
