"""`graphfix check` for a person: findings grouped by severity, op and reason, each group with its
count, example nodes and what to do (the exact `graphfix fix` flag, or a manual step), wrapped to
the terminal's width. `-v` lists every node and the source of each fact; `--json` keeps the full
per-node list (graphfix.diagnosis.CheckResult.to_json). The analysis itself lives in graphfix/diagnosis/
"""
from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from .profiles import SEVERITY_ORDER

EXAMPLES = 3

# What a person can do where no pass fixes a finding: by op, then by rule; `{op}` is filled in.
MANUAL_BY_OP = {
    "ScatterElements": "compute the reduction outside TensorRT, or target TensorRT >= 10 (--trt), where the "
                       "reduction attribute is honoured",
    "Trilu": "write the `upper` attribute explicitly (onnx.helper.make_attribute('upper', 1)) before building",
    "NonMaxSuppression": "use one class per batch item, or compare detections per class",
    "Einsum": "rewrite the equation without ellipsis, repeated subscripts or broadcasting (MatMul/Transpose), "
              "or target TensorRT >= 10.12",
    "Resize": "re-export with the axes attribute left out (resize every axis; give full-rank scales or sizes)",
    "Pad": "re-export with a supported pad mode (constant, reflect, edge)",
    "InstanceNormalization": "nothing to do if libnvinfer_plugin is loaded (TensorRT loads it by default)",
}
MANUAL_BY_RULE = {
    "unsupported-op": "re-export without {op} (e.g. an older/other exporter path), or implement it as a "
                      "TensorRT plugin (load it with validate --plugins) and a graphfix rule (--plugin-rules FILE, "
                      "docs/plugins.md)",
    "custom-op": "build and load a TensorRT plugin named {op} (validate --plugins LIB.so), or re-export with "
                 "standard ONNX ops",
    "non-tensor-type": "export tensors only: no sequences or optionals (e.g. torch.stack instead of a list)",
    "unsupported-dtype": "export in FLOAT or FLOAT16 (e.g. model.float() before torch.onnx.export)",
    "cast_to_supported": "cast to FLOAT or FLOAT16 instead (export the model in a type TensorRT has)",
    "local-function": "inline the model-local functions first (onnx.inliner.inline_local_functions, onnx >= 1.15)",
    "dtype": "cast the input to a type the op takes (documented types in the reason), in the exporter",
    "const_input": "make that input a constant: a graph input whose value is fixed for your use becomes one "
                   "with `graphfix fix --freeze NAME=VALUE`; a value computed from run-time sizes needs static "
                   "input shapes at export, or the computation moved outside the model",
    "topk_k_counted": "if the engine fails with 'Invalid Context', `graphfix fix --nms-plugin` replaces the NMS head "
                      "with EfficientNMS_TRT (its outputs become num_detections, boxes, scores, classes), or bound "
                      "K in the exporter (K = Min(count, C) with a constant C, which bound-topk then rewrites)",
    "if_branch_shapes": "make the sizes the If's condition tests static (`graphfix fix --static-shapes "
                        "NAME:1x576`, or export with fixed input shapes), or freeze the configuration input it "
                        "reads (`graphfix fix --freeze NAME=VALUE`)",
    "int64-out-of-range": "keep the values within INT32, or target TensorRT >= 9 (native INT64)",
    "reduce_axes_ignored": "pass the axes as a constant (initializer) and run graphfix fix, or reduce over all axes "
                           "on purpose",
    "noop_empty_axes": "give explicit axes instead of noop_with_empty_axes = 1",
    "attr_present": "random ops: expect different values than ONNX Runtime, or feed the random values as an input",
    "attr_absent": "random ops: expect different values than ONNX Runtime, or feed the random values as an input",
    "plugin-node": "nothing to do for TensorRT; ONNX Runtime comparisons of this node are not possible",
}
MANUAL_DEFAULT = "re-export the model without this construct, or target a newer TensorRT (--trt)"

# TensorRT 8.6 parser crashes cannot be predicted from the graph; say so where it matters.
CRASH_NOTE_8_6 = ("note: TensorRT 8.6's parser has crashed (segfault) on opset-18 exports (torch.onnx dynamo "
                  "GPT-2, Llama, T5); `check` cannot predict a crash. `graphfix fix --trt 8.6` lowers the opset to "
                  "17 (target-opset); those exports then parsed and built.")


