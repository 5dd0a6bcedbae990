"""``rlvr-train``: build the base model, train it with RLVR, checkpoint, then sweep pass@k.

With no arguments it trains GRPO on the built-in task and sweeps it; ``rlvr-study`` runs the whole
miniature study (GRPO and distillation from one base, compared). Examples::

    rlvr-train                                   # built-in task, GRPO, eval sweep at the end
    rlvr-train -m algorithm=grpo trainer.lr=1e-4,3e-4
    rlvr-train run_dir=runs/x resume=true        # continue a run from its latest checkpoint
    rlvr-study                                   # GRPO and distillation from one base, compared (conf/study.yaml)
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from transformers import get_scheduler
from trl.models.utils import prepare_deepspeed, unwrap_model_for_generation

from train.checkpoint import latest_checkpoint, list_checkpoints, load_training_state, remove_partial_checkpoints
from train.config import BatchPlan, ConfigError, RunConfig, check, register_configs
from train.critic import PolicyWithCritic, load_critic, policy_context, policy_of
from train.cluster import join_job_process_group, under_submitit
from train.distributed import build_accelerator, keep_grad_norm, reporting_hangs, world_size_from_env, zero_stage
from train.errors import DataError, RunError
from train.loop import Trainer
from train.lora import AdaptersOff, is_lora, streamed_weights, with_lora
from train.models import load_model, load_tokenizer, resolve_base, trained_dtype, without_dropout
from train.rewards import WeightedRewards
from train.rollout.base import RolloutEngine
from train.rollout.hf import HFEngine
from train.tasks.limits import load_problems, longest_prompt
from train.tasks.templates import chat_problems
from train.tracking import Tracker, start_metrics, write_run_info
from train.trainers import TRAINERS

register_configs()


def _quiet_libraries() -> None:
    """Keep the terminal to our own progress bars and results."""
    import logging
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-checkpoint "Writing model shards" / "Loading weights" bars
    logging.getLogger("accelerate").setLevel(logging.ERROR)  # per-save INFO lines, tied-weights notice
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def run(cfg: RunConfig, run_dir: Path, resolved: dict) -> Path:
    """Train per ``cfg`` into ``run_dir``; returns the run folder (rank 0's, on every rank)."""
    torch.set_num_threads(cfg.trainer.threads)
    plan = check(cfg, world_size_from_env())
    acc = build_accelerator(cfg, plan)
    with reporting_hangs(acc, cfg.trainer.collective_timeout_s):  # a rank that stops answering ends the job, named
        return _train(cfg, plan, acc, run_dir, resolved)


def _train(cfg: RunConfig, plan: BatchPlan, acc: Accelerator, run_dir: Path, resolved: dict) -> Path:
    """Build the policy, engine, reference, problems and tracker; train; the run folder."""
    run_dir = Path(broadcast_object_list([str(run_dir)])[0])  # rank 0's folder: timestamps may differ
    torch.manual_seed(cfg.seed)
    start_step = _start_step_or_fail(cfg, run_dir)
    with acc.main_process_first():  # rank 0 builds the built-in base; the others then find it cached
        base = resolve_base(cfg.model, cfg.task, progress=acc.is_main_process)
    placement = _placement(cfg, acc)  # a collective: every process says where it runs
    if acc.is_main_process:
        write_run_info(run_dir, base, resolved, placement)
    tokenizer = load_tokenizer(base, cfg.model)
    # before the models: a bad row or an overlong prompt stops the run within seconds
    problems = load_problems(cfg, "train", base, tokenizer, verbose=acc.is_main_process)
    prompt_tokens = _longest_prompt(cfg, base, tokenizer, problems) if cfg.rollout.engine == "vllm" else 0
    if cfg.task.chat:  # instruct models: prompts in the tokenizer's chat template
        problems = chat_problems(problems, tokenizer)
    model = _trained_module(cfg, base)
    if cfg.trainer.gradient_checkpointing:  # non-reentrant (transformers' default), as TRL re-enables it after generate
        model.gradient_checkpointing_enable()
    if cfg.model.lora.rank and acc.is_main_process:
        policy_of(model).print_trainable_parameters()  # PEFT's "trainable params: ... || trainable%: ..."
    optimizer = torch.optim.AdamW(_param_groups(cfg, model), lr=cfg.trainer.lr, weight_decay=cfg.trainer.weight_decay)
    scheduler = get_scheduler(
        cfg.trainer.lr_scheduler, optimizer, num_warmup_steps=cfg.trainer.warmup_steps,
        num_training_steps=cfg.trainer.total_steps * cfg.algorithm.ppo_epochs * plan.mini_batches,
    )
    model, optimizer = acc.prepare(model, optimizer)
    keep_grad_norm(acc, model)
    acc.register_for_checkpointing(scheduler)
    kind = TRAINERS[cfg.algorithm.trainer]
    engine = _rollout_engine(cfg, base, tokenizer, model, acc, prompt_tokens) if kind.samples else None  # before resuming: vLLM reseeds torch's RNG
    uses_ref = cfg.algorithm.kl_coef > 0 or cfg.algorithm.reward_kl_coef > 0
    ref_model = _reference(cfg, base, model, acc) if uses_ref else None
    if start_step:
        load_training_state(acc, latest_checkpoint(run_dir)[1])
    if acc.is_main_process:  # metrics follow the checkpoint: up to its step, or a new file from step 0
        start_metrics(run_dir, start_step)
    tracker = Tracker(run_dir, cfg.logger, resolved, name=run_dir.name, enabled=acc.is_main_process)
    trainer = Trainer(
        cfg=cfg, plan=plan, accelerator=acc, model=model, tokenizer=tokenizer, optimizer=optimizer,
        scheduler=scheduler, engine=engine, rewards_of=WeightedRewards.of_task(cfg.task), problems=problems,
        tracker=tracker, run_dir=run_dir, run_config=resolved, ref_model=ref_model,
    )
    kind.train(trainer, start_step)  # RL, or distillation (algorithm=distill)
    tracker.finish()
    acc.wait_for_everyone()
    return run_dir


def _placement(cfg: RunConfig, acc: Accelerator) -> dict:
    """Where the run trains: each process's device (``cuda:LOCAL_RANK`` on GPUs), how, in which precision."""
    from accelerate.utils import gather_object

    return {"devices": gather_object([str(acc.device)]), "distributed_type": str(acc.distributed_type.value),
            "mixed_precision": acc.mixed_precision, "weights_dtype": trained_dtype(cfg), "zero_stage": zero_stage(cfg)}


def _trained_module(cfg: RunConfig, base: str) -> torch.nn.Module:
    """The policy (with LoRA adapters when ``model.lora.rank`` > 0), or the policy and its critic as one module (PPO).

    Weights are held in :func:`~train.models.trained_dtype` (float32 masters under plain DDP) and
    without dropout: old log-probs and values come from eval mode, updates from train mode, so any
    active dropout would make the PPO ratio and value clipping measure noise (TRL's
    ``disable_dropout_in_model``, applied to every model its PPO trainer holds).
    """
    dtype = trained_dtype(cfg)
    policy = load_model(base, cfg.model, dtype=dtype)
    if cfg.model.lora.rank:
        policy = with_lora(policy, cfg.model.lora, zero3=zero_stage(cfg) == 3)
    if not cfg.algorithm.critic.enabled:
        return without_dropout(policy)
    critic = load_critic(cfg.algorithm.critic.name_or_path or base, cfg.model, dtype=dtype)
    return PolicyWithCritic(without_dropout(policy), without_dropout(critic))


def _longest_prompt(cfg: RunConfig, base: str, tokenizer, train_problems) -> int:
    """Tokens of the longest prompt the rollout engine will see: the train split's and, when the run ends
    with its sweep, the test split's (one vLLM engine per process serves both)."""
    problems = list(train_problems)
    if cfg.eval.after_train and cfg.task.test_split:
        problems += load_problems(cfg, "test", base, tokenizer, verbose=False)
    return longest_prompt(problems, tokenizer, cfg.task.chat)


def _rollout_engine(cfg: RunConfig, base: str, tokenizer, model: torch.nn.Module, acc, prompt_tokens: int) -> RolloutEngine:
    """The engine that samples training rollouts from the current policy (``rollout.engine``)."""
    if cfg.rollout.engine == "vllm":
        from train.rollout.vllm_engine import VLLMEngine, model_len

        # the policy's weights streamed one (gathered) layer at a time, never the critic's
        weights = lambda: streamed_weights(policy_of(acc.unwrap_model(model)))  # noqa: E731
        return VLLMEngine(
            base, tokenizer, weights, cfg.rollout.vllm, max_model_len=model_len(cfg, prompt_tokens), dtype=cfg.model.dtype,
            seed=cfg.seed + acc.process_index, seed_requests=False, add_special_tokens=not cfg.task.chat,
            trust_remote_code=cfg.model.trust_remote_code,
        )
    policy = lambda: policy_context(unwrap_model_for_generation(model, acc))  # noqa: E731  ZeRO-3: gathered
    return HFEngine(tokenizer, policy, cfg.rollout.batch_size, add_special_tokens=not cfg.task.chat)


def _param_groups(cfg: RunConfig, model: torch.nn.Module) -> list[dict]:
    """What the optimizer updates (LoRA: the adapters only); the critic learns at its own rate."""
    trainable = lambda module: [p for p in module.parameters() if p.requires_grad]  # noqa: E731
    if isinstance(model, PolicyWithCritic):
        return [{"params": trainable(model.policy)}, {"params": trainable(model.critic), "lr": cfg.algorithm.critic.lr}]
    return [{"params": trainable(model)}]


def _start_step_or_fail(cfg: RunConfig, run_dir: Path) -> int:
    remove_partial_checkpoints(run_dir)
    latest = latest_checkpoint(run_dir)
    mode = str(cfg.resume).lower()
    if latest is not None and mode in ("true", "auto"):
        if latest[0] > cfg.trainer.total_steps:
            raise ConfigError(
                f"the latest checkpoint of {run_dir} is at step {latest[0]}, past trainer.total_steps="
                f"{cfg.trainer.total_steps}; raise trainer.total_steps to train on from it"
            )
        return latest[0]
    if mode == "true":
        raise ConfigError(f"resume=true but {run_dir} holds no complete checkpoint; drop resume=true to start fresh")
    if latest is not None:
        raise ConfigError(
            f"{run_dir} already holds checkpoints; pass resume=true to continue it, or choose another run_dir"
        )
    return 0


def _reference(cfg: RunConfig, base: str, model: torch.nn.Module, acc) -> torch.nn.Module:
    """The frozen base for KL terms: with LoRA, the trained model with its adapters off (no second copy)."""
    policy = policy_of(acc.unwrap_model(model))
    if is_lora(policy):
        return AdaptersOff(model, policy)
    ref = load_model(base, cfg.model).eval().requires_grad_(False)
    if acc.state.deepspeed_plugin is not None:
        return prepare_deepspeed(ref, acc)
    return ref.to(acc.device)


def _job(raw: DictConfig) -> None:
    """One training run (a job of a multirun): train, then sweep it when ``eval.after_train``."""
    _quiet_libraries()
    cfg: RunConfig = OmegaConf.to_object(raw)
    resolved = OmegaConf.to_container(raw, resolve=True)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        _join_cluster_job(cfg)
        done = run(cfg, run_dir, resolved)
    except (ConfigError, DataError) as err:
        print(f"{'data' if isinstance(err, DataError) else 'config'} error: {err}", file=sys.stderr)
        sys.exit(2)
    except RunError as err:  # the message says what failed and how to go on; a traceback would bury it
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    if cfg.eval.after_train:  # every process of the job samples its share of the sweep; rank 0 reports
        from eval.study import sweep_and_report

        sweep_and_report(done, cfg)


def _join_cluster_job(cfg: RunConfig) -> None:
    """A job started by submitit (hydra/launcher=slurm): resume=auto, and its tasks' process group."""
    if not under_submitit():
        return
    if str(cfg.resume).lower() != "auto":
        raise ConfigError(
            f"resume={cfg.resume} in a job started by submitit (hydra/launcher=slurm or submitit_local): a job "
            "requeued after a timeout or preemption starts again in the same folder; pass resume=auto so it "
            "continues from its latest checkpoint"
        )
    join_job_process_group()


_hydra_main = hydra.main(version_base=None, config_path="../conf", config_name="config")(_job)
_study_main = hydra.main(version_base=None, config_path="../conf", config_name="study")(_job)


def main() -> None:
    """``rlvr-train``: one run, or a multirun with ``-m``."""
    _hydra_main()


def study() -> None:
    """``rlvr-study``: the paper in miniature, a multirun of GRPO and distillation from one base (conf/study.yaml)."""
    _study_main()


if __name__ == "__main__":
    main()
