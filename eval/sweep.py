"""Sweep the base model and every checkpoint of a run: n samples per test problem -> records.jsonl.

Records are appended per chunk of problems, so an interrupted sweep resumes where it stopped.
Then ``report`` turns the records into the summary, the terminal table and the plots.

A records file is tied to everything that decides a verdict, so records are never reused for
another task: its name carries the task, the verifier and its columns, the template, the chat
wrapping, the engine and the sampling settings (:func:`records_key`), and each record carries the
digest of its problem's content (:func:`problem_hash`: the prompt, the gold answer, the verifier's
columns). A problem whose content changed under the same id is sampled again.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from tqdm.auto import tqdm

from eval.records import Record, append_records, done_keys, read_records
from eval.samples import SampleSet, append_samples, samples_path
from train.checkpoint import list_checkpoints
from train.config import ConfigError, EvalConfig, RunConfig
from train.models import load_for_inference, load_tokenizer, resolve_base
from train.rewards import WeightedRewards
from train.rollout.base import RolloutEngine, SamplingParams
from train.rollout.hf import HFEngine
from train.sampling import score
from train.tasks import Problem
from train.tasks.limits import load_problems, longest_prompt
from train.tasks.templates import chat_problems


@dataclass(frozen=True)
class SweepTarget:
    model: str  # "base" or "step_000050"
    step: Optional[int]  # None for the base
    path: str  # model folder or hub id


def targets_of(run_dir: Path, base: str, models: dict[str, str] | None = None) -> list[SweepTarget]:
    """The base model, then the run's checkpoints by step, then ``models`` (name -> id or folder:
    other models measured against the same base, ``eval.models``)."""
    found = [SweepTarget("base", None, base)]
    found += [SweepTarget(path.name, step, str(path)) for step, path in list_checkpoints(run_dir)]
    for name, path in (models or {}).items():
        if name in {t.model for t in found}:
            raise ConfigError(f"eval.models: the name {name!r} is taken (base or a checkpoint); choose another")
        found.append(SweepTarget(name, None, str(path)))
    return found


def records_key(cfg: RunConfig) -> dict[str, Any]:
    """Everything outside the problems themselves that decides a verdict or the samples drawn."""
    task, ev = cfg.task, cfg.eval
    return {
        "task": task.name, "reward": task.reward, "columns": sorted(task.columns), "template": task.template,
        "chat": task.chat, "engine": cfg.rollout.engine, "n": ev.n, "temperature": ev.temperature,
        "top_p": ev.top_p, "max_new_tokens": ev.max_new_tokens, "seed": ev.seed,
    }  # fmt: skip


def records_path(run_dir: Path, cfg: RunConfig) -> Path:
    """One records file per :func:`records_key`, so sweeps of other tasks or settings never mix.

    The name shows the task and the sampling settings and ends in a digest of the whole key; the
    key itself is written beside the file (``.key.json``) when a sweep starts it.
    """
    key = records_key(cfg)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
    task = re.sub(r"[^A-Za-z0-9_.-]+", "-", key["task"])
    ev = cfg.eval
    name = f"records_{task}_n{ev.n}_T{ev.temperature:g}_top{ev.top_p:g}_len{ev.max_new_tokens}_seed{ev.seed}_{digest}.jsonl"
    return Path(run_dir) / "eval" / name


def problem_hash(problem: Problem, columns: Sequence[str]) -> str:
    """A digest of what decides the problem's verdict: its prompt, gold answer and verifier columns.

    >>> from train.tasks import Problem
    >>> a, b = Problem("0", "1+1=", "2"), Problem("0", "1+2=", "3")
    >>> problem_hash(a, []) == problem_hash(Problem("0", "1+1=", "2", {"other": 1}), []), problem_hash(a, []) == problem_hash(b, [])
    (True, False)
    """
    content = {"prompt": problem.prompt, "answer": problem.answer,
               "columns": {name: problem.metadata.get(name) for name in sorted(columns)}}  # fmt: skip
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]


def problem_tags(problem: Problem) -> dict[str, str]:
    """The problem's tags (``metadata["tags"]``: difficulty, source, class), for per-subset breakdowns."""
    return {str(k): str(v) for k, v in dict(problem.metadata.get("tags") or {}).items()}


def eval_problems(cfg: RunConfig, base: str | None = None) -> list[Problem]:
    """The first ``eval.num_problems`` test problems whose prompts fit the base model (``task.max_prompt_tokens``).

    ``base``: the base model's folder or id; None = the one ``cfg`` names (built if it is the built-in one).
    """
    base = base or resolve_base(cfg.model, cfg.task)
    problems = load_problems(cfg, "test", base, load_tokenizer(base, cfg.model))
    return problems[: cfg.eval.num_problems] if cfg.eval.num_problems else problems


def engine_for(path: str, tokenizer, cfg: RunConfig, max_model_len: int | None = None) -> RolloutEngine:
    """An engine sampling from the model at ``path``, of the run's kind (``rollout.engine``), on this
    process's device. ``max_model_len``: the longest sequence a vLLM engine must hold (prompt + answer)."""
    if cfg.rollout.engine == "vllm":  # one vLLM engine per process: later targets reload its weights
        from train.rollout.vllm_engine import VLLMEngine

        return VLLMEngine(path, tokenizer, None, cfg.rollout.vllm, max_model_len=max_model_len, dtype=cfg.model.dtype,
                          seed=cfg.eval.seed, add_special_tokens=not cfg.task.chat,
                          trust_remote_code=cfg.model.trust_remote_code)  # fmt: skip
    model = load_for_inference(path, cfg.model)
    return HFEngine.for_model(tokenizer, model, batch_size=cfg.eval.batch_size, add_special_tokens=not cfg.task.chat)


