"""Einsum -> ReduceSum / Transpose / Reshape / MatMul, where the target computes Einsum wrong.

TensorRT before 10.12 builds Einsum with an ellipsis, a broadcast dim or a repeated subscript and
returns wrong results (measured on 8.6.0; profile check ``einsum_features``), and rejects subscripts
outside a-z (``einsum_chars``). This rule rewrites such nodes into ops TensorRT computes right:

- an ellipsis becomes fresh letters not used in the equation (the operands' ranks must be known);
- letters of one operand that appear nowhere else are summed out first (ReduceSum);
- two operands: letters in both and in the output are batch dims, letters in both and not in the
  output are contracted, the others are free; each operand is transposed to [batch, free,
  contracted] / [batch, contracted, free], its free and contracted groups are merged into one dim
  each (Reshape, only where a group has several letters; needs their dims static), and one MatMul
  (which broadcasts batch dims of size 1) does the product; then Reshape back and Transpose to the
  output order;
- more than two operands are contracted left to right, keeping the letters needed later.
A subscript repeated within one operand (a diagonal, 'ii->i') keeps the elements where the indices
agree (Where with a constant identity mask; needs that dim static) and sums one of the two axes away.
Refused (left alone, with a note): an ellipsis of unknown rank, a merge of dynamic dims, broadcasting
over a summed or free letter, an equation that does not parse.
"""
from __future__ import annotations

import string
from typing import List, Optional, Tuple

import numpy as np

from .build import remove_nodes
from .ops_base import OpsDecompose, dtype_or_float, prod, reduce, squeeze, unsqueeze
from .patterns import static_dims
from .registry import register_rule
from .rule import Match, NearMiss


class EinsumError(ValueError):
    pass


def parse(equation: str, ranks: List[Optional[int]]) -> Tuple[List[str], str]:
    """Operand subscripts and the output, with '...' replaced by fresh upper-case letters."""
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ranks):
        raise EinsumError(f"{len(terms)} operand terms for {len(ranks)} inputs")
    ell_rank = 0
    for term, rank in zip(terms, ranks):
        if "..." in term:
            if rank is None:
                raise EinsumError("an ellipsis over an operand of unknown rank")
            ell_rank = max(ell_rank, rank - len(term.replace("...", "")))
    fresh = [c for c in string.ascii_letters if c not in eq][::-1][:ell_rank]   # unused letters
    out_terms = []
    for term, rank in zip(terms, ranks):
        if "..." in term:
            n = rank - len(term.replace("...", ""))
            term = term.replace("...", "".join(fresh[ell_rank - n:]))
        out_terms.append(term)
    if arrow:
        out = rhs.replace("...", "".join(fresh))
    else:   # implicit output: the ellipsis, then letters that appear once, sorted
        letters = "".join(out_terms)
        out = "".join(fresh) + "".join(sorted(c for c in set(letters) if letters.count(c) == 1 and c not in fresh))
    for term in out_terms + [out]:
        if any(not c.isalpha() for c in term):
            raise EinsumError(f"subscript {term!r} does not parse")
    for term, rank in zip(out_terms, ranks):
        if rank is not None and rank != len(term):
            raise EinsumError(f"subscript {term!r} does not match rank {rank}")
    if len(set(out)) != len(out) or any(c not in "".join(out_terms) for c in out):
        raise EinsumError(f"output {out!r} does not parse")
    return out_terms, out


