#!/bin/bash
# Multi-node training with torchrun: run this same command on every node (NODE_RANK = 0 .. NNODES-1),
# e.g. on 2 nodes of 8 GPUs with node 0 reachable as MASTER_ADDR:
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 RUN_DIR=/shared/runs/pretrain scripts/torchrun/train.sh experiment=pretrain ...
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=10.0.0.1 RUN_DIR=/shared/runs/pretrain scripts/torchrun/train.sh experiment=pretrain ...
# torchrun starts the processes, Lightning detects TorchElasticEnvironment and does not relaunch them.
# RUN_DIR must be one folder on a shared file system (every rank composes the config itself); running the
# same command again resumes from its newest checkpoint (ckpt_path=last_or_none: a fresh start when there is none).
set -euo pipefail

NNODES=${NNODES:-1}
NPROC_PER_NODE=${NPROC_PER_NODE:-8}
RUN_DIR=${RUN_DIR:?set RUN_DIR to a run folder on a shared file system}
TRAINER=${TRAINER:-ddp}  # ddp | fsdp | deepspeed (conf/trainer/); ddp_cpu for a CPU dry run

torchrun \
  --nnodes="${NNODES}" \
  --nproc-per-node="${NPROC_PER_NODE}" \
  --node-rank="${NODE_RANK:-0}" \
  --master-addr="${MASTER_ADDR:-127.0.0.1}" \
  --master-port="${MASTER_PORT:-29500}" \
  -m text2earth.cli.main train \
  "trainer=${TRAINER}" \
  "trainer.num_nodes=${NNODES}" \
  "trainer.devices=${NPROC_PER_NODE}" \
  "hydra.run.dir=${RUN_DIR}" \
  ckpt_path=last_or_none \
  "$@"
