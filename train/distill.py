"""The distillation arm: the base fine-tuned on a stronger teacher's traces (SFT), not trained with RL.

Yue et al. 2025 (arXiv 2504.13837, Sec. 4 and Fig. 7) find that distillation, unlike RLVR, can
widen the base model's reasoning boundary: the student learns reasoning patterns it never sampled.
``algorithm=distill`` (``algorithm.trainer=distill``) runs this arm through the same set-up as an RL
run (accelerate / DeepSpeed, optimizer, scheduler, checkpoints, resume, metrics, the closing pass@k
sweep), so it is one more job in a multirun beside the RL algorithms and one more row in their table.

The teacher (``algorithm.distill``): with ``path`` unset, the task's stronger built-in teacher
(``train.tasks.TEACHERS[task.name].strong``) writes traces for the train split's problems; with
``path``, a .jsonl or .parquet of prompt/completion pairs from any model (``prompt_field``,
``completion_field``). A step reads the prompts the RL loop would read at that step
(``train.sampling.prompts_for_step``: ``trainer.prompts_per_step`` of them, a seeded shuffle per
epoch) and ``algorithm.samples_per_prompt`` teacher completions of each (from a file: drawn from that
prompt's completions, with replacement), so the budget is in the RL runs' terms
(``trainer.total_steps``, ``save_every``) and a resumed run reads what the uninterrupted one read.

The loss is ``train.sft``'s, the one the base model was built with: next-token cross-entropy on
completion tokens and the EOS after them, prompt and padding masked, averaged over the completion
tokens of the whole mini-batch (all micro-batches and processes), so the gradient does not depend on
how the batch is split (as ``train.actor.update_policy`` does for the RL loss).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from train.actor import clip_gradients
from train.checkpoint import save_checkpoint
from train.config import BatchPlan, ConfigError, RunConfig
from train.loop import Trainer, step_generator
from train.models import DTYPES
from train.sampling import mix, prompts_for_step
from train.sft import IGNORE, collate, completion_loss, tokenize_pairs
from train.tasks import TEACHERS, Problem, TraceFn
from train.tasks.templates import chat_problems

PAIR_SUFFIXES = (".jsonl", ".parquet")


@dataclass(frozen=True)
class TeacherSource:
    """Prompts, walked as the RL loop walks them, and a teacher that writes a completion of one."""

    problems: Sequence[Problem]
    write: TraceFn  # (problem, rng) -> completion

    def pairs(self, step: int, cfg: RunConfig, plan: BatchPlan, rank: int) -> list[tuple[str, str]]:
        """This process's (prompt, completion) pairs for ``step``: samples_per_prompt per prompt."""
        rng = random.Random(mix(cfg.seed, step, rank))
        prompts = prompts_for_step(self.problems, step, cfg, plan, rank)
        return [(p.prompt, self.write(p, rng)) for p in prompts for _ in range(cfg.algorithm.samples_per_prompt)]


def train(t: Trainer, start_step: int = 0) -> None:
    """SFT steps on the teacher's traces: batch -> update -> log -> checkpoint, as the RL loop."""
    cfg, acc = t.cfg, t.accelerator
    source = teacher_source(cfg, t.problems, t.tokenizer)
    pad_id = t.tokenizer.pad_token_id
    bar = tqdm(range(start_step, cfg.trainer.total_steps), desc="distill", initial=start_step,
               total=cfg.trainer.total_steps, disable=not acc.is_main_process)
    for step in bar:
        t0 = time.perf_counter()
        pairs = source.pairs(step, cfg, t.plan, acc.process_index)
        sequences = tokenize_pairs(t.tokenizer, pairs, add_special_tokens=not cfg.task.chat)
        update = sft_update(acc, t.model, t.optimizer, t.scheduler, sequences, t.plan, cfg.trainer.max_grad_norm,
                            pad_id, step_generator(cfg.seed, step))
        metrics = {**update, "time/step": time.perf_counter() - t0}
        done = step + 1
        if done % cfg.logger.log_every == 0 or done == cfg.trainer.total_steps:
            t.tracker.log(metrics, step=done)
        bar.set_postfix(loss=f"{metrics['distill/loss']:.4f}")
        if done % cfg.trainer.save_every == 0 or done == cfg.trainer.total_steps:
            save_checkpoint(acc, t.run_dir, done, t.model, t.tokenizer, {"metrics": metrics, "config": t.run_config},
                            keep_train_states=cfg.trainer.keep_train_states, weights_dtype=DTYPES[cfg.model.dtype])


