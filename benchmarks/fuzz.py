"""Fuzz graphfix's CLI with damaged models, external-data attacks and output mistakes.

    python benchmarks/fuzz.py --cases 1000 --seed 1            # counts by category and outcome
    python benchmarks/fuzz.py --cases 200 --seed 7 --json out.json --show-failures 20
    python benchmarks/fuzz.py --cases 100 --subprocess       # each command as `python -m graphfix`

The cases (tests/fuzz_cases.py) run ``graphfix fix`` and ``graphfix check`` (in this process, or
in children with --subprocess) and are judged against the bad-input contract (README, "Bad input
and exit codes"). Exit status: 0 when no case failed, 1 otherwise. Each case runs in its own
temporary directory, removed afterwards.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import fuzz_cases  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per command before it counts as a hang")
    ap.add_argument("--json", help="write every outcome here")
    ap.add_argument("--show-failures", type=int, default=10)
    ap.add_argument("--verbose", action="store_true", help="print each case as it finishes")
    ap.add_argument("--subprocess", action="store_true",
                    help="run each command as `python -m graphfix` (slower; judges the real stderr)")
    args = ap.parse_args(argv)
    outcomes = []
    started = time.perf_counter()
    for index in range(args.cases):
        root = tempfile.mkdtemp(prefix=f"graphfix-fuzz-{index}-")
        try:
            case = fuzz_cases.make_case(index, args.seed, root)
            runner = fuzz_cases.run_subprocess if args.subprocess else fuzz_cases.run_main
            outcomes.append(fuzz_cases.run_case(case, timeout=args.timeout, runner=runner))
            if args.verbose:
                o = outcomes[-1]
                print(f"{index:5d} {o.category}/{o.name} {_exits(o)} {o.verdict} {o.seconds:.1f}s", flush=True)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    elapsed = time.perf_counter() - started
    by = collections.Counter((o.category, _exits(o), o.verdict) for o in outcomes)
    print(f"{len(outcomes)} cases, seed {args.seed}, {elapsed:.0f}s")
    print(f"{'category':<10} {'fix/check exits':<16} {'verdict':<20} count")
    for (cat, exits, verdict), n in sorted(by.items()):
        print(f"{cat:<10} {exits:<16} {verdict:<20} {n}")
    failed = [o for o in outcomes if o.failures]
    print(f"failures: {len(failed)}; by kind: {dict(collections.Counter(o.verdict for o in failed))}")
    for o in failed[:args.show_failures]:
        print(f"  {o.category}/{o.name}: {o.failures[0][:300]}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{"category": o.category, "name": o.name, "fix_exit": o.fix_exit, "check_exit": o.check_exit,
                        "failures": o.failures, "seconds": round(o.seconds, 3)} for o in outcomes], f, indent=1)
    return 1 if failed else 0


def _exits(o) -> str:
    return f"{'-' if o.fix_exit is None else o.fix_exit}/{'-' if o.check_exit is None else o.check_exit}"


if __name__ == "__main__":
    sys.exit(main())
