"""Prompt length limits at load time: a prompt that cannot fit the model is dropped and counted, or refused.

Without a limit, one 30 MB question reached a model with a 256-token context: the tokenizer only
warned, and the process ran out of memory minutes later. Here every prompt of a split is measured in
tokens as the rollout engine will feed it (templated, chat-wrapped when ``task.chat``, with the special
tokens the engine adds) against ``task.max_prompt_tokens``; null derives the limit as the model's
context length minus the response budget of the split (``rollout.max_new_tokens`` for training,
``eval.max_new_tokens`` for the pass@k sweep), so that prompt and answer fit. ``task.overlong_prompts``
says what happens to a longer prompt: ``drop`` (counted and printed; verl's ``data.filter_overlong_prompts``
with ``max_prompt_length``) or ``error`` (naming the row).

A prompt of more than ``limit x longest vocabulary entry x 2`` characters is counted as too long without
being tokenized (tokenizing 30 MB of text takes a minute and gigabytes): no token covers more characters
than the longest entry of its vocabulary, and the factor 2 leaves room for normalizers that compose
characters. Only a normalizer that deletes most of a text could make such a prompt fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Sequence

from train.tasks import Problem, load_task
from train.tasks.templates import apply_chat

if TYPE_CHECKING:
    from train.config import RunConfig

_UNSET = 10**9  # transformers' tokenizers report model_max_length = 1e30 when the model does not say
_CONTEXT_FIELDS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")
_SHOWN_IDS = 5  # ids named in a message


@dataclass(frozen=True)
class PromptLimit:
    tokens: int  # longest prompt kept, in tokens
    why: str  # where the number comes from, for messages


def response_budget(cfg: RunConfig, split: str) -> tuple[int, str]:
    """New tokens a prompt of ``split`` must leave room for, and the field that sets them."""
    if split == "train":
        return cfg.rollout.max_new_tokens, "rollout.max_new_tokens"
    return cfg.eval.max_new_tokens, "eval.max_new_tokens"


def context_length(cfg: RunConfig, base: str, tokenizer: Any) -> Optional[int]:
    """The model's context in tokens: the smallest of what its config, its tokenizer and vLLM's
    ``max_model_len`` say; None when none says."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(base, trust_remote_code=cfg.model.trust_remote_code)
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    known = [getattr(config, name) for name in _CONTEXT_FIELDS if isinstance(getattr(config, name, None), int)][:1]
    if 0 < getattr(tokenizer, "model_max_length", _UNSET) < _UNSET:
        known.append(int(tokenizer.model_max_length))
    if cfg.rollout.engine == "vllm" and cfg.rollout.vllm.max_model_len:
        known.append(cfg.rollout.vllm.max_model_len)
    return min(known) if known else None


def prompt_limit(cfg: RunConfig, split: str, base: str, tokenizer: Any) -> PromptLimit:
    """``task.max_prompt_tokens``, or the model's context minus the split's response budget.

    Raises ConfigError when neither is known or when prompt and response cannot both fit.
    """
    from train.config import ConfigError

    budget, budget_field = response_budget(cfg, split)
    context = context_length(cfg, base, tokenizer)
    explicit = cfg.task.max_prompt_tokens
    if explicit is not None:
        if context is not None and explicit + budget > context:
            raise ConfigError(
                f"task.max_prompt_tokens={explicit} + {budget_field}={budget} exceed the model's {context}-token context; "
                f"set task.max_prompt_tokens to at most {context - budget}, or null to derive it"
            )
        return PromptLimit(explicit, "task.max_prompt_tokens")
    if context is None:
        raise ConfigError(
            f"the context length of {base} is unknown (its config has none of {', '.join(_CONTEXT_FIELDS)} and its "
            "tokenizer no model_max_length); set task.max_prompt_tokens to the longest prompt it should see"
        )
    if context - budget < 1:
        raise ConfigError(
            f"{budget_field}={budget} leaves no room for a prompt in the model's {context}-token context; lower it"
        )
    return PromptLimit(context - budget, f"the model's {context}-token context - {budget_field}={budget}")