@dataclass
class Group:
    severity: str
    op: Optional[str]
    reason: str                 # the first finding's reason (without per-node detail when grouped)
    fix_pass: Optional[str]
    rule: str
    flag: Optional[str] = None  # the flag the findings' own row names (conditional rows)
    findings: list = field(default_factory=list)

    @property
    def nodes(self) -> List[str]:
        """Distinct node names, in order (one node can have several findings, e.g. per tensor)."""
        return list(dict.fromkeys(f.node for f in self.findings if f.node))

    @property
    def tensors(self) -> List[str]:
        """For model-level findings: the first quoted name in each reason (the tensor it is about)."""
        names = [re.findall(r"'([^']*)'", f.reason)[:1] for f in self.findings]
        return list(dict.fromkeys(n[0] for n in names if n))


def _reason_key(reason: str) -> str:
    """Reasons that differ only in quoted names or a trailing '(detail)' are one group."""
    key = re.sub(r"'[^']*'", "'…'", reason)
    return re.sub(r"\s*\([^()]*\)\s*$", "", key)


def group_findings(findings) -> List[Group]:
    groups = {}
    for f in findings:
        key: Tuple = (f.node is None, f.severity, f.op, _reason_key(f.reason), f.fix_pass, f.rule, f.flag)
        g = groups.get(key)
        if g is None:
            g = groups[key] = Group(f.severity, f.op, f.reason, f.fix_pass, f.rule, f.flag)
        g.findings.append(f)
    out = list(groups.values())
    for g in out:
        if len(g.findings) > 1:
            g.reason = re.sub(r"\s*\([^()]*\)\s*$", "", g.reason)
            if len({tuple(re.findall(r"'([^']*)'", f.reason)) for f in g.findings}) > 1:
                g.reason = re.sub(r"'[^']*'", "'…'", g.reason)     # names differ: examples follow
    out.sort(key=lambda g: (SEVERITY_ORDER.get(g.severity, 9), g.op is not None, -len(g.findings), g.op or ""))
    return out


def _bare_op(op: Optional[str]) -> Optional[str]:
    return op.split("::")[-1] if op else op


def manual_step(op: Optional[str], rule: Optional[str]) -> str:
    """What a user can do by hand where no pass fixes a finding."""
    op = _bare_op(op)
    text = MANUAL_BY_OP.get(op or "") or MANUAL_BY_RULE.get(rule or "") or MANUAL_DEFAULT
    return text.format(op=op or "the op")


def remedy(group: Group, target) -> str:
    """The exact thing to do: a `graphfix fix` flag, or a manual step."""
    op = _bare_op(group.op)
    if group.fix_pass is None:
        if group.severity == "warning" and group.rule not in MANUAL_BY_RULE and op not in MANUAL_BY_OP:
            return "no action needed (a caveat, not a failure)"
        return "no automatic fix; by hand: " + manual_step(op, group.rule)
    if group.rule == "int64-io":
        return ("`graphfix fix --int32-io` makes the graph's INT64 inputs/outputs INT32 (else nothing to do: "
                "TensorRT binds them as INT32)")
    flag = fix_flag(group, target)
    return f"`graphfix fix{' ' + flag if flag else ''}` (pass {group.fix_pass})"


def fix_flag(group: Group, target) -> Optional[str]:
    """The flag `graphfix fix` needs for this group's pass to act (None: it acts by default), from
    the table of remedies."""
    from .remedies import flag_for
    if group.flag:
        return group.flag
    return flag_for(group.rule, group.fix_pass, _bare_op(group.op), target.version) if group.fix_pass else None


def _examples(nodes: List[str], verbose: bool) -> str:
    if verbose or len(nodes) <= EXAMPLES:
        return ", ".join(nodes)
    return ", ".join(nodes[:EXAMPLES]) + f", +{len(nodes) - EXAMPLES} more"


def _wrapped(text: str, width: int, first: str, rest: str) -> List[str]:
    return textwrap.wrap(text, width=max(width, 40), initial_indent=first, subsequent_indent=rest,
                         break_on_hyphens=False) or [first]


