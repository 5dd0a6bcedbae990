"""LoRA (model.lora.rank > 0): merged weights against PEFT's own merge, the adapters-off reference,
GRPO and PPO runs whose checkpoints are plain models equal to base + adapter, and resume."""

import copy
import shutil

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from tests.cli import TINY, metrics, run_cli
from train.config import ConfigError, LoRAConfig
from train.lora import AdaptersOff, plain_state_dict, plain_weights, with_lora
from train.tracking import read_run_info


def adapted(model):
    """``model`` with rank-4 LoRA adapters whose B is random (not PEFT's zeros), so they change the outputs."""
    lora = with_lora(model, LoRAConfig(rank=4, alpha=8.0))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in lora.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5, generator=generator)
    return lora


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_merged_weights_equal_peft_merge_and_unload(tiny_model):
    base = {name: tensor.clone() for name, tensor in tiny_model.state_dict().items()}
    lora = adapted(tiny_model)
    plain = plain_state_dict(lora, lora.state_dict())
    reference = copy.deepcopy(lora).merge_and_unload().state_dict()  # PEFT's merge, in place on a copy
    assert plain.keys() == reference.keys() == base.keys()
    for name, tensor in reference.items():
        torch.testing.assert_close(plain[name], tensor, rtol=0, atol=1e-6, msg=name)
    # only the adapted (linear) layers differ from the base; embeddings, norms and the output layer do not
    changed = {name for name in base if not torch.equal(plain[name], base[name])}
    assert changed and all(name.endswith("proj.weight") for name in changed), changed
    # merging never touched the trained model: its adapted layers still hold the base weights
    assert not any(layer.merged for layer in lora.modules() if hasattr(layer, "merged"))
    held = {name.replace("base_model.model.", "").replace(".base_layer", ""): t for name, t in lora.state_dict().items()}
    assert all(torch.equal(held[name], base[name]) for name in base)


def test_plain_weights_of_named_parameters_load_into_the_plain_model(tiny_model):
    """What the vLLM engine is pushed: named parameters, merged, under names the plain model has."""
    ids = torch.tensor([[1, 5, 7, 2, 9]])
    plain_model = copy.deepcopy(tiny_model)
    lora = adapted(tiny_model)
    named = dict(plain_weights(lora, ((n, p.detach()) for n, p in lora.named_parameters())))
    assert named.keys() == dict(plain_model.named_parameters()).keys()
    plain_model.load_state_dict(named, strict=False)
    torch.testing.assert_close(_logits(plain_model, ids), _logits(lora, ids), rtol=1e-5, atol=1e-5)


def test_plain_weights_pass_other_models_through(tiny_model):
    named = list(tiny_model.named_parameters())
    assert list(plain_weights(tiny_model, named)) == named


def test_adapters_off_is_the_base_model(tiny_model):
    ids = torch.tensor([[3, 4, 5, 6]])
    base_logits = _logits(tiny_model, ids)
    lora = adapted(tiny_model)
    assert not torch.allclose(_logits(lora, ids), base_logits, atol=1e-3)  # the adapters matter
    reference = AdaptersOff(lora, lora)
    assert list(reference.named_parameters(recurse=False)) == []  # it owns nothing: nothing to save or train
    torch.testing.assert_close(_logits(reference, ids), base_logits, rtol=0, atol=1e-6)
    assert not torch.allclose(_logits(lora, ids), base_logits, atol=1e-3)  # and back on afterwards
    reference.eval()
    assert not lora.training
    reference.train()
    assert lora.training


def test_unknown_target_modules_say_which_exist(tiny_model):
    with pytest.raises(ConfigError, match="q_proj") as err:
        with_lora(tiny_model, LoRAConfig(rank=4, target_modules=["attention"]))
    assert "all-linear" in str(err.value)


@pytest.mark.parametrize("bad", ["model.lora.rank=-1", "model.lora.alpha=0", "model.lora.dropout=1.0"])
def test_bad_lora_settings_are_refused(bad, tmp_path, tiny_cache):
    proc = run_cli("rlvr-train", [f"run_dir={tmp_path / 'run'}", f"model.cache_dir={tiny_cache}", *TINY,
                                  "model.lora.rank=4", bad], cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "model.lora" in proc.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


LORA_RUN = ["algorithm.kl_coef=0.01", "model.lora.rank=8", "model.lora.alpha=16", "trainer.lr=2e-3",
            "trainer.total_steps=4", "trainer.save_every=2", "eval.after_train=false"]


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_cache):
    """GRPO with a KL term and LoRA, 4 steps, checkpoints at 2 and 4."""
    root = tmp_path_factory.mktemp("lora")
    run_cli("rlvr-train", [f"run_dir={root / 'run'}", f"model.cache_dir={tiny_cache}", *TINY, *LORA_RUN], cwd=root)
    return root, root / "run"


