# Device check, part 2 of 3: unpack p2 (dlib's 68-point predictor) beside part 1.
set -uo pipefail
SITE=${SITE:-/tmp}; OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
t0=$(date +%s)
[ -d "$SITE/site/pydantic" ] || { echo "part 1 missing: the machine was not warm"; exit 3; }
tar xJf .gpu/p2/site.tar.xz -C "$SITE" && echo "p2 unpacked in $(( $(date +%s) - t0 )) s"
ls -la $SITE/site/face_recognition_models/models demo/media .cache/face_models
echo "part 2 done in $(( $(date +%s) - t0 )) s"
