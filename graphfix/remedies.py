"""The table of remedies: which pass fixes which `check` finding, missing op or parser error.

Each row is declared next to what does the fixing: a pass lists its rows in ``PassInfo.remedies``;
a rewrite rule (graphfix.plugin_rules) contributes rows from its own attributes (``anchor_ops`` for
the ops it rewrites away, ``fixes_checks`` / ``Rule.fixes`` for the findings it removes, ``needed``
for the versions, ``option`` for the flag that asks for it). This module only collects and queries
them: `graphfix check` (graphfix.diagnosis), the fix loop (``fix --until-parses``), `graphfix passes`
and docs/remedies.md read the same rows.

Three kinds of row:
  finding       a `graphfix check` finding kind (a profile check such as ``const_input``, or a
                checker finding such as ``int64-weights``), optionally only on some ops / with some
                profile-rule parameters, optionally only where ``applies(site)`` holds;
  missing-op    an op the target's parser has no importer for, which the pass rewrites away
                (``fallback`` rows answer only where no other row does);
  parser-error  a regular expression on the real parser's message (``fix --until-parses``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Tuple

from .target import TrtRange, TrtVersion

if TYPE_CHECKING:  # pragma: no cover
    from .plugin_rules.rule import Rule

FINDING = "finding"
MISSING_OP = "missing-op"
PARSER_ERROR = "parser-error"
KINDS = (FINDING, MISSING_OP, PARSER_ERROR)

# parser-error rows: which op the error may name: STANDARD_OP an ONNX op; OTHER_OP a custom op or
# none; NOT_CUSTOM an ONNX op or none
STANDARD_OP, OTHER_OP, NOT_CUSTOM = "standard", "other", "not-custom"


@dataclass(frozen=True)
class Site:
    """Where `check` found what a finding row may fix: the checker's facts and profile, the node
    (a diagnosis NodeRef), the profile rule's parameters, the tensor a model-level finding names."""
    facts: Any
    profile: Any
    ref: Any = None
    params: Dict[str, Any] = field(default_factory=dict)
    tensor: Optional[str] = None

    def input(self, index: int) -> Optional[str]:
        """The node's input name at `index` (None when absent or written as '')."""
        node = self.ref.node if self.ref is not None else None
        return node.input[index] if node is not None and index < len(node.input) and node.input[index] else None


# The parser's messages when it looks an op up as a plugin and finds none (8.6 and 10.x wording).
PLUGIN_LOOKUP_FAILED = r"Plugin not found|could not find plugin|getPluginCreator"