def sft_update(
    acc: Accelerator,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    sequences: list[tuple[list[int], list[int]]],
    plan: BatchPlan,
    max_grad_norm: float,
    pad_id: int,
    generator: torch.Generator,
) -> dict[str, float]:
    """One pass over this process's tokenized pairs: ``plan.mini_batches`` optimizer steps of
    ``plan.grad_accum`` micro-batches each. accelerate divides each backward by grad_accum and
    data-parallel training averages over processes; the loss is scaled back up by both, so each
    optimizer step's gradient is that of the token-mean loss over the whole mini-batch."""
    undo_scaling = plan.grad_accum * plan.world_size
    size = plan.samples_per_mini_batch_per_process
    micro = size // plan.grad_accum
    order = torch.randperm(len(sequences), generator=generator).tolist()
    loss_sum, token_count, grad_norms = 0.0, 0.0, []
    for start in range(0, len(sequences), size):
        mini = [sequences[i] for i in order[start : start + size]]
        tokens = _global_tokens(acc, mini)
        for m in range(0, size, micro):
            with acc.accumulate(model):
                input_ids, attention_mask, labels = collate(mini[m : m + micro], pad_id)
                logits = model(input_ids=input_ids.to(acc.device), attention_mask=attention_mask.to(acc.device)).logits
                summed, _ = completion_loss(logits, labels)
                acc.backward(summed / tokens * undo_scaling)
                if acc.sync_gradients:
                    grad_norms.append(clip_gradients(acc, model, max_grad_norm))
                optimizer.step()  # accelerate skips it between accumulation boundaries
                optimizer.zero_grad()
            if acc.sync_gradients:
                scheduler.step()  # not prepared by accelerate, which would step it once per process
            loss_sum += float(summed.detach())
        token_count += tokens
    total = acc.reduce(torch.tensor([loss_sum], device=acc.device), reduction="sum").item()
    return {
        "distill/loss": total / max(token_count, 1.0),  # token-mean over the step's pairs, all processes
        "distill/completion_tokens": token_count,
        "actor/grad_norm": sum(grad_norms) / max(len(grad_norms), 1),
        "actor/lr": scheduler.get_last_lr()[0],
    }


def _global_tokens(acc: Accelerator, mini: list[tuple[list[int], list[int]]]) -> float:
    """Completion tokens (and EOS) of the mini-batch over all processes: the loss's denominator."""
    local = torch.tensor([float(sum(label != IGNORE for label in labels[1:])) for _, labels in mini]).sum()
    return max(float(acc.reduce(local.to(acc.device), reduction="sum")), 1.0)


# ---------------------------------------------------------------------------------------------
# The teacher: the task's stronger built-in one, or pairs from a file.


def teacher_source(cfg: RunConfig, train_problems: Sequence[Problem], tokenizer: Any) -> TeacherSource:
    """The configured teacher: ``algorithm.distill.path``'s pairs, else the task's stronger built-in teacher."""
    spec = cfg.algorithm.distill
    if spec.path is None:
        if not train_problems:
            raise ConfigError(f"algorithm=distill: task {cfg.task.name!r} has no train problems for its teacher to solve")
        return TeacherSource(train_problems, TEACHERS[cfg.task.name].strong)
    problems = problems_of_pairs(read_pairs(spec.path, spec.prompt_field, spec.completion_field))
    if cfg.task.chat:  # the same wrapping as the task's prompts get in rollouts and the sweep
        problems = chat_problems(problems, tokenizer)
    return TeacherSource(problems, _draw_completion)


