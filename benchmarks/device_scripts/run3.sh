# Device check, part 3 of 3: unpack p3 (dagster, c2pa, GX, ...); the demo project on the CUDA
# device (TorchDevice auto), verify its output, then convert_speed on CUDA.
set -uo pipefail
SITE=${SITE:-/tmp}; DEV=${DEV:-cuda}; OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
t0=$(date +%s)
[ -d "$SITE/site/av" ] && [ -d "$SITE/site/pydantic" ] || { echo "part 1 or 2 missing: the machine was not warm"; exit 3; }
tar xJf .gpu/p3/site.tar.xz -C "$SITE" && echo "p3 unpacked in $(( $(date +%s) - t0 )) s"
export PYTHONPATH=$SITE/site:$PWD PYTHONUNBUFFERED=1
export DAGSTER_HOME=${DAGSTER_HOME:-$PWD/.dagster_home} SWAPLINE_HOME=${SWAPLINE_HOME:-$PWD/.swapline}
mkdir -p "$DAGSTER_HOME"; python3 -m swapline.cli init-home > /dev/null
timeout ${T2:-240} python3 -m swapline.cli run --project demo/swapline.yaml 2>&1 | tee "$OUT/demo.log"
echo "demo exit ${PIPESTATUS[0]} after $(( $(date +%s) - t0 )) s"
grep -h -B3 -A40 "caused by the following exception" "$DAGSTER_HOME"/logs/*.log 2>/dev/null | head -150 > "$OUT/demo_errors.log"
video=$(find "$SWAPLINE_HOME" -name 'anna_as_ben.mp4' | head -1)
[ -n "$video" ] && timeout 60 python3 -m swapline.cli verify "$video" 2>&1 | tail -8 && cp "$video" "$OUT/" 2>/dev/null
timeout ${T3:-300} python3 -m benchmarks.convert_speed --device $DEV --resolution 128 ${CS_ARGS:---height 1080 --seconds 60} 2>&1 | tee "$OUT/convert_speed.log"
echo "part 3 done in $(( $(date +%s) - t0 )) s"
