#!/bin/bash
# `pytest -m trt` on the GPU rig within one command's 10-minute limit: the TensorRT tests are split
# round-robin into SHARDS pytest processes that run at once (each test builds engines in child
# processes, about 10 s apiece, mostly process start; 8 shards ran 120 tests in 6 minutes on the H200
# rig, well inside its 128 GiB).
# Per-shard logs with failure reasons go to $OUT (or /tmp); the last lines sum them up.
#   bash benchmarks/rig_pytest_trt.sh [SHARDS=8] [LIMIT_S=540] [IDS_FILE]   (IDS_FILE: test ids to run, one a line;
#   default: every test marked trt)
set -u
P=${PYTHON:-/opt/gpukit/bin/python3.9}
SHARDS=${1:-8}; LIMIT=${2:-540}; LOGS=${OUT:-/tmp}
IDS=$(mktemp)
if [ -n "${3:-}" ]; then cp "$3" "$IDS"
else $P -m pytest --collect-only -q -m trt -p no:cacheprovider 2>/dev/null | grep '::' > "$IDS"; fi
echo "$(wc -l < "$IDS") trt tests in $SHARDS shards"
start=$SECONDS
for s in $(seq 0 $((SHARDS - 1))); do
  mapfile -t shard < <(awk -v n="$SHARDS" -v s="$s" '(NR - 1) % n == s' "$IDS")
  timeout "$LIMIT" $P -m pytest -v -rfE --tb=short -p no:cacheprovider -m trt "${shard[@]}" \
    > "$LOGS/pytest_trt_$s.log" 2>&1 &
done
wait
echo "elapsed $((SECONDS - start)) s"
tail -qn 1 "$LOGS"/pytest_trt_*.log
echo "total: $(cat "$LOGS"/pytest_trt_*.log | grep -c '::.* PASSED') passed," \
     "$(cat "$LOGS"/pytest_trt_*.log | grep -c '::.* FAILED') failed," \
     "$(cat "$LOGS"/pytest_trt_*.log | grep -c '::.* SKIPPED') skipped," \
     "$(cat "$LOGS"/pytest_trt_*.log | grep -c '::.* ERROR') errors"
grep -h '^FAILED\|^ERROR' "$LOGS"/pytest_trt_*.log
# exit 0 only when every shard finished and nothing failed
if grep -L '^=.* in [0-9.]*s' "$LOGS"/pytest_trt_*.log | grep -q .; then echo "a shard did not finish"; exit 1; fi
! grep -q '^FAILED\|^ERROR' "$LOGS"/pytest_trt_*.log
