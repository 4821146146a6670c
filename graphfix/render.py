"""The `graphfix fix` summary, in the words a deployment engineer uses.

Passes that changed nothing fold into one line; counts are named for people ("3 INT64 tensors
narrowed to INT32", not ``tensors_narrowed 3``); repeated warnings (one per RMSNorm, ...) fold into
one line with a count and example nodes. ``verbose`` lists every warning and each pass's time. The
JSON report keeps everything (``--report``).
"""
from __future__ import annotations

import re
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

from .report import APPLIED, FAILED, ROLLED_BACK, SKIPPED, UNCHANGED

# count key -> words ({n} is the count). Keys not listed are shown with their underscores as spaces.
COUNT_WORDS: Dict[str, str] = {
    "nodes_folded": "{n} node(s) precomputed",
    "tensors_folded": "{n} constant(s) stored",
    "kept_failed": "{n} value(s) left computed (ONNX Runtime could not evaluate them)",
    "kept_too_large": "{n} value(s) left computed (over the size limit)",
    "kept_graph_output": "{n} graph output(s) left computed",
    "kept_qdq": "{n} Q/DQ node(s) kept",
    "kept_unfoldable": "{n} value(s) not foldable",
    "dead_nodes": "{n} unused node(s) removed",
    "dead_nodes_removed": "{n} unused node(s) removed",
    "nodes_converted": "{n} node(s) rewritten for the target opset",
    "nodes_unconvertible": "{n} node(s) could not be converted",
    "shape_ranges_sliced": "{n} Shape start/end rewritten as Slice",
    "castlike_replaced": "{n} CastLike replaced by Cast",
    "zero_points_added": "{n} DequantizeLinear zero point(s) added",
    "deprecated_replaced": "{n} deprecated op(s) replaced",
    "tensors_narrowed": "{n} INT64 tensor(s) narrowed to INT32",
    "islands_narrowed": "{n} group(s) of type-linked tensors narrowed",
    "islands_kept": "{n} group(s) kept INT64 (values beyond INT32)",
    "sentinels_clamped": "{n} INT64_MAX/MIN slice bound(s) clamped to the INT32 range",
    "chains": "{n} bool chain(s) run as INT32",
    "tensors_retyped": "{n} tensor(s) retyped",
    "casts_inserted": "{n} Cast(s) inserted",
    "casts_retargeted": "{n} Cast(s) now to INT32",
    "constants_copied": "{n} shared constant(s) copied",
    "constants_kept_int64": "{n} shape/axes constant(s) left INT64 (the parser narrows them)",
    "layernorms_fused": "{n} LayerNorm(s) fused",
    "layernorms_skipped": "{n} LayerNorm pattern(s) not fused",
    "near_misses": "{n} near miss(es)",
    "rmsnorm_seen": "{n} RMSNorm chain(s) seen (not a LayerNorm: nothing to do)",
}
_ORDER = {k: i for i, k in enumerate(COUNT_WORDS)}
# change action -> words, for passes that record changes without counts (normalize, cleanup)
ACTION_WORDS: Dict[str, str] = {
    "remove-node": "{n} unused node(s) removed",
    "remove-identity": "{n} pass-through Identity node(s) removed",
    "remove-initializer": "{n} unused initializer(s) removed",
    "remove-input": "{n} initializer(s) no longer listed as graph inputs",
    "rename-node": "{n} node name(s) made unique",
    "toposort": "nodes put in topological order",
    "set-ir-version": "IR version lowered to one ONNX Runtime and TensorRT read",
    "set-opset": "opset changed",
    "raise-opset": "opset raised",
}
# counts that only explain another one (shown with -v)
DETAIL_COUNTS = frozenset({"tensors_retyped", "constants_copied", "islands_narrowed", "constants_kept_int64"})
# warnings that need no action (the counts say it already): listed only with -v
NOTE_PATTERNS = (re.compile(r"^RMSNorm-style chain"),)
EXAMPLES = 3


def count_words(key: str, n: int, pass_name: str = "") -> str:
    if key in COUNT_WORDS:
        return COUNT_WORDS[key].format(n=n)
    if key.startswith("near_miss_"):
        return f"{n} near miss(es) of rule {key[len('near_miss_'):].replace('_', '-')}"
    if pass_name == "plugins" or pass_name.startswith("decompose-"):   # rule passes count per rule
        return f"{n} x {_rule_words(key)}"
    return f"{key.replace('_', ' ')}: {n}"


