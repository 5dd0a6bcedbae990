"""The rollout stage: DAPO's filter-and-refill rounds and ReMax's greedy baseline, through a
scripted engine whose answers are right for chosen prompts, so the expected batch is known."""

import pytest
import torch
from accelerate import Accelerator

from algorithms import Rollouts
from train.config import RunConfig, check
from train.rewards import WeightedRewards
from train.rollout.base import SamplingParams
from train.sampling import collect, greedy_baseline, prompts_for_step
from train.tasks.arithmetic import make_problem

ARITHMETIC = WeightedRewards("arithmetic", {})


class ScriptedEngine:
    """A RolloutEngine answering ``a+b=`` right on samples chosen by ``right(a, sample, greedy)``."""

    def __init__(self, right):
        self.right = right
        self.calls = 0

    def sync_weights(self, model):
        pass

    def release(self):
        pass

    def generate(self, prompts, params: SamplingParams) -> Rollouts:
        self.calls += 1
        texts = []
        for prompt in prompts:
            a, b = (int(x) for x in prompt.rstrip("=").split("+"))
            for sample in range(params.n):
                texts.append(f"#{a + b if self.right(a, sample, params.greedy) else a + b + 1}")
        rows = len(texts)
        return Rollouts(
            prompt_ids=torch.ones(rows, 3, dtype=torch.long), prompt_mask=torch.ones(rows, 3),
            response_ids=torch.ones(rows, 4, dtype=torch.long), response_mask=torch.ones(rows, 4),
            sample_logprobs=torch.zeros(rows, 4), group_ids=torch.arange(len(prompts)).repeat_interleave(params.n),
            texts=texts, truncated=torch.zeros(rows, dtype=torch.bool),
        )


def _setup(**algorithm):
    cfg = RunConfig()
    cfg.trainer.prompts_per_step = 4
    cfg.algorithm.samples_per_prompt = 4
    cfg.trainer.micro_batch_size = 16
    for key, value in algorithm.items():
        setattr(cfg.algorithm, key, value)
    problems = [make_problem(a, 7) for a in range(10, 50)]
    return cfg, check(cfg, 1), problems


def test_dynamic_sampling_refills_with_informative_groups():
    cfg, plan, problems = _setup(dynamic_sampling=True, max_sampling_rounds=5)
    informative = {p.metadata["a"] for p in problems[::3]}  # about a third of prompts have mixed rewards
    engine = ScriptedEngine(lambda a, sample, greedy: a in informative and sample % 2 == 0)
    got = collect(engine, Accelerator(cpu=True), problems, ARITHMETIC, cfg, plan, step=0, pad_id=0)
    assert len(got.prompts) == 4 and len(got.scored) == 16
    assert got.scored.group_ids.tolist() == [g for g in range(4) for _ in range(4)]
    for g, prompt in enumerate(got.prompts):
        rewards = got.scored.rewards[got.scored.group_ids == g]
        assert prompt.metadata["a"] in informative and rewards.tolist() == [1.0, 0.0, 1.0, 0.0]
    rounds = got.stats["sampling/rounds"]
    assert rounds == engine.calls > 1 and got.stats["sampling/unfilled_groups"] == 0
    generated_groups = 4 * rounds
    assert got.stats["sampling/discarded_samples"] == (generated_groups - len(
        [p for r in range(int(rounds)) for p in prompts_for_step(problems, 0, cfg, plan, 0, r)
         if p.metadata["a"] in informative])) * 4


def test_dynamic_sampling_tops_up_and_reports_a_shortfall():
    cfg, plan, problems = _setup(dynamic_sampling=True, max_sampling_rounds=2)
    engine = ScriptedEngine(lambda a, sample, greedy: False)  # nothing is ever informative
    got = collect(engine, Accelerator(cpu=True), problems, ARITHMETIC, cfg, plan, step=3, pad_id=0)
    assert engine.calls == 2 and len(got.scored) == 16
    assert got.stats["sampling/unfilled_groups"] == 4
    assert got.stats["sampling/discarded_samples"] == 2 * 16


def test_without_dynamic_sampling_one_round_of_the_step_prompts():
    cfg, plan, problems = _setup()
    engine = ScriptedEngine(lambda a, sample, greedy: True)
    got = collect(engine, Accelerator(cpu=True), problems, ARITHMETIC, cfg, plan, step=2, pad_id=0)
    assert engine.calls == 1 and got.prompts == prompts_for_step(problems, 2, cfg, plan, 0)
    assert got.scored.rewards.tolist() == [1.0] * 16


def test_overlong_shaping_lowers_reward_not_correctness():
    cfg, plan, problems = _setup(overlong_buffer=2, overlong_penalty=0.5)
    cfg.rollout.max_new_tokens = 4  # the scripted responses are 4 tokens: at the cap
    got = collect(ScriptedEngine(lambda a, s, g: True), Accelerator(cpu=True), problems, ARITHMETIC,
                  cfg, plan, step=0, pad_id=0)
    assert got.scored.rewards.tolist() == [0.5] * 16 and got.scored.correct.all()


def test_remax_baseline_is_the_greedy_reward_of_each_prompt():
    cfg, plan, problems = _setup()
    prompts = problems[:3]
    engine = ScriptedEngine(lambda a, sample, greedy: greedy and a % 2 == 0)
    group_ids = torch.tensor([0, 0, 1, 1, 2, 2])
    baseline = greedy_baseline(engine, prompts, ARITHMETIC, cfg, group_ids)
    expected = [float(p.metadata["a"] % 2 == 0) for p in prompts]
    assert baseline.tolist() == [expected[g] for g in group_ids.tolist()]


def test_weighted_rewards_train_on_the_sum_and_count_the_verifier():
    """task.rewards = {arithmetic: 1, plugin 0.5}: the reward is the weighted sum (a None skipped),
    correctness the verifier's alone, and each function's mean over the samples it applied to is logged."""
    cfg, plan, problems = _setup()
    rewards_of = WeightedRewards("arithmetic", {"arithmetic": 1.0, "tests.reward_plugins.even_last_digit": 0.5})
    got = collect(ScriptedEngine(lambda a, sample, g: sample % 2 == 0), Accelerator(cpu=True), problems, rewards_of,
                  cfg, plan, step=0, pad_id=0)  # fmt: skip
    digits = [int(t[-1]) for t in got.scored.texts]
    shaping = [d / 10 if d % 2 == 0 else 0.0 for d in digits]
    right = [sample % 2 == 0 for sample in range(16)]
    assert got.scored.correct.tolist() == right
    assert got.scored.rewards.tolist() == pytest.approx([float(r) + 0.5 * s for r, s in zip(right, shaping)])
    applied = [d / 10 for d in digits if d % 2 == 0]
    assert 0 < len(applied) < 16  # the test covers both cases
    assert got.stats["reward/arithmetic"] == 0.5
    assert got.stats["reward/tests.reward_plugins.even_last_digit"] == pytest.approx(sum(applied) / len(applied))
