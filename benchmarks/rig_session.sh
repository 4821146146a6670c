#!/bin/bash
# The GPU-rig evidence run, in four commands of under 10 minutes each (../shared/gpu/README.md:
# send the kit first; each step is sent with `carry=[".gpukit/cur"]`, back to back). Results go to
# $OUT. Used on 2026-11-21 for the figures in README.md ("Evidence").
#   bash benchmarks/rig_session.sh 1   # install; pytest -m trt in 8 shards (benchmarks/rig_pytest_trt.sh)
#   bash benchmarks/rig_session.sh 2   # every fixture, the exported models, the plugin cases: raw vs fixed
#   bash benchmarks/rig_session.sh 3   # fix the node tests; start the agreement runs (background)
#   bash benchmarks/rig_session.sh 4   # wait for the agreement runs, bring their JSON back
set -u
P=/opt/gpukit/bin/python3.9; export PYTHONUNBUFFERED=1
case "${1:?step 1, 2, 3 or 4}" in
1)
  bash .gpukit/cur/install.sh || exit 3
  $P -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | grep -v -i warn | tail -2
  bash benchmarks/rig_pytest_trt.sh 8 540;;
2)
  timeout 480 $P benchmarks/rig_fixtures.py /tmp/gf-rig --trt 8.6 --jobs 6 --timeout 100 > /tmp/rig_fixtures.log 2>&1 &
  timeout 480 $P benchmarks/rig_exported.py /tmp/rig_exported --timeout 150 > /tmp/rig_exported.log 2>&1 &
  timeout 480 $P benchmarks/rig_plugins.py --out /tmp/rig_plugins.json --trt 8.6 --timeout 120 > /tmp/rig_plugins.log 2>&1 &
  wait; tail -12 /tmp/rig_exported.log; tail -26 /tmp/rig_plugins.log
  tar czf $OUT/rig_fixtures.tgz -C /tmp/gf-rig --exclude='*.onnx' .
  tar czf $OUT/rig_exported.tgz -C /tmp/rig_exported --exclude='*.onnx' .
  cp /tmp/rig_plugins.json /tmp/rig_fixtures.log $OUT/;;
3)
  timeout 200 $P benchmarks/fix_node_tests.py --trt 8.6 --out-dir /tmp/node_fixed --jobs 8 | tail -1
  setsid nohup bash -c "$P benchmarks/node_tests_agreement.py --trt 8.6 --trt-real --workers 5 --time-budget 900 --out /tmp/agree_raw.json > /tmp/agree_raw.log 2>&1; $P benchmarks/node_tests_agreement.py --trt 8.6 --trt-real --node-dir /tmp/node_fixed --workers 5 --time-budget 900 --out /tmp/agree_fixed.json > /tmp/agree_fixed.log 2>&1" > /dev/null 2>&1 < /dev/null &
  sleep 5; pgrep -f node_tests_agreement > /dev/null && echo "agreement runs started";;
4)
  for _ in $(seq 1 50); do pgrep -f node_tests_agreement > /dev/null || break; sleep 10; done
  tail -n 3 /tmp/agree_raw.log /tmp/agree_fixed.log
  cp /tmp/agree_raw.json /tmp/agree_fixed.json /tmp/node_fixed/fix_summary.json $OUT/ 2>/dev/null; true;;
*) echo "usage: rig_session.sh 1|2|3|4" >&2; exit 2;;
esac
