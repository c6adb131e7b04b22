# Device check, part 1 of 3: unpack p1 (av, ai_edge_litert, dlib, pydantic, pytorch_msssim),
# show the machine, train_throughput on CUDA (bf16, MFU), plain then torch.compile.
set -uo pipefail
SITE=${SITE:-/tmp}; DEV=${DEV:-cuda}; OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
t0=$(date +%s); tar xJf .gpu/p1/site.tar.xz -C "$SITE" && echo "p1 unpacked in $(( $(date +%s) - t0 )) s"
export PYTHONPATH=$SITE/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null
python3 -c "import sys, torch; print(sys.version.split()[0], torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name())"
[ -n "${SKIP_TT:-}" ] || timeout ${T1:-150} python3 -m benchmarks.train_throughput --device $DEV ${TT_ARGS:-} 2>&1 | tee "$OUT/train_throughput.log"
[ -n "${SKIP_TT:-}" ] || timeout ${T1C:-150} python3 -m benchmarks.train_throughput --device $DEV --compile ${TTC_ARGS:-} 2>&1 | tee "$OUT/train_throughput_compile.log"
python3 -c "import av, dlib, ai_edge_litert, onnxruntime as ort; print('av', av.__version__, 'dlib', dlib.__version__, 'onnxruntime', ort.__version__, ort.get_available_providers())"
echo "part 1 done in $(( $(date +%s) - t0 )) s"