@register_rule
class EinsumLower(OpsDecompose):
    name = "einsum"
    summary = "Einsum -> ReduceSum/Transpose/Reshape/MatMul (ellipsis, broadcasting, any letters)"
    anchor_ops = ("Einsum",)
    fixes_checks = ("einsum_features", "einsum_chars")

    def match_node(self, graph, node, ctx):
        equation = str(node.attrs.get("equation", ""))
        dims = [static_dims(t) for t in node.inputs]
        try:
            terms, out = parse(equation, [None if d is None else len(d) for d in dims])
            for term, d in zip(terms, dims):
                for c in {c for c in term if term.count(c) > 1}:
                    sizes = {d[i] if d else None for i, x in enumerate(term) if x == c}
                    if None in sizes or len(sizes) > 1:
                        raise EinsumError(f"the diagonal over {c!r} in {term!r} needs one static size")
            plan_dims, broadcast = _letter_dims(terms, dims)
            _plan([_dedup(t) for t in terms], out, plan_dims, broadcast)   # raises where lowering is wrong
        except EinsumError as exc:
            return NearMiss(node.name, f"equation {equation!r}: {exc}")
        return Match(anchor=node.name, nodes=[node], inputs=list(node.inputs), outputs=[node.outputs[0]],
                     details={"equation": equation}, data={"terms": terms, "out": out, "dims": plan_dims})

    def rewrite(self, graph, match, build):
        terms, out, dims = match.data["terms"], match.data["out"], match.data["dims"]
        dtype = dtype_or_float(match.inputs[0])
        target = match.outputs[0]
        remove_nodes(graph, match.nodes)
        ops = [_diagonal(build, graph, t, term, dims, dtype) for t, term in zip(match.inputs, terms)]
        ops = [(_sum_out(build, graph, t, term, out, [x[1] for j, x in enumerate(ops) if j != i], dtype))
               for i, (t, term) in enumerate(ops)]
        while len(ops) > 1:
            (a, ta), (b, tb) = ops[0], ops[1]
            later = "".join(x[1] for x in ops[2:]) + out
            keep = "".join(c for c in dict.fromkeys(ta + tb) if c in later)
            ops = [(_pair(build, graph, a, ta, b, tb, keep, dims, dtype), keep)] + ops[2:]
        t, term = ops[0]
        t, term = _sum_out(build, graph, t, term, out, [], dtype)
        perm = [term.index(c) for c in out]
        if perm != list(range(len(perm))):
            build.node("Transpose", [t], outputs=[target], attrs={"perm": perm})
        else:
            build.node("Identity", [t], outputs=[target])
        return {}


def _letter_dims(terms, dims):
    """letter -> its static size (the non-1 one where operands broadcast); raises where a letter that
    is summed or free would broadcast (MatMul broadcasts batch dims only)."""
    seen = {}
    for term, d in zip(terms, dims):
        if d is not None:
            for c, v in zip(term, d):
                if v is not None:
                    seen.setdefault(c, set()).add(v)
    return {c: max(v) for c, v in seen.items()}, {c for c, v in seen.items() if len(v) > 1}


def _plan(terms, out, dims, broadcast):
    """Dry run of the pairwise contraction: a merged group needs static sizes (one unknown single
    letter may take -1), and only batch letters may broadcast."""
    current = terms[0]
    for i in range(1, len(terms)):
        nxt = terms[i]
        later = "".join(terms[i + 1:]) + out
        keep = "".join(c for c in dict.fromkeys(current + nxt) if c in later)
        batch, afree, bfree, contr = _groups(current, nxt, keep)
        if any(c in broadcast for c in afree + bfree + contr):
            raise EinsumError("broadcasting over a summed or free subscript")
        for side in ((afree, contr), (contr, bfree), (afree, bfree)):
            if any(len(g) > 1 for g in side):
                unknown = [c for g in side for c in g if c not in dims]
                if len(unknown) > 1 or any(len(g) > 1 for g in side if any(c in unknown for c in g)):
                    raise EinsumError(f"merging dims {'/'.join(side)!r} needs static sizes")
        current = keep
    return True


def _groups(ta, tb, keep):
    batch = "".join(c for c in ta if c in tb and c in keep)
    contr = "".join(c for c in ta if c in tb and c not in keep)
    afree = "".join(c for c in ta if c not in tb)
    bfree = "".join(c for c in tb if c not in ta)
    return batch, afree, bfree, contr


