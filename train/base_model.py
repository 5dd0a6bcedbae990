"""The built-in base model: a tiny character-level Llama SFT'd on a built-in task's noisy teacher's traces.

``ensure_builtin_base`` builds it once per configuration and caches it on disk, so every run and
every process of a run starts from the same base. The task's teachers come from
``train.tasks.TEACHERS`` (``task.name``): the weak teacher writes the SFT data, and the task's check,
if it has one, samples the fresh model and holds it to that teacher (route shares, accuracies: the
numbers land in ``build.json`` under ``base_check`` and are printed; a failed check is reported
loudly, and the model is kept). The cache folder's name hashes everything that changes the result
(the builtin-model config, the task fields the teacher declares in ``build_fields``, and
``BUILD_VERSION``); bump ``BUILD_VERSION`` whenever this file, the SFT stage or a teacher changes
what gets built.

Concurrency: several ranks call this at once. One takes a file lock and builds into a temporary
folder inside the cache dir, then renames it into place (atomic on one filesystem), so a reader
never sees half a model and a crash leaves at most a temporary folder, removed by the next build.
The others wait on the lock, then find the finished folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from tokenizers import Tokenizer, decoders, models, processors
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from train.config import BuiltinModelConfig, ModelConfig, TaskConfig
from train.rollout.base import SamplingParams
from train.rollout.hf import HFEngine
from train.sft import sft
from train.tasks import TEACHERS, Teachers, load_task

BUILD_VERSION = 1  # bump when the code changes what a build produces: old caches are then ignored
SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")  # ids 0..3, in this order
MAX_POSITIONS = 256  # prompt + completion tokens the model is built for (traces take ~50)
CHECK_SEED = 0  # seeds the base check's sampling: the same model gives the same numbers


def ensure_builtin_base(model_cfg: ModelConfig, task_cfg: TaskConfig, *, progress: bool = True) -> Path:
    """The folder of the built-in base model (weights, tokenizer, build.json), building it if needed.

    Cached in ``<model_cfg.cache_dir>/builtin-<hash>``; see the module docstring for the locking.
    """
    cache = Path(model_cfg.cache_dir).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    record = _build_record(model_cfg.builtin, task_cfg)
    name = "builtin-" + _digest(record)
    folder = cache / name
    if (folder / "build.json").exists():
        print(f"[builtin base] loading cached {folder}", flush=True)
        _report_check(json.loads((folder / "build.json").read_text()).get("base_check"))
        return folder
    with FileLock(str(cache / f"{name}.lock")):
        if (folder / "build.json").exists():  # another process built it while we waited
            print(f"[builtin base] loading {folder} (built by another process)", flush=True)
            _report_check(json.loads((folder / "build.json").read_text()).get("base_check"))
            return folder
        for stale in cache.glob(f".tmp-{name}-*"):  # left by a crashed build; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        print(f"[builtin base] building {folder} (one-time, cached afterwards)", flush=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=cache))
        try:
            summary = _build(model_cfg.builtin, task_cfg, tmp, progress=progress)
            # build.json last: its presence marks a complete folder.
            (tmp / "build.json").write_text(json.dumps({**record, **summary}, indent=2) + "\n")
            tmp.chmod(0o755)  # mkdtemp makes it private; the cache may be shared between users
            os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"[builtin base] built {folder} in {summary['seconds']:.0f} s, final SFT loss {summary['final_sft_loss']:.4f}",
        flush=True,
    )
    _report_check(summary.get("base_check"))
    return folder


def teachers_of(task_cfg: TaskConfig) -> Teachers:
    """The built-in teachers of ``task.name``; ValueError naming the tasks that have them."""
    if task_cfg.name not in TEACHERS:
        raise ValueError(
            f"the built-in base model is trained on a built-in task's teacher traces, and task.name={task_cfg.name!r} "
            f"has none (tasks with teachers: {', '.join(TEACHERS.names())}); use model=hf for this task"
        )
    return TEACHERS[task_cfg.name]


def _report_check(check: dict[str, Any] | None) -> None:
    """Print the base check's numbers; a failed check loudly, with what is off."""
    if check is None:
        return
    stats = ", ".join(f"{k} {v:.3f}" for k, v in check["stats"].items())
    print(f"[builtin base] check against the teacher ({check['problems']} train problems x "
          f"{check['samples_per_problem']} samples, T={check['temperature']}): {stats}", flush=True)
    if check["passed"]:
        print("[builtin base] check passed: the base follows its teacher", flush=True)
        return
    bar = "!" * 100
    lines = "\n".join(f"[builtin base]   - {failure}" for failure in check["failures"])
    print(f"{bar}\n[builtin base] WARNING: the base model does not behave like its teacher, so what RL does to it\n"
          f"[builtin base] is not the study's mechanism:\n{lines}\n[builtin base] Train it longer "
          f"(model.builtin.sft_steps) or larger, or change model.builtin.seed.\n{bar}", flush=True)


