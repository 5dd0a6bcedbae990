"""The actor's loss: the on-policy shortcut (no old log-prob pass) and gradient checkpointing change nothing."""

import dataclasses

import pytest
import torch

from algorithms import POLICY_LOSSES, compute_policy_loss, policy_loss_options
from train.actor import LossNorm, micro_batch_loss, response_logprobs
from train.config import AlgorithmConfig
from tests.test_filters_and_critic import _train_batch


def _loss_and_grads(model, batch, trainable_only=False):
    model.zero_grad()
    loss, metrics = micro_batch_loss(model, batch, AlgorithmConfig(), 1.0, LossNorm(12.0, 4.0, 5))
    loss.backward()
    params = [p for p in model.parameters() if p.requires_grad or not trainable_only]
    return loss.detach(), [p.grad.clone() for p in params], metrics


def test_one_update_shortcut_equals_recomputed_old_logprobs(tiny_model, tiny_tokenizer):
    batch = _train_batch(tiny_tokenizer)
    tiny_model.eval()  # no dropout in the tiny Llama; eval mode makes the two forwards bit-comparable
    with torch.no_grad():
        current, _ = response_logprobs(tiny_model, batch.prompt_ids, batch.prompt_mask, batch.response_ids,
                                       batch.response_mask, 1.0)
    recomputed = dataclasses.replace(batch, old_logprobs=current, old_values=None)
    shortcut = dataclasses.replace(batch, old_logprobs=None, old_values=None)
    loss_a, grads_a, metrics_a = _loss_and_grads(tiny_model, recomputed)
    loss_b, grads_b, metrics_b = _loss_and_grads(tiny_model, shortcut)
    torch.testing.assert_close(loss_a, loss_b)
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(a, b)
    assert metrics_b["clipfrac"] == 0 and metrics_b["approx_kl"] == 0  # ratio exactly 1


def test_sampler_gap_is_the_mean_logprob_difference_on_response_tokens(tiny_model, tiny_tokenizer):
    from train.actor import LOGPROB_GAP

    batch = _train_batch(tiny_tokenizer)
    tiny_model.eval()
    with torch.no_grad():
        current, _ = response_logprobs(tiny_model, batch.prompt_ids, batch.prompt_mask, batch.response_ids,
                                       batch.response_mask, 1.0)
    mask = batch.response_mask.float()
    in_step = dataclasses.replace(batch, sample_logprobs=current * mask, old_logprobs=None, old_values=None)
    assert _loss_and_grads(tiny_model, in_step)[2][LOGPROB_GAP] < 1e-5
    # a sampler that ran other weights: off by 0.3 on every response token, whatever sits under padding
    stale = dataclasses.replace(in_step, sample_logprobs=(current - 0.3) * mask + 7.0 * (1 - mask))
    assert float(_loss_and_grads(tiny_model, stale)[2][LOGPROB_GAP]) == pytest.approx(0.3, abs=1e-5)


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_gradient_checkpointing_leaves_loss_and_gradients_unchanged(lora, tiny_model, tiny_tokenizer):
    """trainer.gradient_checkpointing recomputes activations in backward: same numbers, less memory.
    With LoRA the embeddings are frozen, so only non-reentrant checkpointing reaches the adapters."""
    batch = dataclasses.replace(_train_batch(tiny_tokenizer), old_logprobs=None, old_values=None)
    if lora:
        from tests.test_lora import adapted

        tiny_model = adapted(tiny_model)
    tiny_model.train()
    loss_plain, grads_plain, _ = _loss_and_grads(tiny_model, batch, trainable_only=lora)
    tiny_model.gradient_checkpointing_enable()
    assert tiny_model.is_gradient_checkpointing
    loss_ckpt, grads_ckpt, _ = _loss_and_grads(tiny_model, batch, trainable_only=lora)
    torch.testing.assert_close(loss_ckpt, loss_plain)
    assert len(grads_plain) == len(grads_ckpt) and all(g.abs().sum() > 0 for g in grads_ckpt)
    for a, b in zip(grads_plain, grads_ckpt):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", POLICY_LOSSES.names())