def prompt_lengths(prompts: Sequence[str], tokenizer: Any, limit: int, chat: bool) -> list[Optional[int]]:
    """Tokens of each prompt as the engine feeds it; None for a prompt too long to be worth tokenizing
    (more than ``limit x longest vocabulary entry x 2`` characters, see the module docstring)."""
    cap = limit * max(len(token) for token in tokenizer.get_vocab()) * 2
    lengths: list[Optional[int]] = [None] * len(prompts)
    measured = [i for i, prompt in enumerate(prompts) if len(prompt) <= cap]
    texts = [prompts[i] for i in measured]
    if chat:  # the chat template adds its own tokens (and BOS), as in training and the sweep
        texts = apply_chat(texts, tokenizer)
    if texts:
        encoded = tokenizer(texts, add_special_tokens=not chat, verbose=False)["input_ids"]  # no "longer than" warning
        for i, ids in zip(measured, encoded):
            lengths[i] = len(ids)
    return lengths


def longest_prompt(problems: Sequence[Problem], tokenizer: Any, chat: bool) -> int:
    """Tokens of the longest of ``problems``' prompts as the engine feeds them (they fit already: see
    :func:`load_problems`); 0 for none."""
    lengths = prompt_lengths([p.prompt for p in problems], tokenizer, _UNSET, chat)
    return max((n for n in lengths if n is not None), default=0)


def fit_prompts(
    problems: Sequence[Problem], cfg: RunConfig, split: str, limit: PromptLimit, tokenizer: Any, verbose: bool = True
) -> list[Problem]:
    """``problems`` whose prompts fit ``limit``; longer ones are dropped and counted, or refused
    (``task.overlong_prompts``). Raises ConfigError when refusing, or when no problem is left."""
    from train.config import ConfigError

    lengths = prompt_lengths([p.prompt for p in problems], tokenizer, limit.tokens, cfg.task.chat)
    over = [i for i, n in enumerate(lengths) if n is None or n > limit.tokens]
    if not over:
        return list(problems)
    where = f"task {cfg.task.name}, {split} split"
    shown = ", ".join(_described(problems[i], lengths[i]) for i in over[:_SHOWN_IDS])
    shown += ", ..." if len(over) > _SHOWN_IDS else ""
    if cfg.task.overlong_prompts == "error":
        raise ConfigError(
            f"{where}: {len(over)} of {len(problems)} prompts are longer than {limit.tokens} tokens ({limit.why}): "
            f"ids {shown}; set task.overlong_prompts=drop to skip them, or raise task.max_prompt_tokens"
        )
    if len(over) == len(problems):
        raise ConfigError(
            f"{where}: every one of the {len(problems)} prompts is longer than {limit.tokens} tokens ({limit.why}); "
            "raise task.max_prompt_tokens, lower the response budget, or use a model with a longer context"
        )
    if verbose:
        print(f"{where}: dropped {len(over)} of {len(problems)} prompts longer than {limit.tokens} tokens "
              f"({limit.why}; see task.max_prompt_tokens, task.overlong_prompts): ids {shown}")  # fmt: skip
    dropped = set(over)
    return [p for i, p in enumerate(problems) if i not in dropped]


def _described(problem: Problem, tokens: Optional[int]) -> str:
    return f"{problem.id} ({tokens} tokens)" if tokens is not None else f"{problem.id} ({len(problem.prompt)} characters)"


def load_problems(cfg: RunConfig, split: str, base: str, tokenizer: Any, verbose: bool = True) -> list[Problem]:
    """The task's ``split`` with prompts that fit the model (un-wrapped: callers apply the chat template)."""
    problems = load_task(cfg.task, split)
    limit = prompt_limit(cfg, split, base, tokenizer)
    return fit_prompts(problems, cfg, split, limit, tokenizer, verbose=verbose)


__all__ = ["PromptLimit", "context_length", "fit_prompts", "load_problems", "longest_prompt", "prompt_limit", "prompt_lengths"]