def build_tokenizer(alphabet: str) -> PreTrainedTokenizerFast:
    """A character-level tokenizer over ``alphabet`` that prepends <bos>; padding on the left.

    Each character is one token (a BPE with no merges); anything else becomes <unk>. The Fuse
    decoder joins tokens without spaces: without it decode would return "1 2 + 3" and every
    verifier would score 0. Left padding is what batched generation needs; SFT pads on its own.

    >>> tok = build_tokenizer("0123456789+=")
    >>> tok("12+3=").input_ids
    [1, 5, 6, 14, 7, 15]
    >>> tok.decode(tok("12+3=").input_ids, skip_special_tokens=True)
    '12+3='
    """
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for ch in dict.fromkeys(alphabet):
        vocab.setdefault(ch, len(vocab))
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.decoder = decoders.Fuse()
    backend.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        padding_side="left",
        model_max_length=MAX_POSITIONS,
    )


def build_model(cfg: BuiltinModelConfig, tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    """A freshly initialised tiny Llama (tied embeddings) for ``tokenizer``, seeded by ``cfg.seed``."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    with torch.random.fork_rng(devices=[]):  # seed the init without touching the caller's RNG
        torch.manual_seed(cfg.seed)
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        max_new_tokens=64,
    )
    return model


def teacher_examples(cfg: BuiltinModelConfig, task_cfg: TaskConfig) -> list[tuple[str, str]]:
    """``cfg.sft_traces`` (prompt, weak teacher trace) pairs, cycling through the train split's problems
    (or the ones the task's ``sft_problems`` picks from it)."""
    teachers = teachers_of(task_cfg)
    problems = teachers.sft_problems(task_cfg) if teachers.sft_problems else load_task(task_cfg, "train")
    weak = teachers.weak
    rng = random.Random(f"builtin-traces/{cfg.seed}")
    return [(p.prompt, weak(p, rng)) for p in (problems[i % len(problems)] for i in range(cfg.sft_traces))]


def _build(cfg: BuiltinModelConfig, task_cfg: TaskConfig, folder: Path, *, progress: bool) -> dict[str, Any]:
    """SFT a fresh model on teacher traces, check it, and save it with its tokenizer into ``folder``."""
    teachers = teachers_of(task_cfg)
    start = time.perf_counter()
    tokenizer = build_tokenizer(teachers.alphabet)
    model = build_model(cfg, tokenizer)
    losses = sft(
        model,
        tokenizer,
        teacher_examples(cfg, task_cfg),
        steps=cfg.sft_steps,
        batch_size=cfg.sft_batch_size,
        lr=cfg.sft_lr,
        seed=cfg.seed,
        progress=progress,
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    tail = losses[-min(len(losses), 20) :]
    summary = {
        "final_sft_loss": losses[-1],
        "final_sft_loss_mean_last_20": sum(tail) / len(tail),
        "num_parameters": sum(p.numel() for p in model.parameters()),
    }
    if teachers.check is not None:
        check_start = time.perf_counter()
        summary["base_check"] = teachers.check(task_cfg, _sampler(model, tokenizer))
        summary["base_check"]["seconds"] = time.perf_counter() - check_start
    return {**summary, "seconds": time.perf_counter() - start, "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _sampler(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast):
    """(prompts, n) -> n completions per prompt from ``model`` at temperature 1, seeded by CHECK_SEED."""
    engine = HFEngine.for_model(tokenizer, model, batch_size=1024)

    def sample(prompts: list[str], n: int) -> list[list[str]]:
        with torch.random.fork_rng(devices=[]):  # leave the caller's RNG as it was
            texts = engine.generate(prompts, SamplingParams(n=n, temperature=1.0, max_new_tokens=64, seed=CHECK_SEED)).texts
        return [texts[i * n : (i + 1) * n] for i in range(len(prompts))]

    return sample


def _build_record(cfg: BuiltinModelConfig, task_cfg: TaskConfig) -> dict[str, Any]:
    """Everything that determines the build: hashed into the folder name and saved in build.json."""
    fields = _as_dict(task_cfg)
    task = {k: fields[k] for k in teachers_of(task_cfg).build_fields}
    return {"version": BUILD_VERSION, "builtin": _as_dict(cfg), "task": task}


def _as_dict(cfg: Any) -> dict[str, Any]:
    """A config's fields as a plain dict, whether it is a dataclass or Hydra's DictConfig of one."""
    if dataclasses.is_dataclass(cfg):
        return dataclasses.asdict(cfg)
    from omegaconf import OmegaConf  # only configs that come straight from Hydra need it

    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def _digest(record: dict[str, Any]) -> str:
    """A short stable hash of ``record`` (JSON with sorted keys)."""
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:12]
