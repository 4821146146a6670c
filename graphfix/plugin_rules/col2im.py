"""Col2Im (opset 18; no TensorRT importer) -> Reshape + grouped ConvTranspose with a one-hot kernel.

Col2Im is the adjoint of im2col: channel c * K + k of column l (K = prod(block_shape), l the block's
position in C order, k the element's position inside the block) is added into image channel c at
block l's offset plus k's (dilated) offset, then the padding is cut away. A ConvTranspose does the
same scatter-add: its input is the columns reshaped to [N, C*K, blocks...], group = C, and kernel
element k of input channel c*K + k is 1 where the block element k lands, 0 elsewhere; strides,
dilations and the begin pads carry over. The last stride-remainder positions of the padded image
get no column (Col2Im's block count floors), so they are zero: the end pads shrink by that remainder,
and where the end pads are smaller, a zero Pad adds what is left. Exact up to summation order where
blocks overlap (each output sums the same column values). Needs constant image and block shapes and
a static channel dim (it sizes the kernel); FLOAT/FLOAT16 only (ConvTranspose's types on TensorRT).
"""
from __future__ import annotations

import numpy as np

from .build import remove_nodes
from .ops_base import MAX_ONE_HOT_ELEMENTS, OpsDecompose, prod
from .patterns import const, dtype_of, static_dims
from .registry import register_rule
from .rule import Match, NearMiss

FLOAT_TYPES = (np.dtype(np.float32), np.dtype(np.float16))


def block_counts(image, block, dilations, pads, strides):
    """Blocks per spatial axis, and per axis how many trailing padded-image positions no block covers."""
    rank = len(image)
    counts, uncovered = [], []
    for i in range(rank):
        span = dilations[i] * (block[i] - 1) + 1
        padded = image[i] + pads[i] + pads[rank + i]
        counts.append((padded - span) // strides[i] + 1)
        uncovered.append((padded - span) % strides[i])
    return counts, uncovered


def one_hot_kernel(channels: int, block, dtype) -> np.ndarray:
    """[C*K, 1, *block]: input channel c*K + k has a single 1 at block element k."""
    k = prod(block)
    eye = np.eye(k, dtype=dtype).reshape([k, 1, *block])
    return np.tile(eye, (channels, 1) + (1,) * len(block))


@register_rule
class Col2ImDecompose(OpsDecompose):
    name = "col2im"
    summary = "Col2Im -> Reshape + grouped ConvTranspose with a one-hot kernel (constant image/block shapes)"
    anchor_ops = ("Col2Im",)

    def match_node(self, graph, node, ctx):
        image, block = const(node.inputs[1]), const(node.inputs[2])
        if image is None or block is None:
            return NearMiss(node.name, "image_shape and block_shape must be constants")
        image = [int(v) for v in np.asarray(image).reshape(-1)]
        block = [int(v) for v in np.asarray(block).reshape(-1)]
        rank = len(image)
        if rank == 0 or len(block) != rank:
            return NearMiss(node.name, "image_shape and block_shape must have one value per spatial axis")
        dtype = dtype_of(node.inputs[0])
        if dtype not in FLOAT_TYPES:
            return NearMiss(node.name, f"Col2Im on {dtype}: ConvTranspose takes FLOAT/FLOAT16 only")
        dims = static_dims(node.inputs[0])
        if dims is None or len(dims) != 3 or dims[1] is None:
            return NearMiss(node.name, "the input needs a static channel dim ([N, C*K, L])")
        k = prod(block)
        if dims[1] % k:
            return NearMiss(node.name, f"channel dim {dims[1]} is not a multiple of the block size {k}")
        channels = dims[1] // k
        if channels * k * k > MAX_ONE_HOT_ELEMENTS:
            return NearMiss(node.name, f"the one-hot kernel would have {channels * k * k} elements")
        dilations = [int(v) for v in node.attrs.get("dilations", [1] * rank)]
        pads = [int(v) for v in node.attrs.get("pads", [0] * (2 * rank))]
        strides = [int(v) for v in node.attrs.get("strides", [1] * rank)]
        counts, uncovered = block_counts(image, block, dilations, pads, strides)
        if any(c < 1 for c in counts):
            return NearMiss(node.name, "the image is smaller than one block")
        if dims[2] is not None and dims[2] != prod(counts):
            return NearMiss(node.name, f"{dims[2]} columns where the shapes give {prod(counts)} blocks")
        ends = [pads[rank + i] - uncovered[i] for i in range(rank)]
        return Match(anchor=node.name, nodes=[node], inputs=[node.inputs[0]], outputs=[node.outputs[0]],
                     details={"image_shape": image, "block_shape": block},
                     data={"dtype": dtype, "channels": channels, "block": block, "counts": counts,
                           "dilations": dilations, "strides": strides, "begins": pads[:rank],
                           "ends": [max(e, 0) for e in ends], "zero_fill": [max(-e, 0) for e in ends]})

    def rewrite(self, graph, match, build):
        d = match.data
        x, out = match.inputs[0], match.outputs[0]
        remove_nodes(graph, match.nodes)
        shape = build.const(np.asarray([0, 0, *d["counts"]], np.int64), "shape")
        blocks = build.op("Reshape", x, shape, dtype=d["dtype"])
        kernel = build.const(one_hot_kernel(d["channels"], d["block"], d["dtype"]), "one_hot")
        attrs = {"group": d["channels"], "kernel_shape": d["block"], "strides": d["strides"],
                 "dilations": d["dilations"], "pads": d["begins"] + d["ends"]}
        if not any(d["zero_fill"]):
            build.node("ConvTranspose", [blocks, kernel], outputs=[out], attrs=attrs)
            return {}
        image = build.op("ConvTranspose", blocks, kernel, attrs=attrs, dtype=d["dtype"])
        rank = len(d["block"])
        pads = build.const(np.asarray([0] * (rank + 2) + [0, 0, *d["zero_fill"]], np.int64), "pads")
        build.node("Pad", [image, pads], outputs=[out])
        return {}
