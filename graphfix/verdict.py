"""One verdict for `graphfix fix`: after the passes, `graphfix check` on the output for the target.

"ok" must mean TensorRT-ready: ONNX Runtime agrees with the original AND no error or wrong-result
finding of `graphfix check` remains. Each remaining finding comes with what would fix it: a pass
the run left out (and the flag that brings it in), an opt-in plugin rule (``--rules NAME``), or
"no automatic fix".
"""
from __future__ import annotations

from typing import Dict, List, Optional

import onnx

KIND = "trt-check"    # the whole-model check's kind in the report


def target_check(model: onnx.ModelProto, version: str, passes) -> dict:
    """The report's whole-model entry: {"kind": "trt-check", "passed", "detail", "remaining": [...]}.
    ``passes``: the run's PassReports (to say why a pass that fixes a finding did not)."""
    from .diagnosis import PROBLEM_SEVERITIES, check_model
    try:
        result = check_model(model, trt=version)
    except Exception as exc:   # the verdict must not end the run: say the check could not run
        text = " ".join(str(exc).split())[:300]
        return {"kind": KIND, "target": version, "passed": False, "remaining": [],
                "detail": f"graphfix check could not run on the output: {type(exc).__name__}: {text}"}
    records = {p.name: p for p in passes}
    problems = [f for f in result.findings if f.severity in PROBLEM_SEVERITIES]
    rule_plugins = _rule_plugins()
    # a plugin node a plugin rule writes is what the user asked for: TensorRT needs its library
    plugins = sorted({f.op for f in problems if f.rule == "custom-op" and f.op in rule_plugins})
    remaining = [{"node": f.node, "op": f.op, "severity": f.severity, "reason": f.reason,
                  "fix_pass": f.fix_pass, "remedy": remedy(f.fix_pass, f.op, records, version, f.rule, f.flag)}
                 for f in problems if not (f.rule == "custom-op" and f.op in plugins)]
    counts: Dict[str, int] = {}
    for r in remaining:
        counts[r["severity"]] = counts.get(r["severity"], 0) + 1
    detail = (f"no error or wrong-result finding for TensorRT {version}" if not remaining else
              f"{', '.join(f'{n} {s}' for s, n in sorted(counts.items()))} finding(s) remain for TensorRT {version}")
    if plugins:
        detail += (f"; needs the plugin library for {', '.join(plugins)} when TensorRT builds it "
                   "(graphfix validate --plugins LIB.so)")
    return {"kind": KIND, "target": version, "passed": not remaining, "detail": detail, "remaining": remaining,
            "plugins_needed": plugins}


def remedy(fix_pass: Optional[str], op: Optional[str], records, version: str, rule: Optional[str] = None,
           flag: Optional[str] = None) -> str:
    """What would fix a remaining finding, in words a user can act on."""
    if fix_pass is not None and flag:
        return f"pass '{fix_pass}' fixes it with {flag} (graphfix fix {flag})"
    if fix_pass is None:
        rules = _opt_in_rules(op) if op else []
        if rules:
            return f"no automatic fix (opt-in, different outputs: {' or '.join(f'--rules {r}' for r in rules)})"
        from .check_render import manual_step
        return "no automatic fix; by hand: " + manual_step(op, rule)
    rec = records.get(fix_pass)
    if fix_pass == "plugins" and op:
        rules = _opt_in_rules(op)
        if rules:
            return f"ask for the plugin rule: {' or '.join(f'--rules {r}' for r in rules)}"
    if rec is None:
        return f"pass '{fix_pass}' fixes it: add it to --passes"
    if rec.status == "skipped" and rec.error == "skipped on request":
        return f"pass '{fix_pass}' fixes it: remove it from --skip"
    if rec.status == "skipped":
        return f"pass '{fix_pass}' fixes it, but was not run: {rec.error}"
    if rec.status in ("rolled-back", "failed"):
        return f"pass '{fix_pass}' fixes it, but was {rec.status}: {rec.error}"
    if fix_pass == "plugins":
        return "no plugin rule applies: a TensorRT plugin for this op (--plugin-rules FILE), or no automatic fix"
    return f"pass '{fix_pass}' ran but left it (see its warnings)"


def _rule_plugins() -> set:
    """Names of the plugins that registered plugin rules (built-in and the user's) write."""
    from .plugin_rules.registry import registered_rules
    return {r.plugin.name for r in registered_rules() if getattr(r, "plugin", None) is not None}


def _opt_in_rules(op: str) -> List[str]:
    from .plugin_rules.registry import registered_rules
    return [r.name for r in registered_rules() if op in r.anchor_ops and r.option and not r.default]


def remaining_lines(check: dict, limit: int = 8) -> List[str]:
    """Summary lines for the findings a trt-check entry lists."""
    rows = check.get("remaining") or []
    lines = [f"      {r['severity']}: {r['node'] or '(model)'}"
             + (f" ({r['op']})" if r.get("op") else "") + f": {r['reason']} -> {r['remedy']}"
             for r in rows[:limit]]
    if len(rows) > limit:
        lines.append(f"      ... {len(rows) - limit} more in the JSON report")
    return lines
