"""TensorRT's messages named by ONNX node: parser errors (by index on 8.6, by name on 10.x) and
build errors (by the node names they mention)."""
from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Sequence

_NODE_TEXT = re.compile(r"In node (-?\d+)(?: with name: (.*?) and operator: (\S+))? \((\w+)\)")
_INVALID_NODE = re.compile(r"Invalid Node - (\S+)")


def map_parser_errors(raw_errors: Sequence[Dict[str, Any]], model=None) -> List[Dict[str, Optional[str]]]:
    """Raw TensorRT parser errors (see worker.py) -> [{"node", "op", "message"}] named by ONNX node.

    TensorRT 10 reports the node's name and operator; 8.6 only its index in the graph (``node()``,
    also in the text as "In node 3 (importX)"), which is looked up in the model.
    """
    nodes = list(model.graph.node) if model is not None else []
    by_name = {n.name: n for n in nodes if n.name}
    mapped = []
    for err in raw_errors:
        name, op = err.get("node_name") or None, err.get("node_operator") or None
        index = err.get("index")
        text = err.get("text") or ""
        m = _NODE_TEXT.search(text)
        if m:
            if index is None and int(m.group(1)) >= 0:
                index = int(m.group(1))
            name = name or m.group(2) or None
            op = op or m.group(3) or None
        if index is not None and 0 <= index < len(nodes):
            name = name or nodes[index].name or None
            op = op or nodes[index].op_type
        desc = str(err.get("desc") or text)
        if name is None:
            inv = _INVALID_NODE.search(desc) or _INVALID_NODE.search(text)
            if inv and inv.group(1) in by_name:
                name = inv.group(1)
        if op is None and name in by_name:
            op = by_name[name].op_type
        code = err.get("code")
        message = f"{code}: {desc}" if code and code not in desc else desc
        mapped.append({"node": name, "op": op, "message": message})
    return mapped


def attribute_message(message: str, model=None) -> Dict[str, Optional[str]]:
    """A build-time error -> {"node", "op", "message"}: the longest ONNX node name it mentions."""
    best = None
    for node in (model.graph.node if model is not None else ()):
        if len(node.name) >= 2 and node.name in message and (best is None or len(node.name) > len(best.name)):
            best = node
    return {"node": best.name if best else None, "op": best.op_type if best else None, "message": message}
