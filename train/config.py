"""Structured configs: the one place defaults live. YAML files under ``conf/`` are presets.

Every field says what it trades off. ``check(cfg, world_size)`` runs the cross-field checks at
start-up; each error says how to fix the config.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore

import torch

from algorithms import AGGREGATIONS, ESTIMATORS, KL_ESTIMATORS, POLICY_LOSSES, rollout_correction


class ConfigError(ValueError):
    """A config value that cannot work; the message says how to fix it."""


@dataclass
class CriticConfig:
    enabled: bool = False  # train a value model alongside the actor (PPO with GAE)
    name_or_path: Optional[str] = None  # value model backbone; None = a copy of the base model
    lr: float = 5e-4  # critic learning rate (its own optimizer parameter group)
    value_clip: Optional[float] = 0.5  # clip of V around V_old in the value loss; None = unclipped
    vf_coef: float = 1.0  # weight of the value loss in the joint loss
    warmup_steps: int = 0  # first RL steps that train the critic only (actor frozen)


@dataclass
class DistillConfig:
    """The teacher ``algorithm=distill`` learns from (train/distill.py)."""

    path: Optional[str] = None  # null = the task's stronger built-in teacher; else a .jsonl/.parquet of prompt/completion pairs from any model
    prompt_field: str = "prompt"  # the file's field holding a prompt (fed as the task's prompts are: task.chat wraps it)
    completion_field: str = "completion"  # the file's field holding the teacher's completion (trained on, then EOS)


@dataclass
class RolloutCorrectionConfig:
    """The sampler-trainer mismatch corrected (verl's ``algorithm.rollout_correction``; ``algorithms.rollout_correction``).

    Off by default, as in the paper. Turn it on when the sampler's log-probs drift from the trainer's:
    vLLM in bf16 against float32 training, stale weights (async rollouts), other kernels. Watch
    ``rollout_corr/kl`` and ``rollout/logprob_abs_diff`` first: near 0 there is nothing to correct.
    """

    rollout_is: Optional[str] = None  # importance weights pi_old / pi_sampler: null (off), token or sequence
    rollout_is_threshold: Optional[str] = "2.0"  # "C": truncate weights at C (TIS); "lo_hi": zero weights outside [lo, hi] (IcePop)
    rollout_is_batch_normalize: bool = False  # rescale the weights to mean 1 over the batch: unbiased scale, more variance
    rollout_rs: Optional[str] = None  # rejection: null (off) or verl's modes (token_k1, seq_mean_k3, ...; comma-chained)
    rollout_rs_threshold: Optional[str] = None  # k1 modes: "lo_hi" ratio bounds (or "C" for [1/C, C]); k2/k3: an upper bound
    bypass_mode: bool = False  # pi_old := the sampler's log-probs: no recomputation pass, the PPO ratio corrects the mismatch


@dataclass
class AlgorithmConfig:
    name: str = "grpo"  # label used in run names, logs and comparison tables
    trainer: str = "rl"  # what trains the policy (train.trainers.TRAINERS): rl (rollouts, rewards, advantages) or distill (SFT on a teacher's traces)
    advantage: str = "grpo"  # advantage estimator (algorithms.ESTIMATORS)
    norm_by_std: bool = True  # divide group-relative advantages by the group std (False = Dr.GRPO)
    samples_per_prompt: int = 8  # group size G: more samples, better baselines, costlier steps
    clip_low: float = 0.2  # PPO ratio clip below 1: smaller keeps updates closer to pi_old
    clip_high: float = 0.2  # PPO ratio clip above 1 (DAPO's clip-higher raises it to 0.28)
    clip_c: Optional[float] = None  # dual-clip bound for negative advantages (None = off, else > 1); dppo_*: the IS truncation
    policy_loss: str = "ppo"  # the surrogate the actor minimises (algorithms.POLICY_LOSSES); takes the options below it uses
    clip_cov_ratio: float = 0.0002  # clip_cov: share of tokens whose gradient is cut (the highest logp-advantage covariance)
    clip_cov_lb: float = 1.0  # clip_cov: covariance lower bound for a token to be a candidate
    clip_cov_ub: float = 5.0  # clip_cov: covariance upper bound for a token to be a candidate
    kl_cov_ratio: float = 0.0002  # kl_cov: share of tokens (highest covariance) that get the KL penalty
    ppo_kl_coef: float = 0.1  # kl_cov: weight of that penalty, |log pi - log pi_old| on the chosen tokens
    tau_pos: float = 1.0  # sapo: temperature of the soft gate for positive advantages (higher = softer)
    tau_neg: float = 1.05  # sapo: temperature of the soft gate for negative advantages
    loss_agg: str = "token-mean"  # how per-token losses become one number (algorithms.AGGREGATIONS)
    kl_coef: float = 0.0  # weight of KL(pi || pi_ref) in the loss; 0 = no reference model (paper)
    kl_estimator: str = "k3"  # KL estimator for the loss term (algorithms.KL_ESTIMATORS)
    entropy_coef: float = 0.0  # entropy bonus: keeps exploration up at the cost of sharpness
    ppo_epochs: int = 1  # passes over each rollout batch: reuses samples, drifts off-policy
    gamma: float = 1.0  # discount for return-based estimators (gae, reinforce_pp, remax)
    lam: float = 1.0  # GAE lambda: lower trusts the critic more (less variance, more bias)
    reward_kl_coef: float = 0.0  # KL(pi_old || pi_ref) per token folded into the reward (REINFORCE++)
    reward_kl_estimator: str = "k1"  # KL estimator for the reward penalty (algorithms.KL_ESTIMATORS)
    greedy_baseline: bool = False  # one greedy rollout per prompt, its reward the baseline (ReMax)
    dynamic_sampling: bool = False  # drop groups whose rewards are all equal, refill the batch (DAPO)
    max_sampling_rounds: int = 3  # generation rounds per step at most when dynamic_sampling fills the batch
    overlong_buffer: int = 0  # soft length penalty over the last N tokens before the cap (DAPO); 0 = off
    overlong_penalty: float = 1.0  # penalty at the length cap when overlong_buffer > 0
    critic: CriticConfig = field(default_factory=CriticConfig)  # PPO's value model
    rollout_correction: RolloutCorrectionConfig = field(default_factory=RolloutCorrectionConfig)  # sampler mismatch
    distill: DistillConfig = field(default_factory=DistillConfig)  # the teacher when trainer=distill


@dataclass
class BuiltinModelConfig:
    """The tiny Llama the framework trains itself when ``model.name_or_path=builtin``."""

    hidden_size: int = 96  # width: bigger learns the task better and samples slower
    num_layers: int = 3  # depth
    num_heads: int = 4  # attention heads (hidden_size must divide)
    intermediate_size: int = 256  # MLP width
    sft_steps: int = 600  # SFT steps on teacher traces: more makes a stronger base, costs ~0.16 s each
    sft_batch_size: int = 64  # traces per SFT step
    sft_lr: float = 3e-3  # peak SFT learning rate (cosine decay, short warm-up)
    sft_traces: int = 38400  # teacher traces for SFT, from train problems (steps x batch: each seen once)
    seed: int = 0  # seeds the weights, the traces and the SFT order


@dataclass
class LoRAConfig:
    """LoRA adapters on the policy (PEFT); rank 0 trains every weight."""

    rank: int = 0  # adapter rank r; 0 = full fine-tuning. Higher adapts more, costs more optimizer memory
    alpha: float = 16.0  # adapter scale alpha (the update is alpha / r * B A): raise lr rather than this
    dropout: float = 0.0  # dropout on the adapter input; 0 keeps pi_old and the sampler exact
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"])  # module names, or all-linear (all but the output layer)


@dataclass
class ModelConfig:
    name_or_path: str = "builtin"  # "builtin" (built and cached here), a hub id or a local folder
    # a GGUF file in name_or_path (a folder or hub id), converted once into an HF folder in cache_dir (train/gguf.py)
    gguf_file: Optional[str] = None
    # an installed Python distribution that holds the model: name_or_path is then a folder inside it (model=smollm2)
    package: Optional[str] = None
    dtype: str = "float32"  # float32, bfloat16 or float16 for weights and compute
    cache_dir: str = "~/.cache/rlvr"  # where the built-in base model is kept between runs
    trust_remote_code: bool = False  # allow model code from the hub (only for models you trust)
    builtin: BuiltinModelConfig = field(default_factory=BuiltinModelConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)  # adapters instead of full fine-tuning (model.lora.rank > 0)


@dataclass
class TaskConfig:
    name: str = "arithmetic"  # task preset: which problems, prompts and verifier
    loader: str = "arithmetic"  # task loader (train.tasks.TASKS): arithmetic (built-in) or dataset (hub id or local file)
    reward: str = "arithmetic"  # verifier (train.rewards.REWARDS): its verdict is what accuracy and pass@k count
    # training reward = sum of weight * function over these (TRL's reward_funcs + reward_weights), e.g.
    # '+task.rewards={math:1.0,boxed_format:0.1}' (+ adds keys; quotes stop bash expanding {a,b});
    # names are registered ones or import paths pkg.module.fn; {} = the verifier alone
    rewards: dict[str, float] = field(default_factory=dict)
    # Real datasets (loader=dataset); see train/tasks/datasets.py. The arithmetic fields below do not apply.
    dataset: Optional[str] = None  # hub id for datasets.load_dataset; null = task.path only
    subset: Optional[str] = None  # hub config name (e.g. gsm8k's "main"); null = the dataset's only one
    path: Optional[str] = None  # local .jsonl/.json/.parquet, or a folder of <split>.jsonl...; wins over dataset
    train_split: Optional[str] = "train"  # the dataset's split to train on; null = none (eval-only benchmark)
    test_split: Optional[str] = "test"  # the dataset's split to evaluate on; null = none (train-only set)
    prompt_field: str = "question"  # field holding the question (dotted path into nested rows)
    answer_field: Optional[str] = "answer"  # field holding the gold answer; null = none (code: tests decide)
    answer_extract: str = "none"  # how to read the gold from answer_field: none, gsm8k (after "####"), boxed
    id_field: Optional[str] = None  # field with a unique, stable problem id; null = the row index
    columns: list[str] = field(default_factory=list)  # fields passed to the verifier by name (e.g. test_list)
    column_fields: dict[str, str] = field(default_factory=dict)  # column -> field it comes from, when named otherwise
    column_decoders: dict[str, str] = field(default_factory=dict)  # column -> decoder of an encoded field (json, ...)
    tag_fields: list[str] = field(default_factory=list)  # fields that tag problems (level, subject): pass@k is also broken down by each
    template: str = "plain"  # prompt template (train.tasks.templates.TEMPLATES): plain, boxed, r1, code
    chat: bool = False  # wrap prompts in the tokenizer's chat template (instruct models); false for base models
    # longest prompt in tokens (templated, chat-wrapped as fed); null = the model's context length minus the
    # response budget (rollout.max_new_tokens for training, eval.max_new_tokens for the sweep), so prompt and
    # answer fit; lower it to cap memory and step time (verl: data.max_prompt_length)
    max_prompt_tokens: Optional[int] = None
    # a longer prompt is "drop"ped from its split and counted (verl: data.filter_overlong_prompts), or an
    # "error" that names the row; drop keeps a big dataset usable, error keeps a benchmark whole
    overlong_prompts: str = "drop"
    seed: int = 1234  # problems are generated from this seed: same seed, same splits
    train_size: int = 20000  # problems in the train split
    test_size: int = 500  # problems in the test split (disjoint from train)
    min_digits: int = 2  # smallest operand length
    max_digits: int = 4  # largest operand length: longer means more steps, harder problems
    slip_rate: float = 0.3  # mean teacher slip probability per step (noise the base inherits)
    slip_concentration: float = 2.0  # per-fact slip spread: low = some facts almost always wrong (hard problems), high = uniform noise
    # The routes task (loader=routes; train/tasks/routes.py). Its route L slips use slip_rate / slip_concentration.
    route_r_share: float = 0.25  # teacher's share of right-to-left traces: the route that is right on class H
    route_r_slip: float = 0.35  # route R's slip chance per step: higher makes R pay less, so RL prunes it sooner
    gap_total: Optional[int] = 14  # column total the weak teacher never writes (distillation's strong teacher does); null = no gap
    gap_written: int = 9  # what the weak teacher writes for gap_total: two tokens from 14 (13 is one, and RL finds it)
    test_h_share: float = 0.5  # share of class H in the test split (natural 4.5% with 3 digits): enough H problems to measure
    sft_h_share: float = 0.3  # share of class H in the base's SFT traces (natural 4.5%): the base learns route L's rule there


@dataclass
class VLLMConfig:
    gpu_memory_utilization: float = 0.3  # share of each GPU vLLM takes (weights + KV cache) beside training (TRL's colocate default)
    # prompt + response tokens per sequence; null = the run's longest prompt (train and test split) + the larger of
    # rollout.max_new_tokens and eval.max_new_tokens (never the model's own limit: its KV cache may not fit)
    max_model_len: Optional[int] = None
    max_num_seqs: int = 256  # sequences vLLM decodes at once: throughput against memory
    max_num_batched_tokens: int = 4096  # tokens per scheduler step (TRL's colocate value; vLLM's 32k default misleads its memory profiler)
    enforce_eager: bool = False  # true: no CUDA graphs (less memory and start-up time, slower decoding)
    enable_prefix_caching: bool = True  # the n samples of a prompt share its KV cache
    dtype: str = "auto"  # vLLM's weight dtype; auto = model.dtype (bfloat16 saves memory against float32 training weights)
    # 0: vLLM holds its memory through the update. 1, 2: it sleeps after each training rollout and wakes for the next
    # weight push (TRL's vllm_enable_sleep_mode), freeing its GPU share for the update at the cost of the wake-up:
    # 1 moves the weights to CPU memory, 2 drops them (the push rewrites them all); both drop the KV cache. GPUs only
    sleep_mode: int = 0
    tensor_parallel_size: int = 1  # GPUs one engine spans; only 1 is built (each process's engine samples its own prompts)


@dataclass
class RolloutConfig:
    engine: str = "hf"  # "hf" (transformers generate, runs anywhere) or "vllm" (colocated vLLM, one engine per process)
    temperature: float = 1.0  # sampling temperature for training rollouts (paper: 1.0)
    top_p: float = 1.0  # nucleus sampling for training rollouts (1.0 = off); the trainer scores tokens under the same cut
    top_k: int = 0  # sample among the k most likely tokens only (0 = off); the trainer scores tokens under the same cut
    max_new_tokens: int = 64  # response length cap: longer allows longer reasoning, costs time
    batch_size: int = 256  # sequences generated at once per process (hf engine): memory against speed
    vllm: VLLMConfig = field(default_factory=VLLMConfig)  # settings of the vllm engine


@dataclass
class EvalConfig:
    n: int = 256  # samples per problem; pass@k is reported for k = 1, 2, 4, ..., n
    k_max: int = 0  # k of the base's pass@k in ΔSE = pass@k_max(base) - pass@1(RL); 0 = n (paper: 256)
    temperature: float = 0.6  # paper's evaluation temperature
    top_p: float = 0.95  # paper's evaluation nucleus
    max_new_tokens: int = 64  # response length cap at evaluation
    num_problems: int = 100  # test problems swept (first N of the test split); 0 = all. More: tighter intervals, longer sweeps
    batch_size: int = 1024  # sequences generated at once
    after_train: bool = True  # rlvr-train sweeps base and checkpoints when training ends
    seed: int = 0  # seeds the sampler, so a sweep is reproducible
    ci_level: float = 0.95  # coverage of every interval (paired bootstrap over problems); higher = wider
    bootstrap_resamples: int = 2000  # bootstrap replicates per interval: more = steadier interval ends, slower summaries
    # Benchmarks swept besides training's: task presets by name, or {preset: name, <task field>: value} to
    # override fields (e.g. {preset: math500, path: data/math500.jsonl}); [] = the run's own task only.
    # The first is the main one (eval/summary.json); the others land in eval/tasks/<name>/.
    tasks: list[Any] = field(default_factory=list)
    models: dict[str, str] = field(default_factory=dict)  # other models swept against the base: name -> hub id or folder (e.g. a published RL release)
    perplexity: bool = True  # score kept responses under the base and their own model (paper Fig. 6): a forward pass each
    keep_samples: int = 16  # completions kept per (model, problem), at most n, beside the records (for perplexity); 0 = none


@dataclass
class DeepSpeedConfig:
    preset: str = "none"  # name of the conf/deepspeed preset in use ("none" = plain accelerate)
    config: dict[str, Any] = field(default_factory=dict)  # DeepSpeed JSON config ("auto" values filled in)


@dataclass
class LoggerConfig:
    wandb: bool = True  # log to Weights & Biases (WANDB_MODE=offline works without network)
    project: str = "rlvr"  # wandb project
    entity: Optional[str] = None  # wandb entity (team or user); None = your default
    mode: Optional[str] = None  # wandb mode: online, offline, disabled; None = WANDB_MODE or offline
    log_every: int = 1  # steps between training-metric logs


@dataclass
class TrainerConfig:
    total_steps: int = 200  # RL steps (one rollout batch each)
    prompts_per_step: int = 16  # prompts per rollout batch, all processes together (paper: 128)
    mini_batch_size: int = 0  # samples per optimizer step, all processes; 0 = whole rollout batch
    micro_batch_size: int = 64  # samples per forward/backward on one process: memory against speed
    # tokens per forward/backward on one process instead (verl: ppo_max_token_len_per_gpu with use_dynamic_bsz):
    # samples sorted by length and packed while rows x (longest prompt + longest response) fits, so short
    # responses are not padded to the longest one; bounds activation memory by tokens. 0 = micro_batch_size samples
    max_tokens_per_micro_batch: int = 0
    lr: float = 2e-4  # actor learning rate
    lr_scheduler: str = "constant_with_warmup"  # transformers scheduler name
    warmup_steps: int = 5  # optimizer steps of linear warm-up
    weight_decay: float = 0.0  # AdamW weight decay
    max_grad_norm: float = 1.0  # gradient clipping (0 = off)
    save_every: int = 100  # steps between checkpoints (the last step is always saved); each one is swept at the end
    # checkpoints that keep their train_state (optimizer, RNG: several times the weights' size); older ones
    # keep only the HF weights that evaluation reads. Resume needs the newest. 0 = keep every one
    keep_train_states: int = 0
    gradient_checkpointing: bool = False  # recompute activations in backward: much less memory for long responses, slower steps
    threads: int = 1  # torch CPU threads per process; >1 slows down under load on small CPUs
    # seconds a collective (all-reduce, barrier, broadcast) may wait for the other processes before the job
    # stops, saying which rank did not answer: short ends a hung or stopped job sooner, but must exceed the
    # longest time one rank works alone (rank 0 building the built-in base, saving a big checkpoint).
    # 1800 = torch's own default for NCCL and gloo (DeepSpeed's is 600)
    collective_timeout_s: float = 1800.0
    mixed_precision: str = "no"  # "no", "bf16" or "fp16" (accelerate / DeepSpeed autocast on GPUs)


@dataclass
class RunConfig:
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    seed: int = 0  # seeds model init, sampling and data order
    resume: str = "false"  # "true": continue from run_dir's latest checkpoint; "auto": if it has one, else start
    run_dir: str = "runs/${now:%Y-%m-%d_%H-%M-%S}"  # where checkpoints, metrics and eval land


def register_configs() -> None:
    ConfigStore.instance().store(name="run_schema", node=RunConfig)


@dataclass(frozen=True)
class BatchPlan:
    """Batch sizes derived once from the config and the number of processes."""

    world_size: int
    samples_per_step: int  # all processes
    prompts_per_process: int
    samples_per_process: int
    mini_batches: int  # optimizer steps per epoch over one rollout batch
    samples_per_mini_batch_per_process: int
    grad_accum: int  # micro-batches per optimizer step on one process (fixed micro-batches)
    tokens_per_micro_batch: int = 0  # token budget of a micro-batch (trainer.max_tokens_per_micro_batch); 0 = fixed ones


def check(cfg: RunConfig, world_size: int) -> BatchPlan:
    """Cross-field checks; returns the derived batch plan. Raises ConfigError saying how to fix."""
    algo, trainer, ev = cfg.algorithm, cfg.trainer, cfg.eval
    for registry, name, key in (
        (ESTIMATORS, algo.advantage, "algorithm.advantage"),
        (POLICY_LOSSES, algo.policy_loss, "algorithm.policy_loss"),
        (AGGREGATIONS, algo.loss_agg, "algorithm.loss_agg"),
        (KL_ESTIMATORS, algo.kl_estimator, "algorithm.kl_estimator"),
    ):
        if name not in registry:
            raise ConfigError(f"{key}={name!r} is unknown; choose one of: {', '.join(registry.names())}")
    from train.rewards import WeightedRewards  # late: rewards import the task modules

    try:
        WeightedRewards.of_task(cfg.task)
    except (KeyError, ValueError) as err:
        raise ConfigError(f"task.reward={cfg.task.reward!r}, task.rewards={dict(cfg.task.rewards)}: {err.args[0]}") from err
    if algo.advantage == "gae" and not algo.critic.enabled:
        raise ConfigError("algorithm.advantage=gae needs a critic: set algorithm.critic.enabled=true (or use algorithm=ppo)")
    if algo.advantage == "remax" and not algo.greedy_baseline:
        raise ConfigError("algorithm.advantage=remax needs greedy baselines: set algorithm.greedy_baseline=true (or use algorithm=remax)")
    if algo.advantage == "grpo_passk" and algo.samples_per_prompt < 2:
        raise ConfigError("algorithm.advantage=grpo_passk pays each group's best sample against its runner-up: "
                          f"set algorithm.samples_per_prompt >= 2 (got {algo.samples_per_prompt})")
    _check_rollout_correction(algo.rollout_correction)
    if algo.reward_kl_estimator not in KL_ESTIMATORS:
        raise ConfigError(f"algorithm.reward_kl_estimator={algo.reward_kl_estimator!r} is unknown; choose one of: {', '.join(KL_ESTIMATORS.names())}")
    _check_ranges(cfg)
    if algo.dynamic_sampling and algo.max_sampling_rounds < 1:
        raise ConfigError(f"algorithm.max_sampling_rounds={algo.max_sampling_rounds} must be >= 1")
    if not 0 <= algo.overlong_buffer <= cfg.rollout.max_new_tokens:
        raise ConfigError(f"algorithm.overlong_buffer={algo.overlong_buffer} must be between 0 and rollout.max_new_tokens={cfg.rollout.max_new_tokens}")
    if algo.clip_c is not None and algo.clip_c <= 1.0:
        raise ConfigError(f"algorithm.clip_c={algo.clip_c} must be > 1 (dual-clip bound), or null to turn it off")
    if trainer.prompts_per_step % world_size:
        raise ConfigError(
            f"trainer.prompts_per_step={trainer.prompts_per_step} does not divide over {world_size} processes; "
            f"use a multiple of {world_size}"
        )
    samples = trainer.prompts_per_step * algo.samples_per_prompt
    mini = trainer.mini_batch_size or samples
    if samples % mini:
        raise ConfigError(
            f"trainer.mini_batch_size={mini} must divide the rollout batch "
            f"(prompts_per_step x samples_per_prompt = {samples}); try {samples} or a divisor of it"
        )
    if mini % world_size:
        raise ConfigError(f"trainer.mini_batch_size={mini} must be a multiple of the {world_size} processes")
    mini_local = mini // world_size
    if mini_local % trainer.micro_batch_size:
        raise ConfigError(
            f"trainer.micro_batch_size={trainer.micro_batch_size} must divide the per-process mini-batch "
            f"({mini} samples / {world_size} processes = {mini_local}); try a divisor of {mini_local}"
        )
    _check_token_budget(cfg)
    if ev.k_max > ev.n:
        raise ConfigError(f"eval.k_max={ev.k_max} is larger than eval.n={ev.n} samples per problem; raise eval.n or lower eval.k_max")
    _check_engine(cfg.rollout)
    if trainer.mixed_precision not in ("no", "bf16", "fp16"):
        raise ConfigError(f"trainer.mixed_precision={trainer.mixed_precision!r}; choose one of: no, bf16, fp16")
    if str(cfg.resume).lower() not in ("false", "true", "auto"):
        raise ConfigError(f"resume={cfg.resume!r}; choose one of: false, true, auto")
    if cfg.task.overlong_prompts not in OVERLONG_POLICIES:
        raise ConfigError(f"task.overlong_prompts={cfg.task.overlong_prompts!r}; choose one of: {', '.join(OVERLONG_POLICIES)}")
    _check_lora(cfg.model.lora)
    from train.trainers import TRAINERS  # late: the training loops import this module

    if algo.trainer not in TRAINERS:
        raise ConfigError(f"algorithm.trainer={algo.trainer!r} is unknown; choose one of: {', '.join(TRAINERS.names())}")
    TRAINERS[algo.trainer].check(cfg)
    return BatchPlan(
        world_size=world_size,
        samples_per_step=samples,
        prompts_per_process=trainer.prompts_per_step // world_size,
        samples_per_process=samples // world_size,
        mini_batches=samples // mini,
        samples_per_mini_batch_per_process=mini_local,
        grad_accum=mini_local // trainer.micro_batch_size,
        tokens_per_micro_batch=trainer.max_tokens_per_micro_batch,
    )


OVERLONG_POLICIES = ("drop", "error")


def _check_token_budget(cfg: RunConfig) -> None:
    budget, longest = cfg.trainer.max_tokens_per_micro_batch, cfg.rollout.max_new_tokens
    key = "trainer.max_tokens_per_micro_batch"
    if 0 < budget < longest + 1:
        raise ConfigError(
            f"{key}={budget} cannot hold one full response (rollout.max_new_tokens={longest}) and a prompt token: set "
            f"{key} >= {longest + 1}, better a few times (longest prompt + {longest}) so that long samples share a "
            f"micro-batch, or {key}=0 for fixed micro-batches"
        )
    if budget and cfg.algorithm.trainer != "rl":
        raise ConfigError(f"{key} applies to the RL update only; algorithm.trainer={cfg.algorithm.trainer} uses "
                          f"trainer.micro_batch_size: set {key}=0")


def _check_rollout_correction(corr: RolloutCorrectionConfig) -> None:
    """Modes and thresholds parsed as the loop will parse them, on a one-token batch."""
    key = "algorithm.rollout_correction"
    if corr.bypass_mode and (corr.rollout_is is not None or corr.rollout_rs is not None):
        raise ConfigError(f"{key}.bypass_mode=true takes the sampler's log-probs as pi_old, so the PPO ratio itself "
                          f"corrects the mismatch: set {key}.rollout_is and rollout_rs to null, or bypass_mode=false")
    if corr.rollout_is is None and corr.rollout_rs is None:
        return
    try:
        rollout_correction(torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1, 1), rollout_is=corr.rollout_is,
                           rollout_is_threshold=corr.rollout_is_threshold,
                           rollout_is_batch_normalize=corr.rollout_is_batch_normalize,
                           rollout_rs=corr.rollout_rs, rollout_rs_threshold=corr.rollout_rs_threshold)
    except (KeyError, ValueError, TypeError) as err:
        raise ConfigError(f"{key}: {err.args[0]}") from err


def _check_ranges(cfg: RunConfig) -> None:
    """Each numeric field on its own: in range and finite (NaN fails every comparison, so it fails here)."""
    t, algo, r, ev = cfg.trainer, cfg.algorithm, cfg.rollout, cfg.eval
    finite = math.isfinite
    rules: list[tuple[str, Any, bool, str]] = [
        ("trainer.total_steps", t.total_steps, t.total_steps >= 1, ">= 1 (RL steps to run)"),
        ("trainer.prompts_per_step", t.prompts_per_step, t.prompts_per_step >= 1, ">= 1"),
        ("trainer.mini_batch_size", t.mini_batch_size, t.mini_batch_size >= 0, ">= 0 (0 = the whole rollout batch)"),
        ("trainer.micro_batch_size", t.micro_batch_size, t.micro_batch_size >= 1, ">= 1 (samples per forward pass)"),
        ("trainer.max_tokens_per_micro_batch", t.max_tokens_per_micro_batch, t.max_tokens_per_micro_batch >= 0,
         ">= 0 (0 = trainer.micro_batch_size samples per micro-batch)"),
        ("trainer.lr", t.lr, 0 < t.lr and finite(t.lr), "> 0 (e.g. 1e-6 for a 7B model, 2e-4 for the built-in one)"),
        ("trainer.warmup_steps", t.warmup_steps, t.warmup_steps >= 0, ">= 0 (0 = no warm-up)"),
        ("trainer.weight_decay", t.weight_decay, 0 <= t.weight_decay and finite(t.weight_decay), ">= 0"),
        ("trainer.max_grad_norm", t.max_grad_norm, 0 <= t.max_grad_norm and finite(t.max_grad_norm), ">= 0 (0 = no clipping)"),
        ("trainer.save_every", t.save_every, t.save_every >= 1, ">= 1 (the last step is saved in any case)"),
        ("trainer.keep_train_states", t.keep_train_states, t.keep_train_states >= 0, ">= 0 (0 keeps every one)"),
        ("trainer.threads", t.threads, t.threads >= 1, ">= 1"),
        ("trainer.collective_timeout_s", t.collective_timeout_s, 0 < t.collective_timeout_s and finite(t.collective_timeout_s),
         "> 0 seconds (default 1800)"),
        ("algorithm.samples_per_prompt", algo.samples_per_prompt, algo.samples_per_prompt >= 1, ">= 1"),
        ("algorithm.ppo_epochs", algo.ppo_epochs, algo.ppo_epochs >= 1, ">= 1"),
        ("algorithm.clip_low", algo.clip_low, 0 <= algo.clip_low <= 1, "in [0, 1] (1: no lower bound, as CISPO uses it)"),
        ("algorithm.clip_high", algo.clip_high, 0 <= algo.clip_high and finite(algo.clip_high), ">= 0"),
        ("algorithm.clip_cov_ratio", algo.clip_cov_ratio, 0 < algo.clip_cov_ratio <= 1, "in (0, 1] (share of tokens cut)"),
        ("algorithm.clip_cov_ub", algo.clip_cov_ub, finite(algo.clip_cov_ub) and algo.clip_cov_ub > algo.clip_cov_lb,
         f"> algorithm.clip_cov_lb={algo.clip_cov_lb}"),
        ("algorithm.kl_cov_ratio", algo.kl_cov_ratio, 0 < algo.kl_cov_ratio <= 1, "in (0, 1] (share of tokens penalised)"),
        ("algorithm.ppo_kl_coef", algo.ppo_kl_coef, 0 <= algo.ppo_kl_coef and finite(algo.ppo_kl_coef), ">= 0"),
        ("algorithm.tau_pos", algo.tau_pos, 0 < algo.tau_pos and finite(algo.tau_pos), "> 0"),
        ("algorithm.tau_neg", algo.tau_neg, 0 < algo.tau_neg and finite(algo.tau_neg), "> 0"),
        ("algorithm.kl_coef", algo.kl_coef, 0 <= algo.kl_coef and finite(algo.kl_coef), ">= 0 (0 = no KL term)"),
        ("algorithm.reward_kl_coef", algo.reward_kl_coef, 0 <= algo.reward_kl_coef and finite(algo.reward_kl_coef), ">= 0"),
        ("algorithm.entropy_coef", algo.entropy_coef, 0 <= algo.entropy_coef and finite(algo.entropy_coef), ">= 0 (0 = no bonus)"),
        ("algorithm.gamma", algo.gamma, 0 <= algo.gamma <= 1, "in [0, 1]"),
        ("algorithm.lam", algo.lam, 0 <= algo.lam <= 1, "in [0, 1]"),
        ("algorithm.critic.lr", algo.critic.lr, 0 < algo.critic.lr and finite(algo.critic.lr), "> 0"),
        ("rollout.temperature", r.temperature, 0 < r.temperature and finite(r.temperature), "> 0 (paper: 1.0 for training)"),
        ("rollout.top_p", r.top_p, 0 < r.top_p <= 1, "in (0, 1] (1 = off)"),
        ("rollout.top_k", r.top_k, r.top_k >= 0, ">= 0 (0 = off)"),
        ("rollout.max_new_tokens", r.max_new_tokens, r.max_new_tokens >= 1, ">= 1"),
        ("rollout.batch_size", r.batch_size, r.batch_size >= 1, ">= 1"),
        ("eval.n", ev.n, ev.n >= 1, ">= 1 (samples per problem)"),
        ("eval.k_max", ev.k_max, ev.k_max >= 0, ">= 0 (0 = eval.n)"),
        ("eval.temperature", ev.temperature, 0 < ev.temperature and finite(ev.temperature), "> 0 (paper: 0.6)"),
        ("eval.top_p", ev.top_p, 0 < ev.top_p <= 1, "in (0, 1] (paper: 0.95)"),
        ("eval.max_new_tokens", ev.max_new_tokens, ev.max_new_tokens >= 1, ">= 1"),
        ("eval.num_problems", ev.num_problems, ev.num_problems >= 0, ">= 0 (0 = the whole test split)"),
        ("eval.batch_size", ev.batch_size, ev.batch_size >= 1, ">= 1 (sequences per generate call)"),
        ("eval.ci_level", ev.ci_level, 0 < ev.ci_level < 1, "in (0, 1), e.g. 0.95"),
        ("eval.bootstrap_resamples", ev.bootstrap_resamples, ev.bootstrap_resamples >= 100,
         ">= 100 (fewer give unstable interval ends; 2000 is the default)"),
        ("eval.keep_samples", ev.keep_samples, ev.keep_samples >= 0, ">= 0 (0 keeps no completions)"),
        ("logger.log_every", cfg.logger.log_every, cfg.logger.log_every >= 1, ">= 1"),
        ("task.max_prompt_tokens", cfg.task.max_prompt_tokens, cfg.task.max_prompt_tokens is None or cfg.task.max_prompt_tokens >= 1,
         ">= 1, or null for the model's context minus the response budget"),
    ]
    for key, value, ok, need in rules:
        if not ok:
            raise ConfigError(f"{key}={value!r} must be {need}; set {key}=<value> on the command line or in the preset")


def _check_lora(lora: LoRAConfig) -> None:
    if lora.rank < 0:
        raise ConfigError(f"model.lora.rank={lora.rank} must be >= 0 (0 = full fine-tuning)")
    if lora.rank and (lora.alpha <= 0 or not 0 <= lora.dropout < 1 or not lora.target_modules):
        raise ConfigError(
            f"model.lora: alpha={lora.alpha} must be > 0, dropout={lora.dropout} in [0, 1), and target_modules="
            f"{list(lora.target_modules)} must name modules (or be [all-linear])"
        )


ENGINES = ("hf", "vllm")


def _check_engine(rollout: RolloutConfig) -> None:
    if rollout.engine not in ENGINES:
        raise ConfigError(f"rollout.engine={rollout.engine!r} is unknown; choose one of: {', '.join(ENGINES)}")
    if rollout.engine != "vllm":
        return
    if not 0 < rollout.vllm.gpu_memory_utilization <= 1:
        raise ConfigError(f"rollout.vllm.gpu_memory_utilization={rollout.vllm.gpu_memory_utilization} must be in (0, 1]")
    if rollout.vllm.max_num_batched_tokens < rollout.vllm.max_num_seqs:  # vLLM refuses it at start-up
        raise ConfigError(
            f"rollout.vllm.max_num_batched_tokens={rollout.vllm.max_num_batched_tokens} is below rollout.vllm.max_num_seqs="
            f"{rollout.vllm.max_num_seqs}; raise it or lower max_num_seqs"
        )
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise ConfigError(
            "rollout=vllm needs vLLM in this environment: pip install -e '.[vllm]' on GPUs "
            "(README: vLLM rollouts), or use rollout=hf, which runs anywhere"
        )
    check_vllm(rollout.vllm)


def check_vllm(vllm: VLLMConfig) -> None:
    """What the vllm engine can do here: sleep only on a platform where vLLM can, no tensor parallelism yet.
    Run at start-up and by every vLLM engine (``rlvr-eval`` builds engines without the start-up checks)."""
    if vllm.tensor_parallel_size != 1:
        raise ConfigError(
            f"rollout.vllm.tensor_parallel_size={vllm.tensor_parallel_size}: tensor parallelism inside the engine is not "
            "built yet. Each training process holds its own engine and samples only its own prompts; an engine spread "
            "over N processes would need their prompts gathered and each process's share handed back (TRL's "
            "vllm_tensor_parallel_size), and the pass@k sweep, which deals its pieces out one per process, would too. "
            "Set rollout.vllm.tensor_parallel_size=1"
        )
    if vllm.sleep_mode not in (0, 1, 2):
        raise ConfigError(
            f"rollout.vllm.sleep_mode={vllm.sleep_mode} must be 0 (off), 1 (weights kept in CPU memory while asleep) "
            "or 2 (weights dropped, pushed again on waking)"
        )
    if vllm.sleep_mode:
        from vllm.platforms import current_platform

        if not current_platform.is_sleep_mode_available():
            raise ConfigError(
                f"rollout.vllm.sleep_mode={vllm.sleep_mode}: vLLM cannot sleep on this machine's platform, "
                f"{type(current_platform).__name__} ({current_platform.device_name}): its sleep mode frees GPU memory "
                "and runs on GPU platforms only. Set rollout.vllm.sleep_mode=0"
            )