def _rule_words(key: str) -> str:
    """A rule's count key -> what it did, from the rule's own summary where it is registered."""
    try:
        from .plugin_rules.engine import count_key
        from .plugin_rules.registry import registered_rules
        for rule in registered_rules():
            if count_key(rule.name) == key:
                return f"{rule.name} ({rule.summary})" if rule.summary else rule.name
    except Exception:      # the summary must never fail on a count
        pass
    return key.replace("_", "-")


def _pass_line(p, verbose: bool) -> str:
    counts = sorted(((k, v) for k, v in p.counts.items() if v and (verbose or k not in DETAIL_COUNTS)),
                    key=lambda kv: (_ORDER.get(kv[0], len(_ORDER)), kv[0]))
    words = [count_words(k, v, p.name) for k, v in counts]
    from collections import Counter
    actions = Counter(c.get("action") for c in p.changes)
    for action, n in actions.items():   # what the counts do not already say (normalize, cleanup)
        if action in ACTION_WORDS and not (action == "remove-node" and p.counts.get("dead_nodes")):
            words.append(ACTION_WORDS[action].format(n=n))
        elif not counts:
            words.append(f"{n} x {action}")
    return ", ".join(words) or "no change"


def warning_groups(warnings: List[str]) -> List[Tuple[str, int, List[str]]]:
    """Fold warnings that differ only in the quoted names: (text, count, example names)."""
    groups: "OrderedDict[str, Tuple[str, List[str]]]" = OrderedDict()
    for w in warnings:
        names = re.findall(r"'([^']*)'", w)
        key = re.sub(r"'[^']*'", "'…'", w)
        groups.setdefault(key, (w, []))[1].append(names[0] if names else "")
    out = []
    for key, (first, names) in groups.items():
        out.append((first if len(names) == 1 else key, len(names), [n for n in names if n]))
    return out


def _warning_lines(p, verbose: bool, report_path: Optional[str]) -> List[str]:
    if verbose:
        return [f"      warning: {w}" for w in p.warnings]
    lines = []
    groups = warning_groups([w for w in p.warnings if not _is_note(w)])
    for text, n, names in groups[:5]:
        if n == 1:
            lines.append(f"      warning: {text}")
        else:
            shown = ", ".join(names[:EXAMPLES]) + (f", +{len(names) - EXAMPLES} more" if len(names) > EXAMPLES else "")
            lines.append(f"      warning ({n}x): {text} [{shown}]")
    if len(groups) > 5:
        where = f"in {report_path}" if report_path else "with -v or --report FILE"
        lines.append(f"      ... {len(groups) - 5} more kind(s) of warning ({where})")
    return lines


def _is_note(warning: str) -> bool:
    return any(r.search(warning) for r in NOTE_PATTERNS)


def _check_line(c: dict) -> str:
    kind = {"ort": "ONNX Runtime", "trt-check": f"graphfix check for TensorRT {c.get('target', '')}".rstrip()}.get(
        c.get("kind"), ("TensorRT" + (f" {c['trt_version']}" if c.get("trt_version") else ""))
        if c.get("kind") == "trt" else str(c.get("kind")))
    if c.get("skipped"):
        return f"  {kind}: skipped, not compared ({c.get('detail') or 'no reason given'})"
    if c.get("unchecked") and c.get("passed") is None:
        return f"  {kind}: UNCHECKED ({c.get('detail') or c.get('error') or 'the original does not run'})"
    if c.get("passed"):
        what = {"ort": "the fixed model gives the original's outputs", "trt-check": "nothing left to fix",
                "onnx-checker": "the fixed model is valid ONNX"}.get(c.get("kind"), "engine matches")
        return f"  {kind}: {what}" + (f" ({c['detail']})" if c.get("detail") else "")
    return f"  {kind}: FAILED: {c.get('detail') or c.get('error') or 'outputs differ'}"


def _inputs_line(inputs: Optional[dict]) -> List[str]:
    """The sizes/values the checks ran on, when they were searched for or given."""
    if not inputs or not (inputs.get("tries", 0) > 1 or inputs.get("given_values")):
        return []
    shapes = ", ".join(f"{k} {'x'.join(map(str, v)) or 'scalar'}" for k, v in inputs["shapes"].items())
    given = f"; values given for {', '.join(inputs['given_values'])}" if inputs.get("given_values") else ""
    return [f"  inputs for the checks: {shapes or 'none that run'} ({inputs['tries']} size choice(s) tried{given})"]


