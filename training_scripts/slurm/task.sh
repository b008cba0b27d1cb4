#!/usr/bin/env bash
# One srun task is one training process on one GPU: SLURM's task variables become those torch.distributed reads
# (MASTER_ADDR and MASTER_PORT come from launch.sbatch). Used by training_scripts/common.sh under LAUNCHER=srun.
set -euo pipefail
export RANK=$SLURM_PROCID WORLD_SIZE=$SLURM_NTASKS LOCAL_RANK=$SLURM_LOCALID NODE_RANK=$SLURM_NODEID
if [ "$LOCAL_RANK" = 0 ]; then
  echo "node $NODE_RANK ($(hostname)): ranks from $RANK, world size $WORLD_SIZE, rendezvous $MASTER_ADDR:$MASTER_PORT" >&2
fi
exec "$@"
