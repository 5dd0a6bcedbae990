"""Start-up checks: a value out of range stops the run before any model is built, naming the field and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli import run_cli
from tests.test_datasets import run_config
from train.config import ConfigError, check

# (override, what the message must say): one per numeric field that has a range
BAD = [
    ("trainer.total_steps=-5", r"trainer.total_steps=-5 must be >= 1"),
    ("trainer.total_steps=0", r"trainer.total_steps=0 must be >= 1"),
    ("trainer.lr=-1", r"trainer.lr=-1.0 must be > 0"),
    ("trainer.lr=0", r"trainer.lr=0.0 must be > 0"),
    ("trainer.lr=nan", r"trainer.lr=nan must be > 0"),
    ("trainer.lr=inf", r"trainer.lr=inf must be > 0"),
    ("trainer.save_every=0", r"trainer.save_every=0 must be >= 1"),
    ("trainer.warmup_steps=-1", r"trainer.warmup_steps=-1 must be >= 0"),
    ("trainer.max_grad_norm=-0.5", r"trainer.max_grad_norm=-0.5 must be >= 0 \(0 = no clipping\)"),
    ("trainer.micro_batch_size=0", r"trainer.micro_batch_size=0 must be >= 1"),
    ("trainer.max_tokens_per_micro_batch=-1", r"trainer.max_tokens_per_micro_batch=-1 must be >= 0"),
    ("trainer.mini_batch_size=-8", r"trainer.mini_batch_size=-8 must be >= 0"),
    ("trainer.weight_decay=-0.1", r"trainer.weight_decay=-0.1 must be >= 0"),
    ("trainer.keep_train_states=-1", r"trainer.keep_train_states=-1 must be >= 0"),
    ("trainer.threads=0", r"trainer.threads=0 must be >= 1"),
    ("trainer.collective_timeout_s=0", r"trainer.collective_timeout_s=0.0 must be > 0 seconds"),
    ("trainer.prompts_per_step=0", r"trainer.prompts_per_step=0 must be >= 1"),
    ("algorithm.samples_per_prompt=0", r"algorithm.samples_per_prompt=0 must be >= 1"),
    ("algorithm.ppo_epochs=0", r"algorithm.ppo_epochs=0 must be >= 1"),
    ("algorithm.clip_low=1.5", r"algorithm.clip_low=1.5 must be in \[0, 1\]"),
    ("algorithm.kl_coef=-0.1", r"algorithm.kl_coef=-0.1 must be >= 0"),
    ("algorithm.gamma=1.1", r"algorithm.gamma=1.1 must be in \[0, 1\]"),
    ("rollout.temperature=0", r"rollout.temperature=0.0 must be > 0"),
    ("rollout.top_p=0", r"rollout.top_p=0.0 must be in \(0, 1\]"),
    ("rollout.max_new_tokens=0", r"rollout.max_new_tokens=0 must be >= 1"),
    ("eval.num_problems=-1", r"eval.num_problems=-1 must be >= 0 \(0 = the whole test split\)"),
    ("eval.batch_size=0", r"eval.batch_size=0 must be >= 1"),
    ("eval.temperature=-0.6", r"eval.temperature=-0.6 must be > 0"),
    ("eval.top_p=1.5", r"eval.top_p=1.5 must be in \(0, 1\]"),
    ("eval.max_new_tokens=0", r"eval.max_new_tokens=0 must be >= 1"),
    ("eval.n=0", r"eval.n=0 must be >= 1"),
    ("eval.k_max=-1", r"eval.k_max=-1 must be >= 0"),
    ("logger.log_every=0", r"logger.log_every=0 must be >= 1"),
    ("task.max_prompt_tokens=0", r"task.max_prompt_tokens=0 must be >= 1, or null"),
    ("task.overlong_prompts=truncate", r"task.overlong_prompts='truncate'; choose one of: drop, error"),
]


@pytest.mark.parametrize("override, message", BAD, ids=[b[0] for b in BAD])
def test_a_value_out_of_range_is_refused_with_its_field_and_range(override, message):
    with pytest.raises(ConfigError, match=message):
        check(run_config(override), world_size=1)


def test_the_defaults_and_the_edges_of_each_range_pass():
    edges = ["trainer.max_grad_norm=0", "trainer.warmup_steps=0", "trainer.mini_batch_size=0", "eval.num_problems=0",
             "eval.top_p=1", "rollout.top_p=1", "algorithm.gamma=0", "algorithm.clip_low=0", "eval.k_max=0",
             "task.max_prompt_tokens=1"]  # fmt: skip
    check(run_config(), world_size=1)
    check(run_config(*edges), world_size=1)


def test_rlvr_train_stops_before_building_anything(tmp_path):
    """trainer.total_steps=-5 used to run the whole base sweep and exit 0: now exit 2 within the start-up."""
    proc = run_cli("rlvr-train", [f"run_dir={tmp_path / 'run'}", f"model.cache_dir={tmp_path / 'cache'}",
                                  "trainer.total_steps=-5", "logger.wandb=false"], cwd=tmp_path, check=False)  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "config error: trainer.total_steps=-5 must be >= 1" in proc.stderr
    assert not (tmp_path / "cache").exists()  # no base model was built
    assert not (tmp_path / "run" / "eval").exists()  # and nothing swept


def test_a_token_budget_must_hold_one_full_response():
    """Below rollout.max_new_tokens + 1 a full-length response with one prompt token would not fit."""
    message = (r"trainer.max_tokens_per_micro_batch=32 cannot hold one full response \(rollout.max_new_tokens=64\) and a "
               r"prompt token: set trainer.max_tokens_per_micro_batch >= 65, .* or trainer.max_tokens_per_micro_batch=0")
    with pytest.raises(ConfigError, match=message):
        check(run_config("trainer.max_tokens_per_micro_batch=32"), world_size=1)
    with pytest.raises(ConfigError, match=r"max_new_tokens=64\) .* >= 65"):
        check(run_config("trainer.max_tokens_per_micro_batch=64"), world_size=1)
    assert check(run_config("trainer.max_tokens_per_micro_batch=65"), world_size=1).tokens_per_micro_batch == 65
    assert check(run_config(), world_size=1).tokens_per_micro_batch == 0  # off by default
    with pytest.raises(ConfigError, match=r"RL update only; algorithm.trainer=distill .* set trainer.max_tokens_per_micro_batch=0"):
        check(run_config("algorithm=distill", "trainer.max_tokens_per_micro_batch=512"), world_size=1)


def test_pass_at_k_advantage_needs_a_group():
    with pytest.raises(ConfigError, match=r"grpo_passk .* algorithm.samples_per_prompt >= 2 \(got 1\)"):
        check(run_config("algorithm.advantage=grpo_passk", "algorithm.samples_per_prompt=1"), world_size=1)
    check(run_config("algorithm.advantage=grpo_passk", "algorithm.samples_per_prompt=2", "trainer.micro_batch_size=8"),
          world_size=1)


ALGORITHM_PRESETS = sorted(p.stem for p in (Path(__file__).parents[1] / "conf" / "algorithm").glob("*.yaml"))


@pytest.mark.parametrize("name", ALGORITHM_PRESETS)
def test_every_algorithm_preset_composes_and_passes_the_checks(name):
    cfg = run_config(f"algorithm={name}", "trainer.micro_batch_size=8")
    check(cfg, world_size=1)
    assert cfg.algorithm.name == name


ROLLOUT_CORRECTION_ERRORS = [
    (["rollout_is=tok"], r"unknown rollout IS level 'tok'; known: sequence, token"),
    (["rollout_is=token", "rollout_is_threshold=abc"], r"rollout_is_threshold 'abc': expected a positive number"),
    (["rollout_rs=token_k1"], r"rollout_rs='token_k1' needs rollout_rs_threshold"),
    (["rollout_rs=token_k9", "rollout_rs_threshold=2.0"], r"unknown rollout rejection mode 'token_k9'"),
    (["bypass_mode=true", "rollout_is=token"], r"bypass_mode=true takes the sampler's log-probs as pi_old"),
]


@pytest.mark.parametrize("overrides, message", ROLLOUT_CORRECTION_ERRORS, ids=[" ".join(o) for o, _ in ROLLOUT_CORRECTION_ERRORS])
def test_a_bad_rollout_correction_is_refused_at_start_up(overrides, message):
    with pytest.raises(ConfigError, match=message):
        check(run_config(*(f"algorithm.rollout_correction.{o}" for o in overrides), "trainer.micro_batch_size=8"), world_size=1)


def test_vllm_tensor_parallelism_is_refused_as_not_built_yet():
    from train.config import VLLMConfig, check_vllm

    with pytest.raises(ConfigError, match=r"tensor_parallel_size=2: tensor parallelism inside the engine is not built yet.*"
                                          r"deals its pieces out one per process.*Set rollout.vllm.tensor_parallel_size=1"):
        check_vllm(VLLMConfig(tensor_parallel_size=2))
    check_vllm(VLLMConfig())  # 1 GPU per engine, awake: nothing to ask of vLLM


@pytest.mark.parametrize("level", [-1, 3])
def test_vllm_sleep_levels_are_vllm_s(level):
    from train.config import VLLMConfig, check_vllm

    with pytest.raises(ConfigError, match=rf"sleep_mode={level} must be 0 \(off\), 1 .* or 2"):
        check_vllm(VLLMConfig(sleep_mode=level))