def _differences_lines(diff: dict) -> List[str]:
    """What the output differs in beyond the passes' changes (report.differences)."""
    out = []
    if "ir_version" in diff:
        out.append(f"  also       IR version {diff['ir_version']['from']} -> {diff['ir_version']['to']}")
    dropped = diff.get("dropped_unused_initializers") or []
    if dropped:
        out.append(f"  also       {len(dropped)} unused initializer(s) dropped: {', '.join(dropped[:5])}"
                   + (", ..." if len(dropped) > 5 else ""))
    return out


def fix_summary(report, verbose: bool = False, report_path: Optional[str] = None) -> str:
    target = report.target
    src = report.input.get("path") or "<model>"
    dst = (report.output or {}).get("path") or "<model>"
    lines = [f"graphfix fix {src} -> {dst}: TensorRT {target['version']} ({_source_words(target['source'])})"]
    lines.append(f"  model: {report.input['nodes']} -> {(report.output or report.input)['nodes']} nodes, "
                 f"opset {report.input['opsets'].get('ai.onnx')} -> "
                 f"{(report.output or report.input)['opsets'].get('ai.onnx')}")
    unchanged, not_needed, skipped = [], [], []
    for p in report.passes:
        took = f"  [{p.seconds:.2f}s]" if verbose else ""
        if p.status == APPLIED:
            lines.append(f"  changed    {p.name}: {_pass_line(p, verbose)}{took}")
        elif p.status in (FAILED, ROLLED_BACK):
            what = "FAILED, undone" if p.status == FAILED else "ROLLED BACK (its check failed)"
            lines.append(f"  {what}: {p.name}: {p.error}")
        elif p.status == UNCHANGED:
            shown = p.warnings if verbose else [w for w in p.warnings if not _is_note(w)]
            if not (shown or any(p.counts.values())):
                unchanged.append(p.name)
            else:
                counts = _pass_line(p, verbose) if any(p.counts.values()) else ""
                lines.append(f"  unchanged  {p.name}" + (f": {counts}" if counts else "") + took)
        elif p.status == SKIPPED:
            (not_needed if (p.error or "").startswith("TensorRT") else skipped).append(p)
        if p.warnings and p.status != SKIPPED:
            lines.extend(_warning_lines(p, verbose, report_path))
    if unchanged:
        lines.append(f"  nothing to do: {', '.join(unchanged)}")
    lines.extend(_differences_lines(getattr(report, "differences", None) or {}))
    if not_needed:
        lines.append(f"  not needed for TensorRT {target['version']}: {', '.join(p.name for p in not_needed)}")
    for p in skipped:
        lines.append(f"  not run    {p.name}: {p.error}")
    for c in report.checks:
        lines.append(_check_line(c))
        if c.get("remaining"):
            from .verdict import remaining_lines
            lines.extend(remaining_lines(c))
    lines.extend(_inputs_line(report.inputs))
    n_changed = sum(p.status == APPLIED for p in report.passes)
    done = f"{n_changed} pass(es) changed the model" if n_changed else "the model is unchanged"
    if report.ok:
        head = "ok: " + (done if n_changed else "nothing needed changing")
    elif report.verdict == "UNCHECKED":
        head = f"UNCHECKED: ONNX Runtime could not run the original, nothing was compared; {done}"
    else:
        undone = sum(p.status in (FAILED, ROLLED_BACK) for p in report.passes)
        failed = sum(not (c.get("passed") or c.get("skipped") or c.get("unchecked")) for c in report.checks)
        problems = ([f"{undone} pass(es) failed and were undone"] if undone else []) + \
            ([f"{failed} check(s) failed"] if failed else [])
        head = f"NOT OK: {', '.join(problems) or 'see above'}; {done}"
    tail = f"; report: {report_path}" if report_path else ""
    lines.append(f"{head} in {report.seconds:.1f}s{tail}")
    return "\n".join(lines)


def why_not_ok(report) -> str:
    """One line: why a fix run did not end ok (for -q)."""
    for p in report.passes:
        if p.status in (FAILED, ROLLED_BACK):
            return f"pass {p.name} {'failed' if p.status == FAILED else 'was rolled back'}: {p.error}"
    for c in report.checks:
        if not (c.get("passed") or c.get("skipped")):
            return f"{c.get('kind')} check failed: {c.get('detail') or c.get('error')}"
    return "not ok"


def _source_words(source: str) -> str:
    return {"flag": "from --trt", "default": "the default; pass --trt to choose"}.get(source, source)