def _dedup(term: str) -> str:
    return "".join(dict.fromkeys(term))


def _diagonal(build, graph, t, term, dims, dtype):
    """Take the diagonal over each letter repeated in `term` ('ii' -> 'i'): keep the elements where
    the two indices agree (Where with an identity mask, so inf/NaN elsewhere do not leak), then
    ReduceSum the second axis away."""
    while len(set(term)) != len(term):
        c = next(c for c in term if term.count(c) > 1)
        p = term.index(c)
        q = term.index(c, p + 1)
        n = dims[c]
        shape = [1] * len(term)
        shape[p] = shape[q] = n
        eye = build.const(np.eye(n, dtype=np.bool_).reshape(shape), "diagonal")
        kept = build.op("Where", eye, t, build.const(np.zeros((), dtype), "zero"), dtype=dtype)
        t = reduce(build, graph, "ReduceSum", kept, [q], keepdims=0, dtype=dtype)
        term = term[:q] + term[q + 1:]
    return t, term


def _sum_out(build, graph, t, term, out, others, dtype):
    """ReduceSum the letters of `term` that no other operand and not the output has."""
    elsewhere = "".join(others) + out
    axes = [i for i, c in enumerate(term) if c not in elsewhere]
    if not axes:
        return t, term
    t = reduce(build, graph, "ReduceSum", t, axes, keepdims=0, dtype=dtype)
    return t, "".join(c for c in term if c in elsewhere)


def _arrange(build, graph, t, term, order, groups, dims, dtype):
    """Transpose `t` (letters `term`) to `order`, then merge each group of `groups` into one dim
    (an empty group becomes a dim of 1)."""
    perm = [term.index(c) for c in order]
    if perm != list(range(len(perm))):
        t = build.op("Transpose", t, attrs={"perm": perm}, dtype=dtype)
    if all(len(g) == 1 for g in groups):
        return t
    nb = len(order) - sum(len(g) for g in groups)
    if all(len(g) <= 1 for g in groups):   # only empty groups: insert dims of 1
        axes, pos = [], nb
        for g in groups:
            if not g:
                axes.append(pos)
            pos += 1
        return unsqueeze(build, graph, t, axes, dtype=dtype)
    shape = [0] * nb + [_size(g, dims) for g in groups]
    return build.op("Reshape", t, build.const(np.asarray(shape, np.int64), "shape"), dtype=dtype)


def _size(group, dims) -> int:
    """A merged group's size; -1 for a single letter of unknown size (_plan allows one)."""
    if not group:
        return 1
    if any(c not in dims for c in group):
        return -1
    return prod(dims[c] for c in group)


def _pair(build, graph, a, ta, b, tb, keep, dims, dtype):
    """Contract two operands into one whose letters are batch + afree + bfree (== `keep`, reordered)."""
    batch, afree, bfree, contr = _groups(ta, tb, keep)
    # letters of one operand not in the other and not kept were summed out by _sum_out already
    a2 = _arrange(build, graph, a, ta, batch + afree + contr, [afree, contr], dims, dtype)
    b2 = _arrange(build, graph, b, tb, batch + contr + bfree, [contr, bfree], dims, dtype)
    y = build.op("MatMul", a2, b2, dtype=dtype)
    nb = len(batch)
    if len(afree) == 1 and len(bfree) == 1:
        result = y
    elif len(afree) <= 1 and len(bfree) <= 1:
        axes = ([nb] if not afree else []) + ([nb + 1] if not bfree else [])
        result = squeeze(build, graph, y, axes, dtype=dtype)
    else:
        shape = [0] * nb + [_size(c, dims) for c in afree + bfree]
        result = build.op("Reshape", y, build.const(np.asarray(shape, np.int64), "shape"), dtype=dtype)
    got = batch + afree + bfree
    perm = [got.index(c) for c in keep]
    if perm != list(range(len(perm))):
        result = build.op("Transpose", result, attrs={"perm": perm}, dtype=dtype)
    return result