def read_pairs(path: str, prompt_field: str, completion_field: str) -> list[tuple[str, str]]:
    """(prompt, completion) of every row of a .jsonl or .parquet file; ConfigError saying what is wrong where.

    >>> import tempfile, os
    >>> f = tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False)
    >>> _ = f.write('{"prompt": "1+2=", "completion": "#3"}\\n{"prompt": "2+2="}\\n'); f.close()
    >>> try:
    ...     read_pairs(f.name, "prompt", "completion")
    ... except ConfigError as err:
    ...     print(str(err).split(": ", 1)[1])
    row 2 has no string field 'completion' (its fields: prompt); set algorithm.distill.prompt_field / completion_field to the fields holding the pairs
    >>> os.unlink(f.name)
    """
    file = Path(path).expanduser()
    where = f"algorithm.distill.path={path}"
    if file.suffix not in PAIR_SUFFIXES:
        raise ConfigError(f"{where}: a pairs file ends in {' or '.join(PAIR_SUFFIXES)}, not {file.suffix or 'no suffix'!r}")
    if not file.is_file():
        raise ConfigError(f"{where}: no such file; give a .jsonl or .parquet of {prompt_field}/{completion_field} pairs")
    rows = _jsonl_rows(file, where) if file.suffix == ".jsonl" else _parquet_rows(file)
    if not rows:
        raise ConfigError(f"{where}: the file holds no rows")
    pairs = []
    for number, row in enumerate(rows, start=1):
        for name in (prompt_field, completion_field):
            if not isinstance(row, dict) or not isinstance(row.get(name), str) or not row[name]:
                fields = ", ".join(row) if isinstance(row, dict) else type(row).__name__
                raise ConfigError(f"{where}: row {number} has no string field {name!r} (its fields: {fields}); set "
                                  "algorithm.distill.prompt_field / completion_field to the fields holding the pairs")
        pairs.append((row[prompt_field], row[completion_field]))
    return pairs


def problems_of_pairs(pairs: Sequence[tuple[str, str]]) -> list[Problem]:
    """One problem per distinct prompt, in order of first appearance, holding all its completions.

    >>> [(p.prompt, p.metadata["completions"]) for p in problems_of_pairs([("a", "1"), ("b", "2"), ("a", "3")])]
    [('a', ['1', '3']), ('b', ['2'])]
    """
    completions: dict[str, list[str]] = {}
    for prompt, completion in pairs:
        completions.setdefault(prompt, []).append(completion)
    return [Problem(id=f"pairs-{i}", prompt=prompt, answer="", metadata={"completions": found})
            for i, (prompt, found) in enumerate(completions.items())]


def check_config(cfg: RunConfig) -> None:
    """Start-up checks of the settings a distillation run reads; ConfigError saying how to fix them."""
    algo = cfg.algorithm
    if algo.critic.enabled or algo.greedy_baseline or algo.dynamic_sampling:
        raise ConfigError("algorithm.trainer=distill trains no critic, takes no greedy baseline and samples nothing: set "
                          "algorithm.critic.enabled, greedy_baseline and dynamic_sampling to false (or use algorithm=distill)")
    if algo.kl_coef > 0 or algo.reward_kl_coef > 0:
        raise ConfigError("algorithm.trainer=distill has no KL term: set algorithm.kl_coef and reward_kl_coef to 0")
    if algo.ppo_epochs != 1:
        raise ConfigError(f"algorithm.trainer=distill reads each teacher trace once: set algorithm.ppo_epochs=1, not {algo.ppo_epochs}")
    path = algo.distill.path
    if path is not None and (Path(path).expanduser().suffix not in PAIR_SUFFIXES or not Path(path).expanduser().is_file()):
        raise ConfigError(f"algorithm.distill.path={path}: need an existing {' or '.join(PAIR_SUFFIXES)} file of "
                          f"{algo.distill.prompt_field}/{algo.distill.completion_field} pairs")
    if path is None and cfg.task.name not in TEACHERS:
        raise ConfigError(f"algorithm=distill: task {cfg.task.name!r} has no built-in teacher (tasks with one: "
                          f"{', '.join(TEACHERS.names())}); set algorithm.distill.path to a .jsonl or .parquet of "
                          "prompt/completion pairs from your teacher model")


def _draw_completion(problem: Problem, rng: random.Random) -> str:
    return rng.choice(problem.metadata["completions"])


def _jsonl_rows(file: Path, where: str) -> list[Any]:
    rows = []
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise ConfigError(f"{where}: line {number} is not JSON ({err.msg})") from err
    return rows


def _parquet_rows(file: Path) -> list[Any]:
    import pyarrow.parquet as pq  # installed with datasets

    return pq.read_table(file).to_pylist()