@dataclass(frozen=True)
class Remedy:
    """One row of the table. Build rows with fixes_finding / fixes_missing_op / fixes_parser_error."""
    kind: str
    what: str = ""                            # finding kind, or the parser-error regex
    ops: Tuple[str, ...] = ()                 # finding / missing-op rows: these ops only (empty: any)
    domain: Optional[str] = ""                # missing-op rows: the ops' domain ("" = ONNX)
    params: Tuple[Tuple[str, Any], ...] = ()  # finding rows: profile-rule parameters that must match
    trt: TrtRange = TrtRange()                # TensorRT versions the row holds for
    flag: Optional[str] = None                # the option / CLI flag that asks for it (None: default)
    fallback: bool = False                    # missing-op rows: only where no other row answers
    exclusive: bool = False                   # parser-error rows: decided first, and alone
    op_kind: Optional[str] = None             # parser-error rows: STANDARD_OP / OTHER_OP / any
    warnings: bool = False                    # parser-error rows: the parser's warnings count too
    prerequisite: Optional[Tuple[str, str]] = None  # (pass, why) that must run with this one
    why: str = ""
    ops_label: str = ""                       # missing-op rows: shown instead of the op list (docs stay
                                              # the same whatever onnx version computed the list)
    applies: Optional[Callable[[Site], bool]] = field(default=None, compare=False)
    pass_name: str = ""                       # set when collected: the pass that applies the fix
    rule: Optional[str] = None                # set when collected from a rewrite rule: its name
    _rule: Any = field(default=None, compare=False, repr=False)

    # -- matching -------------------------------------------------------------------------------
    def needed(self, target: Optional[TrtVersion]) -> bool:
        if target is None:
            return True
        if self._rule is not None:
            return self._rule.needs(target)
        return self.trt.contains(target)

    def matches_finding(self, kind: str, op: Optional[str], params: Dict[str, Any]) -> bool:
        if self.kind != FINDING:
            return False
        if self._rule is not None:
            return op is not None and self._rule.fixes(op, kind)
        if self.what != kind or (self.ops and op not in self.ops):
            return False
        return all(params.get(k) == v for k, v in self.params)

    def matches_op(self, op: str, domain: Optional[str]) -> bool:
        if self.kind != MISSING_OP or op not in self.ops:
            return False
        return domain is None or (self.domain or "") == ("" if domain == "ai.onnx" else domain)

    def matches_message(self, message: str, standard_op: Optional[bool]) -> bool:
        if self.kind != PARSER_ERROR or re.search(self.what, message, re.IGNORECASE) is None:
            return False
        if self.op_kind == STANDARD_OP:
            return bool(standard_op)
        if self.op_kind == OTHER_OP:
            return not standard_op
        if self.op_kind == NOT_CUSTOM:
            return standard_op is not False
        return True

    def describe(self) -> str:
        """One line for `graphfix passes` and docs/remedies.md."""
        if self.kind == FINDING:
            checks = self.what or ", ".join(getattr(self._rule, "fixes_checks", ())) or "(Rule.fixes)"
            text = f"check finding {checks}"
            if self.ops:
                text += " on " + ", ".join(self.ops)
            if self.params:
                text += " (" + ", ".join(f"{k} = {v!r}" for k, v in self.params) + ")"
        elif self.kind == MISSING_OP:
            domain = f"{self.domain}::" if self.domain else ""
            text = "no importer for " + (self.ops_label or ", ".join(domain + o for o in self.ops))
            if self.fallback:
                text += " (where no rule rewrites it)"
        else:
            text = f"parser message /{self.what}/"
        versions = str(self.trt) if self._rule is None else str(getattr(self._rule, "needed", "all"))
        if versions != "all":
            text += f"; TensorRT {versions}"
        if self.flag:
            text += f"; with {self.flag}"
        if self.rule:
            text += f"; rule {self.rule}"
        return text

    def to_json(self) -> dict:
        return {"kind": self.kind, "what": self.what, "ops": list(self.ops), "domain": self.domain,
                "params": dict(self.params), "trt": str(self.trt), "flag": self.flag, "pass": self.pass_name,
                "rule": self.rule, "fallback": self.fallback, "conditional": self.applies is not None,
                "why": self.why}


def fixes_finding(kind: str, *, ops: Iterable[str] = (), params: Optional[Dict[str, Any]] = None,
                  trt: TrtRange = TrtRange(), applies: Optional[Callable[[Site], bool]] = None,
                  flag: Optional[str] = None, why: str = "") -> Remedy:
    """A row: this pass removes `check` findings of `kind` (where `applies(site)`, when given)."""
    return Remedy(FINDING, kind, tuple(ops), params=tuple(sorted((params or {}).items())), trt=trt,
                  applies=applies, flag=flag, why=why)


def fixes_missing_op(ops: Iterable[str], *, domain: str = "", fallback: bool = False,
                     trt: TrtRange = TrtRange(), flag: Optional[str] = None,
                     applies: Optional[Callable[[Site], bool]] = None, ops_label: str = "",
                     why: str = "") -> Remedy:
    """A row: this pass rewrites `ops` away where the target's parser has no importer for them (and
    where `applies(site)` holds, when given); `ops_label` names them in docs instead of the list."""
    return Remedy(MISSING_OP, ops=tuple(sorted(ops)), domain=domain, fallback=fallback, trt=trt, flag=flag,
                  applies=applies, ops_label=ops_label, why=why)


