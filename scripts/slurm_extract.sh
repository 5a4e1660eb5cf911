#!/bin/bash
# Extract features for a large image collection as a SLURM job array, then join the parts.
#
#   sbatch scripts/slurm_extract.sh                        # 16 jobs, one GPU each
#   sbatch --dependency=afterok:JOBID --wrap "sapiens2 merge -o /data/feats.h5"
#
# Each array task writes part TASK of N beside OUT (OUT.parts/part-0000TASK-of-00016.h5).
# A task that fails or is preempted is simply resubmitted (`sbatch --array=7 …`): its part
# resumes where it stopped, and the other parts are untouched. `sapiens2 merge` refuses
# to join while a part is missing or incomplete, and says which.
#
# Every task must see the same images at the same paths (a shared filesystem), and the
# same weights: pass --checkpoint, or download once with `sapiens2 download` into a shared
# HF_HOME before submitting.

#SBATCH --job-name=sapiens2-extract
#SBATCH --array=0-15
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --time=12:00:00
#SBATCH --output=logs/extract-%A_%a.log

set -euo pipefail

IMAGES=${IMAGES:-/data/images}
OUT=${OUT:-/data/feats.h5}
N=${SLURM_ARRAY_TASK_COUNT:-16}

# The same command for every task apart from --shard; rerunning it resumes the part.
sapiens2 extract "$IMAGES" -o "$OUT" --arch 1b \
    --shard "${SLURM_ARRAY_TASK_ID}/${N}" \
    --workers "$((SLURM_CPUS_PER_TASK - 1))" --batch-size 8 --quiet

# One node with 8 GPUs per task instead: launch the same command under torchrun. Rank r of
# task i then writes part i*8+r of N*8, and `sapiens2 merge -o "$OUT"` joins them all:
#   torchrun --standalone --nproc-per-node 8 -m sapiens2_cli extract "$IMAGES" -o "$OUT" \
#       --arch 1b --shard "${SLURM_ARRAY_TASK_ID}/${N}" --quiet