def test_lora_trains_the_adapters_against_the_base_as_reference(lora_run):
    _, run_dir = lora_run
    logged = metrics(run_dir)
    assert [m["train/step"] for m in logged] == [1, 2, 3, 4]
    assert all(m["rollout/logprob_abs_diff"] < 1e-3 for m in logged)
    # LoRA's B starts at 0, so at step 1 the policy is the base and its KL to the reference is 0; later not
    assert logged[0]["actor/kl"] == pytest.approx(0.0, abs=1e-7)
    assert logged[-1]["actor/kl"] > 1e-6


def test_lora_checkpoints_are_plain_models_equal_to_base_plus_adapter(lora_run):
    _, run_dir = lora_run
    base_path = read_run_info(run_dir)["base_model"]
    checkpoint = run_dir / "checkpoints" / "step_000004"
    base = load_file(f"{base_path}/model.safetensors")
    merged = load_file(checkpoint / "model.safetensors")
    assert merged.keys() == base.keys()  # a plain model: no PEFT names, no adapter tensors
    moved = {name for name in base if not torch.equal(base[name], merged[name])}
    assert moved and all(name.endswith("proj.weight") for name in moved), moved  # only adapted layers
    # the adapter alone, on the base, is the merged checkpoint
    ids = torch.tensor([[1, 4, 2, 11, 3, 7, 10]])
    on_base = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path), checkpoint / "adapter")
    plain = AutoModelForCausalLM.from_pretrained(checkpoint)
    torch.testing.assert_close(_logits(plain, ids), _logits(on_base, ids), rtol=1e-5, atol=1e-5)


def test_lora_resume_reproduces_the_uninterrupted_run(lora_run, tiny_cache):
    root, run_dir = lora_run
    crashed = root / "crashed"
    shutil.copytree(run_dir, crashed)
    shutil.rmtree(crashed / "checkpoints" / "step_000004")
    run_cli("rlvr-train", [f"run_dir={crashed}", f"model.cache_dir={tiny_cache}", *TINY, *LORA_RUN, "resume=true"],
            cwd=root)
    reference = {m["train/step"]: m for m in metrics(run_dir)}
    resumed = {m["train/step"]: m for m in metrics(crashed)}
    assert sorted(resumed) == [1, 2, 3, 4]
    for step in (3, 4):
        for key in ("actor/pg_loss", "actor/kl", "train/reward_mean", "actor/grad_norm"):
            assert resumed[step][key] == pytest.approx(reference[step][key], rel=1e-5, abs=1e-7), (step, key)
    a = load_file(run_dir / "checkpoints" / "step_000004" / "adapter" / "adapter_model.safetensors")
    b = load_file(crashed / "checkpoints" / "step_000004" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and a
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6)


def test_ppo_with_lora_adapts_the_policy_and_trains_the_critic_in_full(tmp_path, tiny_cache):
    """Also with gradient checkpointing, which generation turns off and back on around every rollout."""
    run_dir = tmp_path / "run"
    run_cli("rlvr-train", ["algorithm=ppo", f"run_dir={run_dir}", f"model.cache_dir={tiny_cache}", *TINY,
                           "model.lora.rank=4", "trainer.lr=2e-3", "trainer.total_steps=2", "trainer.save_every=2",
                           "trainer.gradient_checkpointing=true", "eval.after_train=false"], cwd=tmp_path)
    assert all("critic/vf_loss" in m for m in metrics(run_dir))
    checkpoint = run_dir / "checkpoints" / "step_000002"
    base = load_file(f"{read_run_info(run_dir)['base_model']}/model.safetensors")
    merged = load_file(checkpoint / "model.safetensors")
    moved = {name for name in base if not torch.equal(base[name], merged[name])}
    assert moved and all(name.endswith("proj.weight") for name in moved), moved
    assert (checkpoint / "adapter" / "adapter_config.json").is_file()
    critic = load_file(checkpoint / "critic" / "model.safetensors")
    assert not any("lora" in name for name in critic)
    # the critic's backbone started as the base: full training moved its embeddings too, not only adapted layers
    assert not torch.equal(critic["model.embed_tokens.weight"], base["model.embed_tokens.weight"])
