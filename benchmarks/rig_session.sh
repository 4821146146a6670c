#!/bin/bash
# The GPU-rig evidence run, in three commands of under 10 minutes each (../shared/gpu/README.md:
# send the kit first; each step is sent with `carry=[".gpukit/cur"]`, back to back). Results go to
# $OUT. Used on 2026-11-21 for the figures in README.md ("Evidence").
#   bash benchmarks/rig_session.sh 1   # install; fixed node tests; agreement runs (background); pytest -m trt
#   bash benchmarks/rig_session.sh 2   # every fixture, the exported models, the plugin cases: raw vs fixed
#   bash benchmarks/rig_session.sh 3   # wait for the agreement runs, bring their JSON back
set -u
P=/opt/gpukit/bin/python3.9; export PYTHONUNBUFFERED=1
case "${1:?step 1, 2 or 3}" in
1)
  bash .gpukit/cur/install.sh || exit 3
  $P -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | grep -v -i warn | tail -2
  timeout 200 $P benchmarks/fix_node_tests.py --trt 8.6 --out-dir /tmp/node_fixed --jobs 8 | tail -1
  setsid nohup bash -c "$P benchmarks/node_tests_agreement.py --trt 8.6 --trt-real --workers 5 --time-budget 900 --out /tmp/agree_raw.json > /tmp/agree_raw.log 2>&1; $P benchmarks/node_tests_agreement.py --trt 8.6 --trt-real --node-dir /tmp/node_fixed --workers 5 --time-budget 900 --out /tmp/agree_fixed.json > /tmp/agree_fixed.log 2>&1" > /dev/null 2>&1 < /dev/null &
  # the trt tests in three groups at once; -rfE keeps failure reasons in the log even if cut short
  timeout 470 $P -m pytest -q -rfE --tb=line -m trt -p no:cacheprovider tests/test_trt.py > $OUT/pytest_trt_a.log 2>&1 &
  timeout 470 $P -m pytest -q -rfE --tb=line -m trt -p no:cacheprovider tests/passes/test_target_opset.py tests/passes/test_fuse_layernorm.py > $OUT/pytest_trt_b.log 2>&1 &
  timeout 470 $P -m pytest -q -rfE --tb=line -m trt -p no:cacheprovider tests/passes/test_int64_to_int32.py tests/passes/test_cast_bool.py tests/test_fix_loop.py > $OUT/pytest_trt_c.log 2>&1 &
  wait; tail -5 $OUT/pytest_trt_*.log;;
2)
  timeout 480 $P benchmarks/rig_fixtures.py /tmp/gf-rig --trt 8.6 --jobs 6 --timeout 100 > /tmp/rig_fixtures.log 2>&1 &
  timeout 480 $P benchmarks/rig_exported.py /tmp/rig_exported --timeout 150 > /tmp/rig_exported.log 2>&1 &
  timeout 480 $P benchmarks/rig_plugins.py --out /tmp/rig_plugins.json --trt 8.6 --timeout 120 > /tmp/rig_plugins.log 2>&1 &
  wait; tail -12 /tmp/rig_exported.log; tail -26 /tmp/rig_plugins.log
  tar czf $OUT/rig_fixtures.tgz -C /tmp/gf-rig --exclude='*.onnx' .
  tar czf $OUT/rig_exported.tgz -C /tmp/rig_exported --exclude='*.onnx' .
  cp /tmp/rig_plugins.json /tmp/rig_fixtures.log $OUT/;;
3)
  for _ in $(seq 1 50); do pgrep -f node_tests_agreement > /dev/null || break; sleep 10; done
  tail -n 3 /tmp/agree_raw.log /tmp/agree_fixed.log
  cp /tmp/agree_raw.json /tmp/agree_fixed.json /tmp/node_fixed/fix_summary.json $OUT/ 2>/dev/null; true;;
*) echo "usage: rig_session.sh 1|2|3" >&2; exit 2;;
esac
