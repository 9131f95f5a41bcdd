#!/usr/bin/env bash
# One GPU session of the device tool, in one call (bench/README.md, "A GPU session"): train a decoder with skips
# (issue 29) for TRAIN_SECONDS, export it, then the GPU benchmarks. Everything lands in $OUT (8 files at most).
#   run(command="bash bench/device/session.sh", carry=[".carry"], timeout_s=600)
# A dry run on a CPU machine: DEVICE=cpu TRAIN_SECONDS=60 BENCH=0 OUT=/tmp/out bash bench/device/session.sh
# RECIPE=deep (default) deepens the shipped decoder to relu4_1; RECIPE=skips trains it further as it is.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:?set OUT to the folder that comes back}
DEVICE=${DEVICE:-cuda}
TRAIN_SECONDS=${TRAIN_SECONDS:-270}
BENCH=${BENCH:-1}
RECIPE=${RECIPE:-deep}
CARRY=$PWD/.carry
RUN=/tmp/adain-run
export PYTHONUNBUFFERED=1 ADAIN_HOME=/tmp/adain-home ADAIN_BENCH_DATA=$CARRY/data
exec > >(tee "$OUT/log.txt") 2>&1

if [ -d "$CARRY/wheels" ] && ! python3 -c "import fastapi, sqlalchemy, platformdirs" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$CARRY"/wheels/*.whl \
        || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name(0))"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv 2>/dev/null

# Training (issue 29): the shipped decoder (with weak skips since December 7: AdaIN also at relu1_1 and relu2_1,
# fed at strength 0.3 in style steps) on its own recipe, run H2's (style weight 1.25, grid loss, colour and
# texture terms, every 4th step a reconstruction step; docs/training.md, "Decoders with skips"), at the
# evaluation's scale (192 px crops of 448 px images); SIGTERM at the deadline saves a checkpoint. RECIPE=deep
# first deepens it to relu4_1 (its relu3_1 a skip fed whole, the content loss at relu3_1 and relu4_1; run H12 of
# the sixth session), where a painting's strokes are in reach of AdaIN; RECIPE=skips trains it as it is (run H2).
# The checkpoint comes back with the export, so a later session resumes it (adain train --output-dir RUN --resume).
# RECIPE=deep goes on from the relu4_1 CPU run committed as weights/candidates/H13.safetensors (docs/training.md,
# "Runs that outlive a session") when it is there; INIT=FILE starts from another decoder file.
init=weights/vgg16-hed-decoder.safetensors
case "$RECIPE" in
    deep) structure=(--layer relu4_1 --skips relu1_1,relu2_1,relu3_1 --content-layers relu3_1,relu4_1)
          [ -f weights/candidates/H13.safetensors ] && init=weights/candidates/H13.safetensors ;;
    skips) structure=(--skips relu1_1,relu2_1 --skip-strength 0.3) ;;
    *) echo "RECIPE must be deep or skips, not $RECIPE"; exit 2 ;;
esac
init=${INIT:-$init}
echo "training from $init"
rm -rf "$RUN"
timeout -s TERM "$TRAIN_SECONDS" python3 -m adain.train --content-dir "$CARRY/data/content" \
    --style-dir "$CARRY/data/style" "$CARRY/data/style_vivid" --encoder "$CARRY/encoder.safetensors" --arch vgg16 \
    --init-decoder "$init" "${structure[@]}" --loss paper \
    --recon-steps 0 --recon-every 4 --warmup 50 --lr 1.5e-4 --lr-decay 0 --style-weight 1.25 --grid-weight 1000 \
    --colour-weight 20 --texture-weight 200 --output-dir "$RUN" --device "$DEVICE" \
    --steps 200000 --batch-size 8 --resize 448 --crop 192 --workers "$(( $(nproc) - 2 ))" \
    --checkpoint-every 1000 --keep 1 --sample-every 2000 --eval-every 2000 --log-every 100 --no-progress
echo "train exit $? (124: stopped at the deadline by SIGTERM, checkpoint saved)"
python3 -m adain.train export "$RUN" -o "$OUT/decoder.safetensors" --dtype fp16 --device "$DEVICE" \
    --encoder "$CARRY/encoder.safetensors" && cp "$RUN/metrics.jsonl" "$OUT/"
last_ckpt=$(ls "$RUN"/ckpt-*.pt 2>/dev/null | tail -n 1)
[ -n "$last_ckpt" ] && cp "$last_ckpt" "$OUT/"
last_sample=$(ls "$RUN"/sample-*.png 2>/dev/null | tail -n 1)
[ -n "$last_sample" ] && cp "$last_sample" "$OUT/sample.png"

[ "$BENCH" = 1 ] || exit 0
weights=(--encoder "$CARRY/encoder.safetensors" --decoder weights/vgg16-hed-decoder.safetensors)
timeout 170 python3 bench/bench_model.py --sections gpu --no-compile "${weights[@]}" --json "$OUT/model-gpu.json"
echo "bench_model exit $?"
timeout 110 python3 bench/bench_service.py --device cuda --precision bf16 --batch-size 32 --cell-seconds 8 \
    --modes stored upload "${weights[@]}" --json "$OUT/service-gpu.json"
echo "bench_service exit $?"
