#!/usr/bin/env bash
# rlvr-train with DeepSpeed on the GPUs of one node, or of several nodes, via `accelerate launch`.
#
#   launch/gpu_deepspeed.sh zero2 trainer.mixed_precision=bf16          # every GPU of this node
#   GPUS=4 launch/gpu_deepspeed.sh zero3 model.name_or_path=Qwen/Qwen2.5-0.5B trainer.mixed_precision=bf16
#
#   # 2 nodes x 8 GPUs: run this on every node, same arguments, its own NODE_RANK. run_dir must be
#   # given and lie on a filesystem all nodes share (every rank writes its ZeRO shards there).
#   MASTER_ADDR=10.0.0.1 NUM_NODES=2 NODE_RANK=0 launch/gpu_deepspeed.sh zero3 run_dir=/shared/runs/x ...
#   MASTER_ADDR=10.0.0.1 NUM_NODES=2 NODE_RANK=1 launch/gpu_deepspeed.sh zero3 run_dir=/shared/runs/x ...
#
# The first argument names the conf/deepspeed preset (zero0, zero1, zero2, zero3, zero3_offload);
# the rest are Hydra overrides passed to rlvr-train (python -m train.main) unchanged.
# Environment:
#   GPUS         GPUs per node (default: all that nvidia-smi lists)
#   NUM_NODES    nodes in the job (default 1)
#   NODE_RANK    this node's rank, 0 .. NUM_NODES-1 (default 0)
#   MASTER_ADDR  address of node 0 (default 127.0.0.1; required when NUM_NODES > 1)
#   MASTER_PORT  port on node 0 (default 29500)
#
# The DeepSpeed config is the Hydra preset (batch sizes and clipping filled in from trainer.* by
# train/distributed.py), handed to accelerate as a plugin. So this launches with --multi_gpu
# (torchrun on each node) and none of accelerate's --use_deepspeed / --zero_stage flags, which
# would be a second, conflicting source of the same settings. Precision is trainer.mixed_precision
# (the presets' bf16/fp16 "auto" follow it); --mixed_precision here only sets accelerate's default.
set -euo pipefail

if [[ $# -lt 1 || "$1" == -* || "$1" == *=* ]]; then
  echo "usage: [GPUS=N NUM_NODES=N NODE_RANK=i MASTER_ADDR=host] $0 <zero0|zero1|zero2|zero3|zero3_offload> [hydra overrides...]" >&2
  exit 2
fi
preset="$1"
shift

gpus="${GPUS:-$( (nvidia-smi -L 2>/dev/null || true) | wc -l)}"
num_nodes="${NUM_NODES:-1}"
node_rank="${NODE_RANK:-0}"
master_addr="${MASTER_ADDR:-127.0.0.1}"
master_port="${MASTER_PORT:-29500}"
if [[ "$gpus" -lt 1 ]]; then
  echo "no GPUs found (set GPUS=N, or use launch/cpu_2proc.sh on CPUs)" >&2
  exit 2
fi

args=("deepspeed=$preset" "$@")
has_run_dir=false
for arg in "$@"; do
  [[ "$arg" == run_dir=* ]] && has_run_dir=true
done
if ! $has_run_dir; then
  if [[ "$num_nodes" -gt 1 ]]; then
    echo "with NUM_NODES > 1 pass run_dir=<a folder all nodes share>; each node's clock would name another" >&2
    exit 2
  fi
  args+=("run_dir=runs/$(date +%Y-%m-%d_%H-%M-%S)")  # one name for all processes (see cpu_2proc.sh)
fi

exec accelerate launch \
  --multi_gpu \
  --num_processes "$((gpus * num_nodes))" \
  --num_machines "$num_nodes" \
  --machine_rank "$node_rank" \
  --main_process_ip "$master_addr" \
  --main_process_port "$master_port" \
  --mixed_precision no \
  --dynamo_backend no \
  -m train.main "${args[@]}"
