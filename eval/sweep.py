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
import itertools
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from tqdm.auto import tqdm

from eval.records import Record, append_records, done_keys, read_records
from eval.samples import SampleSet, append_samples, read_samples, samples_path
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
    """Measure each target on each problem not yet in the records file ``path``; returns all records.

    In a process group (``accelerate launch``, a multi-process training run) every rank calls this: the
    (model, chunk of problems) pieces left to do are dealt out over the ranks, each rank samples its
    share on its own engine into its own file (:func:`shard_path`), and rank 0 then merges the shards
    into ``path``. A sweep stopped on any rank resumes from the main file and every shard, whatever
    number of processes resumes it; pieces are seeded by their first problem, so who samples a piece
    does not change what it draws.
    """
    ev: EvalConfig = cfg.eval
    rank, world = process_place()
    verifier = WeightedRewards.of_task(cfg.task, verifier_only=True)  # pass@k counts verdicts, no shaping
    hashes = {p.id: problem_hash(p, cfg.task.columns) for p in problems}
    if len(hashes) != len(problems):
        raise ValueError(f"task {cfg.task.name!r}: problem ids repeat; each problem needs its own id (task.id_field)")
    if rank == 0:
        _write_key(path, cfg)
    done = done_keys(_records_with_shards(path))
    if rank == 0:
        _warn_changed(path, done, hashes)
    barrier()  # every rank has read the same state before any of them writes
    per_call = max(1, ev.batch_size // ev.n)  # problems per generate call
    chunks = [list(enumerate(problems))[start : start + per_call] for start in range(0, len(problems), per_call)]
    # A piece is skipped only when all of its problems are done; pieces are dealt out round-robin.
    todo = [(target, chunk) for target in targets for chunk in chunks
            if any(done.get((target.model, p.id)) != hashes[p.id] for _, p in chunk)]  # fmt: skip
    mine = todo[rank::world]
    out = path if world == 1 else shard_path(path, rank)
    length = None  # vLLM's sequence length for these problems: measured once, with the first tokenizer loaded
    if todo and world > 1 and cfg.rollout.engine == "vllm":
        # vLLM builds a process's one engine as a collective of the group: every rank builds it now, even one
        # with no piece of its own; later targets load their weights into it.
        first = (mine or todo)[0][0]
        tokenizer = load_tokenizer(first.path, cfg.model)
        length = _model_len(cfg, problems, tokenizer)
        engine_for(first.path, tokenizer, cfg, max_model_len=length)
    bar = tqdm(total=sum(len(chunk) for _, chunk in mine), unit="problem", disable=not (progress and rank == 0),
               desc="pass@k" + (f" (rank 0's share of {world} processes)" if world > 1 else ""))  # fmt: skip
    for target, pieces in itertools.groupby(mine, key=lambda piece: piece[0]):
        bar.set_postfix_str(target.model)
        tokenizer = load_tokenizer(target.path, cfg.model)
        length = length if length is not None else _model_len(cfg, problems, tokenizer)
        engine = engine_for(target.path, tokenizer, cfg, max_model_len=length)
        for _, chunk in pieces:
            _sample_chunk(out, target, chunk, hashes, engine, tokenizer, verifier, cfg)
            bar.update(len(chunk))
        del engine
    bar.close()
    barrier()  # every shard is complete
    if rank == 0:
        merge_shards(path)
    barrier()
    wanted = {(t.model, p.id, hashes[p.id]) for t in targets for p in problems}
    return [r for r in read_records(path) if (r.model, r.problem_id, r.problem_hash) in wanted]


def process_place() -> tuple[int, int]:
    """(rank, world size) of this process in its torch.distributed group; (0, 1) outside one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def barrier() -> None:
    """Wait for every process of the group; nothing outside one."""
    if process_place()[1] > 1:
        torch.distributed.barrier()


def shard_path(path: Path, rank: int) -> Path:
    """Rank ``rank``'s records while a multi-process sweep runs: ``records_X.rank1.jsonl`` beside ``records_X.jsonl``."""
    return path.with_name(f"{path.stem}.rank{rank}{path.suffix}")


def _shards(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.stem}.rank*{path.suffix}"))


def _records_with_shards(path: Path) -> list[Record]:
    """The records of ``path`` and of any shards a stopped multi-process sweep left beside it."""
    return [r for file in [path, *_shards(path)] if file.exists() for r in read_records(file)]


def merge_shards(path: Path) -> None:
    """Append every shard's records and samples to ``path`` and its samples file, then delete the shards.

    Appending is safe to repeat: a record read later wins over an equal one, so a merge stopped between
    the append and the delete leaves duplicates that mean nothing.
    """
    for shard in _shards(path):
        shard_samples = samples_path(shard)
        if shard_samples.exists():
            held = {(s.model, s.problem_id, s.problem_hash) for s in read_samples(samples_path(path))} \
                if samples_path(path).exists() else set()  # fmt: skip
            append_samples(samples_path(path), [s for s in read_samples(shard_samples)
                                                if (s.model, s.problem_id, s.problem_hash) not in held])  # fmt: skip
        append_records(path, read_records(shard))
        shard_samples.unlink(missing_ok=True)
        shard.unlink()


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
