"""The HF rollout engine: shapes, masks, seeding, and sampler log-probs equal to the actor's."""

import pytest
import torch

from train.actor import response_forward, response_logprobs
from train.rollout.base import SamplingParams, response_mask_from_ids
from train.rollout.hf import HFEngine

PROMPTS = ["12+345=", "7+8=", "1234+99="]


def test_shapes_groups_and_masks(tiny_tokenizer, tiny_model):
    engine = HFEngine.for_model(tiny_tokenizer, tiny_model, batch_size=4)  # 12 rows in 3 chunks
    out = engine.generate(PROMPTS, SamplingParams(n=4, max_new_tokens=12, seed=1))
    assert out.response_ids.shape[0] == 12 and len(out.texts) == 12
    assert out.group_ids.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    eos = tiny_tokenizer.eos_token_id
    for row, mask, trunc in zip(out.response_ids, out.response_mask, out.truncated):
        n = int(mask.sum())
        assert mask[:n].all() and not mask[n:].any()  # a prefix
        assert (row[:n] == eos).sum() == (0 if trunc else 1)
        assert trunc or row[n - 1] == eos  # ends on the stop token unless truncated
        assert (row[n:] == tiny_tokenizer.pad_token_id).all()
    # texts are the decoded responses without the stop token
    for text, row, mask, trunc in zip(out.texts, out.response_ids, out.response_mask, out.truncated):
        n = int(mask.sum()) - (0 if trunc else 1)
        assert text == tiny_tokenizer.decode(row[:n], skip_special_tokens=True)
    # left-padded prompts
    assert (out.prompt_mask.sum(-1) == torch.tensor([len(tiny_tokenizer(p).input_ids) for p in PROMPTS]).repeat_interleave(4)).all()
    assert (out.prompt_mask[:, -1] == 1).all()


def test_seeded_sampling_is_reproducible(tiny_tokenizer, tiny_model):
    engine = HFEngine.for_model(tiny_tokenizer, tiny_model)
    a = engine.generate(PROMPTS, SamplingParams(n=3, max_new_tokens=10, seed=7))
    b = engine.generate(PROMPTS, SamplingParams(n=3, max_new_tokens=10, seed=7))
    c = engine.generate(PROMPTS, SamplingParams(n=3, max_new_tokens=10, seed=8))
    assert torch.equal(a.response_ids, b.response_ids)
    assert not torch.equal(a.response_ids, c.response_ids)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampler_logprobs_match_the_actor(tiny_tokenizer, tiny_model, temperature):
    """What the engine reports is what the actor recomputes under left padding."""
    engine = HFEngine.for_model(tiny_tokenizer, tiny_model, batch_size=5)
    out = engine.generate(PROMPTS, SamplingParams(n=3, max_new_tokens=10, temperature=temperature, seed=2))
    tiny_model.eval()
    with torch.no_grad():
        actor, _ = response_logprobs(
            tiny_model, out.prompt_ids, out.prompt_mask, out.response_ids, out.response_mask, temperature
        )
    mask = out.response_mask.bool()
    torch.testing.assert_close(out.sample_logprobs[mask], actor[mask], atol=2e-5, rtol=1e-5)
    assert (out.sample_logprobs[~mask] == 0).all()


@pytest.mark.parametrize("top_k,top_p", [(0, 0.9), (5, 1.0), (5, 0.9)])
def test_a_cut_sampler_and_the_actor_agree(tiny_tokenizer, tiny_model, top_k, top_p):
    """With top-k / top-p the engine samples from the cut, renormalised distribution and reports its
    log-probs; the actor scores the tokens under the same cut, so pi / pi_old starts at 1."""
    engine = HFEngine.for_model(tiny_tokenizer, tiny_model, batch_size=5)
    out = engine.generate(PROMPTS, SamplingParams(n=4, max_new_tokens=12, temperature=1.0, top_k=top_k, top_p=top_p, seed=3))
    tiny_model.eval()
    with torch.no_grad():
        args = (tiny_model, out.prompt_ids, out.prompt_mask, out.response_ids, out.response_mask, 1.0)
        cut = response_forward(*args, top_k=top_k, top_p=top_p).logprobs
        whole = response_forward(*args).logprobs
    mask = out.response_mask.bool()
    torch.testing.assert_close(out.sample_logprobs[mask], cut[mask], atol=2e-5, rtol=1e-5)
    assert (out.sample_logprobs[~mask] == 0).all()  # past the stop token: 0, not the -inf of a cut-off pad token
    assert (cut[mask] - whole[mask]).max() > 1e-3  # the cut renormalises: without it the ratio would be off


def test_greedy_ignores_batch_company(tiny_tokenizer, tiny_model):
    """Greedy output for a prompt is the same alone and left-padded beside longer prompts."""
    engine = HFEngine.for_model(tiny_tokenizer, tiny_model)
    greedy = SamplingParams(greedy=True, max_new_tokens=8)
    together = engine.generate(PROMPTS, greedy)
    for i, prompt in enumerate(PROMPTS):
        alone = engine.generate([prompt], greedy)
        assert alone.texts[0] == together.texts[i]


def test_response_mask_from_ids():
    ids = torch.tensor([[5, 6, 2, 0, 0], [5, 5, 5, 5, 5], [2, 0, 0, 0, 0], [5, 9, 7, 2, 0]])
    mask, truncated = response_mask_from_ids(ids, [2, 9])
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 0, 0, 0]]
    assert truncated.tolist() == [False, True, False, False]


def test_bad_sampling_params_say_how_to_fix():
    with pytest.raises(ValueError, match="greedy=True"):
        SamplingParams(temperature=0.0)
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=1.5)
    with pytest.raises(ValueError, match="top_k=-1 must be >= 0"):
        SamplingParams(top_k=-1)



def test_engine_choice_is_checked_at_start_up():
    import importlib.util

    from train.config import ConfigError, RunConfig, check

    cfg = RunConfig()
    cfg.rollout.engine = "sglang"
    with pytest.raises(ConfigError, match="choose one of: hf, vllm"):
        check(cfg, world_size=1)
    cfg.rollout.engine = "vllm"
    cfg.rollout.vllm.gpu_memory_utilization = 1.5
    with pytest.raises(ConfigError, match=r"gpu_memory_utilization=1.5 must be in \(0, 1\]"):
        check(cfg, world_size=1)
    cfg.rollout.vllm.gpu_memory_utilization = 0.3
    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(ConfigError, match=r"pip install -e '\.\[vllm\]'"):
            check(cfg, world_size=1)
    else:
        check(cfg, world_size=1)
