"""What a rewrite rule is: a pattern anchored at one op, checks that explain a non-match, a replacement.

Two kinds of rule share this contract:
- ``PLUGIN`` rules replace a subgraph by a TensorRT plugin node (ONNX Runtime cannot run the result;
  the ``plugins`` pass applies them);
- ``DECOMPOSE`` rules replace an op that TensorRT has no importer for by standard ONNX ops (ONNX Runtime
  checks the result; the ``decompose-contrib`` and ``decompose-quantized`` passes apply them, by family).

A rule states which TensorRT versions need it (``needed``), which ship its plugin (``plugin.ships``) and
whether it applies without being asked (``default``) or only through a ``PassContext.options`` key
(``option``). ``match`` returns a Match, a NearMiss (the pattern almost matched: the reason becomes a
warning in the report) or None (not this pattern at all).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Dict, List, Optional, Tuple, Union

from ..target import TrtRange, TrtVersion

if TYPE_CHECKING:  # pragma: no cover
    import onnx_graphsurgeon as gs

    from ..pass_api import PassContext
    from .build import Builder

PLUGIN = "plugin"
DECOMPOSE = "decompose"


@dataclass(frozen=True)
class PluginSpec:
    """A TensorRT plugin as its creator registers it, and the TensorRT releases that ship it."""
    name: str                       # creator name == ONNX op_type the parser looks up
    version: str = "1"              # creator version (node attribute ``plugin_version``)
    namespace: str = ""             # creator namespace (node attribute ``plugin_namespace``)
    ships: TrtRange = TrtRange()    # TensorRT versions whose libnvinfer_plugin registers it
    source: str = ""                # where its fields were read (README / creator source)

    def to_json(self) -> dict:
        return {"name": self.name, "version": self.version, "namespace": self.namespace,
                "ships": str(self.ships)}


@dataclass
class Match:
    """One place a rule's pattern matched: what goes, what comes in, what goes out."""
    anchor: str                                          # node name the change is reported under
    nodes: List[Any]                                     # gs.Nodes the rewrite removes
    inputs: List[Any] = field(default_factory=list)      # tensors the replacement reads, in order
    outputs: List[Any] = field(default_factory=list)     # tensors the replacement produces, in order
    fields: Dict[str, Any] = field(default_factory=dict)  # plugin fields (python values, see build.py)
    details: Dict[str, Any] = field(default_factory=dict)  # JSON primitives for the report
    data: Dict[str, Any] = field(default_factory=dict)    # anything else rewrite() needs


@dataclass(frozen=True)
class NearMiss:
    anchor: str
    reason: str


class Rule:
    """Base class of every rewrite rule. Subclass it, set the class attributes, implement ``match``.

    Plugin rules usually need no ``rewrite``: the default builds the plugin node from the match
    (``inputs``, ``outputs``, ``fields``). Decompose rules implement ``rewrite``.
    """
    name: ClassVar[str] = ""                 # kebab-case, unique; the report key
    summary: ClassVar[str] = ""
    kind: ClassVar[str] = PLUGIN             # PLUGIN or DECOMPOSE
    family: ClassVar[str] = ""               # DECOMPOSE only: "contrib", "quantized" or "ops" (which pass runs it)
    anchor_ops: ClassVar[Tuple[str, ...]] = ()   # op types a match starts from
    anchor_domain: ClassVar[str] = ""        # their domain ("" = ONNX; "com.microsoft" = ORT contrib)
    plugin: ClassVar[Optional[PluginSpec]] = None
    needed: ClassVar[TrtRange] = TrtRange()  # TensorRT versions that need the rewrite
    default: ClassVar[bool] = True           # applied where needed without being asked
    option: ClassVar[Optional[str]] = None   # PassContext.options key that asks for it on any target
    flag: ClassVar[Optional[str]] = None     # the `graphfix fix` flag that sets ``option`` (default: --rules NAME)
    changes_outputs: ClassVar[bool] = False  # the replacement produces different graph outputs (NMS)
    function_ok: ClassVar[bool] = False      # may be emitted as an ONNX local function (TensorRT >= 10.7)
    # `graphfix check` findings (profile check names, e.g. "attr_in") on the anchor ops that this
    # rule's rewrite removes where the target needs it: rows of the table of remedies (graphfix.remedies)
    fixes_checks: ClassVar[Tuple[str, ...]] = ()

    def match(self, graph: "gs.Graph", node: "gs.Node", ctx: "PassContext") -> Union[Match, NearMiss, None]:
        raise NotImplementedError

    def rewrite(self, graph: "gs.Graph", match: Match, build: "Builder") -> Dict[str, Any]:
        """Replace ``match.nodes``; return extra JSON details for the report. Default: plugin node."""
        if self.plugin is None:
            raise NotImplementedError(f"rule '{self.name}' has no plugin and no rewrite()")
        build.replace_with_plugin(self, match)
        return {}

    def function_body(self, match: Match, build: "Builder"):
        """Body of the local function emitted for `match` with --plugin-as-function (see build.py)."""
        from .build import default_function_body
        return default_function_body(match)

    @property
    def pass_name(self) -> str:
        """The pass that applies this rule."""
        return f"decompose-{self.family}" if self.kind == DECOMPOSE else "plugins"

    # -- selection -------------------------------------------------------------------------------
    def needs(self, target: TrtVersion) -> bool:
        """Whether `target` needs this rewrite (``needed``; family ``ops`` reads the profiles)."""
        return self.needed.contains(target)

    def fixes(self, op: str, check: str) -> bool:
        """Whether this rule's rewrite removes a `graphfix check` finding (`check`: the finding's
        kind, e.g. a profile check name) on `op` (default: ``fixes_checks`` on ``anchor_ops``)."""
        return op in self.anchor_ops and check in self.fixes_checks

    def refuses(self, site) -> bool:
        """Whether the rule's own match refuses the node at `site` (a graphfix.remedies.Site), so that
        `check` names no fix for it there. Default: never."""
        return False

    def ask_flag(self) -> str:
        """The `graphfix fix` flag that asks for this rule."""
        return self.flag or f"--rules {self.name}"

    def asked(self, ctx: "PassContext") -> bool:
        return bool(self.option) and bool(ctx.options.get(self.option))

    def wanted(self, ctx: "PassContext") -> Tuple[bool, Optional[str]]:
        """(apply?, why not) for the context's target and options; `why not` is None when silent."""
        target: TrtVersion = ctx.target
        disabled = set(ctx.options.get("disable_rules") or ())
        if self.name in disabled:
            return False, None
        if not self.asked(ctx) and not (self.default and self.needs(target)):
            return False, None
        if self.plugin is not None and not self.plugin.ships.contains(target):
            return False, (f"{self.name}: not applied, TensorRT {target} does not ship plugin "
                           f"{self.plugin.name} v{self.plugin.version} (shipped in {self.plugin.ships})")
        return True, None

    def to_json(self) -> dict:
        return {"name": self.name, "summary": self.summary, "kind": self.kind, "family": self.family,
                "anchor_ops": list(self.anchor_ops), "anchor_domain": self.anchor_domain,
                "plugin": self.plugin.to_json() if self.plugin else None, "needed": str(self.needed),
                "default": self.default, "option": self.option, "changes_outputs": self.changes_outputs,
                "function_ok": self.function_ok}
