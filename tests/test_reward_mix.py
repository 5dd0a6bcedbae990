"""Weighted reward functions (task.reward + task.rewards): the sum TRL's GRPOTrainer forms from
reward_funcs and reward_weights, with the verifier's verdict kept apart, and errors that say what to fix."""

import math

import pytest

from train.config import ConfigError, RunConfig, check
from train.rewards import REWARDS, WeightedRewards, resolve
from tests import reward_plugins

PROMPTS, COMPLETIONS = ["1+2="] * 4, ["#3", "#4", "#3 padded", "#"]
ANSWERS = ["3"] * 4


def test_verifier_alone_by_default():
    got = WeightedRewards("arithmetic", {})(prompts=PROMPTS, completions=COMPLETIONS, answer=ANSWERS)
    assert got.verdicts == [1.0, 0.0, 0.0, 0.0] and got.rewards == got.verdicts
    assert list(got.per_function) == ["arithmetic"]


def test_weighted_sum_skips_functions_that_do_not_apply():
    mix = WeightedRewards("arithmetic", {"arithmetic": 2.0, "tests.reward_plugins.only_long": -0.25, "tests.reward_plugins.half": 1.0})
    got = mix(prompts=PROMPTS, completions=COMPLETIONS, answer=ANSWERS)
    long = [reward_plugins.only_long(PROMPTS, COMPLETIONS)[i] for i in range(4)]
    expected = [2.0 * v + (-0.25 * (l or 0.0)) + 0.5 for v, l in zip([1.0, 0.0, 0.0, 0.0], long)]
    assert got.rewards == pytest.approx(expected) and got.rewards == pytest.approx([2.5, 0.5, 0.25, 0.5])
    assert got.verdicts == [1.0, 0.0, 0.0, 0.0]  # shaping never makes an answer right


def test_verifier_outside_the_weights_still_decides_correctness():
    got = WeightedRewards("arithmetic", {"tests.reward_plugins.half": 1.0})(prompts=PROMPTS, completions=COMPLETIONS, answer=ANSWERS)
    assert got.rewards == [0.5] * 4 and got.verdicts == [1.0, 0.0, 0.0, 0.0]


def test_each_function_runs_once_per_batch(monkeypatch):
    calls = []
    monkeypatch.setattr(reward_plugins, "half", lambda prompts, completions, **kw: calls.append(1) or [0.5] * len(completions))
    WeightedRewards("tests.reward_plugins.half", {"tests.reward_plugins.half": 1.0})(prompts=PROMPTS, completions=COMPLETIONS)
    assert len(calls) == 1


def test_registered_names_and_import_paths_resolve():
    assert resolve("math") is REWARDS["math"] and resolve("tests.reward_plugins.half") is reward_plugins.half
    with pytest.raises(KeyError, match="known: .*math.*or give an import path"):
        resolve("maths")
    with pytest.raises(KeyError, match="cannot be imported"):
        resolve("tests.reward_plugins.missing")
    with pytest.raises(KeyError, match="not a function"):
        resolve("tests.reward_plugins.NOT_A_FUNCTION")


def test_a_function_returning_the_wrong_number_of_rewards_is_named():
    with pytest.raises(ValueError, match="'tests.reward_plugins.too_few' returned 1 rewards for 4"):
        WeightedRewards("arithmetic", {"tests.reward_plugins.too_few": 1.0})(prompts=PROMPTS, completions=COMPLETIONS, answer=ANSWERS)


@pytest.mark.parametrize("weights, match", [
    ({"nope": 1.0}, "unknown reward function 'nope'"),
    ({"arithmetic": math.nan}, "finite"),
])  # fmt: skip
def test_config_check_rejects_bad_reward_settings(weights, match):
    cfg = RunConfig()
    cfg.task.rewards = weights
    with pytest.raises(ConfigError, match=match):
        check(cfg, world_size=1)


def test_format_rewards_are_registered():
    assert REWARDS["boxed_format"](prompts=[""] * 2, completions=[r"\boxed{1}", "1"]) == [1.0, 0.0]
    assert REWARDS["r1_format"](prompts=[""], completions=["<think>x</think> <answer>1</answer>"]) == [1.0]