def sweep(
    path: Path,
    targets: Sequence[SweepTarget],
    problems: Sequence[Problem],
    cfg: RunConfig,
    progress: bool = True,
) -> list[Record]:
    """Measure each target on each problem not yet in the records file ``path``; returns all records."""
    ev: EvalConfig = cfg.eval
    verifier = WeightedRewards.of_task(cfg.task, verifier_only=True)  # pass@k counts verdicts, no shaping
    hashes = {p.id: problem_hash(p, cfg.task.columns) for p in problems}
    if len(hashes) != len(problems):
        raise ValueError(f"task {cfg.task.name!r}: problem ids repeat; each problem needs its own id (task.id_field)")
    _write_key(path, cfg)
    done = done_keys(read_records(path)) if path.exists() else {}
    _warn_changed(path, done, hashes)
    per_call = max(1, ev.batch_size // ev.n)  # problems per generate call
    chunks = [list(enumerate(problems))[start : start + per_call] for start in range(0, len(problems), per_call)]
    length = None  # vLLM's sequence length for these problems: measured once, with the first tokenizer loaded
    for target in targets:
        # Chunks are aligned to the problem list and seeded by their first index, so a chunk sampled
        # again after a crash draws exactly what it drew before, and a resumed sweep equals an
        # uninterrupted one. A chunk is skipped only when all of its problems are done.
        todo = [chunk for chunk in chunks if any(done.get((target.model, p.id)) != hashes[p.id] for _, p in chunk)]
        if not todo:
            continue
        tokenizer = load_tokenizer(target.path, cfg.model)
        length = length if length is not None else _model_len(cfg, problems, tokenizer)
        engine = engine_for(target.path, tokenizer, cfg, max_model_len=length)
        bar = tqdm(total=sum(map(len, todo)), desc=f"pass@k {target.model}", unit="problem", disable=not progress)
        for chunk in todo:
            _sample_chunk(path, target, chunk, hashes, engine, tokenizer, verifier, cfg)
            bar.update(len(chunk))
        bar.close()
        del engine
    wanted = {(t.model, p.id, hashes[p.id]) for t in targets for p in problems}
    return [r for r in read_records(path) if (r.model, r.problem_id, r.problem_hash) in wanted]


def _sample_chunk(
    path: Path, target: SweepTarget, chunk: list[tuple[int, Problem]], hashes: dict[str, str], engine: RolloutEngine,
    tokenizer, verifier: WeightedRewards, cfg: RunConfig,
) -> None:
    """n samples of each problem of ``chunk`` from ``target``: its samples (when kept), then its records."""
    ev = cfg.eval
    params = SamplingParams(n=ev.n, temperature=ev.temperature, top_p=ev.top_p, max_new_tokens=ev.max_new_tokens,
                            seed=ev.seed * 1_000_003 + chunk[0][0])  # fmt: skip
    prompts = [p for _, p in chunk]
    if cfg.task.chat:  # the same chat wrapping as in training
        prompts = chat_problems(prompts, tokenizer)
    scored = score(engine.generate([p.prompt for p in prompts], params), prompts, verifier, cfg)
    verdicts = scored.correct.view(len(chunk), ev.n)  # the verifier's verdict, no shaping
    keep = min(ev.keep_samples, ev.n)
    if keep:
        texts = scored.texts
        append_samples(samples_path(path), [
            SampleSet(target.model, p.id, hashes[p.id], tuple(texts[i * ev.n : i * ev.n + keep]),
                      tuple(bool(v) for v in verdicts[i, :keep]))
            for i, (_, p) in enumerate(chunk)
        ])  # fmt: skip
    append_records(path, [
        Record(target.model, target.step, target.path, p.id, ev.n, int(c), task=cfg.task.name,
               problem_hash=hashes[p.id], tags=problem_tags(p))
        for (_, p), c in zip(chunk, verdicts.sum(-1))
    ])  # fmt: skip


def _model_len(cfg: RunConfig, problems: Sequence[Problem], tokenizer) -> int | None:
    """vLLM's sequence length for these problems (rollout.vllm.max_model_len, or their longest prompt + budget)."""
    if cfg.rollout.engine != "vllm":
        return None
    from train.rollout.vllm_engine import model_len

    return model_len(cfg, longest_prompt(problems, tokenizer, cfg.task.chat))


def _write_key(path: Path, cfg: RunConfig) -> None:
    """The records file's key beside it, for people: what its records were measured under."""
    key_file = path.with_suffix(".key.json")
    if not key_file.exists():
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.write_text(json.dumps(records_key(cfg), indent=2) + "\n")


def _warn_changed(path: Path, done: dict[tuple[str, str], str], hashes: dict[str, str]) -> None:
    changed = sorted({pid for (_, pid), h in done.items() if pid in hashes and h != hashes[pid]})
    if changed:
        warnings.warn(
            f"{path}: {len(changed)} problem(s) under known ids now have other content (e.g. {changed[:3]}); "
            "their records no longer count and they are sampled again", stacklevel=3,
        )
