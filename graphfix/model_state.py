"""One state of the model in the pipeline: the model, its gs.Graph and what is known about it.

The graph is imported on first need and kept while passes change nothing; a pass that changes it
hands it on to the next state (exported once). What a check computed about a state is kept with it,
so that each state is validated and run in ONNX Runtime once: its outputs on the chosen inputs
(checks.ort.ModelRun) and its structural problems (checks.structural.validity_problems).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

import onnx


@dataclass
class ModelState:
    model: onnx.ModelProto
    graph: Any = None                            # gs.Graph of `model`; None until needed or after a rollback
    run: Any = None                              # checks.ort.ModelRun on the pipeline's feeds, once known
    problems: Optional[Dict[str, str]] = None    # validity_problems(model), once known
    lazy: Optional[dict] = None                  # id -> (gs.Constant, its LazyValues) as imported

    def take_graph(self):
        """The state's graph, imported from the model the first time."""
        from .graph_utils import to_graph
        if self.graph is None:
            self.graph = to_graph(self.model)
            self.lazy = None
        if self.lazy is None:
            self.lazy = _lazy_constants(self.graph)
        return self.graph

    def unread(self) -> None:
        """After a pass that changed nothing: the constants it read hold their imported tensors again.
        graphsurgeon loads a constant's values when read and exports them re-encoded (raw_data instead
        of float_data): the same values in other bytes than the graph as imported."""
        for tensor, lazy in (self.lazy or {}).values():
            if tensor._values is not lazy:
                tensor._values = lazy

    def drop_graph(self) -> None:
        """The graph was changed (it belongs to the next state) or spoiled by a failed pass."""
        self.graph = self.lazy = None


def _lazy_constants(graph) -> dict:
    """The graph's constants (node inputs and attributes, graph outputs, subgraphs) not loaded yet."""
    import onnx_graphsurgeon as gs
    from onnx_graphsurgeon.ir.tensor import LazyValues
    from .graph_utils import gs_graphs
    found = {}
    for g in gs_graphs(graph):
        for node in g.nodes:
            for t in list(node.inputs) + list(node.attrs.values()):
                if isinstance(t, gs.Constant) and isinstance(t._values, LazyValues):
                    found[id(t)] = (t, t._values)
        for t in g.outputs:
            if isinstance(t, gs.Constant) and isinstance(t._values, LazyValues):
                found[id(t)] = (t, t._values)
    return found
