"""Perplexity of each model's responses under the base model and under the model itself (paper Fig. 6).

Yue et al. 2025 (arXiv 2504.13837, Sec. 4.3) score RL-trained models' responses with the base
model: if RL only sharpens sampling toward paths the base already had, those responses are likely
under the base (low PPL_base), while a distilled model's responses, carrying what the base lacked,
are not. Here every model's kept responses (``eval.keep_samples``, stored by the sweep) are scored
by the base and by the model that wrote them; nothing is sampled again.

Per response, perplexity = exp(- mean log p(token | prompt, earlier tokens)) over the response's
tokens at temperature 1, the text re-tokenised as the model's tokenizer reads it (the stop token
is not part of the stored text and not scored). Empty responses have none and are left out.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from eval.samples import SampleSet
from train.actor import response_forward
from train.config import RunConfig
from train.models import load_for_inference, load_tokenizer
from train.tasks import Problem
from train.tasks.templates import chat_problems


@torch.no_grad()
def response_perplexities(
    model: torch.nn.Module, tokenizer, prompts: Sequence[str], responses: Sequence[str], batch_size: int = 64,
    add_special_tokens: bool = True,
) -> np.ndarray:
    """Perplexity of each response given its prompt under ``model``, (N,); NaN for an empty response."""
    model.eval()
    out = np.full(len(responses), np.nan)
    for start in range(0, len(responses), batch_size):
        rows = range(start, min(start + batch_size, len(responses)))
        prompt_ids = [tokenizer(prompts[i], add_special_tokens=add_special_tokens).input_ids for i in rows]
        response_ids = [tokenizer(responses[i], add_special_tokens=False).input_ids for i in rows]
        width_p, width_r = max(map(len, prompt_ids)), max(1, max(map(len, response_ids)))
        pad = tokenizer.pad_token_id
        p_ids = torch.tensor([[pad] * (width_p - len(ids)) + ids for ids in prompt_ids])
        p_mask = torch.tensor([[0] * (width_p - len(ids)) + [1] * len(ids) for ids in prompt_ids])
        r_ids = torch.tensor([ids + [pad] * (width_r - len(ids)) for ids in response_ids])
        r_mask = torch.tensor([[1] * len(ids) + [0] * (width_r - len(ids)) for ids in response_ids])
        logprobs = response_forward(model, p_ids, p_mask, r_ids, r_mask, temperature=1.0).logprobs.cpu().double()
        counts = r_mask.sum(-1).double()
        mean_nll = -(logprobs * r_mask).sum(-1) / counts.clamp(min=1)
        out[list(rows)] = torch.where(counts > 0, mean_nll.exp(), torch.nan).numpy()
    return out


def perplexity_table(
    models: dict[str, str], base: str, samples: Sequence[SampleSet], problems: Sequence[Problem], cfg: RunConfig,
    progress: bool = True,
) -> dict[str, dict[str, list[float]]]:
    """model name -> {"under_base": [...], "under_self": [...]} over its kept responses (the base's
    "under_self" is its "under_base"). ``models`` maps names to folders; ``base`` names the base."""
    by_id = {p.id: p for p in problems}
    table: dict[str, dict[str, list[float]]] = {}
    scorers = [base, *(name for name in models if name != base)]
    for scorer in tqdm(scorers, desc="perplexity", unit="model", disable=not progress):
        tokenizer = load_tokenizer(models[scorer], cfg.model)
        model = load_for_inference(models[scorer], cfg.model)
        for writer in (models if scorer == base else [scorer]):
            sets = [s for s in samples if s.model == writer and s.problem_id in by_id]
            prompts = [p.prompt for p in _prompts([by_id[s.problem_id] for s in sets], tokenizer, cfg)]
            flat_prompts = [prompt for prompt, s in zip(prompts, sets) for _ in s.completions]
            flat_responses = [text for s in sets for text in s.completions]
            values = response_perplexities(model, tokenizer, flat_prompts, flat_responses, cfg.eval.batch_size // 4 or 1,
                                           add_special_tokens=not cfg.task.chat)  # fmt: skip
            kept = [float(v) for v in values if np.isfinite(v)]
            entry = table.setdefault(writer, {})
            entry["under_base" if scorer == base else "under_self"] = kept
        del model
    table[base]["under_self"] = table[base]["under_base"]
    return table


def _prompts(problems: list[Problem], tokenizer, cfg: RunConfig) -> list[Problem]:
    return chat_problems(problems, tokenizer) if cfg.task.chat else problems


def samples_digest(samples: Sequence[SampleSet]) -> str:
    """What a perplexity table was computed from: a later sweep with other samples recomputes it."""
    keys = sorted((s.model, s.problem_id, s.problem_hash, len(s.completions)) for s in samples)
    return hashlib.sha256(json.dumps(keys).encode()).hexdigest()[:16]


def read_perplexity(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def write_perplexity(table: dict[str, dict[str, list[float]]], path: Path, digest: str) -> Path:
    """The per-response values and their medians and quartiles, as JSON, with the samples' digest."""
    summary = {
        name: {scorer: {"median": _q(v, 0.5), "q25": _q(v, 0.25), "q75": _q(v, 0.75), "count": len(v), "values": v}
               for scorer, v in scorers.items()}
        for name, scorers in table.items()
    }  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"samples_digest": digest, "models": summary}, indent=1) + "\n")
    return path


def _q(values: list[float], q: float) -> float | None:
    return float(np.quantile(values, q)) if values else None
