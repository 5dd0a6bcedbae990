"""Checkpoints: an HF-format model folder plus the full training state, written atomically.

Layout of ``<run_dir>/checkpoints/step_000050/``:
  config.json, model.safetensors, tokenizer files  -> loads with transformers and vLLM as is
  critic/                                         -> PPO's value model (AutoModelForTokenClassification)
  adapter/                                        -> LoRA runs: the adapter alone (PEFT), besides the merged model
  rlvr_checkpoint.json                            -> step, metrics, run config; written last
  train_state/                                    -> accelerate/DeepSpeed state: optimizer, RNG, ...
                                                     (only in the newest trainer.keep_train_states, if set)

Everything is written to ``.tmp-step_000050`` and renamed into place once complete, so a crash
leaves either a whole checkpoint or none (stale temp folders are removed on the next start). A save
that fails (a full disk: torch reports it as ``basic_ios::clear: iostream error`` or ``unexpected pos``)
removes its temp folder and stops the run with a :class:`CheckpointSaveError` that names the folder,
the free space and the last complete checkpoint to resume from.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Iterator, Optional

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from safetensors import SafetensorError
from transformers import PreTrainedTokenizerBase
from trl.models.utils import unwrap_model_for_generation

from train.critic import policy_of, split_state_dict
from train.distributed import is_collective_failure
from train.errors import RunError
from train.lora import is_lora, plain_model, plain_state_dict

META = "rlvr_checkpoint.json"
_STEP_DIR = re.compile(r"^step_(\d+)$")


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:06d}"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run as (step, folder), by step."""
    root = Path(run_dir) / "checkpoints"
    found = []
    if root.is_dir():
        for child in root.iterdir():
            match = _STEP_DIR.match(child.name)
            if match and (child / META).is_file():
                found.append((int(match.group(1)), child))
    return sorted(found)


def latest_checkpoint(run_dir: Path) -> Optional[tuple[int, Path]]:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def remove_partial_checkpoints(run_dir: Path) -> list[Path]:
    """Delete temp folders a crashed save left behind; returns what was removed."""
    root = Path(run_dir) / "checkpoints"
    stale = sorted(root.glob(".tmp-step_*")) if root.is_dir() else []
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def save_checkpoint(
    accelerator: Accelerator,
    run_dir: Path,
    step: int,
    model,
    tokenizer: PreTrainedTokenizerBase,
    meta: dict[str, Any],
    keep_train_states: int = 0,
    weights_dtype: Optional[torch.dtype] = None,
) -> Path:
    """Save on all processes (ZeRO shards are gathered or saved per rank); returns the final folder.

    ``keep_train_states`` > 0: afterwards, only the newest that many checkpoints keep ``train_state/``.
    ``weights_dtype``: the floating dtype of the HF-format weights (``model.dtype``; float32 masters
    trained under DDP are written in it); None = as trained. ``train_state/`` keeps them as trained.
    """
    final = checkpoint_dir(run_dir, step)
    tmp = final.with_name(f".tmp-{final.name}")
    try:
        _write(accelerator, tmp, step, model, tokenizer, meta, weights_dtype)
    except (OSError, RuntimeError, SafetensorError) as err:
        if is_collective_failure(err):  # a collective failed, not the write: train.distributed explains it
            raise
        message = save_failure(run_dir, tmp, step, err)  # the free space as the save found it
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)  # give the space back; a partial save is never read anyway
        raise CheckpointSaveError(message) from err
    if accelerator.is_main_process:
        if final.exists():  # the same step saved again (e.g. a run restarted without resume)
            shutil.rmtree(final)
        os.replace(tmp, final)
        if keep_train_states:
            prune_train_states(run_dir, keep_train_states)
    accelerator.wait_for_everyone()
    return final


class CheckpointSaveError(RunError):
    """A checkpoint could not be written (most often: the disk is full)."""


