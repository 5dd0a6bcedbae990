"""What a first multi-GPU run would hit, checked as close as a CPU allows: devices come from the
accelerator, models for the sweep load outside DeepSpeed's ZeRO-3 context, LoRA merges across devices,
no dropout in the trained models, float32 master weights without DeepSpeed, and the TRL-style
settings of the vLLM engine. The weight push's one-layer-at-a-time gathering and the rank-0-only
state dict are checked with two processes in tests/test_distributed.py."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from transformers import LlamaForCausalLM

from tests.cli import TINY, run_cli
from train.config import AlgorithmConfig, CriticConfig, DeepSpeedConfig, LoRAConfig, ModelConfig, RunConfig, TrainerConfig
from train.lora import plain_state_dict, with_lora


@pytest.fixture
def model_folder(tiny_model, tiny_tokenizer, tmp_path):
    tiny_model.save_pretrained(tmp_path / "model")
    tiny_tokenizer.save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def _device_of(engine) -> torch.device:
    with engine.model_context() as model:
        return next(model.parameters()).device


def test_the_sweep_samples_on_the_device_accelerate_gives_the_process(model_folder, tiny_tokenizer, monkeypatch):
    """`cuda:LOCAL_RANK` on a GPU node; here the device is patched to `meta`, where nothing could land by accident."""
    import accelerate

    from eval.sweep import engine_for

    monkeypatch.setattr(accelerate, "PartialState", type("OnMeta", (), {"device": torch.device("meta")}))
    engine = engine_for(str(model_folder), tiny_tokenizer, RunConfig())
    assert _device_of(engine).type == "meta"
    with engine.model_context() as model:
        assert not model.training  # sampled in eval mode


def test_perplexities_score_on_the_device_accelerate_gives_the_process(model_folder, monkeypatch):
    import eval.perplexity as perplexity

    placed = []
    real = perplexity.load_for_inference
    monkeypatch.setattr(perplexity, "load_for_inference", lambda *a, **k: placed.append(real(*a, **k)) or placed[-1])
    from eval.samples import SampleSet
    from train.tasks import Problem

    problems = [Problem("0", "1+2=", "3")]
    samples = [SampleSet("base", "0", "h", ("3",), (True,))]
    table = perplexity.perplexity_table({"base": str(model_folder)}, "base", samples, problems, RunConfig(), progress=False)
    assert len(table["base"]["under_base"]) == 1 and len(placed) == 1
    assert next(placed[0].parameters()).device == torch.device("cpu")  # what PartialState reports here


def test_sweep_models_load_outside_a_zero3_context_a_training_run_left(model_folder):
    """After a ZeRO-3 run, accelerate keeps transformers' DeepSpeed config alive; rank 0 sweeping alone
    must not build its model under `deepspeed.zero.Init` (it would partition over absent peers)."""
    from transformers.integrations.deepspeed import HfDeepSpeedConfig, is_deepspeed_zero3_enabled

    from train.models import load_for_inference

    held = HfDeepSpeedConfig({"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": 1})
    try:
        assert is_deepspeed_zero3_enabled()
        model = load_for_inference(model_folder, ModelConfig(), device=torch.device("cpu"))
        assert not any(hasattr(p, "ds_id") for p in model.parameters())  # whole, not ZeRO-partitioned
        saved = load_file(model_folder / "model.safetensors")
        assert all(torch.equal(p, saved[n]) for n, p in model.named_parameters() if n in saved)
        assert is_deepspeed_zero3_enabled()  # the training run's setting is back
    finally:
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config

        unset_hf_deepspeed_config()
        del held


def test_lora_merge_adds_on_the_state_dicts_device(tiny_model):
    """Under DeepSpeed the state dict to save is in host memory and the adapters on the GPU; here the
    state dict is on `meta` and the adapters on the CPU."""
    shapes = {name: tensor.shape for name, tensor in tiny_model.state_dict().items()}
    lora = with_lora(tiny_model, LoRAConfig(rank=4, alpha=8.0))
    state = {name: tensor.to("meta") for name, tensor in lora.state_dict().items()}
    merged = plain_state_dict(lora, state)
    assert {name: tensor.shape for name, tensor in merged.items()} == shapes
    assert all(tensor.device.type == "meta" for tensor in merged.values())


def test_lora_under_zero3_keeps_adapters_in_the_base_dtype(tiny_model):
    """ZeRO-3 gathers a module's parameters into one buffer of one dtype (TRL #6089): no fp32 adapters on bf16."""
    bf16 = tiny_model.to(torch.bfloat16)
    dtypes = {p.dtype for n, p in with_lora(bf16, LoRAConfig(rank=4), zero3=True).named_parameters() if "lora_" in n}
    assert dtypes == {torch.bfloat16}