def test_the_actor_minimises_the_configured_policy_loss(tiny_tokenizer, tiny_model, name):
    """``algorithm.policy_loss`` picks the registry entry, fed the options it names from the config."""
    batch = _train_batch(tiny_tokenizer)
    algo = AlgorithmConfig(policy_loss=name, clip_cov_ratio=0.5, kl_cov_ratio=0.5)  # ratios that pick tokens in 14
    norm = LossNorm(12.0, 4.0, 5)
    tiny_model.zero_grad()
    loss, metrics = micro_batch_loss(tiny_model, batch, algo, 1.0, norm, generator=torch.Generator().manual_seed(1))
    loss.backward()
    assert torch.isfinite(loss) and any(p.grad is not None and p.grad.abs().sum() > 0 for p in tiny_model.parameters())
    with torch.no_grad():
        logprobs, _ = response_logprobs(tiny_model, batch.prompt_ids, batch.prompt_mask, batch.response_ids,
                                        batch.response_mask, 1.0)
    options = {key: getattr(algo, key) for key in policy_loss_options(name)}
    expected, _ = compute_policy_loss(name, logprobs, batch.old_logprobs, batch.advantages, batch.response_mask,
                                      num_tokens=12.0, num_seqs=4.0, max_len=5,
                                      generator=torch.Generator().manual_seed(1), **options)
    torch.testing.assert_close(metrics["pg_loss"], expected, rtol=1e-5, atol=1e-6)


def test_every_policy_loss_option_is_a_config_field_with_the_losses_default():
    """The config's defaults are the registry's (verl's), except clip_c, off by default (the paper's ppo)."""
    fields = {f.name: f.default for f in dataclasses.fields(AlgorithmConfig)}
    for name in POLICY_LOSSES:
        for option, default in policy_loss_options(name).items():
            assert option in fields, f"policy loss {name!r} takes {option!r}, which AlgorithmConfig lacks"
            if option != "clip_c":
                assert fields[option] == default, (name, option)


def test_rejected_tokens_leave_the_loss_and_weights_scale_it(tiny_tokenizer, tiny_model):
    """Rollout correction's hand-off: tokens outside ``loss_mask`` are neither trained nor counted (a
    rejected suffix gives the loss of a batch that ends before it), and IS weights multiply each token's loss."""
    batch = _train_batch(tiny_tokenizer)
    keep = batch.response_mask.clone()
    keep[0, 2:] = 0  # row 0's suffix rejected
    norm = LossNorm(float(keep.sum()), 4.0, 5)
    algo = AlgorithmConfig()
    corrected, _ = micro_batch_loss(tiny_model, dataclasses.replace(batch, loss_mask=keep), algo, 1.0, norm)
    shorter, _ = micro_batch_loss(tiny_model, dataclasses.replace(batch, response_mask=keep), algo, 1.0, norm)
    torch.testing.assert_close(corrected, shorter)
    full, _ = micro_batch_loss(tiny_model, batch, algo, 1.0, norm)
    assert not torch.allclose(corrected, full)
    doubled, _ = micro_batch_loss(tiny_model, dataclasses.replace(batch, rollout_is_weights=torch.full((4, 5), 2.0)),
                                  algo, 1.0, norm)
    torch.testing.assert_close(doubled, 2 * full)


def test_a_micro_batch_that_rejection_emptied_adds_nothing(tiny_tokenizer, tiny_model):
    batch = _train_batch(tiny_tokenizer)
    empty = dataclasses.replace(batch, loss_mask=torch.zeros_like(batch.response_mask))
    loss, metrics = micro_batch_loss(tiny_model, empty, AlgorithmConfig(), 1.0, LossNorm(10.0, 4.0, 5))
    assert float(loss) == 0.0 and "rollout_corr/kl" not in metrics
