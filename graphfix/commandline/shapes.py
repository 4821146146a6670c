"""`--shapes`-style flags: 'a:1x128,seq=128' -> {'a': [1, 128], 'seq': 128}."""
from __future__ import annotations

from typing import Optional

from ..errors import UsageError


def parse_shapes(text: Optional[str]):
    """'a:1x128,b:1x3x224x224,seq=128' -> {'a': [1, 128], 'b': [1, 3, 224, 224], 'seq': 128}
    (an input's dims after ':', a dim symbol's size after '=')."""
    if not text:
        return None
    shapes = {}
    for item in text.split(","):
        symbol, eq, size = item.rpartition("=")
        if eq:
            if not symbol or not size.strip().isdigit():
                raise UsageError(f"bad --shapes entry '{item}' (expected symbol=128)")
            shapes[symbol.strip()] = int(size)
            continue
        name, sep, dims = item.rpartition(":")
        if not sep or not name:
            raise UsageError(f"bad --shapes entry '{item}' (expected name:1x128)")
        try:
            shapes[name] = [int(d) for d in dims.split("x")]
        except ValueError:
            raise UsageError(f"bad --shapes entry '{item}' (dims must be integers joined by 'x')") from None
    return shapes