def test_lora_without_zero3_keeps_peft_s_float32_adapters(tiny_model):
    bf16 = tiny_model.to(torch.bfloat16)
    dtypes = {p.dtype for n, p in with_lora(bf16, LoRAConfig(rank=4)).named_parameters() if "lora_" in n}
    assert dtypes == {torch.float32}


def _ppo(folder, **model) -> RunConfig:
    return RunConfig(model=ModelConfig(name_or_path=str(folder), **model),
                     algorithm=AlgorithmConfig(critic=CriticConfig(enabled=True)))


def test_the_trained_models_have_no_active_dropout(tiny_model, tiny_tokenizer, tmp_path):
    """The critic's head dropout (0.1 by default) and a model's attention dropout are off in train mode:
    old log-probs and values come from eval mode, updates from train mode."""
    from train.main import _trained_module

    tiny_model.config.attention_dropout = 0.5  # as some hub models ship
    tiny_model.save_pretrained(tmp_path / "m")
    tiny_tokenizer.save_pretrained(tmp_path / "m")
    raw = LlamaForCausalLM.from_pretrained(tmp_path / "m").train()
    ids = torch.tensor([[1, 5, 7, 2, 9, 4]])
    assert not torch.equal(raw(input_ids=ids).logits, raw(input_ids=ids).logits)  # the control: dropout is live
    module = _trained_module(_ppo(tmp_path / "m"), str(tmp_path / "m")).train()
    mask = torch.ones_like(ids)
    first, second = module(ids, mask), module(ids, mask)
    torch.testing.assert_close(first.logits, second.logits, rtol=0, atol=0)
    torch.testing.assert_close(first.critic_values, second.critic_values, rtol=0, atol=0)
    assert not [n for n, m in module.named_modules() if isinstance(m, torch.nn.Dropout) and m.p > 0]


def test_lora_dropout_is_kept_when_asked_for(model_folder):
    from train.main import _trained_module

    cfg = RunConfig(model=ModelConfig(name_or_path=str(model_folder), lora=LoRAConfig(rank=4, dropout=0.2)))
    module = _trained_module(cfg, str(model_folder))
    ps = {m.p for n, m in module.named_modules() if isinstance(m, torch.nn.Dropout)}
    assert ps == {0.2}


def test_bf16_without_deepspeed_holds_float32_masters_and_bf16_compute(model_folder):
    from train.distributed import zero_stage
    from train.main import _trained_module
    from train.models import mixed_precision, trained_dtype

    ddp = RunConfig(model=ModelConfig(name_or_path=str(model_folder), dtype="bfloat16"))
    zero2 = RunConfig(model=ddp.model, deepspeed=DeepSpeedConfig(preset="zero2", config={"zero_optimization": {"stage": 2}}))
    assert (trained_dtype(ddp), mixed_precision(ddp)) == ("float32", "bf16")
    assert (trained_dtype(zero2), mixed_precision(zero2), zero_stage(zero2)) == ("bfloat16", "bf16", 2)  # DeepSpeed's masters
    assert {p.dtype for p in _trained_module(ddp, str(model_folder)).parameters()} == {torch.float32}
    fp16_asked = RunConfig(model=ddp.model, trainer=TrainerConfig(mixed_precision="fp16"))
    assert mixed_precision(fp16_asked) == "fp16"  # an explicit choice wins


