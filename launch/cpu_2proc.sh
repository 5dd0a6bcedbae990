#!/usr/bin/env bash
# rlvr-train on 2 CPU processes of this machine (gloo): plain DDP, or any DeepSpeed ZeRO preset.
#
#   launch/cpu_2proc.sh                                      # DDP (deepspeed=none), default config
#   launch/cpu_2proc.sh deepspeed=zero2 trainer.total_steps=20
#   launch/cpu_2proc.sh deepspeed=zero3 run_dir=runs/z3 resume=true
#   NUM_PROCESSES=4 launch/cpu_2proc.sh deepspeed=zero1      # more processes, same script
#
# Every argument is a Hydra override, passed to rlvr-train (python -m train.main) unchanged.
# Environment: NUM_PROCESSES (default 2), MAIN_PROCESS_PORT (default 0 = a free port).
#
# Why it looks like this (measured with accelerate 1.15, DeepSpeed 0.19):
# - `accelerate launch --cpu --num_processes 2` starts ONE process, so this uses --multi_gpu, which
#   is accelerate's torchrun path; train/distributed.py picks gloo itself when there is no GPU.
# - ACCELERATE_USE_CPU=true (what --cpu exports) makes accelerate silently drop the DeepSpeed
#   plugin and train plain DDP, so it is unset here (train/distributed.py unsets it too).
# - DS_ACCELERATOR=cpu names DeepSpeed's CPU backend instead of letting it probe for GPUs. The first
#   DeepSpeed run builds a small CPU comm op (about a minute, cached in ~/.cache/torch_extensions).
# - Every process must write to the same run_dir. The default run_dir is a timestamp each process
#   resolves for itself (rank 0's wins, but the others would leave stray folders), so when no
#   run_dir= is given, one is chosen here for all of them.
set -euo pipefail

num_processes="${NUM_PROCESSES:-2}"
port="${MAIN_PROCESS_PORT:-0}"

args=("$@")
has_run_dir=false
for arg in "${args[@]}"; do
  [[ "$arg" == run_dir=* ]] && has_run_dir=true
done
if ! $has_run_dir; then
  args+=("run_dir=runs/$(date +%Y-%m-%d_%H-%M-%S)")
fi

unset ACCELERATE_USE_CPU
export DS_ACCELERATOR="${DS_ACCELERATOR:-cpu}"

exec accelerate launch \
  --multi_gpu \
  --num_processes "$num_processes" \
  --num_machines 1 \
  --mixed_precision no \
  --dynamo_backend no \
  --main_process_port "$port" \
  -m train.main "${args[@]}"