def fixes_parser_error(pattern: str, *, why: str, op_kind: Optional[str] = None, exclusive: bool = False,
                       warnings: bool = False, prerequisite: Optional[Tuple[str, str]] = None) -> Remedy:
    """A row: parser errors whose message matches `pattern` (case-insensitive) call for this pass."""
    re.compile(pattern)
    return Remedy(PARSER_ERROR, pattern, op_kind=op_kind, exclusive=exclusive, warnings=warnings,
                  prerequisite=prerequisite, why=why)


# ----------------------------------------------------------------------------------------------
# Collecting the table

def _with_owner(row: Remedy, pass_name: str, rule: Optional["Rule"] = None) -> Remedy:
    from dataclasses import replace
    return replace(row, pass_name=pass_name, rule=rule.name if rule is not None else None, _rule=rule)


def _rule_rows(rule: "Rule") -> List[Remedy]:
    """A rewrite rule's rows, read from its declaration."""
    flag = None if rule.default else rule.ask_flag()
    from .plugin_rules.rule import Rule
    rows = [Remedy(MISSING_OP, ops=tuple(rule.anchor_ops), domain=rule.anchor_domain or "", flag=flag,
                   why=rule.summary)]
    if rule.fixes_checks or type(rule).fixes is not Rule.fixes:   # Rule.fixes answers for the row
        rows.append(Remedy(FINDING, "", tuple(rule.anchor_ops), flag=flag, why=rule.summary))
    return [_with_owner(r, rule.pass_name, rule) for r in rows]


# rows built once per set of registered passes / rules (a user may register rules at any time)
_BUILT: Dict[str, Tuple[Any, List[Remedy]]] = {}


def _memo(kind: str, key: Any, build: Callable[[], List[Remedy]]) -> List[Remedy]:
    if kind not in _BUILT or _BUILT[kind][0] != key:
        _BUILT[kind] = (key, build())
    return list(_BUILT[kind][1])


def pass_rows() -> List[Remedy]:
    """The rows the passes declare (PassInfo.remedies), in pipeline order."""
    from .registry import ordered_passes, registered
    key = tuple(sorted((name, id(cls), id(cls.info)) for name, cls in registered().items()))
    return _memo("passes", key, lambda: [_with_owner(r, cls.info.name) for cls in ordered_passes()
                                         for r in cls.info.remedies or ()])


def rule_rows() -> List[Remedy]:
    """The rows the registered rewrite rules declare, by rule name."""
    from .plugin_rules.registry import registered_rules
    rules = registered_rules()
    return _memo("rules", tuple((r.name, id(r)) for r in rules),
                 lambda: [row for rule in rules for row in _rule_rows(rule)])


def table() -> List[Remedy]:
    """Every row: the passes' (pipeline order), then the rules' (by name)."""
    return pass_rows() + rule_rows()


def _in_pipeline_order(names: Iterable[str]) -> List[str]:
    from .registry import PIPELINE_ORDER
    wanted = set(names)
    return [p for p in PIPELINE_ORDER if p in wanted]


# ----------------------------------------------------------------------------------------------
# Queries

def _refused(row: Remedy, site: Site) -> bool:
    """A rule whose own match refuses the node (decompose-ops' near misses): its row does not hold."""
    return row._rule is not None and row._rule.refuses(site)


def _pipeline_position(row: Remedy) -> int:
    from .registry import PIPELINE_ORDER
    return PIPELINE_ORDER.index(row.pass_name) if row.pass_name in PIPELINE_ORDER else len(PIPELINE_ORDER)