def _write(
    accelerator: Accelerator, tmp: Path, step: int, model, tokenizer: PreTrainedTokenizerBase, meta: dict[str, Any],
    weights_dtype: Optional[torch.dtype] = None,
) -> None:
    """Everything of a checkpoint into ``tmp``; on return every process has written its part."""
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    # Only rank 0 writes the weights, so only it takes them: under ZeRO 0-2 accelerate copies the whole
    # model into host memory for this (a 7B model: 15 GB per process, 8 processes a node). Under ZeRO-3
    # it is a collective that consolidates the shards on rank 0.
    state_dict = accelerator.get_state_dict(model) if accelerator.is_main_process or consolidates(accelerator) else None
    accelerator.save_state(str(tmp / "train_state"))  # model, optimizer, RNG; every rank writes its part
    with _readable(model, accelerator) as module:
        if accelerator.is_main_process:
            parts = split_state_dict(state_dict, module)
            policy = policy_of(module)
            # LoRA: the merged weights under the plain model's names, and the adapter on its own
            plain_model(policy).save_pretrained(
                tmp, state_dict=_in_dtype(plain_state_dict(policy, parts["policy"]), weights_dtype), safe_serialization=True
            )
            if is_lora(policy):
                policy.save_pretrained(tmp / "adapter", state_dict=parts["policy"], safe_serialization=True)
            if "critic" in parts:
                module.critic.save_pretrained(tmp / "critic", state_dict=_in_dtype(parts["critic"], weights_dtype),
                                              safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            _write_json(tmp / META, {"step": step, **meta})
    accelerator.wait_for_everyone()


def consolidates(accelerator: Accelerator) -> bool:
    """Whether taking the full state dict is a collective: DeepSpeed ZeRO-3 gathers the shards to rank 0."""
    return accelerator.distributed_type == DistributedType.DEEPSPEED and (
        accelerator.deepspeed_config["zero_optimization"]["stage"] == 3
    )


def _in_dtype(state_dict: dict[str, torch.Tensor], dtype: Optional[torch.dtype]) -> dict[str, torch.Tensor]:
    """Floating tensors in ``dtype``; tensors that shared memory (tied embeddings) still do, so
    ``save_pretrained`` keeps writing them once."""
    if dtype is None:
        return state_dict
    cast: dict[tuple, torch.Tensor] = {}
    out = {}
    for name, tensor in state_dict.items():
        if not tensor.is_floating_point() or tensor.dtype == dtype:
            out[name] = tensor
            continue
        key = (tensor.device, tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if key not in cast:
            cast[key] = tensor.to(dtype)
        out[name] = cast[key]
    return out


def save_failure(run_dir: Path, tmp: Path, step: int, err: BaseException) -> str:
    """What failed, the free space where it was written, and the checkpoint to resume from."""
    folder = next((p for p in (tmp, *tmp.parents) if p.exists()), Path("/"))
    usage = shutil.disk_usage(folder)
    full = " (the disk is full)" if getattr(err, "errno", None) == errno.ENOSPC or usage.free < 0.01 * usage.total else ""
    latest = latest_checkpoint(run_dir)
    last = f"{latest[1]} (step {latest[0]})" if latest else "none yet (the run would start from step 0)"
    return (
        f"saving the checkpoint of step {step} into {tmp} failed: {type(err).__name__}: {err}\n"
        f"  free space there: {_megabytes(usage.free)} of {_megabytes(usage.total)}{full}\n"
        f"  last complete checkpoint: {last}; the partial save was removed\n"
        f"  free some space (trainer.keep_train_states=1 keeps optimizer state in the newest checkpoint only), "
        f"then continue with run_dir={run_dir} resume=true"
    )


def _megabytes(size: int) -> str:
    return f"{size / 2**20:,.1f} MB"


@contextlib.contextmanager
def _readable(model, accelerator: Accelerator) -> Iterator[torch.nn.Module]:
    """The unwrapped module; for LoRA under ZeRO-3 with its parameters gathered on every rank
    (a collective), since merging reads the adapters' live weights."""
    module = accelerator.unwrap_model(model)
    if not is_lora(policy_of(module)):
        yield module
        return
    with unwrap_model_for_generation(model, accelerator) as module:
        yield module


def prune_train_states(run_dir: Path, keep: int) -> list[Path]:
    """Delete ``train_state/`` of all but the newest ``keep`` checkpoints (their weights stay); returns what went."""
    older = list_checkpoints(run_dir)[:-keep]
    pruned = [folder / "train_state" for _, folder in older if (folder / "train_state").is_dir()]
    for path in pruned:
        shutil.rmtree(path)
    return pruned


def load_training_state(accelerator: Accelerator, path: Path) -> int:
    """Restore model, optimizer and RNG state from a checkpoint folder; returns its step."""
    if not (Path(path) / "train_state").is_dir():
        raise FileNotFoundError(
            f"{path} has no train_state/ (trainer.keep_train_states removed it), so training cannot resume from it; "
            "its weights still load as a model (model=hf model.name_or_path=<it>)"
        )
    accelerator.load_state(str(Path(path) / "train_state"))
    return int(read_meta(path)["step"])


def read_meta(path: Path) -> dict[str, Any]:
    return json.loads((Path(path) / META).read_text())


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=2, default=str))
