#!/usr/bin/env bash
# The 3-fold cross-validations of issue 14 (pretrained backbones), one recipe per call:
#   scripts/cv_recipes.sh NAME [extra fit flags...]
# e.g. scripts/cv_recipes.sh P1-lite0-imagenet
#      scripts/cv_recipes.sh P2-lite0-random --init none
# It runs the code of commit ${CV_COMMIT:-HEAD} (scripts/frozen_run.sh), so the tree can be edited meanwhile.
# Runs go to ${CV_OUT:-/work/exp}/NAME/fold{0,1,2} (with folds.md); pool them with
#   python scripts/pooled_cv.py OUT/NAME/fold0 OUT/NAME/fold1 OUT/NAME/fold2 --which last
# On 2 CPU cores one recipe (12 epochs at 256 px) takes about 35 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1; shift
OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} exec scripts/frozen_run.sh "${CV_COMMIT:-HEAD}" fit \
  --data "nih:${NIH_SAMPLE:-../shared/data/nih-sample}" --method baseline --labels nih14 --input-size 256 \
  --batch-size 16 --workers 1 --device cpu --progress jsonl --folds 3 --lesions 100 --select last \
  --output "${CV_OUT:-/work/exp}" --name "$name" "$@"
