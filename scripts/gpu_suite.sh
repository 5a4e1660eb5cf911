#!/usr/bin/env bash
# The GPU measurements docs/performance.md is waiting for (images/s, peak memory on a GPU), in one go.
#
#   scripts/gpu_suite.sh [OUT]          # default OUT: gpu_results/
#   IMAGES=/data/photos_1024x768 scripts/gpu_suite.sh     # real JPEGs instead of made ones
#
# Meant for one 80 GB GPU (H100), 16+ CPU cores, ~40 GB free disk (random-weight
# checkpoints in float32, as the hub ships them: 1b 5.8 GB, 1b-4k 6.4 GB, 5b 20.3 GB).
# No download is needed: throughput does not depend on the weights' values. Each step
# writes OUT/<name>.json (stdout of a --json command) and OUT/<name>.log (stderr, with
# the --profile table); a step that fails is reported and the next one runs. Steps can
# be picked by name: scripts/gpu_suite.sh OUT extract_1b upstream_1b
set -uo pipefail

OUT=${1:-gpu_results}
shift || true
ONLY=("$@")
HERE=$(cd "$(dirname "$0")/.." && pwd)
IMAGES=${IMAGES:-$OUT/jpeg_1024x768}
IMAGES_4K=${IMAGES_4K:-$OUT/jpeg_4096x3072}
CKPT=$OUT/checkpoints
mkdir -p "$OUT" "$CKPT"
export PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}"

wanted() { [ ${#ONLY[@]} -eq 0 ] || [[ " ${ONLY[*]} " == *" $1 "* ]]; }
needs() { for name in "$@"; do wanted "$name" && return 0; done; return 1; }

step() {  # step NAME COMMAND...: stdout -> NAME.json (NAME.txt with EXT=txt), stderr -> NAME.log
    local name=$1; shift
    wanted "$name" || return 0
    echo "== $name: $*" | tee -a "$OUT/commands.txt" >&2
    if ! "$@" >"$OUT/$name.${EXT:-json}" 2>"$OUT/$name.log"; then
        echo "!! $name failed (see $OUT/$name.log)" >&2
    fi
}

random_checkpoint() {  # random_checkpoint ARCH: float32 random weights, written once
    local path=$CKPT/random_$1.safetensors
    [ -f "$path" ] || python -c "
import sys; from safetensors.torch import save_file; from sapiens2_cli.model import build_backbone
save_file(build_backbone(sys.argv[1]).state_dict(), sys.argv[2])" "$1" "$path" >&2
    echo "$path"
}

# What the figures depend on besides the code.
{ nvidia-smi; python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  lscpu | head -20; git -C "$HERE" rev-parse HEAD; date -u; } >"$OUT/environment.txt" 2>&1

[ -d "$IMAGES" ] || python "$HERE/scripts/make_bench_images.py" "$IMAGES" --count 1024 --size 1024x768
[ -d "$IMAGES_4K" ] || ! wanted extract_1b-4k \
    || python "$HERE/scripts/make_bench_images.py" "$IMAGES_4K" --count 48 --size 4096x3072

# 0. The GPU-only tests: streams, bf16 weights, CUDA graphs, fused attention for every arch.
EXT=txt step pytest_gpu python -m pytest -m gpu -q -p no:cacheprovider "$HERE/tests/engine/test_forward.py"

# 1. The bare model per arch: bf16 weights, largest batch that fits; MFU and peak memory.
for arch in 0.4b 1b 5b 1b-4k; do
    step "bench_$arch" sapiens2 bench --arch "$arch" --precision bf16 --batch-size auto --json
done
step bench_1b_compile sapiens2 bench --arch 1b --precision bf16 --batch-size auto --compile --json

# 2. The target: 1b at 1024x768, JPEG folder -> HDF5 float16, end to end (>= 60 images/s).
C1B=$(if needs extract_1b extract_1b_b32 extract_1b_compile extract_1b_graphs \
    extract_1b_fp32w upstream_1b; then random_checkpoint 1b; fi)
X=(--precision bf16 --profile --json --overwrite)
step extract_1b sapiens2 extract "$IMAGES" -o "$OUT/f_1b.h5" -c "$C1B" --batch-size auto "${X[@]}"
step extract_1b_b32 sapiens2 extract "$IMAGES" -o "$OUT/f_1b.h5" -c "$C1B" --batch-size 32 "${X[@]}"
step extract_1b_compile sapiens2 extract "$IMAGES" -o "$OUT/f_1b.h5" -c "$C1B" --batch-size 32 \
    --compile "${X[@]}"
step extract_1b_graphs sapiens2 extract "$IMAGES" -o "$OUT/f_1b.h5" -c "$C1B" --batch-size 32 \
    --compile --compile-mode reduce-overhead "${X[@]}"
step extract_1b_fp32w sapiens2 extract "$IMAGES" -o "$OUT/f_1b.h5" -c "$C1B" --batch-size 32 \
    --weights-dtype fp32 "${X[@]}"

# 3. Against the quick-start-style loop (PIL on the main thread, batch 1, float32), same run.
step upstream_1b python "$HERE/scripts/bench_upstream_style.py" "$IMAGES" --checkpoint "$C1B" \
    --limit 256 --batch-size 32 --precision bf16 --weights-dtype bf16 --json

# 4. Pipeline against the bare model at the same batch size (autocast over float32 weights).
step pipeline_1b sapiens2 bench --arch 1b --precision bf16 --batch-size 32 \
    --pipeline "$IMAGES" --profile --json

# 5. The large ones on one 80 GB GPU, batch size found by halving.
C5B=$(if wanted extract_5b; then random_checkpoint 5b; fi)
step extract_5b sapiens2 extract "$IMAGES" -o "$OUT/f_5b.h5" -c "$C5B" --batch-size auto "${X[@]}"
C4K=$(if wanted extract_1b-4k; then random_checkpoint 1b-4k; fi)
step extract_1b-4k sapiens2 extract "$IMAGES_4K" -o "$OUT/f_4k.h5" -c "$C4K" --size 4096x3072 \
    --batch-size auto "${X[@]}"

# 6. bf16 weights against float32 weights on real photos with the real checkpoints, where
#    the hub is reachable (or the checkpoints cached): the 0.999 cosine tolerance.
for arch in 0.4b 1b 5b; do
    step "weights_bf16_$arch" python "$HERE/scripts/check_weights_dtype.py" "$HERE/tests/data" \
        --arch "$arch" --device cuda --json
done

echo "results in $OUT (commands in $OUT/commands.txt)" >&2