def remedy_for_finding(kind: str, site: Site, op: Optional[str] = None, target: Optional[TrtVersion] = None
                       ) -> Optional[Remedy]:
    """The row that fixes a finding of `kind` on `op` at `site`: the first pass row (pipeline order)
    whose ``applies`` holds, else the first rule row (pipeline order), unless that rule refuses it."""
    for row in pass_rows():
        if row.matches_finding(kind, op, site.params) and row.needed(target) \
                and (row.applies is None or row.applies(site)):
            return row
    rows = sorted((r for r in rule_rows() if r.matches_finding(kind, op, site.params) and r.needed(target)),
                  key=_pipeline_position)
    if not rows or _refused(rows[0], site):
        return None
    return rows[0]


def fix_for_finding(kind: str, site: Site, op: Optional[str] = None, target: Optional[TrtVersion] = None
                    ) -> Optional[str]:
    row = remedy_for_finding(kind, site, op, target)
    return row.pass_name if row is not None else None


def _missing_op_rows(op: str, domain: Optional[str], target: Optional[TrtVersion], fallbacks: bool
                     ) -> List[Remedy]:
    rows = [r for r in table() if r.matches_op(op, domain) and r.needed(target)]
    main = [r for r in rows if not r.fallback]
    if main:
        return [r for r in main if r.flag is None] or main
    return rows if fallbacks else []


def passes_for_missing_op(op: str, domain: Optional[str] = None, target: Optional[TrtVersion] = None,
                          fallbacks: bool = True) -> List[str]:
    """The passes (pipeline order) that rewrite `op` (of `domain`; any when None) away where `target`
    (any when None) needs it. Rows applied by default win over opt-in ones (FastGelu: the
    decomposition, not the plugin); ``fallback`` rows answer only where no other row does."""
    return _in_pipeline_order(r.pass_name for r in _missing_op_rows(op, domain, target, fallbacks))


def fix_for_missing_op(op: str, domain: Optional[str], site: Site, target: Optional[TrtVersion] = None
                       ) -> Optional[str]:
    """The first pass that rewrites `op` away at `site`; where its rule refuses the node there, a
    fallback row that judges the node itself (``applies``: expand-functions, ONNX's function body)
    and takes it, else None."""
    rows = _missing_op_rows(op, domain, target, fallbacks=True)
    names = _in_pipeline_order(r.pass_name for r in rows)
    if names and not any(_refused(r, site) or not _holds(r, site) for r in rows if r.pass_name == names[0]):
        return names[0]
    fallbacks = _in_pipeline_order(r.pass_name for r in _judging_fallback_rows(op, domain, target)
                                   if r.pass_name not in names[:1] and r.applies(site))
    return fallbacks[0] if fallbacks else None


def _judging_fallback_rows(op: str, domain: Optional[str], target: Optional[TrtVersion]) -> List[Remedy]:
    """Fallback missing-op rows for `op` that judge each node themselves (``applies``)."""
    return [r for r in table() if r.kind == MISSING_OP and r.fallback and r.applies is not None
            and r.matches_op(op, domain) and r.needed(target)]


def conditional_fallbacks_for_missing_op(op: str, domain: Optional[str] = None,
                                        target: Optional[TrtVersion] = None) -> List[str]:
    """The passes (pipeline order) whose fallback rows for `op` judge each node themselves
    (``applies``: expand-functions, for the ops ONNX defines as functions), where no other row claims
    the op (target-opset lowers Gelu, Mish, CastLike...): the fix loop adds them, as `check` names
    them where its node allows."""
    if any(r.applies is None for r in table() if r.kind == MISSING_OP and r.matches_op(op, domain)
           and r.needed(target)):
        return []
    return _in_pipeline_order(r.pass_name for r in _judging_fallback_rows(op, domain, target))


def _holds(row: Remedy, site: Site) -> bool:
    return row.applies is None or row.applies(site)


def rule_passes_for_finding(op: str, kind: str, target: Optional[TrtVersion] = None) -> List[str]:
    """The passes (pipeline order) whose rewrite rules remove a finding of `kind` on `op`."""
    return _in_pipeline_order(r.pass_name for r in rule_rows()
                              if r.matches_finding(kind, op, {}) and r.needed(target))


