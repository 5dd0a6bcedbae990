"""The actor's loss: the on-policy shortcut (no old log-prob pass) changes nothing."""

import dataclasses

import pytest
import torch

from train.actor import LossNorm, micro_batch_loss, response_logprobs
from train.config import AlgorithmConfig
from tests.test_filters_and_critic import _train_batch


def _loss_and_grads(model, batch):
    model.zero_grad()
    loss, metrics = micro_batch_loss(model, batch, AlgorithmConfig(), 1.0, LossNorm(12.0, 4.0, 5))
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()], metrics


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