def render_check(result, width: int = 100, verbosity: int = 0) -> str:
    verbose = verbosity >= 1
    p, target = result.profile, result.target
    source = "from --trt" if target.source == "flag" else target.source
    resolved = "" if str(p.version) == str(target.version) else f" (resolved for {p.version})"
    lines = _wrapped(f"graphfix check {result.model}: TensorRT {target.version} ({source}), profile {p.line}"
                     f"{resolved}", width, "", "    ")
    if verbosity < 0:       # -q: the verdict only
        return _verdict(result, [])
    groups = group_findings(result.findings)
    if not groups:
        lines.append("no findings: the profile predicts that TensorRT imports every node as ONNX means it")
    for g in groups:
        n = len(g.nodes) or len(g.findings)
        what = "(model)" if g.op is None and not g.nodes else (g.op or "-") + (f" x{n}" if n > 1 else "")
        lines.extend(_wrapped(f"{g.severity:<12} {what}: {g.reason}", width, "", " " * 4))
        if not g.nodes and len(g.findings) > 1 and g.tensors:
            lines.extend(_wrapped(_examples(g.tensors, verbose), width, "    names: ", " " * 11))
        if g.nodes and (n > 1 or verbose):
            lines.extend(_wrapped(_examples(g.nodes, verbose), width, "    nodes: ", " " * 11))
        elif g.nodes:
            lines.extend(_wrapped(g.nodes[0], width, "    node:  ", " " * 11))
        lines.extend(_wrapped(remedy(g, target), width, "    fix:   ", " " * 11))
        if verbose:
            for src in sorted({f.source for f in g.findings if f.source}):
                lines.extend(_wrapped(src, width, "    source: ", " " * 12))
    if any(f.rule == "max-opset" for f in result.findings) and target.version.major == 8:
        lines.extend(_wrapped(CRASH_NOTE_8_6, width, "", "      "))
    if result.real_parser is not None:
        lines.extend(format_real_parser(result.real_parser, result, width).splitlines())
    lines.extend(_wrapped(_verdict(result, groups), width, "", "    "))
    if groups and not verbose:
        lines.extend(_wrapped("(-v: every node and the source of each fact; --json: machine-readable)",
                              width, "", " "))
    return "\n".join(lines)


def _verdict(result, groups) -> str:
    counts = result.counts()
    head = (f"{counts['error']} error(s), {counts['wrong-result']} wrong result(s), "
            f"{counts['warning']} warning(s)")
    if not result.clean:
        return f"{head}: problems remain"
    fixable = sorted({g.fix_pass for g in groups if g.fix_pass and not fix_flag(g, result.target)})
    if fixable:
        return (f"{head}: clean (TensorRT {result.target.version} should import every node); `graphfix fix` "
                f"still repairs the warnings above ({', '.join(fixable)})")
    return f"{head}: clean"


def format_real_parser(rp: dict, result, width: int = 100) -> str:
    who = f"real {rp['label']}" if rp.get("label") else "real TensorRT parser"   # TensorRT-RTX names itself
    if not rp.get("available"):
        return "\n".join(_wrapped(f"{who}: not run ({rp.get('reason') or 'real parser unavailable'})",
                                   width, "", "    "))
    if rp.get("crashed"):
        head = f"{who}: CRASHED while {'building' if rp.get('parsed') else 'parsing'}"
    elif rp.get("parsed") and "built" in rp:     # a backend that also builds (ahead of time)
        head = f"{who}: {'parsed and built the model' if rp['built'] else 'parsed the model, build FAILED'}"
    elif rp.get("parsed"):
        head = f"{who}: parsed the model"
    else:
        head = f"{who}: failed"
    predicted = {f.node for f in result.findings if f.severity == "error"}
    out = [head]
    for e in rp.get("errors", []):
        node = e.get("node")
        mark = "predicted" if node in predicted else "NOT predicted"
        out.extend(_wrapped(f"{node or '(model)'} [{e.get('op') or '-'}] {e.get('message', '').strip()} ({mark})",
                            width, "  - ", "    "))
    return "\n".join(out)