def test_a_bf16_run_trains_float32_masters_and_saves_bf16(tmp_path, tiny_cache):
    """One process, no DeepSpeed, model.dtype=bfloat16: the optimizer's weights (train_state) are float32
    and moved by updates far below bf16's resolution; the HF checkpoint is bf16 and loads as such."""
    run_dir = tmp_path / "run"
    run_cli("rlvr-train", [*TINY, f"model.cache_dir={tiny_cache}", f"run_dir={run_dir}", "model.dtype=bfloat16",
                           "trainer.total_steps=2", "trainer.save_every=2", "trainer.lr=1e-6", "eval.after_train=false"],
            cwd=tmp_path)
    checkpoint = run_dir / "checkpoints" / "step_000002"
    masters = load_file(checkpoint / "train_state" / "model.safetensors")
    saved = load_file(checkpoint / "model.safetensors")
    assert {t.dtype for t in masters.values()} == {torch.float32}
    assert {t.dtype for t in saved.values()} == {torch.bfloat16}
    (base_file,) = tiny_cache.glob("builtin-*/model.safetensors")
    base = load_file(base_file)
    # lr 1e-6 moves weights by ~1e-6: kept by float32 masters, below bf16's step (2^-8 of a weight) everywhere
    moved = [n for n in base if not torch.equal(masters[n], base[n].float())]
    assert moved
    tiny_steps = [n for n in moved if (masters[n] - base[n].float()).abs().max() < 1e-4]
    assert tiny_steps  # updates that a bf16 weight could not have held
    assert saved.keys() == masters.keys()  # tied embeddings are still written once
    assert all(torch.equal(saved[n], masters[n].to(torch.bfloat16)) for n in saved)


def test_vllm_sequence_length_follows_the_prompts_and_budgets():
    from train.config import EvalConfig, RolloutConfig, VLLMConfig
    from train.rollout.vllm_engine import _holds, model_len

    cfg = RunConfig(rollout=RolloutConfig(max_new_tokens=1024), eval=EvalConfig(max_new_tokens=2048))
    assert model_len(cfg, 300) == 300 + 2048  # never the model's own 131,072
    pinned = RunConfig(rollout=RolloutConfig(vllm=VLLMConfig(max_model_len=4096)))
    assert model_len(pinned, 300) == 4096
    assert _holds(4096, 2000) and not _holds(2000, 4096) and _holds(None, 10**6) and not _holds(4096, None)


def test_vllm_step_budget_holds_a_full_batch_on_cpus(monkeypatch):
    from train.config import VLLMConfig
    from train.rollout.vllm_engine import _batched_tokens

    cfg = VLLMConfig(max_num_seqs=64)
    assert _batched_tokens(cfg, 352) == 64 * 352  # here: no GPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert _batched_tokens(cfg, 352) == 4096  # TRL's bound on GPUs


def test_vllm_batched_tokens_below_max_num_seqs_is_refused():
    from train.config import ConfigError, RolloutConfig, VLLMConfig, _check_engine

    with pytest.raises(ConfigError, match="max_num_batched_tokens=128 is below rollout.vllm.max_num_seqs=256"):
        _check_engine(RolloutConfig(engine="vllm", vllm=VLLMConfig(max_num_batched_tokens=128)))


class _Layer(torch.nn.Module):
    def __init__(self, weight):
        super().__init__()
        self.weight = weight
        self.tied_to = None


class _Head(_Layer):
    def __init__(self):
        super().__init__(torch.nn.Parameter(torch.zeros(2, 2)))
        self.quant_method = self

    def tie_weights(self, embed):
        self.tied_to = embed
        return self

    def process_weights_after_loading(self, layer):
        layer.processed = True


def _worker(**layout):
    model = torch.nn.Module()
    model.config = type("Config", (), {"tie_word_embeddings": True})()
    model.model = torch.nn.Module()
    for name, module in layout.items():
        setattr(model.model if name == "embed_tokens" else model, name, module)
    runner = type("Runner", (), {"get_model": lambda self: model})()
    return type("Worker", (), {"model_runner": runner})(), model


def test_tied_output_layers_are_retied_where_vllm_keeps_a_separate_head():
    """vLLM's layouts: a ParallelLMHead tied to the embedding (Llama, Qwen2/3), no lm_head (Gemma 2:
    logits from the embedding), or lm_head aliasing the embedding module."""
    from train.rollout.vllm_engine import _retie_output_embeddings

    embed = _Layer(torch.nn.Parameter(torch.ones(2, 2)))
    worker, model = _worker(lm_head=_Head(), embed_tokens=embed)
    assert _retie_output_embeddings(worker) and model.lm_head.tied_to is embed and model.lm_head.processed
    worker, _ = _worker(embed_tokens=embed)
    assert _retie_output_embeddings(worker) is False
    worker, model = _worker(embed_tokens=embed)
    model.lm_head = embed
    assert _retie_output_embeddings(worker) is False
    worker, _ = _worker(lm_head=_Layer(torch.nn.Parameter(torch.zeros(2, 2))), embed_tokens=embed)
    with pytest.raises(RuntimeError, match="cannot re-tie"):
        _retie_output_embeddings(worker)