def flag_for(kind: str, pass_name: str, op: Optional[str], target: TrtVersion) -> Optional[str]:
    """The `graphfix fix` flag that `pass_name` needs to fix a finding of `kind` on `op` (None: it
    acts by default): the flag of its finding row, else that of its rules for `op` where none of
    them applies by default on `target` (e.g. --nms-plugin)."""
    for row in pass_rows():
        if row.pass_name == pass_name and row.kind == FINDING and row.what == kind and row.flag \
                and row.applies is None:     # a conditional row's flag comes with its finding
            return row.flag
    if not op:
        return None
    rows = [r for r in rule_rows() if r.kind == MISSING_OP and r.pass_name == pass_name and op in r.ops]
    if not rows or any(r.flag is None and r._rule.needed.contains(target) for r in rows):
        return None
    return rows[0].flag


def parser_rows(warnings: bool = False) -> List[Remedy]:
    rows = [r for r in pass_rows() if r.kind == PARSER_ERROR]
    return [r for r in rows if r.warnings] if warnings else rows


def passes_for_message(message: str, standard_op: Optional[bool]) -> List[str]:
    """The passes a parser message calls for (`standard_op`: whether the op it names is an ONNX op;
    None when it names none): the exclusive rows decide alone where one matches."""
    rows = [r for r in parser_rows() if r.matches_message(message, standard_op)]
    exclusive = [r for r in rows if r.exclusive]
    return [r.pass_name for r in (exclusive or rows)]


def prerequisites() -> Dict[str, Tuple[str, str]]:
    """pass -> (pass it needs beside it, why), from the parser-error rows."""
    return {r.pass_name: r.prerequisite for r in parser_rows() if r.prerequisite}


# ----------------------------------------------------------------------------------------------
# The docs

def markdown() -> str:
    """docs/remedies.md: every row, by pass (`graphfix passes --markdown`; a test keeps the file current)."""
    lines = ["# The table of remedies", "",
             "Generated by `graphfix passes --markdown` from the passes' and rewrite rules' declarations",
             "(`PassInfo.remedies`, `Rule.anchor_ops` / `fixes_checks` / `needed` / `flag`; graphfix/remedies.py).",
             "`graphfix check` names these passes in its fix column, `graphfix fix --until-parses` maps parser",
             "errors with them. A conditional row holds only where its pass can act (e.g. folding needs an input",
             "computable before run time).", "",
             "| pass | kind | fixes | TensorRT | flag | declared by |", "| --- | --- | --- | --- | --- | --- |"]
    for row in sorted(table(), key=lambda r: (_pipeline_position(r), r.rule or "", KINDS.index(r.kind))):
        if row.kind == FINDING:
            what = row.what or ", ".join(getattr(row._rule, "fixes_checks", ())) or "(Rule.fixes)"
            what = f"`{what}`" + (" on " + ", ".join(row.ops) if row.ops else "")
            what += "".join(f" ({k} = {v!r})" for k, v in row.params)
            what += " (conditional)" if row.applies is not None else ""
        elif row.kind == MISSING_OP:
            domain = f"{row.domain}::" if row.domain else ""
            what = (row.ops_label or ", ".join(domain + o for o in row.ops)) \
                + (" (where no rule rewrites it)" if row.fallback else "")
        else:
            what = "`" + row.what.replace("|", "\\|") + "`"
        versions = str(row._rule.needed) if row._rule is not None else str(row.trt)
        if row._rule is not None and row._rule.family == "ops":
            versions = "per profile"
        by = f"rule `{row.rule}`" if row.rule else "pass"
        lines.append(f"| `{row.pass_name}` | {row.kind} | {what} | {versions} | {row.flag or ''} | {by} |")
    return "\n".join(lines) + "\n"
