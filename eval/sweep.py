"""Sweep the base model and every checkpoint of a run: n samples per test problem -> records.jsonl.

Records are appended per chunk of problems, so an interrupted sweep resumes where it stopped.
Then ``report`` turns the records into the summary, the terminal table and the plots.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from tqdm.auto import tqdm

from eval.plot import plot_over_steps, plot_passk_curves
from eval.records import Record, append_records, done_keys, read_records
from eval.summarize import print_table, summarize, write_summary
from train.checkpoint import list_checkpoints
from train.config import EvalConfig, RunConfig
from train.models import load_model, load_tokenizer, resolve_base
from train.rewards import WeightedRewards
from train.rollout.base import RolloutEngine, SamplingParams
from train.rollout.hf import HFEngine
from train.sampling import score
from train.tasks import Problem
from train.tasks.limits import load_problems
from train.tasks.templates import chat_problems


@dataclass(frozen=True)
class SweepTarget:
    model: str  # "base" or "step_000050"
    step: Optional[int]  # None for the base
    path: str  # model folder or hub id


def targets_of(run_dir: Path, base: str) -> list[SweepTarget]:
    """The base model, then the run's checkpoints by step."""
    found = [SweepTarget("base", None, base)]
    found += [SweepTarget(path.name, step, str(path)) for step, path in list_checkpoints(run_dir)]
    return found


def records_path(run_dir: Path, ev: EvalConfig) -> Path:
    """One records file per sampling setting, so sweeps at other settings never mix."""
    name = f"records_n{ev.n}_T{ev.temperature:g}_top{ev.top_p:g}_len{ev.max_new_tokens}_seed{ev.seed}.jsonl"
    return Path(run_dir) / "eval" / name


def eval_problems(cfg: RunConfig) -> list[Problem]:
    """The first ``eval.num_problems`` test problems whose prompts fit the base model (``task.max_prompt_tokens``)."""
    base = resolve_base(cfg.model, cfg.task)
    problems = load_problems(cfg, "test", base, load_tokenizer(base, cfg.model))
    return problems[: cfg.eval.num_problems] if cfg.eval.num_problems else problems


def engine_for(path: str, tokenizer, cfg: RunConfig) -> RolloutEngine:
    """An engine sampling from the model at ``path``, of the run's kind (``rollout.engine``)."""
    if cfg.rollout.engine == "vllm":  # one vLLM engine per process: later targets reload its weights
        from train.rollout.vllm_engine import VLLMEngine

        return VLLMEngine(path, tokenizer, None, cfg.rollout.vllm, dtype=cfg.model.dtype, seed=cfg.eval.seed,
                          add_special_tokens=not cfg.task.chat, trust_remote_code=cfg.model.trust_remote_code)
    model = load_model(path, cfg.model)
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
    done = done_keys(read_records(path)) if path.exists() else set()
    per_call = max(1, ev.batch_size // ev.n)  # problems per generate call
    for target in targets:
        todo = [(i, p) for i, p in enumerate(problems) if (target.model, p.id) not in done]
        if not todo:
            continue
        tokenizer = load_tokenizer(target.path, cfg.model)
        engine = engine_for(target.path, tokenizer, cfg)
        bar = tqdm(total=len(todo), desc=f"pass@k {target.model}", unit="problem", disable=not progress)
        for start in range(0, len(todo), per_call):
            chunk = todo[start : start + per_call]
            params = SamplingParams(
                n=ev.n, temperature=ev.temperature, top_p=ev.top_p, max_new_tokens=ev.max_new_tokens,
                seed=ev.seed * 1_000_003 + chunk[0][0],
            )
            prompts = [p for _, p in chunk]
            if cfg.task.chat:  # the same chat wrapping as in training
                prompts = chat_problems(prompts, tokenizer)
            scored = score(engine.generate([p.prompt for p in prompts], params), prompts, verifier, cfg)
            correct = scored.correct.view(len(chunk), ev.n).sum(-1)  # the verifier's verdict, no shaping
            append_records(
                path,
                [Record(target.model, target.step, target.path, p.id, ev.n, int(c)) for (_, p), c in zip(chunk, correct)],
            )
            bar.update(len(chunk))
        bar.close()
        del engine
    return read_records(path)


def report(run_dir: Path, records: Sequence[Record], k_max: int = 0, console=None) -> dict:
    """summary.json, the terminal table and the plots under ``<run_dir>/eval``; k_max 0 = n."""
    out = Path(run_dir) / "eval"
    summary = summarize(list(records), k_max=k_max or None)
    write_summary(summary, out / "summary.json")
    print_table(summary, console=console)
    plot_passk_curves(summary, out / "passk_curves.png")
    plot_over_steps(summary, out / "passk_over_steps.png")
    return summary
