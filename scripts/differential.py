#!/usr/bin/env python3
"""Random single-operator cases checked against the ONNX reference implementation.

    scripts/differential.py [--deed PATH] [--cases N] [--seed S] [--only OP,...]
                            [--keep DIR] [--json PATH]

The official node tests (`deed conformance`) fix one or two attribute sets per
operator. This script draws many: for each operator below, N random cases (shapes,
axes, attributes and values, NaN and infinities among them where the operator takes
floats), runs each through `onnx.reference.ReferenceEvaluator`, and writes the model
and its inputs and outputs in the node tests' layout. `deed conformance` then runs
them all in one process with the same tolerances (rtol 1e-3, atol 1e-7, integers and
bools exact), and with `--determinism`: a case that matches runs again at 3 kernel
threads and with the reference kernels, and must give the same trace root. Cases the
reference refuses are dropped; cases deed refuses as unsupported are counted.

A case deed computes differently gets a second opinion: onnxruntime runs it too,
and when it agrees with deed (within the same tolerances) the case counts as "the
reference differs" rather than as a failure: the reference has known departures from
the specification (pooling output sizes with SAME_LOWER or uneven pads, LpPool with
ceil_mode, for instance). Where the reference is wrong for a whole family of inputs
and onnxruntime refuses them, the generator stays clear of them, with the reason
noted beside it. Where the reference lacks an operator or a form of it that another
computes exactly, the case says what the reference evaluates instead and how its
outputs read as the case's (`Case.reference_as`, `Case.ref_outputs`): GlobalLpPool
as LpPool over the whole map, Scan along other axes and backwards as Scan over the
moved and reversed input, for instance.

Prints one line per operator (passed, failed, unsupported, refused by the reference,
settled by onnxruntime) and the first failures, and exits non-zero when any case
fails. The reference is numpy: its sums run in numpy's order, which the tolerance
absorbs.

Run it with the venv's python (it needs onnx and numpy). Builds nothing: pass
--deed (default: target/release/deed, else target/debug/deed, under
CARGO_TARGET_DIR when set).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import helper as oh
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

from deed_binary import find_deed

ROOT = Path(__file__).resolve().parent.parent
OPSET = 21


class Case:
    """One operator call: inputs fed at run time, inputs known while planning
    (initializers: axes, pads, shapes, which deed needs as constants), attributes."""

    def __init__(self, op: str, attrs: dict | None = None, outputs: int = 1, opset: int = OPSET,
                 domain: str = ""):
        self.op = op
        self.domain = domain
        self.attrs = attrs or {}
        self.outputs = outputs
        self.opset = opset
        self.inputs: list[tuple[str, np.ndarray | None, bool]] = []
        # Graph inputs the node does not take, which its subgraphs read by name.
        self.scope: list[tuple[str, np.ndarray]] = []
        # What the reference evaluates instead, for an operator it lacks that another
        # computes exactly (set by `reference_as`).
        self.ref: Case | None = None
        # What turns the reference's outputs (of `ref`, when set) into this case's.
        self.ref_outputs: Callable[[list[np.ndarray]], list[np.ndarray]] | None = None

    def reference_as(self, op: str, attrs: dict, opset: int = OPSET, inputs: int | None = None) -> "Case":
        """Has the reference compute this case as `op` with `attrs` on the same inputs
        (the first `inputs` of them, if given)."""
        self.ref = Case(op, attrs, self.outputs, opset)
        self.ref.inputs = list(self.inputs[:inputs])
        self.ref.scope = self.scope
        return self

    def feed(self, x: np.ndarray) -> "Case":
        self.inputs.append((f"in{len(self.inputs)}", x, False))
        return self

    def const(self, x: np.ndarray) -> "Case":
        self.inputs.append((f"in{len(self.inputs)}", x, True))
        return self

    def outer(self, x: np.ndarray) -> str:
        """A graph input for the node's subgraphs to read; returns its name."""
        name = f"outer{len(self.scope)}"
        self.scope.append((name, x))
        return name

    def skip(self) -> "Case":
        """An optional input left out (its name empty)."""
        self.inputs.append(("", None, False))
        return self

    def model(self, outs: list[np.ndarray] | None) -> onnx.ModelProto:
        names = [n for n, _, _ in self.inputs]
        out_names = [f"out{i}" for i in range(self.outputs)]
        node = oh.make_node(self.op, names, out_names, domain=self.domain or None, **self.attrs)
        graph_inputs = [
            oh.make_tensor_value_info(n, oh.np_dtype_to_tensor_dtype(x.dtype), x.shape)
            for n, x in [(n, x) for n, x, c in self.inputs if x is not None and not c] + self.scope
        ]
        inits = [numpy_helper.from_array(x, n) for n, x, c in self.inputs if x is not None and c]
        if outs is None:
            graph_outputs = [oh.make_empty_tensor_value_info(n) for n in out_names]
        else:
            graph_outputs = [
                oh.make_tensor_value_info(n, oh.np_dtype_to_tensor_dtype(y.dtype), y.shape)
                for n, y in zip(out_names, outs)
            ]
        graph = oh.make_graph([node], f"{self.op}_case", graph_inputs, graph_outputs, inits)
        opsets = [oh.make_opsetid("", self.opset if not self.domain else OPSET)]
        if self.domain:
            opsets.append(oh.make_opsetid(self.domain, self.opset))
        m = oh.make_model(graph, opset_imports=opsets)
        m.ir_version = 9
        return m

    def feeds(self) -> dict[str, np.ndarray]:
        return {n: x for n, x, c in self.inputs if x is not None and not c} | dict(self.scope)


def floats(rng: np.random.Generator, shape, special: float = 0.1, dtype=np.float32) -> np.ndarray:
    """Values in [-4, 4) with NaN, ±inf and −0 in about `special` of the places."""
    x = rng.uniform(-4, 4, size=shape).astype(dtype)
    if x.size and special:
        picks = rng.random(size=x.shape) < special
        x[picks] = rng.choice(np.array([np.nan, np.inf, -np.inf, -0.0], dtype=dtype), size=int(picks.sum()))
    return x


def shape_of(rng: np.random.Generator, rank_lo=1, rank_hi=4, lo=1, hi=5) -> list[int]:
    return [int(rng.integers(lo, hi)) for _ in range(int(rng.integers(rank_lo, rank_hi + 1)))]


def axes_of(rng: np.random.Generator, rank: int, k: int | None = None) -> list[int]:
    """Distinct axes, each named from the front or the back at random."""
    k = int(rng.integers(0, rank + 1)) if k is None else k
    picked = rng.permutation(rank)[:k]
    return [int(a) - rank if rng.random() < 0.5 else int(a) for a in picked]


# ---------------------------------------------------------------------------------
# Generators: each draws one case.

GENERATORS: dict[str, Callable[[np.random.Generator], Case]] = {}


def gen(name: str):
    def register(f):
        GENERATORS[name] = f
        return f
    return register


REDUCTIONS = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
              "ReduceL2", "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp"]

for _op in REDUCTIONS:
    def _reduce(rng, op=_op):
        shape = shape_of(rng, lo=0 if rng.random() < 0.1 else 1)
        axes = axes_of(rng, len(shape))
        attrs = {"keepdims": int(rng.integers(0, 2)), "noop_with_empty_axes": int(rng.integers(0, 2))}
        x = floats(rng, shape, special=0.05)
        if op == "ReduceLogSumExp":
            # The reference subtracts the maximum before it takes exp, which turns an
            # infinite term into NaN where log(Σ exp) is ±inf.
            x[np.isinf(x)] = 0.5
        if op in ("ReduceLogSum", "ReduceL1", "ReduceL2") and rng.random() < 0.5:
            x = np.abs(x)
        c = Case(op, attrs).feed(x)
        if axes or rng.random() < 0.5:
            c.const(np.array(axes, dtype=np.int64))
        return c
    gen(_op)(_reduce)


for _op in ["ArgMax", "ArgMin"]:
    def _arg(rng, op=_op):
        shape = shape_of(rng)
        x = rng.integers(-3, 3, size=shape).astype(np.float32)  # ties
        attrs = {"axis": axes_of(rng, len(shape), 1)[0], "keepdims": int(rng.integers(0, 2)),
                 "select_last_index": int(rng.integers(0, 2))}
        return Case(op, attrs).feed(x)
    gen(_op)(_arg)


@gen("CumSum")
def _cumsum(rng):
    shape = shape_of(rng)
    x = floats(rng, shape, special=0)
    attrs = {"exclusive": int(rng.integers(0, 2)), "reverse": int(rng.integers(0, 2))}
    return Case("CumSum", attrs).feed(x).const(np.array(axes_of(rng, len(shape), 1)[0], dtype=np.int64))


for _op in ["Softmax", "LogSoftmax", "Hardmax"]:
    def _soft(rng, op=_op):
        shape = shape_of(rng)
        # Hardmax without NaN: the reference's numpy argmax picks the first NaN, which
        # the specification does not ask for.
        special = 0 if op == "Hardmax" else 0.02
        return Case(op, {"axis": axes_of(rng, len(shape), 1)[0]}).feed(floats(rng, shape, special=special))
    gen(_op)(_soft)


@gen("Pad")
def _pad(rng):
    shape = shape_of(rng, lo=1, hi=6)
    mode = str(rng.choice(["constant", "reflect", "edge", "wrap"]))
    r = len(shape)
    axes = axes_of(rng, r) if rng.random() < 0.5 else None
    n = len(axes) if axes is not None else r
    dims = [shape[a] for a in axes] if axes is not None else shape
    # Negative pads (cropping) in a fifth of the cases: the reference refuses them.
    crop = rng.random() < 0.2
    lo = [-d + 1 if mode != "reflect" and crop else 0 for d in dims]
    hi = [3 if mode != "reflect" else d - 1 for d in dims]
    begin = [int(rng.integers(l, h + 1)) for l, h in zip(lo, hi)]
    end = [int(rng.integers(l, h + 1)) for l, h in zip(lo, hi)]
    c = Case("Pad", {"mode": mode}).feed(floats(rng, shape, special=0))
    c.const(np.array(begin + end, dtype=np.int64))
    if axes is not None:
        c.const(np.array(1.5, dtype=np.float32)) if mode == "constant" else c.skip()
        c.const(np.array(axes, dtype=np.int64))
    elif mode == "constant":
        c.const(np.array(-2.5, dtype=np.float32))
    _ = n
    return c


@gen("Slice")
def _slice(rng):
    shape = shape_of(rng, hi=7)
    r = len(shape)
    axes = axes_of(rng, r, int(rng.integers(1, r + 1)))
    starts, ends, steps = [], [], []
    for a in axes:
        d = shape[a]
        step = int(rng.choice([-3, -2, -1, 1, 2, 3]))
        # Stepping backwards from before the first element: the specification clamps
        # the start to 0 (one element), numpy's slicing (the reference) to nothing.
        starts.append(int(rng.integers(-d if step < 0 else -d - 2, d + 3)))
        ends.append(int(rng.choice([int(rng.integers(-d - 2, d + 3)), 2**62, -2**62])))
        steps.append(step)
    c = Case("Slice").feed(floats(rng, shape, special=0))
    for v in (starts, ends, axes, steps):
        c.const(np.array(v, dtype=np.int64))
    return c


@gen("Gather")
def _gather(rng):
    shape = shape_of(rng)
    axis = axes_of(rng, len(shape), 1)[0]
    d = shape[axis]
    idx = rng.integers(-d, d, size=shape_of(rng, 0, 2)).astype(np.int64)
    return Case("Gather", {"axis": axis}).feed(floats(rng, shape, special=0)).feed(idx)


@gen("GatherElements")
def _gather_elements(rng):
    shape = shape_of(rng)
    axis = axes_of(rng, len(shape), 1)[0]
    # The reference wants the index's other dimensions equal to the input's.
    ishape = list(shape)
    ishape[axis] = int(rng.integers(1, 5))
    d = shape[axis]
    idx = rng.integers(-d, d, size=ishape).astype(np.int64)
    return Case("GatherElements", {"axis": axis}).feed(floats(rng, shape, special=0)).feed(idx)


@gen("GatherND")
def _gather_nd(rng):
    shape = shape_of(rng, 2, 4)
    b = int(rng.integers(0, len(shape) - 1))
    k = int(rng.integers(1, len(shape) - b + 1))
    lead = shape[:b] + shape_of(rng, 0, 1)
    idx = np.stack([rng.integers(-shape[b + j], shape[b + j], size=lead) for j in range(k)], axis=-1)
    return Case("GatherND", {"batch_dims": b}).feed(floats(rng, shape, special=0)).feed(idx.astype(np.int64))


@gen("ScatterElements")
def _scatter_elements(rng):
    shape = shape_of(rng)
    axis = axes_of(rng, len(shape), 1)[0]
    red = str(rng.choice(["none", "add", "mul", "max", "min"]))
    ishape = [int(rng.integers(1, s + 1)) for s in shape]
    d = shape[axis]
    if red == "none":
        # Distinct targets along the axis (duplicates make the result order-defined).
        ax = axis % len(shape)
        ishape[ax] = int(rng.integers(1, d + 1))
        lines = int(np.prod(ishape)) // ishape[ax]
        idx = np.stack([rng.permutation(d)[: ishape[ax]] for _ in range(lines)])
        idx = np.moveaxis(idx.reshape([s for i, s in enumerate(ishape) if i != ax] + [ishape[ax]]), -1, ax)
    else:
        idx = rng.integers(-d, d, size=ishape)
    upd = floats(rng, ishape, special=0)
    return (Case("ScatterElements", {"axis": axis, "reduction": red})
            .feed(floats(rng, shape, special=0)).feed(idx.astype(np.int64)).feed(upd))


@gen("Tile")
def _tile(rng):
    shape = shape_of(rng)
    reps = rng.integers(0 if rng.random() < 0.1 else 1, 4, size=len(shape)).astype(np.int64)
    return Case("Tile").feed(floats(rng, shape, special=0)).const(reps)


@gen("Expand")
def _expand(rng):
    shape = shape_of(rng)
    target = [int(rng.choice([1, d])) if d != 1 else int(rng.integers(1, 4)) for d in shape]
    target = shape_of(rng, 0, 2) + target
    if rng.random() < 0.5:
        # The target may be smaller where the input is larger (bidirectional).
        target = [1 if rng.random() < 0.3 else t for t in target]
    return Case("Expand").feed(floats(rng, shape, special=0)).const(np.array(target, dtype=np.int64))


@gen("Split")
def _split(rng):
    shape = shape_of(rng, hi=7)
    axis = axes_of(rng, len(shape), 1)[0]
    d = shape[axis]
    if rng.random() < 0.5:
        n = int(rng.integers(1, d + 1))
        return Case("Split", {"axis": axis, "num_outputs": n}, outputs=n).feed(floats(rng, shape, special=0))
    cuts = sorted(rng.integers(0, d + 1, size=int(rng.integers(0, 3))).tolist())
    parts = np.diff([0] + cuts + [d]).astype(np.int64)
    return Case("Split", {"axis": axis}, outputs=len(parts)).feed(floats(rng, shape, special=0)).const(parts)


@gen("Transpose")
def _transpose(rng):
    shape = shape_of(rng, 1, 5)
    perm = [int(p) for p in rng.permutation(len(shape))]
    return Case("Transpose", {"perm": perm}).feed(floats(rng, shape, special=0))


@gen("TopK")
def _topk(rng):
    shape = shape_of(rng, hi=7)
    axis = axes_of(rng, len(shape), 1)[0]
    k = int(rng.integers(0, shape[axis] + 1))
    x = rng.integers(-3, 3, size=shape).astype(np.float32)  # ties
    attrs = {"axis": axis, "largest": int(rng.integers(0, 2)), "sorted": 1}
    return Case("TopK", attrs, outputs=2).feed(x).const(np.array([k], dtype=np.int64))


@gen("Trilu")
def _trilu(rng):
    shape = shape_of(rng, 2, 4, hi=6)
    c = Case("Trilu", {"upper": int(rng.integers(0, 2))}).feed(floats(rng, shape, special=0))
    if rng.random() < 0.7:
        c.const(np.array(int(rng.integers(-6, 7)), dtype=np.int64))
    return c


@gen("DepthToSpace")
def _d2s(rng):
    b = int(rng.integers(1, 4))
    shape = [int(rng.integers(1, 3)), b * b * int(rng.integers(1, 3)), int(rng.integers(1, 4)), int(rng.integers(1, 4))]
    mode = str(rng.choice(["DCR", "CRD"]))
    return Case("DepthToSpace", {"blocksize": b, "mode": mode}).feed(floats(rng, shape, special=0))


@gen("Clip")
def _clip(rng):
    x = floats(rng, shape_of(rng))
    c = Case("Clip").feed(x)
    lo, hi = sorted(rng.uniform(-3, 3, size=2).astype(np.float32))
    if rng.random() < 0.2:
        lo, hi = hi, lo  # min above max: every output is max
    if rng.random() < 0.8:
        c.const(np.array(lo, dtype=np.float32))
    else:
        c.skip()
    if rng.random() < 0.8:
        c.const(np.array(hi, dtype=np.float32))
    return c


for _op in ["Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Mod", "Equal", "Less", "Greater",
            "LessOrEqual", "GreaterOrEqual"]:
    def _binary(rng, op=_op):
        shape = shape_of(rng, 0, 4)
        other = [d if rng.random() < 0.6 else 1 for d in shape][int(rng.integers(0, len(shape) + 1)):]
        if rng.random() < 0.5:
            shape, other = other, shape
        attrs = {}
        if op == "Mod" and rng.random() < 0.5:
            attrs["fmod"] = 1
        if op == "Mod" and "fmod" not in attrs:
            a = rng.integers(-20, 20, size=shape).astype(np.int32)
            b = rng.integers(-5, 6, size=other).astype(np.int32)
            b[b == 0] = 3
            return Case(op, attrs).feed(a).feed(b)
        return Case(op, attrs).feed(floats(rng, shape, 0.05)).feed(floats(rng, other, 0.05))
    gen(_op)(_binary)


@gen("MaxPool")
def _maxpool(rng):
    r = int(rng.integers(1, 4))
    shape = [1, int(rng.integers(1, 3))] + [int(rng.integers(2, 7)) for _ in range(r)]
    k = [int(rng.integers(1, 4)) for _ in range(r)]
    attrs = {"kernel_shape": k, "strides": [int(rng.integers(1, 3)) for _ in range(r)],
             "dilations": [int(rng.integers(1, 3)) for _ in range(r)],
             "ceil_mode": int(rng.integers(0, 2))}
    pads = [int(rng.integers(0, kk)) for kk in k] + [int(rng.integers(0, kk)) for kk in k]
    if rng.random() < 0.3:
        attrs["auto_pad"] = str(rng.choice(["SAME_UPPER", "SAME_LOWER", "VALID"]))
        # The reference sizes a dilated window's VALID/SAME output and padding as if
        # it were not dilated (the specification uses (k − 1)·d + 1), and with a stride
        # longer than the window it pads by a negative amount (the specification's
        # padding is never negative).
        attrs["dilations"] = [1] * r
        attrs["strides"] = [min(s, kk) for s, kk in zip(attrs["strides"], k)]
    else:
        attrs["pads"] = pads
    # No NaN: the specification leaves a pool's NaN open (deed propagates it; the
    # reference's numpy max skips or keeps it by position).
    return Case("MaxPool", attrs).feed(floats(rng, shape, special=0))


@gen("AveragePool")
def _avgpool(rng):
    c = _maxpool(rng)
    c.op = "AveragePool"
    c.attrs["count_include_pad"] = int(rng.integers(0, 2))
    return c


@gen("LpPool")
def _lppool(rng):
    c = _maxpool(rng)
    c.op = "LpPool"
    c.attrs["p"] = int(rng.integers(1, 4))
    c.attrs.pop("auto_pad", None)
    c.attrs.setdefault("pads", [0] * (2 * len(c.attrs["kernel_shape"])))
    return c


@gen("LayerNormalization")
def _layernorm(rng):
    shape = shape_of(rng, 1, 4)
    axis = axes_of(rng, len(shape), 1)[0]
    norm = shape[axis:] if axis >= 0 else shape[len(shape) + axis:]
    c = Case("LayerNormalization", {"axis": axis, "epsilon": float(rng.choice([1e-5, 0.1]))}, outputs=1)

    def param():
        # The normalized shape mostly; else any shape that broadcasts to the input's
        # (the function body multiplies and adds): some dimensions 1, fewer of them,
        # or the input's leading dimensions too.
        if rng.random() < 0.5:
            return floats(rng, norm, special=0)
        p = [d if rng.random() < 0.6 else 1 for d in shape][int(rng.integers(0, len(shape) + 1)):]
        return floats(rng, p, special=0)
    c.feed(floats(rng, shape, special=0)).feed(param())
    return c.feed(param()) if rng.random() < 0.8 else c


@gen("InstanceNormalization")
def _instancenorm(rng):
    shape = [int(rng.integers(1, 3)), int(rng.integers(1, 4))] + shape_of(rng, 1, 2)
    c = Case("InstanceNormalization", {"epsilon": 1e-5})
    return c.feed(floats(rng, shape, special=0)).feed(floats(rng, [shape[1]], 0)).feed(floats(rng, [shape[1]], 0))


@gen("OneHot")
def _onehot(rng):
    shape = shape_of(rng, 1, 3)
    depth = int(rng.integers(1, 6))
    idx = rng.integers(-depth - 1, depth + 1, size=shape).astype(np.int64)
    axis = int(rng.integers(-len(shape) - 1, len(shape) + 1))
    return (Case("OneHot", {"axis": axis}).feed(idx).const(np.array(depth, dtype=np.int64))
            .const(np.array([-1.0, 2.0], dtype=np.float32)))


@gen("CenterCropPad")
def _ccp(rng):
    shape = shape_of(rng, 1, 3, hi=6)
    axes = axes_of(rng, len(shape), int(rng.integers(1, len(shape) + 1)))
    target = [int(rng.integers(1, 8)) for _ in axes]
    return (Case("CenterCropPad", {"axes": axes}).feed(floats(rng, shape, special=0))
            .const(np.array(target, dtype=np.int64)))


def conv_dims(rng: np.random.Generator) -> tuple[int, int, int, int, list[int]]:
    """A convolution's spatial rank (1-3), group count, input and output channels
    (multiples of it) and kernel."""
    r = int(rng.integers(1, 4))
    g = int(rng.integers(1, 3))
    c, m = g * int(rng.integers(1, 3)), g * int(rng.integers(1, 3))
    return r, g, c, m, [int(rng.integers(1, 4)) for _ in range(r)]


def with_bias(rng: np.random.Generator, case: Case, m: int) -> Case:
    """`case` with a bias of `m` values in half the draws."""
    if rng.random() < 0.5:
        case.feed(floats(rng, [m], 0))
    return case


@gen("Conv")
def _conv(rng):
    r, g, c, m, k = conv_dims(rng)
    shape = [int(rng.integers(1, 3)), c] + [int(rng.integers(k[i], 7)) for i in range(r)]
    attrs = {"group": g, "strides": [int(rng.integers(1, 3)) for _ in range(r)]}
    if rng.random() < 0.3:
        attrs["auto_pad"] = str(rng.choice(["SAME_UPPER", "SAME_LOWER", "VALID"]))
    else:
        attrs["dilations"] = [int(rng.integers(1, 3)) for _ in range(r)]
        attrs["pads"] = [int(rng.integers(0, 3)) for _ in range(2 * r)]
        ext = [(kk - 1) * d + 1 for kk, d in zip(k, attrs["dilations"])]
        shape = shape[:2] + [max(s, e) for s, e in zip(shape[2:], ext)]
    return with_bias(rng, Case("Conv", attrs).feed(floats(rng, shape, 0))
                     .feed(floats(rng, [m, c // g] + k, 0)), m)


@gen("ConvTranspose")
def _conv_transpose(rng):
    r, g, c, m, k = conv_dims(rng)
    # One batch item: the reference's ConvTranspose mis-shapes its buffers for more.
    shape = [1, c] + [int(rng.integers(1, 5)) for _ in range(r)]
    st = [int(rng.integers(1, 4)) for _ in range(r)]
    dil = [int(rng.integers(1, 3)) for _ in range(r)]
    attrs = {"group": g, "strides": st, "dilations": dil,
             "output_padding": [int(rng.integers(0, max(s, d))) for s, d in zip(st, dil)]}
    if rng.random() < 0.5:
        attrs["pads"] = [int(rng.integers(0, 2)) for _ in range(2 * r)]
    return with_bias(rng, Case("ConvTranspose", attrs).feed(floats(rng, shape, 0))
                     .feed(floats(rng, [c, m // g] + k, 0)), m)


@gen("Resize")
def _resize(rng):
    r = int(rng.integers(1, 5))
    shape = [int(rng.integers(1, 5)) for _ in range(r)]
    mode = str(rng.choice(["nearest", "linear", "cubic"]))
    ctm = str(rng.choice(["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric",
                          "tf_crop_and_resize", "half_pixel_symmetric"]))
    attrs = {"mode": mode, "coordinate_transformation_mode": ctm}
    if mode == "nearest":
        attrs["nearest_mode"] = str(rng.choice(["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]))
    if mode == "cubic":
        attrs["cubic_coeff_a"] = float(rng.choice([-0.75, -0.5]))
        attrs["exclude_outside"] = int(rng.integers(0, 2))
    if mode != "nearest" and rng.random() < 0.3:
        attrs["antialias"] = 1
    # Resize the last one or two axes (as images are), the others kept.
    axes_n = min(r, int(rng.integers(1, 3)))
    c = Case("Resize", attrs).feed(floats(rng, shape, 0))
    if ctm == "tf_crop_and_resize":
        roi = [0.0] * (r - axes_n) + [float(rng.uniform(0, 0.4)) for _ in range(axes_n)]
        roi += [1.0] * (r - axes_n) + [float(rng.uniform(0.6, 1)) for _ in range(axes_n)]
        c.const(np.array(roi, dtype=np.float32))
        attrs["extrapolation_value"] = float(rng.choice([0.0, -1.5]))
    else:
        c.skip()
    if rng.random() < 0.5:
        scales = [1.0] * (r - axes_n) + [float(rng.choice([0.5, 0.6, 1.5, 2.0, 3.0, 0.75])) for _ in range(axes_n)]
        c.const(np.array(scales, dtype=np.float32))
    else:
        c.skip()
        sizes = shape[: r - axes_n] + [int(rng.integers(1, 9)) for _ in range(axes_n)]
        c.const(np.array(sizes, dtype=np.int64))
    return c


@gen("GridSample")
def _grid_sample(rng):
    n, ch = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    h, w = int(rng.integers(1, 6)), int(rng.integers(1, 6))
    oh, ow = int(rng.integers(1, 5)), int(rng.integers(1, 5))
    attrs = {"mode": str(rng.choice(["linear", "nearest", "cubic"])),
             "padding_mode": str(rng.choice(["zeros", "border", "reflection"])),
             "align_corners": int(rng.integers(0, 2))}
    grid = rng.uniform(-1.3, 1.3, size=[n, oh, ow, 2]).astype(np.float32)
    return Case("GridSample", attrs).feed(floats(rng, [n, ch, h, w], 0)).feed(grid)


@gen("Einsum")
def _einsum(rng):
    eq, shapes = [
        ("ij,jk->ik", [[3, 4], [4, 2]]), ("bij,bjk->bik", [[2, 3, 4], [2, 4, 5]]),
        ("ij->ji", [[3, 4]]), ("ii->i", [[4, 4]]), ("ii", [[3, 3]]), ("ij->", [[2, 5]]),
        ("i,i", [[5], [5]]), ("i,j->ij", [[3], [4]]), ("...ij,...jk->...ik", [[2, 1, 3, 4], [3, 4, 2]]),
        ("bhqd,bhkd->bhqk", [[1, 2, 3, 4], [1, 2, 5, 4]]), ("ijk->kji", [[2, 3, 4]]),
        ("ij,ij->i", [[3, 4], [3, 4]]), ("abc,cd->abd", [[2, 3, 4], [4, 5]]),
    ][int(rng.integers(0, 13))]
    c = Case("Einsum", {"equation": eq})
    for sh in shapes:
        c.feed(floats(rng, sh, 0))
    return c


@gen("ScatterND")
def _scatter_nd(rng):
    shape = shape_of(rng, 1, 4, hi=5)
    k = int(rng.integers(1, len(shape) + 1))
    red = str(rng.choice(["none", "add", "mul", "max", "min"]))
    n = int(rng.integers(1, 4))
    if red == "none":
        # Distinct targets: duplicates make the result depend on the order.
        cells = np.stack(np.unravel_index(rng.permutation(int(np.prod(shape[:k])))[:n], shape[:k]), -1)
        n = len(cells)
    else:
        cells = np.stack([rng.integers(0, shape[j], size=n) for j in range(k)], -1)
    upd = floats(rng, [n] + shape[k:], 0)
    return (Case("ScatterND", {"reduction": red}).feed(floats(rng, shape, 0))
            .feed(cells.astype(np.int64)).feed(upd))


UNARY = {
    "Elu": {"alpha": 0.7}, "Selu": {}, "Celu": {"alpha": 1.3}, "LeakyRelu": {"alpha": 0.1},
    "HardSigmoid": {"alpha": 0.3, "beta": 0.4}, "HardSwish": {}, "Softplus": {}, "Softsign": {},
    "ThresholdedRelu": {"alpha": 0.5}, "Shrink": {"lambd": 0.7, "bias": 0.2}, "Mish": {},
    "Gelu": {}, "Erf": {}, "Sigmoid": {}, "Tanh": {}, "Exp": {}, "Log": {}, "Sqrt": {},
    "Reciprocal": {}, "Sin": {}, "Cos": {}, "Tan": {}, "Asin": {}, "Acos": {}, "Atan": {},
    "Sinh": {}, "Cosh": {}, "Asinh": {}, "Acosh": {}, "Atanh": {}, "Round": {}, "Floor": {},
    "Ceil": {}, "Sign": {}, "Abs": {}, "Neg": {}, "Relu": {},
}

for _op, _attrs in UNARY.items():
    def _unary(rng, op=_op, attrs=_attrs):
        # Rank 1 and up: the reference's Softsign takes no 0-D array.
        x = floats(rng, shape_of(rng, 1, 3), 0.05)
        if op in ("Asin", "Acos", "Atanh"):
            x = np.clip(x / 4, -1, 1).astype(np.float32)
        if op == "Round":
            x = (np.round(x * 4) / 4).astype(np.float32)  # ties
        a = dict(attrs)
        if op == "Gelu" and rng.random() < 0.5:
            a["approximate"] = "tanh"
        if op == "Gelu":
            # Below about −3.5 the erf form's function body, computed in f32 as deed
            # defines it, loses the result to cancellation in 1 + erf(x/√2) (about
            # 1e-4 plus an f32 ulp of 1) beyond the tolerance; the reference and
            # onnxruntime evaluate it more precisely.
            x = np.where(x < -3.5, -x, x).astype(np.float32)
        return Case(op, a).feed(x)
    gen(_op)(_unary)


@gen("LRN")
def _lrn(rng):
    # The reference's channel loop runs over the batch dimension (`range(x.shape[0])`):
    # right only when there are as many items as channels. It wants 4-D inputs.
    c = int(rng.integers(1, 6))
    shape = [c, c, int(rng.integers(1, 4)), int(rng.integers(1, 4))]
    attrs = {"size": int(rng.choice([1, 2, 3, 5])), "alpha": 1e-3, "beta": 0.75, "bias": 1.0}
    return Case("LRN", attrs).feed(floats(rng, shape, 0))


@gen("GroupNormalization")
def _groupnorm(rng):
    g = int(rng.integers(1, 3))
    c = g * int(rng.integers(1, 3))
    # Groups of at least 3 elements: deed takes a group's variance in two passes, as
    # LayerNormalization does, where the function body (the reference, onnxruntime)
    # takes E[x²] − E[x]² in f32, which loses a nearly constant group's variance to
    # cancellation (deed is then the closer to the exact value).
    shape = [int(rng.integers(1, 3)), c] + [int(rng.integers(3, 6))] + shape_of(rng, 0, 1)
    return (Case("GroupNormalization", {"num_groups": g, "epsilon": 1e-5})
            .feed(floats(rng, shape, 0)).feed(floats(rng, [c], 0)).feed(floats(rng, [c], 0)))


@gen("MeanVarianceNormalization")
def _mvn(rng):
    shape = shape_of(rng, 1, 4)
    axes = sorted(set(int(a) % len(shape) for a in axes_of(rng, len(shape), int(rng.integers(1, len(shape) + 1)))))
    return Case("MeanVarianceNormalization", {"axes": axes}).feed(floats(rng, shape, 0))


@gen("Where")
def _where(rng):
    shape = shape_of(rng, 0, 3)
    other = [d if rng.random() < 0.6 else 1 for d in shape]
    cond = rng.random(size=other) < 0.5
    return Case("Where").feed(cond).feed(floats(rng, shape, 0.05)).feed(floats(rng, other[1:], 0.05))


@gen("MatMul")
def _matmul(rng):
    m, k, n = (int(rng.integers(1, 6)) for _ in range(3))
    a = shape_of(rng, 0, 2, hi=4) + [m, k]
    b = [d if rng.random() < 0.5 else 1 for d in a[:-2]][int(rng.integers(0, len(a) - 1)):] + [k, n]
    if rng.random() < 0.2:
        a = [k]
    if rng.random() < 0.2:
        b = [k]
    return Case("MatMul").feed(floats(rng, a, 0.02)).feed(floats(rng, b, 0.02))


@gen("Gemm")
def _gemm(rng):
    m, k, n = (int(rng.integers(1, 7)) for _ in range(3))
    ta, tb = int(rng.integers(0, 2)), int(rng.integers(0, 2))
    attrs = {"transA": ta, "transB": tb, "alpha": float(rng.choice([1.0, 0.5, -2.0])),
             "beta": float(rng.choice([1.0, 0.0, 3.0]))}
    c = Case("Gemm", attrs).feed(floats(rng, [k, m] if ta else [m, k], 0.02))
    c.feed(floats(rng, [n, k] if tb else [k, n], 0.02))
    cs = [[], [1], [n], [1, n], [m, 1], [m, n], None][int(rng.integers(0, 7))]
    if cs is not None:
        c.feed(floats(rng, cs, 0.02))
    return c


@gen("BatchNormalization")
def _batchnorm(rng):
    shape = [int(rng.integers(1, 3)), int(rng.integers(1, 4))] + shape_of(rng, 0, 2)
    ch = [shape[1]]
    var = np.abs(floats(rng, ch, 0)) + 0.1
    return (Case("BatchNormalization", {"epsilon": 1e-5}).feed(floats(rng, shape, 0))
            .feed(floats(rng, ch, 0)).feed(floats(rng, ch, 0)).feed(floats(rng, ch, 0)).feed(var))


@gen("PRelu")
def _prelu(rng):
    shape = shape_of(rng, 1, 4)
    slope = [d if rng.random() < 0.5 else 1 for d in shape][int(rng.integers(0, len(shape))):]
    return Case("PRelu").feed(floats(rng, shape, 0.05)).feed(floats(rng, slope, 0))


@gen("Concat")
def _concat(rng):
    shape = shape_of(rng, 1, 4)
    axis = axes_of(rng, len(shape), 1)[0]
    c = Case("Concat", {"axis": axis})
    for _ in range(int(rng.integers(1, 4))):
        part = list(shape)
        part[axis] = int(rng.integers(0, 4))
        c.feed(floats(rng, part, 0))
    return c


@gen("Flatten")
def _flatten(rng):
    shape = shape_of(rng, 1, 4)
    return Case("Flatten", {"axis": int(rng.integers(-len(shape), len(shape) + 1))}).feed(floats(rng, shape, 0))


@gen("SpaceToDepth")
def _s2d(rng):
    b = int(rng.integers(1, 4))
    shape = [int(rng.integers(1, 3)), int(rng.integers(1, 3)), b * int(rng.integers(1, 3)), b * int(rng.integers(1, 3))]
    return Case("SpaceToDepth", {"blocksize": b}).feed(floats(rng, shape, 0))


@gen("ReverseSequence")
def _reverse_sequence(rng):
    b, t = int(rng.integers(1, 4)), int(rng.integers(1, 5))
    time_axis = int(rng.integers(0, 2))
    shape = ([t, b] if time_axis == 0 else [b, t]) + shape_of(rng, 0, 1)
    lens = rng.integers(1, t + 1, size=[b]).astype(np.int64)
    return (Case("ReverseSequence", {"time_axis": time_axis, "batch_axis": 1 - time_axis})
            .feed(floats(rng, shape, 0)).feed(lens))


@gen("Compress")
def _compress(rng):
    shape = shape_of(rng, 1, 3)
    c = Case("Compress")
    if rng.random() < 0.7:
        axis = axes_of(rng, len(shape), 1)[0]
        c.attrs["axis"] = axis
        n = int(rng.integers(1, shape[axis] + 1))
    else:
        n = int(rng.integers(1, int(np.prod(shape)) + 1))
    return c.feed(floats(rng, shape, 0)).const(rng.random(size=[n]) < 0.5)


@gen("Range")
def _range(rng):
    start = float(rng.integers(-5, 5))
    delta = float(rng.choice([-2.0, -0.5, 0.75, 1.0, 3.0]))
    limit = start + delta * float(rng.integers(0, 8)) + float(rng.uniform(-0.4, 0.4))
    return (Case("Range").const(np.array(start, dtype=np.float32))
            .const(np.array(limit, dtype=np.float32)).const(np.array(delta, dtype=np.float32)))


for _op in ["Sum", "Mean", "Max", "Min"]:
    def _variadic(rng, op=_op):
        shape = shape_of(rng, 0, 3)
        c = Case(op)
        for _ in range(int(rng.integers(1, 4))):
            c.feed(floats(rng, [d if rng.random() < 0.7 else 1 for d in shape], 0.05))
        return c
    gen(_op + "Variadic")(_variadic)


@gen("Cast")
def _cast(rng):
    kinds = [(np.float32, np.int32), (np.float32, np.int8), (np.float32, np.uint8),
             (np.float32, np.bool_), (np.int64, np.float32), (np.bool_, np.float32),
             (np.float32, np.float16), (np.float64, np.float32), (np.int32, np.int8),
             (np.float32, np.int64)]
    src, dst = kinds[int(rng.integers(0, len(kinds)))]
    shape = shape_of(rng, 0, 3)
    if src == np.bool_:
        x = rng.random(size=shape) < 0.5
    elif np.issubdtype(src, np.integer):
        x = rng.integers(-300, 300, size=shape).astype(src)
    else:
        # In range of the target (out of range is undefined in the specification).
        lim = 100.0 if dst in (np.int8, np.uint8) else 1e4
        x = rng.uniform(0 if dst == np.uint8 else -lim, lim, size=shape).astype(src)
    return Case("Cast", {"to": int(oh.np_dtype_to_tensor_dtype(np.dtype(dst)))}).feed(np.asarray(x))


@gen("RoiAlign")
def _roi_align(rng):
    shape = [int(rng.integers(1, 3)), int(rng.integers(1, 3)), int(rng.integers(2, 7)), int(rng.integers(2, 7))]
    n = int(rng.integers(1, 4))
    x1, y1 = rng.uniform(0, shape[3] - 1, size=n), rng.uniform(0, shape[2] - 1, size=n)
    rois = np.stack([x1, y1, x1 + rng.uniform(0.5, 3, size=n), y1 + rng.uniform(0.5, 3, size=n)], -1)
    attrs = {"mode": str(rng.choice(["avg", "max"])), "output_height": int(rng.integers(1, 4)),
             "output_width": int(rng.integers(1, 4)), "sampling_ratio": int(rng.integers(0, 3)),
             "spatial_scale": float(rng.choice([1.0, 0.5])),
             "coordinate_transformation_mode": str(rng.choice(["half_pixel", "output_half_pixel"]))}
    return (Case("RoiAlign", attrs).feed(floats(rng, shape, 0)).feed(rois.astype(np.float32))
            .feed(rng.integers(0, shape[0], size=[n]).astype(np.int64)))


@gen("RMSNormalization")
def _rms_norm(rng):
    shape = shape_of(rng, 1, 4)
    axis = axes_of(rng, len(shape), 1)[0]
    norm = shape[axis:] if axis >= 0 else shape[len(shape) + axis:]
    return (Case("RMSNormalization", {"axis": axis, "epsilon": 1e-5}, opset=23)
            .feed(floats(rng, shape, 0)).feed(floats(rng, norm, 0)))


@gen("QuantizeLinear")
def _quantize(rng):
    shape = shape_of(rng, 1, 4)
    axis = axes_of(rng, len(shape), 1)[0]
    dt = np.uint8 if rng.random() < 0.5 else np.int8
    layout = int(rng.integers(0, 3))
    attrs = {"axis": axis}
    if layout == 0:
        ps = []
    elif layout == 1:
        ps = [shape[axis]]
    else:
        blk = int(rng.integers(1, 4))
        attrs["block_size"] = blk
        ps = [-(-d // blk) if i == axis % len(shape) else d for i, d in enumerate(shape)]
    scale = rng.uniform(0.01, 0.5, size=ps).astype(np.float32)
    zp = rng.integers(np.iinfo(dt).min, np.iinfo(dt).max + 1, size=ps).astype(dt)
    x = rng.uniform(-30, 30, size=shape).astype(np.float32)
    return Case("QuantizeLinear", attrs).feed(x).const(np.asarray(scale)).const(np.asarray(zp))


@gen("DequantizeLinear")
def _dequantize(rng):
    c = _quantize(rng)
    c.op = "DequantizeLinear"
    _, scale, _ = c.inputs[1]
    _, zp, _ = c.inputs[2]
    x = rng.integers(np.iinfo(zp.dtype).min, np.iinfo(zp.dtype).max + 1,
                     size=c.inputs[0][1].shape).astype(zp.dtype)
    c.inputs[0] = (c.inputs[0][0], x, False)
    return c


@gen("QLinearMatMul")
def _qlinear_matmul(rng):
    m, k, n = (int(rng.integers(1, 6)) for _ in range(3))
    lead = shape_of(rng, 0, 1, hi=3)
    a = rng.integers(0, 256, size=lead + [m, k]).astype(np.uint8)
    b = rng.integers(-128, 128, size=[k, n]).astype(np.int8)
    per_col = rng.random() < 0.5
    sb = rng.uniform(0.01, 0.1, size=[n] if per_col else []).astype(np.float32)
    zb = np.zeros([n] if per_col else [], dtype=np.int8)
    return (Case("QLinearMatMul").feed(a).const(np.array(0.05, dtype=np.float32))
            .const(np.array(int(rng.integers(0, 256)), dtype=np.uint8)).feed(b)
            .const(np.asarray(sb)).const(np.asarray(zb)).const(np.array(0.2, dtype=np.float32))
            .const(np.array(int(rng.integers(0, 256)), dtype=np.uint8)))


@gen("MatMulInteger")
def _matmul_integer(rng):
    m, k, n = (int(rng.integers(1, 6)) for _ in range(3))
    a = rng.integers(0, 256, size=shape_of(rng, 0, 1, hi=3) + [m, k]).astype(np.uint8)
    b = rng.integers(0, 256, size=[k, n]).astype(np.uint8)
    c = Case("MatMulInteger").feed(a).feed(b)
    c.const(np.array(int(rng.integers(0, 256)), dtype=np.uint8))
    c.const(rng.integers(0, 256, size=[n]).astype(np.uint8) if rng.random() < 0.5
            else np.array(int(rng.integers(0, 256)), dtype=np.uint8))
    return c


@gen("DynamicQuantizeLinear")
def _dql(rng):
    return Case("DynamicQuantizeLinear", outputs=3).feed(floats(rng, shape_of(rng, 1, 3), 0))


@gen("Det")
def _det(rng):
    k = int(rng.integers(1, 5))
    return Case("Det").feed(floats(rng, shape_of(rng, 0, 2, hi=3) + [k, k], 0))


# Earlier opsets, whose semantics differ: Softmax before 13 flattens from `axis`;
# reductions before 18 (ReduceSum before 13) take `axes` as an attribute; Clip before
# 11 takes `min`/`max` attributes; Slice before 10 takes attributes and no steps.
for _op in ["Softmax", "LogSoftmax", "Hardmax"]:
    def _soft11(rng, op=_op):
        shape = shape_of(rng)
        axis = axes_of(rng, len(shape), 1)[0]
        special = 0 if op == "Hardmax" else 0.02
        return Case(op, {"axis": axis}, opset=11).feed(floats(rng, shape, special=special))
    gen(_op + "11")(_soft11)

for _op in ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceL2", "ReduceLogSumExp"]:
    def _reduce13(rng, op=_op):
        shape = shape_of(rng)
        axes = axes_of(rng, len(shape))
        attrs = {"keepdims": int(rng.integers(0, 2))}
        if axes:
            attrs["axes"] = axes
        x = floats(rng, shape, special=0)
        return Case(op, attrs, opset=11).feed(x)
    gen(_op + "11")(_reduce13)


@gen("Clip6")
def _clip6(rng):
    lo, hi = sorted(rng.uniform(-3, 3, size=2).astype(np.float32))
    return Case("Clip", {"min": float(lo), "max": float(hi)}, opset=6).feed(floats(rng, shape_of(rng), 0.05))


@gen("Slice9")
def _slice9(rng):
    shape = shape_of(rng, hi=7)
    r = len(shape)
    axes = axes_of(rng, r, int(rng.integers(1, r + 1)))
    axes = [a % r for a in axes]
    starts = [int(rng.integers(-shape[a] - 2, shape[a] + 3)) for a in axes]
    ends = [int(rng.integers(-shape[a] - 2, shape[a] + 3)) for a in axes]
    return Case("Slice", {"axes": axes, "starts": starts, "ends": ends}, opset=9).feed(floats(rng, shape, 0))


@gen("Squeeze")
def _squeeze(rng):
    shape = [int(rng.choice([1, 1, 2, 3])) for _ in range(int(rng.integers(1, 5)))]
    ones = [i for i, d in enumerate(shape) if d == 1]
    c = Case("Squeeze").feed(floats(rng, shape, 0))
    if ones and rng.random() < 0.7:
        pick = [int(i) - len(shape) if rng.random() < 0.5 else int(i)
                for i in rng.permutation(ones)[: int(rng.integers(1, len(ones) + 1))]]
        c.const(np.array(pick, dtype=np.int64))
    return c


@gen("Unsqueeze")
def _unsqueeze(rng):
    shape = shape_of(rng, 0, 3)
    k = int(rng.integers(1, 3))
    out_rank = len(shape) + k
    axes = [int(a) - out_rank if rng.random() < 0.5 else int(a) for a in rng.permutation(out_rank)[:k]]
    return Case("Unsqueeze").feed(floats(rng, shape, 0)).const(np.array(axes, dtype=np.int64))


@gen("RotaryEmbedding")
def _rotary(rng):
    b, s, h, d = int(rng.integers(1, 3)), int(rng.integers(1, 5)), int(rng.integers(1, 3)), 2 * int(rng.integers(1, 4))
    attrs = {"interleaved": int(rng.integers(0, 2))}
    rot = d
    if rng.random() < 0.4 and d >= 4:
        rot = d // 2 if (d // 2) % 2 == 0 else d
        attrs["rotary_embedding_dim"] = rot
    attrs["num_heads"] = h
    x = floats(rng, [b, s, h * d], 0)
    max_pos = s + 3
    cos = floats(rng, [max_pos, rot // 2], 0)
    sin = floats(rng, [max_pos, rot // 2], 0)
    pos = rng.integers(0, max_pos, size=[b, s]).astype(np.int64)
    return Case("RotaryEmbedding", attrs, opset=23).feed(x).feed(cos).feed(sin).feed(pos)


# (GlobalLpPool: the reference has no implementation.)
for _op in ["GlobalAveragePool", "GlobalMaxPool"]:
    def _global(rng, op=_op):
        shape = [int(rng.integers(1, 3)), int(rng.integers(1, 4))] + shape_of(rng, 1, 3)
        return Case(op).feed(floats(rng, shape, 0))
    gen(_op)(_global)


@gen("LpNormalization")
def _lp_norm(rng):
    shape = shape_of(rng, 1, 3)
    x = floats(rng, shape, 0)
    if rng.random() < 0.2:
        x[...] = 0  # a zero norm
    return Case("LpNormalization", {"axis": axes_of(rng, len(shape), 1)[0], "p": int(rng.integers(1, 3))}).feed(x)


for _op in ["And", "Or", "Xor"]:
    def _logic(rng, op=_op):
        shape = shape_of(rng, 0, 3)
        other = [d if rng.random() < 0.6 else 1 for d in shape]
        return Case(op).feed(rng.random(size=shape) < 0.5).feed(rng.random(size=other) < 0.5)
    gen(_op)(_logic)


for _op in ["BitwiseAnd", "BitwiseOr", "BitwiseXor"]:
    def _bitwise(rng, op=_op):
        shape = shape_of(rng, 0, 3)
        dt = [np.int32, np.uint8, np.int64][int(rng.integers(0, 3))]
        info = np.iinfo(dt)
        a = rng.integers(info.min, info.max, size=shape, dtype=dt, endpoint=True)
        b = rng.integers(info.min, info.max, size=shape, dtype=dt, endpoint=True)
        return Case(op).feed(np.asarray(a)).feed(np.asarray(b))
    gen(_op)(_bitwise)


@gen("BitShift")
def _bitshift(rng):
    shape = shape_of(rng, 0, 3)
    dt = [np.uint8, np.uint32, np.uint64][int(rng.integers(0, 3))]
    bits = np.iinfo(dt).bits
    a = rng.integers(0, np.iinfo(dt).max, size=shape, dtype=dt, endpoint=True)
    b = rng.integers(0, bits, size=shape).astype(dt)
    return Case("BitShift", {"direction": str(rng.choice(["LEFT", "RIGHT"]))}).feed(np.asarray(a)).feed(b)


for _op in ["IsNaN", "IsInf", "Not"]:
    def _pred(rng, op=_op):
        shape = shape_of(rng, 0, 3)
        if op == "Not":
            return Case(op).feed(rng.random(size=shape) < 0.5)
        attrs = {}
        if op == "IsInf":
            attrs = {"detect_negative": int(rng.integers(0, 2)), "detect_positive": int(rng.integers(0, 2))}
        return Case(op, attrs).feed(floats(rng, shape, 0.3))
    gen(_op)(_pred)


@gen("Shape")
def _shape(rng):
    shape = shape_of(rng, 0, 4)
    attrs = {}
    if rng.random() < 0.6:
        attrs["start"] = int(rng.integers(-len(shape) - 1, len(shape) + 2))
    if rng.random() < 0.6:
        attrs["end"] = int(rng.integers(-len(shape) - 1, len(shape) + 2))
    return Case("Shape", attrs).feed(floats(rng, shape, 0))


@gen("EyeLike")
def _eyelike(rng):
    shape = [int(rng.integers(1, 6)), int(rng.integers(1, 6))]
    return Case("EyeLike", {"k": int(rng.integers(-6, 7))}).feed(floats(rng, shape, 0))


@gen("Col2Im")
def _col2im(rng):
    k = [int(rng.integers(1, 3)), int(rng.integers(1, 3))]
    img = [int(rng.integers(k[0], 6)), int(rng.integers(k[1], 6))]
    st = [int(rng.integers(1, 3)), int(rng.integers(1, 3))]
    dil = [1, 1]
    pads = [int(rng.integers(0, 2)) for _ in range(4)]
    blocks = [((img[i] + pads[i] + pads[i + 2] - dil[i] * (k[i] - 1) - 1) // st[i] + 1) for i in range(2)]
    c = int(rng.integers(1, 3))
    x = floats(rng, [1, c * k[0] * k[1], blocks[0] * blocks[1]], 0)
    return (Case("Col2Im", {"strides": st, "dilations": dil, "pads": pads}).feed(x)
            .const(np.array(img, dtype=np.int64)).const(np.array(k, dtype=np.int64)))


@gen("Attention")
def _attention(rng):
    b, hq, s, l, e = (int(rng.integers(1, 3)), int(rng.choice([1, 2, 4])), int(rng.integers(1, 5)),
                      int(rng.integers(1, 5)), int(rng.choice([2, 4])))
    hkv = int(rng.choice([h for h in (1, 2, 4) if hq % h == 0]))
    attrs = {"is_causal": int(rng.integers(0, 2))}
    if rng.random() < 0.3:
        attrs["scale"] = 0.3
    if rng.random() < 0.3:
        attrs["softcap"] = 2.0
    c = (Case("Attention", attrs, opset=23).feed(floats(rng, [b, hq, l, e], 0))
         .feed(floats(rng, [b, hkv, s, e], 0)).feed(floats(rng, [b, hkv, s, e], 0)))
    if rng.random() < 0.5:
        c.feed(floats(rng, [l, s], 0))
    return c


@gen("Resize18")
def _resize18(rng):
    # Opset 18: `axes` and `keep_aspect_ratio_policy` with sizes.
    r = int(rng.integers(2, 5))
    shape = [int(rng.integers(1, 5)) for _ in range(r)]
    axes = sorted(int(a) for a in rng.permutation(r)[: int(rng.integers(1, min(r, 2) + 1))])
    mode = str(rng.choice(["nearest", "linear", "cubic"]))
    attrs = {"mode": mode, "axes": axes,
             "keep_aspect_ratio_policy": str(rng.choice(["stretch", "not_larger", "not_smaller"]))}
    c = Case("Resize", attrs, opset=18).feed(floats(rng, shape, 0)).skip().skip()
    return c.const(np.array([int(rng.integers(1, 9)) for _ in axes], dtype=np.int64))


for _op in ["HannWindow", "HammingWindow", "BlackmanWindow"]:
    def _window(rng, op=_op):
        return (Case(op, {"periodic": int(rng.integers(0, 2))}, opset=17)
                .const(np.array(int(rng.integers(1, 12)), dtype=np.int64)))
    gen(_op)(_window)


@gen("DFT")
def _dft(rng):
    n = int(rng.integers(1, 9))
    shape = [int(rng.integers(1, 3)), n, int(rng.choice([1, 2]))]
    attrs = {"onesided": int(rng.integers(0, 2)) if shape[2] == 1 else 0, "inverse": 0}
    c = Case("DFT", attrs, opset=20).feed(floats(rng, shape, 0))
    if rng.random() < 0.5:
        c.const(np.array(int(rng.integers(1, 10)), dtype=np.int64))
    else:
        c.skip()
    return c.const(np.array(1, dtype=np.int64))


@gen("TopKDistinct")
def _topk_distinct(rng):
    # Distinct values: the order of the k found does not hang on the tie rule.
    shape = shape_of(rng, hi=7)
    axis = axes_of(rng, len(shape), 1)[0]
    k = int(rng.integers(0, shape[axis] + 1))
    x = rng.permutation(int(np.prod(shape))).astype(np.float32).reshape(shape)  # no ties
    return Case("TopK", {"axis": axis, "largest": int(rng.integers(0, 2))}, outputs=2).feed(x).const(
        np.array([k], dtype=np.int64))


@gen("ModFmod")
def _mod_float(rng):
    # fmod on floats with NaN and infinities among the dividends.
    shape = shape_of(rng, 0, 3)
    b = floats(rng, shape, 0)
    b[b == 0] = 1.5
    return Case("Mod", {"fmod": 1}).feed(floats(rng, shape, 0.05)).feed(b)


@gen("ScatterElementsAdd")
def _scatter_add(rng):
    shape = shape_of(rng)
    axis = axes_of(rng, len(shape), 1)[0]
    ishape = list(shape)
    ishape[axis % len(shape)] = int(rng.integers(1, 6))
    d = shape[axis]
    idx = rng.integers(-d, d, size=ishape)
    return (Case("ScatterElements", {"axis": axis, "reduction": "add"})
            .feed(floats(rng, shape, 0)).feed(idx.astype(np.int64)).feed(floats(rng, ishape, 0)))


# Recurrent layers: every direction and layout, optional biases, initial states,
# sequence lengths and peepholes, the clip, GRU's linear_before_reset.
for _op, _gates in [("RNN", 1), ("GRU", 3), ("LSTM", 4)]:
    def _recurrent(rng, op=_op, g=_gates):
        seq, batch, size, hidden = (int(rng.integers(1, 5)), int(rng.integers(1, 4)),
                                    int(rng.integers(1, 5)), int(rng.integers(1, 5)))
        direction = str(rng.choice(["forward", "reverse", "bidirectional"]))
        d = 2 if direction == "bidirectional" else 1
        layout = int(rng.integers(0, 2))
        attrs = {"hidden_size": hidden, "direction": direction, "layout": layout}
        # The reference ignores `clip`; onnxruntime, which settles those cases,
        # refuses layout 1.
        if layout == 0 and rng.random() < 0.3:
            attrs["clip"] = float(rng.choice([0.5, 2.0]))
        if op == "GRU":
            attrs["linear_before_reset"] = int(rng.integers(0, 2))
        x = floats(rng, [seq, batch, size] if layout == 0 else [batch, seq, size], 0) / 2
        c = Case(op, attrs, outputs=3 if op == "LSTM" else 2).feed(x)
        c.feed(floats(rng, [d, g * hidden, size], 0) / 4).feed(floats(rng, [d, g * hidden, hidden], 0) / 4)
        state = [d, batch, hidden] if layout == 0 else [batch, d, hidden]
        optional = [
            floats(rng, [d, 2 * g * hidden], 0) / 4,
            # Full lengths: a shorter sequence's padded steps are left unspecified in
            # the reference (its Y keeps computing them).
            np.full([batch], seq, dtype=np.int32),
            floats(rng, state, 0) / 2,
        ]
        if op == "LSTM":
            optional += [floats(rng, state, 0) / 2, floats(rng, [d, 3 * hidden], 0) / 4]
        present = [rng.random() < 0.6 for _ in optional]
        last = max((i for i, p in enumerate(present) if p), default=-1)
        for x, p in zip(optional[: last + 1], present):
            c.feed(x) if p else c.skip()
        return c
    gen(_op)(_recurrent)


for _op in ["NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss"]:
    def _loss(rng, op=_op):
        # Scores [N, C, d…] (log-probabilities for the first, logits for the second),
        # targets in range with `ignore_index` on one of them now and then, weights
        # or none; SoftmaxCrossEntropyLoss sometimes with its log-probability output.
        n, classes = int(rng.integers(1, 4)), int(rng.integers(1, 5))
        extra = shape_of(rng, 0, 2)
        attrs = {"reduction": str(rng.choice(["none", "sum", "mean"]))}
        target = rng.integers(0, classes, size=[n] + extra).astype(np.int64)
        if rng.random() < 0.4:
            attrs["ignore_index"] = int(rng.integers(0, classes))
            if target.size:
                target.flat[0] = attrs["ignore_index"]
        outputs = int(rng.integers(1, 3)) if op == "SoftmaxCrossEntropyLoss" else 1
        c = Case(op, attrs, outputs=outputs).feed(floats(rng, [n, classes] + extra, 0)).feed(target)
        if rng.random() < 0.5:
            c.feed(rng.uniform(0.1, 2, size=[classes]).astype(np.float32))
        return c
    gen(_op)(_loss)


@gen("GlobalLpPool")
def _global_lp(rng):
    # The reference has no GlobalLpPool: it computes LpPool over the whole map.
    shape = [int(rng.integers(1, 3)), int(rng.integers(1, 4))] + shape_of(rng, 1, 3)
    p = int(rng.integers(1, 4))
    c = Case("GlobalLpPool", {"p": p}).feed(floats(rng, shape, 0.02))
    return c.reference_as("LpPool", {"p": p, "kernel_shape": shape[2:]})


@gen("MaxUnpool")
def _max_unpool(rng):
    r = int(rng.integers(1, 3))
    k = [int(rng.integers(1, 4)) for _ in range(r)]
    s = [int(rng.integers(1, 3)) for _ in range(r)]
    pads = [int(rng.integers(0, kk)) for kk in k] * 2
    n, ch = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    pooled = [int(rng.integers(1, 4)) for _ in range(r)]
    full = [(p - 1) * st - pads[i] - pads[i + r] + kk for i, (p, st, kk) in enumerate(zip(pooled, s, k))]
    if min(full) < 1:
        pads = [0] * (2 * r)
        full = [(p - 1) * st + kk for p, st, kk in zip(pooled, s, k)]
    out = list(full)
    if rng.random() < 0.4:
        out = [f + int(rng.integers(0, 2)) for f in full]
    plane = int(np.prod(out))
    count = int(np.prod(pooled))
    # Distinct places within each (image, channel) plane, as MaxPool's indices are.
    idx = np.stack([rng.permutation(plane)[:count] + (i * plane) for i in range(n * ch)]) \
        if count <= plane else None
    if idx is None:
        return _max_unpool(rng)
    c = Case("MaxUnpool", {"kernel_shape": k, "strides": s, "pads": pads})
    c.feed(floats(rng, [n, ch] + pooled, 0)).feed(idx.reshape([n, ch] + pooled).astype(np.int64))
    if out != full:
        c.const(np.array([n, ch] + out, dtype=np.int64))
    return c


@gen("NonZero")
def _nonzero(rng):
    shape = shape_of(rng, 0, 3, lo=0)
    kind = rng.integers(0, 3)
    x = rng.integers(-1, 2, size=shape)
    x = x.astype([np.float32, np.int64, np.bool_][kind])
    return Case("NonZero").feed(x)


@gen("Unique")
def _unique(rng):
    shape = shape_of(rng, 1, 3, hi=5)
    x = rng.integers(-2, 3, size=shape).astype(np.float32)
    attrs = {"sorted": int(rng.integers(0, 2))}
    if rng.random() < 0.5:
        attrs["axis"] = axes_of(rng, len(shape), 1)[0]
    return Case("Unique", attrs, outputs=4).feed(x)


@gen("NonMaxSuppression")
def _nms(rng):
    b, classes, n = int(rng.integers(1, 3)), int(rng.integers(1, 3)), int(rng.integers(1, 9))
    corners = rng.uniform(0, 4, size=[b, n, 2, 2]).astype(np.float32)
    center = int(rng.integers(0, 2))
    if center:
        boxes = np.concatenate([corners[:, :, 0, :], rng.uniform(0.5, 3, size=[b, n, 2])], axis=2)
    else:
        # Either corner first: the specification takes any diagonal.
        boxes = corners.reshape(b, n, 4)
    # Distinct scores: the order of the selected boxes does not hang on a tie rule.
    scores = (rng.permutation(b * classes * n).reshape(b, classes, n) / (b * classes * n)).astype(np.float32)
    c = Case("NonMaxSuppression", {"center_point_box": center})
    c.feed(boxes.astype(np.float32)).feed(scores)
    c.const(np.array([int(rng.integers(0, n + 2))], dtype=np.int64))
    c.const(np.array([float(rng.choice([0.0, 0.3, 0.5, 0.9]))], dtype=np.float32))
    if rng.random() < 0.5:
        c.const(np.array([float(rng.choice([0.1, 0.5]))], dtype=np.float32))
    return c


@gen("BitwiseNot")
def _bitwise_not(rng):
    dtype = rng.choice([np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64])
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max, size=shape_of(rng, 0, 3), dtype=dtype, endpoint=True)
    return Case("BitwiseNot").feed(x)


@gen("CastLike")
def _cast_like(rng):
    to = rng.choice([np.float64, np.int32, np.int8, np.uint8, np.int64, np.bool_, np.float16])
    x = np.array(floats(rng, shape_of(rng, 0, 3), 0.05) * 40)
    if np.dtype(to).kind in "iub":
        # In range: out-of-range float-to-integer casts are undefined.
        x[~np.isfinite(x)] = 1.0
        info = np.iinfo(to if np.dtype(to).kind != "b" else np.int8)
        x = np.clip(x, info.min, info.max)
    return Case("CastLike").feed(x).feed(np.zeros([1], dtype=to))


@gen("Size")
def _size(rng):
    return Case("Size").feed(floats(rng, shape_of(rng, 0, 4, lo=0), 0))


@gen("Reshape")
def _reshape(rng):
    shape = shape_of(rng, 1, 4, lo=0 if rng.random() < 0.2 else 1)
    allowzero = int(rng.integers(0, 2))
    n = int(np.prod(shape))
    # Target: a permutation of the factors, a 0 copying an input dimension (when
    # allowzero is 0), and one -1.
    target = list(rng.permutation(shape)) if rng.random() < 0.5 else [n]
    target = [int(t) for t in target]
    if not allowzero and rng.random() < 0.5 and len(target) <= len(shape):
        i = int(rng.integers(0, len(target)))
        if target[i] == shape[i]:
            target[i] = 0
    if rng.random() < 0.5 and n > 0:
        i = int(rng.integers(0, len(target)))
        if target[i] != 0:
            target[i] = -1
    return Case("Reshape", {"allowzero": allowzero}).feed(floats(rng, shape, 0)).const(
        np.array(target, dtype=np.int64))


@gen("Dropout")
def _dropout(rng):
    # Inference: the input passes through, and the mask is all true.
    c = Case("Dropout", outputs=int(rng.integers(1, 3))).feed(floats(rng, shape_of(rng), 0.05))
    if rng.random() < 0.5:
        c.const(np.array(float(rng.choice([0.0, 0.5])), dtype=np.float32))
        if rng.random() < 0.5:
            c.const(np.array(False))
    return c


@gen("ConstantOfShape")
def _constant_of_shape(rng):
    attrs = {}
    if rng.random() < 0.7:
        dtype = rng.choice([np.float32, np.int64, np.int32, np.bool_, np.float64])
        attrs["value"] = numpy_helper.from_array(np.array([3], dtype=dtype), "value")
    return Case("ConstantOfShape", attrs).feed(np.array(shape_of(rng, 0, 3, lo=0), dtype=np.int64))


@gen("Swish")
def _swish(rng):
    attrs = {"alpha": float(rng.choice([1.0, 0.5, 1.702]))} if rng.random() < 0.7 else {}
    return Case("Swish", attrs, opset=24).feed(floats(rng, shape_of(rng), 0.05))


@gen("CumProd")
def _cumprod(rng):
    shape = shape_of(rng)
    x = floats(rng, shape, 0) / 2
    attrs = {"exclusive": int(rng.integers(0, 2)), "reverse": int(rng.integers(0, 2))}
    return Case("CumProd", attrs, opset=26).feed(x).const(np.array(axes_of(rng, len(shape), 1)[0], dtype=np.int64))


@gen("Upsample")
def _upsample(rng):
    shape = [int(rng.integers(1, 3)), int(rng.integers(1, 3)), int(rng.integers(1, 5)), int(rng.integers(1, 5))]
    mode = str(rng.choice(["nearest", "linear"]))
    scales = [1.0, 1.0, float(rng.choice([1, 2, 3])), float(rng.choice([1, 2, 3]))]
    c = Case("Upsample", {"mode": mode}, opset=9).feed(floats(rng, shape, 0)).const(
        np.array(scales, dtype=np.float32))
    if mode == "linear":
        # The reference's Upsample lacks the linear mode: it is Resize with asymmetric
        # coordinates (opset 10's Resize is Upsample renamed).
        c.reference_as("Resize", {"mode": mode, "coordinate_transformation_mode": "asymmetric"}, opset=11)
        c.ref.inputs.insert(1, ("", None, False))  # no roi
    return c


@gen("Scatter")
def _scatter(rng):
    # Opset 10's Scatter: ScatterElements without a reduction; distinct targets.
    shape = shape_of(rng)
    axis = axes_of(rng, len(shape), 1)[0]
    d = shape[axis]
    ishape = list(shape)
    ishape[axis] = int(rng.integers(1, d + 1))
    idx = np.moveaxis(rng.permuted(np.broadcast_to(
        np.arange(d).reshape([d] + [1] * (len(shape) - 1)),
        [d] + [s for i, s in enumerate(shape) if i != axis % len(shape)]).copy(), axis=0), 0, axis)
    idx = np.take(idx, np.arange(ishape[axis]), axis=axis)
    c = (Case("Scatter", {"axis": axis}, opset=10).feed(floats(rng, shape, 0))
         .feed(idx.astype(np.int64)).feed(floats(rng, ishape, 0)))
    # The reference has no Scatter, which opset 11 renamed ScatterElements.
    return c.reference_as("ScatterElements", {"axis": axis}, opset=11)


def integer_conv_dims(rng: np.random.Generator):
    """A 1-D or 2-D integer convolution's attributes, its u8 input, and its channels
    and kernel: (attrs, x, cout, cin per group, kernel)."""
    r = int(rng.integers(1, 3))
    n, group = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    cin, cout = group * int(rng.integers(1, 3)), group * int(rng.integers(1, 3))
    k = [int(rng.integers(1, 4)) for _ in range(r)]
    size = [kk + int(rng.integers(0, 4)) for kk in k]
    attrs = {"group": group, "strides": [int(rng.integers(1, 3)) for _ in range(r)],
             "pads": [int(rng.integers(0, 2)) for _ in range(2 * r)]}
    x = rng.integers(0, 256, size=[n, cin] + size).astype(np.uint8)
    return attrs, x, cout, cin // group, k


@gen("ConvInteger")
def _conv_integer(rng):
    attrs, x, cout, per_group, k = integer_conv_dims(rng)
    w = rng.integers(-128, 128, size=[cout, per_group] + k).astype(np.int8) if rng.random() < 0.5 \
        else rng.integers(0, 256, size=[cout, per_group] + k).astype(np.uint8)
    c = Case("ConvInteger", attrs).feed(x).feed(w)
    if rng.random() < 0.7:
        c.feed(np.array(int(rng.integers(0, 256)), dtype=np.uint8))
        if rng.random() < 0.5:
            c.feed(np.array(int(rng.integers(0, 20)), dtype=w.dtype))
    return c


@gen("QLinearConv")
def _qlinear_conv(rng):
    attrs, x, cout, per_group, k = integer_conv_dims(rng)
    w = rng.integers(-127, 128, size=[cout, per_group] + k).astype(np.int8)
    per_channel = rng.random() < 0.5
    w_scale = rng.uniform(0.001, 0.02, size=[cout] if per_channel else []).astype(np.float32)
    c = Case("QLinearConv", attrs)
    c.feed(x).const(np.array(0.02, dtype=np.float32)).const(np.array(int(rng.integers(0, 256)), dtype=np.uint8))
    c.feed(w).const(w_scale).const(np.zeros([cout] if per_channel else [], dtype=np.int8))
    c.const(np.array(float(rng.uniform(0.01, 0.2)), dtype=np.float32))
    c.const(np.array(int(rng.integers(0, 256)), dtype=np.uint8))
    if rng.random() < 0.5:
        c.feed(rng.integers(-500, 500, size=[cout]).astype(np.int32))
    return c


@gen("STFT")
def _stft(rng):
    b, length = int(rng.integers(1, 3)), int(rng.integers(4, 17))
    frame = int(rng.integers(2, min(length, 8) + 1))
    step = int(rng.integers(1, frame + 1))
    complex_in = rng.random() < 0.3
    c = Case("STFT", {"onesided": 0 if complex_in else int(rng.integers(0, 2))}, opset=17)
    c.feed(floats(rng, [b, length, 2 if complex_in else 1], 0)).const(np.array(step, dtype=np.int64))
    window = rng.random() < 0.6
    if window:
        c.const(np.hanning(frame).astype(np.float32))
    else:
        c.skip()
    if not window or rng.random() < 0.5:
        c.const(np.array(frame, dtype=np.int64))
    return c


@gen("MelWeightMatrix")
def _mel(rng):
    dft = int(rng.choice([8, 16, 32, 64]))
    rate = int(rng.choice([8000, 16000]))
    lower = float(rng.choice([0.0, 100.0]))
    upper = float(rng.choice([rate / 2, rate / 4]))
    c = Case("MelWeightMatrix", opset=17)
    c.const(np.array(int(rng.integers(1, 9)), dtype=np.int64)).const(np.array(dft, dtype=np.int64))
    c.const(np.array(rate, dtype=np.int64)).const(np.array(lower, dtype=np.float32))
    return c.const(np.array(upper, dtype=np.float32))


@gen("AffineGrid")
def _affine_grid(rng):
    n = int(rng.integers(1, 3))
    three = rng.random() < 0.4
    theta = floats(rng, [n, 3, 4] if three else [n, 2, 3], 0) / 2
    size = [n, int(rng.integers(1, 3))] + [int(rng.integers(1, 5)) for _ in range(3 if three else 2)]
    return Case("AffineGrid", {"align_corners": int(rng.integers(0, 2))}, opset=20).feed(theta).const(
        np.array(size, dtype=np.int64))


@gen("DeformConv")
def _deform_conv(rng):
    n, group, og = int(rng.integers(1, 3)), int(rng.integers(1, 3)), int(rng.integers(1, 3))
    cin = group * og * int(rng.integers(1, 2))
    cout = group * int(rng.integers(1, 3))
    k = [int(rng.integers(1, 4)) for _ in range(2)]
    # At least two rows and columns: the reference divides by size − 1.
    size = [max(kk + int(rng.integers(0, 3)), 2) for kk in k]
    strides = [int(rng.integers(1, 3)) for _ in range(2)]
    pads = [int(rng.integers(0, 2)) for _ in range(4)]
    out = [(size[i] + pads[i] + pads[i + 2] - k[i]) // strides[i] + 1 for i in range(2)]
    attrs = {"group": group, "offset_group": og, "strides": strides, "pads": pads, "kernel_shape": k}
    c = Case("DeformConv", attrs, opset=19).feed(floats(rng, [n, cin] + size, 0))
    c.feed(floats(rng, [cout, cin // group] + k, 0))
    c.feed(floats(rng, [n, og * 2 * k[0] * k[1]] + out, 0) / 2)
    extra = [floats(rng, [cout], 0), rng.uniform(0, 1, size=[n, og * k[0] * k[1]] + out).astype(np.float32)]
    present = [rng.random() < 0.5, rng.random() < 0.5]
    if present[1]:
        c.feed(extra[0]) if present[0] else c.skip()
        c.feed(extra[1])
    elif present[0]:
        c.feed(extra[0])
    return c


@gen("TensorScatter")
def _tensor_scatter(rng):
    b, heads, cache, dim = (int(rng.integers(1, 3)), int(rng.integers(1, 3)), int(rng.integers(2, 7)),
                            int(rng.integers(1, 4)))
    seq = int(rng.integers(1, cache + 1))
    mode = str(rng.choice(["linear", "circular"]))
    hi = cache - seq + 1 if mode == "linear" else cache
    c = Case("TensorScatter", {"mode": mode, "axis": -2}, opset=24)
    c.feed(floats(rng, [b, heads, cache, dim], 0)).feed(floats(rng, [b, heads, seq, dim], 0))
    if rng.random() < 0.7:
        c.feed(rng.integers(0, hi, size=[b]).astype(np.int64))
    return c


@gen("BitCast")
def _bitcast(rng):
    pairs = [(np.float32, np.int32), (np.int32, np.float32), (np.float32, np.uint32),
             (np.int64, np.float64), (np.float64, np.int64), (np.int16, np.uint16), (np.uint8, np.int8)]
    a, b = pairs[int(rng.integers(0, len(pairs)))]
    x = rng.integers(-100000, 100000, size=shape_of(rng, 0, 3)).astype(a) if np.dtype(a).kind != "f" \
        else floats(rng, shape_of(rng, 0, 3), 0.1, dtype=a)
    if np.dtype(b).kind == "f":
        x = np.abs(x) % 1000  # bit patterns that are not NaN
    return Case("BitCast", {"to": int(oh.np_dtype_to_tensor_dtype(np.dtype(b)))}, opset=26).feed(x.astype(a))



# ---------------------------------------------------------------------------------
# ai.onnx.ml: the scikit-learn operators.

ML = "ai.onnx.ml"
POST_TRANSFORMS = ["NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO", "PROBIT"]


def grid_floats(rng: np.random.Generator, shape, nan: float = 0.0) -> np.ndarray:
    """Values on a grid of halves in [-2, 2], so that tree splits meet ties (the
    comparison's edge) and equality, with NaN in about `nan` of the places."""
    x = (rng.integers(-4, 5, size=shape) / 2).astype(np.float32)
    if nan:
        x[rng.random(size=x.shape) < nan] = np.nan
    return x


def random_trees(rng: np.random.Generator, features: int, trees: int):
    """Random binary trees: for each, a list of nodes (mode, feature, split, true
    child, false child, missing tracks true), leaves marked mode LEAF."""
    out = []
    for _ in range(trees):
        nodes = []

        def grow(depth):
            i = len(nodes)
            nodes.append(None)
            if depth == 0 or rng.random() < 0.25:
                nodes[i] = ("LEAF", 0, 0.0, 0, 0, 0)
                return i
            mode = str(rng.choice(["BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT", "BRANCH_EQ",
                                   "BRANCH_NEQ"]))
            feature, split = int(rng.integers(0, features)), float(rng.integers(-3, 4) / 2)
            t = grow(depth - 1)
            f = grow(depth - 1)
            nodes[i] = (mode, feature, split, t, f, int(rng.integers(0, 2)))
            return i

        grow(int(rng.integers(0, 4)))
        out.append(nodes)
    return out


def tree_node_attrs(trees) -> dict:
    a = {k: [] for k in ["nodes_treeids", "nodes_nodeids", "nodes_modes", "nodes_featureids",
                         "nodes_values", "nodes_truenodeids", "nodes_falsenodeids",
                         "nodes_missing_value_tracks_true"]}
    for t, nodes in enumerate(trees):
        for i, (mode, feat, split, tr, fa, miss) in enumerate(nodes):
            a["nodes_treeids"].append(t)
            a["nodes_nodeids"].append(i)
            a["nodes_modes"].append(mode)
            a["nodes_featureids"].append(feat)
            a["nodes_values"].append(split)
            a["nodes_truenodeids"].append(tr)
            a["nodes_falsenodeids"].append(fa)
            a["nodes_missing_value_tracks_true"].append(miss)
    return a


def leaves_of(trees):
    return [(t, i) for t, nodes in enumerate(trees) for i, n in enumerate(nodes) if n[0] == "LEAF"]


def leaf_weights(rng: np.random.Generator, trees, attrs: dict, prefix: str, count: int, weight) -> None:
    """Weights on the leaves for `count` targets or classes, into `attrs`'
    `{prefix}_treeids`, `_nodeids`, `_ids` and `_weights`: on each leaf one of them at
    least (the reference looks every leaf up), each other one half the time, each
    weight drawn by `weight()`."""
    for key in ("treeids", "nodeids", "ids", "weights"):
        attrs[f"{prefix}_{key}"] = []
    for t, i in leaves_of(trees):
        must = int(rng.integers(0, count))
        for k in range(count):
            if k == must or rng.random() < 0.5:
                attrs[f"{prefix}_treeids"].append(t)
                attrs[f"{prefix}_nodeids"].append(i)
                attrs[f"{prefix}_ids"].append(k)
                attrs[f"{prefix}_weights"].append(weight())


@gen("TreeEnsembleRegressor")
def _tree_regressor(rng):
    features, targets = int(rng.integers(1, 4)), int(rng.integers(1, 3))
    trees = random_trees(rng, features, int(rng.integers(1, 4)))
    attrs = tree_node_attrs(trees)
    attrs.update({"n_targets": targets,
                  "aggregate_function": str(rng.choice(["SUM", "AVERAGE", "MIN", "MAX"]))})
    leaf_weights(rng, trees, attrs, "target", targets, lambda: float(rng.integers(-8, 9) / 4))
    if rng.random() < 0.5:
        attrs["base_values"] = [float(rng.integers(-4, 5) / 4) for _ in range(targets)]
    return Case("TreeEnsembleRegressor", attrs, opset=3, domain=ML).feed(
        grid_floats(rng, [int(rng.integers(1, 6)), features], nan=0.1))


@gen("TreeEnsembleClassifier")
def _tree_classifier(rng):
    features, classes = int(rng.integers(1, 4)), int(rng.integers(2, 4))
    trees = random_trees(rng, features, int(rng.integers(1, 4)))
    attrs = tree_node_attrs(trees)
    attrs.update({"classlabels_int64s": [int(c) * 10 + 1 for c in range(classes)],
                  "post_transform": str(rng.choice(["NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO"]))})
    leaf_weights(rng, trees, attrs, "class", classes, lambda: float(rng.integers(0, 9) / 8))
    return Case("TreeEnsembleClassifier", attrs, outputs=2, opset=3, domain=ML).feed(
        grid_floats(rng, [int(rng.integers(1, 6)), features], nan=0.1))


@gen("TreeEnsemble")
def _tree_ensemble(rng):
    # ai.onnx.ml 5: interior nodes only, each child a node or a leaf.
    features, targets = int(rng.integers(1, 4)), int(rng.integers(1, 3))
    trees = random_trees(rng, features, int(rng.integers(1, 4)))
    codes = {"BRANCH_LEQ": 0, "BRANCH_LT": 1, "BRANCH_GTE": 2, "BRANCH_GT": 3, "BRANCH_EQ": 4, "BRANCH_NEQ": 5}
    a = {k: [] for k in ["nodes_featureids", "nodes_truenodeids", "nodes_trueleafs", "nodes_falsenodeids",
                         "nodes_falseleafs", "nodes_missing_value_tracks_true", "tree_roots", "leaf_targetids"]}
    splits, modes, weights = [], [], []
    for nodes in trees:
        inner = {i: len(a["nodes_featureids"]) + k for k, i in
                 enumerate(i for i, n in enumerate(nodes) if n[0] != "LEAF")}
        leaf = {}

        def child(j):
            if nodes[j][0] != "LEAF":
                return inner[j], 0
            if j not in leaf:
                leaf[j] = len(a["leaf_targetids"])
                a["leaf_targetids"].append(int(rng.integers(0, targets)))
                weights.append(float(rng.integers(-8, 9) / 4))
            return leaf[j], 1

        if nodes[0][0] == "LEAF":
            # A tree that is one leaf: a split between two leaves stands for it. (The
            # form ml 5 has for it, a node whose branches name one leaf, the reference
            # reads as the leaf at the node's own index.)
            nodes = [("BRANCH_LEQ", 0, 0.0, 1, 2, 0), nodes[0], nodes[0]]
            inner = {0: len(a["nodes_featureids"])}
        a["tree_roots"].append(inner[0])
        for i, (mode, feat, split, t, f, miss) in enumerate(nodes):
            if mode == "LEAF":
                continue
            a["nodes_featureids"].append(feat)
            splits.append(split)
            modes.append(codes[mode])
            a["nodes_missing_value_tracks_true"].append(miss)
            for side, j in (("true", t), ("false", f)):
                idx, is_leaf = child(j)
                a[f"nodes_{side}nodeids"].append(idx)
                a[f"nodes_{side}leafs"].append(is_leaf)
    a.update({"nodes_splits": numpy_helper.from_array(np.array(splits, dtype=np.float32)),
              "nodes_modes": numpy_helper.from_array(np.array(modes, dtype=np.uint8)),
              "leaf_weights": numpy_helper.from_array(np.array(weights, dtype=np.float32)),
              "n_targets": targets, "aggregate_function": int(rng.integers(0, 4)),
              # The reference ignores post_transform.
              "post_transform": 0})
    return Case("TreeEnsemble", a, opset=5, domain=ML).feed(
        grid_floats(rng, [int(rng.integers(1, 6)), features], nan=0.1))


@gen("LinearRegressor")
def _linear_regressor(rng):
    features, targets = int(rng.integers(1, 5)), int(rng.integers(1, 3))
    attrs = {"coefficients": [float(v) for v in rng.uniform(-2, 2, size=features * targets)],
             "targets": targets}
    if rng.random() < 0.7:
        attrs["intercepts"] = [float(v) for v in rng.uniform(-1, 1, size=targets)]
    return Case("LinearRegressor", attrs, domain=ML, opset=1).feed(
        floats(rng, [int(rng.integers(1, 5)), features], 0))


@gen("LinearClassifier")
def _linear_classifier(rng):
    # One row of coefficients per class, or one row for two labels (binary).
    features, classes = int(rng.integers(1, 5)), int(rng.integers(1, 4))
    labels = max(classes, 2)
    # Intercepts always: the reference's scores are NaN without them, and onnxruntime
    # refuses the model.
    attrs = {"coefficients": [float(v) for v in rng.uniform(-2, 2, size=features * classes)],
             "intercepts": [float(v) for v in rng.uniform(-1, 1, size=classes)],
             "classlabels_ints": [3 * i + 2 for i in range(labels)],
             "post_transform": str(rng.choice(POST_TRANSFORMS[:4])),
             "multi_class": int(rng.integers(0, 2))}
    return Case("LinearClassifier", attrs, outputs=2, domain=ML, opset=1).feed(
        floats(rng, [int(rng.integers(1, 5)), features], 0))


@gen("Normalizer")
def _normalizer(rng):
    x = floats(rng, [int(rng.integers(1, 4)), int(rng.integers(1, 5))], 0)
    return Case("Normalizer", {"norm": str(rng.choice(["MAX", "L1", "L2"]))}, domain=ML, opset=1).feed(x)


@gen("Scaler")
def _scaler(rng):
    features = int(rng.integers(1, 5))
    n = features if rng.random() < 0.7 else 1
    attrs = {"offset": [float(v) for v in rng.uniform(-2, 2, size=n)],
             "scale": [float(v) for v in rng.uniform(-2, 2, size=n)]}
    return Case("Scaler", attrs, domain=ML, opset=1).feed(floats(rng, [int(rng.integers(1, 4)), features], 0.05))


@gen("Binarizer")
def _binarizer(rng):
    return Case("Binarizer", {"threshold": float(rng.choice([0.0, 0.5, -1.0]))}, domain=ML, opset=1).feed(
        grid_floats(rng, shape_of(rng, 1, 3)))


@gen("Imputer")
def _imputer(rng):
    features = int(rng.integers(1, 5))
    n = features if rng.random() < 0.7 else 1
    attrs = {"imputed_value_floats": [float(v) for v in rng.uniform(-2, 2, size=n)]}
    x = grid_floats(rng, [int(rng.integers(1, 4)), features], nan=0.3)
    if rng.random() < 0.5:
        attrs["replaced_value_float"] = 0.5
    return Case("Imputer", attrs, domain=ML, opset=1).feed(x)


@gen("ArrayFeatureExtractor")
def _array_feature_extractor(rng):
    shape = shape_of(rng, 1, 3)
    idx = rng.integers(0, shape[-1], size=[int(rng.integers(1, 5))]).astype(np.int64)
    return Case("ArrayFeatureExtractor", domain=ML, opset=1).feed(floats(rng, shape, 0)).feed(idx)


@gen("OneHotEncoder")
def _one_hot_encoder(rng):
    cats = sorted(int(v) for v in rng.choice(10, size=int(rng.integers(1, 6)), replace=False))
    x = rng.integers(0, 10, size=shape_of(rng, 1, 2)).astype(np.int64)
    zeros = int(rng.integers(0, 2))
    if not zeros:
        x = rng.choice(cats, size=x.shape).astype(np.int64)
    return Case("OneHotEncoder", {"cats_int64s": cats, "zeros": zeros}, domain=ML, opset=1).feed(x)


@gen("LabelEncoder")
def _label_encoder(rng):
    keys = [int(v) for v in rng.choice(20, size=int(rng.integers(1, 6)), replace=False)]
    if rng.random() < 0.5:
        attrs = {"keys_int64s": keys, "values_int64s": [int(v) for v in rng.integers(-50, 50, size=len(keys))],
                 "default_int64": -7}
    else:
        attrs = {"keys_int64s": keys, "values_floats": [float(v) for v in rng.uniform(-3, 3, size=len(keys))],
                 "default_float": 0.25}
    return Case("LabelEncoder", attrs, domain=ML, opset=2).feed(
        rng.integers(0, 20, size=shape_of(rng, 1, 2)).astype(np.int64))


@gen("FeatureVectorizer")
def _feature_vectorizer(rng):
    n = int(rng.integers(1, 4))
    widths = [int(rng.integers(1, 4)) for _ in range(int(rng.integers(1, 4)))]
    c = Case("FeatureVectorizer", {"inputdimensions": widths}, domain=ML, opset=1)
    for w in widths:
        c.feed(floats(rng, [n, w], 0))
    return c


# ---------------------------------------------------------------------------------
# ai.onnx.preview.training: the optimizers.

TRAINING = "ai.onnx.preview.training"


def optimizer_inputs(rng: np.random.Generator, c: Case, states: int) -> Case:
    """R (the learning rate), T (the step count), then X, G and the states of one or
    two tensors in the operator's order (all Xs, all Gs, then each state's)."""
    shapes = [shape_of(rng, 1, 3) for _ in range(int(rng.integers(1, 3)))]
    c.feed(np.array(float(rng.choice([0.1, 0.01])), dtype=np.float32))
    c.feed(np.array(int(rng.integers(0, 4)), dtype=np.int64))
    for _ in range(2 + states):
        for s in shapes:
            c.feed(floats(rng, s, 0))
    c.outputs = len(shapes) * (1 + states)
    return c


@gen("Adagrad")
def _adagrad(rng):
    attrs = {"decay_factor": float(rng.choice([0.0, 0.1])), "epsilon": 1e-6,
             "norm_coefficient": float(rng.choice([0.0, 0.01]))}
    c = optimizer_inputs(rng, Case("Adagrad", attrs, domain=TRAINING, opset=1), 1)
    # The accumulated squares are not negative.
    c.inputs = [(n, np.abs(x) if i >= 2 + (len(c.inputs) - 2) // 2 else x, k)
                for i, (n, x, k) in enumerate(c.inputs)]
    return c


@gen("Momentum")
def _momentum(rng):
    attrs = {"alpha": float(rng.choice([0.9, 1.0])), "beta": float(rng.choice([0.1, 1.0])),
             "mode": str(rng.choice(["standard", "nesterov"])),
             "norm_coefficient": float(rng.choice([0.0, 0.01]))}
    return optimizer_inputs(rng, Case("Momentum", attrs, domain=TRAINING, opset=1), 1)


@gen("Adam")
def _adam(rng):
    attrs = {"alpha": float(rng.choice([0.9, 0.5])), "beta": float(rng.choice([0.999, 0.9])),
             "epsilon": 1e-6, "norm_coefficient": float(rng.choice([0.0, 0.01])),
             "norm_coefficient_post": float(rng.choice([0.0, 0.01]))}
    c = optimizer_inputs(rng, Case("Adam", attrs, domain=TRAINING, opset=1), 2)
    # The reference's bias correction (`r * np.sqrt(1 - beta**t)`, t an int64) makes
    # its outputs float64 when T > 0; the specification keeps X's type.
    c.ref_outputs = lambda outs: [y.astype(np.float32) for y in outs]
    # The second moments are not negative.
    k = (len(c.inputs) - 2) // 4
    c.inputs = [(n, np.abs(x) if i >= 2 + 3 * k else x, f) for i, (n, x, f) in enumerate(c.inputs)]
    return c


# ---------------------------------------------------------------------------------
# Newer operators.


@gen("SwiGLU")
def _swiglu(rng):
    shape = shape_of(rng)
    attrs = {"alpha": float(rng.choice([1.0, 1.702]))} if rng.random() < 0.5 else {}
    return Case("SwiGLU", attrs, opset=28).feed(floats(rng, shape, 0.05)).feed(floats(rng, shape, 0.05))


@gen("CausalConvWithState")
def _causal_conv(rng):
    b, ch, length, k = int(rng.integers(1, 3)), int(rng.integers(1, 4)), int(rng.integers(1, 6)), \
        int(rng.integers(1, 5))
    attrs = {"activation": str(rng.choice(["none", "silu", "swish"]))} if rng.random() < 0.7 else {}
    c = Case("CausalConvWithState", attrs, outputs=2, opset=27)
    c.feed(floats(rng, [b, ch, length], 0)).feed(floats(rng, [ch, 1, k], 0) / 2)
    bias, past = rng.random() < 0.5, rng.random() < 0.6
    if bias:
        c.feed(floats(rng, [ch], 0))
    elif past:
        c.skip()
    if past:
        c.feed(floats(rng, [b, ch, k - 1], 0))
    return c


@gen("LinearAttention")
def _linear_attention(rng):
    b, t = int(rng.integers(1, 3)), int(rng.integers(1, 5))
    hkv = int(rng.integers(1, 3))
    hq = hkv * int(rng.integers(1, 3))
    dk, dv = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    rule = str(rng.choice(["linear", "gated", "delta", "gated_delta"]))
    attrs = {"q_num_heads": hq, "kv_num_heads": hkv, "update_rule": rule}
    if rng.random() < 0.3:
        attrs["scale"] = 0.5
    c = Case("LinearAttention", attrs, outputs=2, opset=27)
    c.feed(floats(rng, [b, t, hq * dk], 0) / 2).feed(floats(rng, [b, t, hkv * dk], 0) / 2)
    c.feed(floats(rng, [b, t, hkv * dv], 0) / 2)
    c.feed(floats(rng, [b, hkv, dk, dv], 0) / 2) if rng.random() < 0.5 else c.skip()
    if rule in ("gated", "gated_delta"):
        c.feed(-rng.uniform(0, 1, size=[b, t, hkv if rng.random() < 0.5 else hkv * dk]).astype(np.float32))
    else:
        c.skip()
    if rule in ("delta", "gated_delta"):
        c.feed(rng.uniform(0, 1, size=[b, t, hkv if rng.random() < 0.5 else 1]).astype(np.float32))
    while c.inputs and c.inputs[-1][1] is None:
        c.inputs.pop()
    return c


@gen("TfIdfVectorizer")
def _tfidf(rng):
    # A pool of 1- and 2-grams over tokens 0..5, counted in sequences of 0..6.
    unigrams = sorted(int(v) for v in rng.choice(6, size=int(rng.integers(1, 4)), replace=False))
    bigrams = [int(v) for v in rng.integers(0, 6, size=2 * int(rng.integers(0, 3)))]
    max_n = 2 if bigrams else 1
    min_n = int(rng.integers(1, max_n + 1))
    pool = unigrams + bigrams
    counts = len(unigrams) + len(bigrams) // 2
    mode = str(rng.choice(["TF", "IDF", "TFIDF"]))
    attrs = {"mode": mode, "min_gram_length": min_n, "max_gram_length": max_n,
             "max_skip_count": int(rng.integers(0, 3)), "ngram_counts": [0, len(unigrams)],
             "ngram_indexes": list(range(counts)), "pool_int64s": pool}
    if mode != "TF" or rng.random() < 0.3:
        attrs["weights"] = [float(v) for v in rng.uniform(0.5, 2, size=counts)]
    shape = [int(rng.integers(1, 7))] if rng.random() < 0.5 else [int(rng.integers(1, 3)), int(rng.integers(1, 7))]
    return Case("TfIdfVectorizer", attrs, opset=9).feed(rng.integers(0, 6, size=shape).astype(np.int64))



# ---------------------------------------------------------------------------------
# Control flow: bodies that read the outer scope, carry state and stop early.


def f32_value(name: str, shape=None):
    return oh.make_tensor_value_info(name, onnx.TensorProto.FLOAT, shape)


@gen("If")
def _if(rng):
    # Both branches read a value of the outer scope; each returns two outputs of the
    # same shape.
    c = Case("If", outputs=2)
    x = c.outer(floats(rng, shape_of(rng, 0, 3), 0.05))
    c.attrs["then_branch"] = oh.make_graph(
        [oh.make_node("Add", [x, x], ["t0"]), oh.make_node("Neg", [x], ["t1"])],
        "then", [], [f32_value("t0"), f32_value("t1")])
    c.attrs["else_branch"] = oh.make_graph(
        [oh.make_node("Mul", [x, x], ["e0"]), oh.make_node("Abs", [x], ["e1"])],
        "else", [], [f32_value("e0"), f32_value("e1")])
    return c.feed(np.array(bool(rng.integers(0, 2))))


@gen("Loop")
def _loop(rng):
    # s ← s·a + x (x from the outer scope), stopping once Σ s exceeds a limit, with
    # each step's s scanned out; a trip count, a condition, or both.
    shape = shape_of(rng, 1, 2)
    limit = float(rng.uniform(0, 20))
    c = Case("Loop", outputs=2)
    # a ≥ 1 and x ≥ 0.5: Σ s grows by at least 0.5 a step, so a loop without a trip
    # count stops.
    a = c.outer(np.array(float(rng.uniform(1, 1.5)), dtype=np.float32))
    x = c.outer(np.abs(floats(rng, shape, 0)) + 0.5)
    body = oh.make_graph(
        [oh.make_node("Mul", ["s", a], ["sa"]),
         oh.make_node("Add", ["sa", x], ["s_out"]),
         oh.make_node("ReduceSum", ["s_out"], ["total"], keepdims=0),
         oh.make_node("Constant", [], ["limit"], value=numpy_helper.from_array(np.array(limit, np.float32))),
         oh.make_node("Less", ["total", "limit"], ["cond_out"]),
         oh.make_node("Identity", ["s_out"], ["scan"])],
        "body",
        [oh.make_tensor_value_info("i", onnx.TensorProto.INT64, []),
         oh.make_tensor_value_info("cond", onnx.TensorProto.BOOL, []), f32_value("s")],
        [oh.make_tensor_value_info("cond_out", onnx.TensorProto.BOOL, []), f32_value("s_out"),
         f32_value("scan")])
    c.attrs["body"] = body
    form = int(rng.integers(0, 3))
    c.feed(np.array(int(rng.integers(0, 6)), dtype=np.int64)) if form != 1 else c.skip()
    c.feed(np.array(bool(rng.random() < 0.8))) if form != 0 else c.skip()
    return c.feed(np.abs(floats(rng, shape, 0)))


@gen("Scan")
def _scan(rng):
    # A running sum and product carried over one scanned input, along any axis and
    # in either direction, the sums scanned out along any axis in either direction.
    rank = int(rng.integers(1, 4))
    shape = [int(rng.integers(1, 4)) for _ in range(rank)]
    in_axis = int(rng.integers(0, rank))
    out_axis = int(rng.integers(0, rank))
    row = [d for i, d in enumerate(shape) if i != in_axis]
    body = oh.make_graph(
        [oh.make_node("Add", ["acc", "x"], ["acc_out"]),
         oh.make_node("Mul", ["prod", "x"], ["prod_out"]),
         oh.make_node("Identity", ["acc_out"], ["y"])],
        "body", [f32_value("acc"), f32_value("prod"), f32_value("x")],
        [f32_value("acc_out"), f32_value("prod_out"), f32_value("y")])
    in_dir, out_dir = int(rng.integers(0, 2)), int(rng.integers(0, 2))
    attrs = {"body": body, "num_scan_inputs": 1, "scan_input_directions": [in_dir],
             "scan_output_directions": [out_dir],
             "scan_input_axes": [in_axis if rng.random() < 0.5 else in_axis - rank],
             "scan_output_axes": [out_axis]}
    c = Case("Scan", attrs, outputs=3)
    x = floats(rng, shape, 0) / 2
    c.feed(floats(rng, row, 0)).feed(floats(rng, row, 0) / 2).feed(x)
    # The reference scans axis 0 forwards only: it gets the input with the scanned
    # axis moved to the front (reversed for a backward scan), and its stacked output
    # is moved to the output axis (reversed for a backward output).
    xs = np.moveaxis(x, in_axis, 0)
    c.reference_as("Scan", {"body": body, "num_scan_inputs": 1}, inputs=2)
    c.ref.feed(np.ascontiguousarray(xs[::-1] if in_dir else xs))
    c.ref_outputs = lambda outs: outs[:2] + [np.moveaxis(outs[2][::-1] if out_dir else outs[2], 0, out_axis)]
    return c



# ---------------------------------------------------------------------------------
# Other element types: the arithmetic above again on integers of every width (values
# across the whole range, so that sums and products wrap) and on float64 and float16.

INT_TYPES = [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64]


def broadcast_shapes(rng: np.random.Generator) -> tuple[list[int], list[int]]:
    shape = shape_of(rng, 0, 3)
    other = [d if rng.random() < 0.6 else 1 for d in shape][int(rng.integers(0, len(shape) + 1)):]
    return (shape, other) if rng.random() < 0.5 else (other, shape)


@gen("IntegerArithmetic")
def _integer_arithmetic(rng):
    op = str(rng.choice(["Add", "Sub", "Mul", "Div", "Mod", "Max", "Min", "BitShift"]))
    dtype = rng.choice([t for t in INT_TYPES if op != "BitShift" or np.dtype(t).kind == "u"])
    info = np.iinfo(dtype)
    a_shape, b_shape = broadcast_shapes(rng)
    small = rng.random() < 0.5
    lo, hi = (max(info.min, -20), min(info.max, 20)) if small else (info.min, info.max)
    a = rng.integers(lo, hi, size=a_shape, dtype=dtype, endpoint=True)
    b = rng.integers(lo, hi, size=b_shape, dtype=dtype, endpoint=True)
    attrs = {}
    if op in ("Div", "Mod"):
        b = np.asarray(b)
        b[b == 0] = 3  # division by zero is left undefined
    if op == "BitShift":
        b = rng.integers(0, info.bits, size=b_shape, dtype=dtype)
        attrs["direction"] = str(rng.choice(["LEFT", "RIGHT"]))
    return Case(op, attrs).feed(np.asarray(a, dtype=dtype)).feed(np.asarray(b, dtype=dtype))


for _dtype in [np.float64, np.float16]:
    def _unary_wide(rng, dtype=_dtype):
        # A float32 case of a unary operator, in the wider or narrower type.
        base = GENERATORS[str(rng.choice(sorted(UNARY)))](rng)
        return Case(base.op, base.attrs).feed(base.inputs[0][1].astype(dtype))
    gen(f"Unary{np.dtype(_dtype).name.capitalize()}")(_unary_wide)

    def _binary_wide(rng, dtype=_dtype):
        op = str(rng.choice(["Add", "Sub", "Mul", "Div", "Pow", "Max", "Min"]))
        a_shape, b_shape = broadcast_shapes(rng)
        return Case(op).feed(floats(rng, a_shape, 0.05, dtype)).feed(floats(rng, b_shape, 0.05, dtype))
    gen(f"Binary{np.dtype(_dtype).name.capitalize()}")(_binary_wide)



# ---------------------------------------------------------------------------------
# Strings, and the operators that pass values through.

WORDS = np.array(["a", "B", "abc", "Hello", "wORLD", "", " x ", "naïve", "ÉCOLE", "a-b", "stop", "Stop"],
                 dtype=object)


def words(rng: np.random.Generator, shape) -> np.ndarray:
    return np.asarray(rng.choice(WORDS, size=shape), dtype=object)


@gen("StringConcat")
def _string_concat(rng):
    a, b = broadcast_shapes(rng)
    return Case("StringConcat", opset=20).feed(words(rng, a)).feed(words(rng, b))


@gen("StringNormalizer")
def _string_normalizer(rng):
    # Case-insensitive stop words with a case change only: without one the reference
    # compares the words as they are.
    change = str(rng.choice(["NONE", "LOWER", "UPPER"]))
    attrs = {"case_change_action": change,
             "is_case_sensitive": 1 if change == "NONE" else int(rng.integers(0, 2))}
    if rng.random() < 0.6:
        attrs["stopwords"] = ["stop", "a"]
    shape = [int(rng.integers(1, 6))] if rng.random() < 0.7 else [1, int(rng.integers(1, 6))]
    # ASCII words without spaces, none empty: the reference strips accents ("é" →
    # "e"), drops empty strings, and takes stop words out of the inside of an element
    # at its spaces, none of which the specification asks for (onnxruntime keeps all
    # three; it needs an en_US.UTF-8 locale to be asked).
    plain = [w for w in WORDS if w and w.isascii() and " " not in w]
    return Case("StringNormalizer", attrs, opset=10).feed(
        np.asarray(rng.choice(np.array(plain, dtype=object), size=shape), dtype=object))


@gen("StringSplit")
def _string_split(rng):
    attrs = {}
    text = np.array(["a b  c", " lead", "trail ", "", "x-y--z", "one", "a-b-c-d"], dtype=object)
    if rng.random() < 0.6:
        attrs["delimiter"] = str(rng.choice(["-", "--", " "]))
    if rng.random() < 0.5:
        attrs["maxsplit"] = int(rng.integers(0, 3))
    return Case("StringSplit", attrs, outputs=2, opset=20).feed(
        np.asarray(rng.choice(text, size=shape_of(rng, 1, 2)), dtype=object))


@gen("RegexFullMatch")
def _regex_full_match(rng):
    pattern = str(rng.choice([r"a.*", r"[A-Z][a-z]+", r"\w+", r"(ab|c)+", r"x?"]))
    return Case("RegexFullMatch", {"pattern": pattern}, opset=20).feed(words(rng, shape_of(rng, 1, 2)))


@gen("Identity")
def _identity(rng):
    x = floats(rng, shape_of(rng, 0, 3), 0.1) if rng.random() < 0.7 else words(rng, shape_of(rng, 1, 2))
    return Case("Identity").feed(np.asarray(x))


@gen("Constant")
def _constant(rng):
    kind = int(rng.integers(0, 5))
    if kind == 0:
        attrs = {"value": numpy_helper.from_array(np.asarray(floats(rng, shape_of(rng, 0, 3), 0.1)))}
    elif kind == 1:
        attrs = {"value_float": float(rng.uniform(-3, 3))}
    elif kind == 2:
        attrs = {"value_ints": [int(v) for v in rng.integers(-9, 9, size=int(rng.integers(0, 4)))]}
    elif kind == 3:
        attrs = {"value_int": int(rng.integers(-9, 9))}
    else:
        attrs = {"value_strings": [str(w) for w in words(rng, [int(rng.integers(1, 4))])]}
    return Case("Constant", attrs)



# ---------------------------------------------------------------------------------
# Random graphs: what a single operator cannot show (values kept alive for later
# nodes and for graph outputs while buffers are reused, one value read by several
# nodes, subgraphs of initializers folded while planning).


class GraphCase:
    """A random graph of several nodes: the interface of `Case` for the loop below."""

    def __init__(self):
        self.nodes: list = []
        self.inputs: list[tuple[str, np.ndarray]] = []
        self.inits: list[tuple[str, np.ndarray]] = []
        self.outs: list[str] = []
        self.ref = None
        self.ref_outputs = None
        self.op = "Graph"

    def model(self, outs: list[np.ndarray] | None) -> onnx.ModelProto:
        graph_inputs = [oh.make_tensor_value_info(n, oh.np_dtype_to_tensor_dtype(x.dtype), x.shape)
                        for n, x in self.inputs]
        if outs is None:
            graph_outputs = [oh.make_empty_tensor_value_info(n) for n in self.outs]
        else:
            graph_outputs = [oh.make_tensor_value_info(n, oh.np_dtype_to_tensor_dtype(y.dtype), y.shape)
                             for n, y in zip(self.outs, outs)]
        inits = [numpy_helper.from_array(x, n) for n, x in self.inits]
        graph = oh.make_graph(self.nodes, "random_graph", graph_inputs, graph_outputs, inits)
        m = oh.make_model(graph, opset_imports=[oh.make_opsetid("", OPSET)])
        m.ir_version = 9
        return m

    def feeds(self) -> dict[str, np.ndarray]:
        return dict(self.inputs)


@gen("Graph")
def _graph(rng, wide: bool = False):
    g = GraphCase()
    # Values so far: name -> shape (float32 throughout).
    values: dict[str, list[int]] = {}
    base = [int(rng.integers(8, 49)) for _ in range(int(rng.integers(2, 4)))] if wide else \
        [int(rng.integers(1, 5)) for _ in range(int(rng.integers(1, 4)))]
    # Wide graphs compute on positive values with operators that keep errors relative
    # (no differences, no steps like Floor, no Exp): long sums of mixed signs lose
    # digits to cancellation, in any summation order, beyond the tolerance.
    if wide:
        def values_of(shape, special=0.0):
            return rng.uniform(0.5, 2, size=shape).astype(np.float32)
        unary = ["Relu", "Abs", "Sigmoid", "Tanh", "Sqrt", "Reciprocal"]
        binary = ["Add", "Mul", "Max", "Min", "Div"]
    else:
        values_of = functools.partial(floats, rng)
        unary = ["Relu", "Neg", "Abs", "Sigmoid", "Tanh", "Exp", "Floor", "Softsign"]
        binary = ["Add", "Sub", "Mul", "Max", "Min", "Div"]

    def fresh(prefix: str) -> str:
        return f"{prefix}{len(values)}"

    for _ in range(int(rng.integers(1, 3))):
        name = fresh("x")
        g.inputs.append((name, values_of(base, 0.02)))
        values[name] = list(base)
    if rng.random() < 0.6:
        # Initializers, some combined into values fixed while planning.
        name = fresh("w")
        g.inits.append((name, values_of(base)))
        values[name] = list(base)
    order: list[str] = list(values)
    for _ in range(int(rng.integers(2, 9))):
        x = str(rng.choice(order))
        shape = values[x]
        kind = int(rng.integers(0, 9))
        out = fresh("v")
        if kind == 0:
            op = str(rng.choice(unary))
            g.nodes.append(oh.make_node(op, [x], [out]))
            values[out] = shape
        elif kind in (1, 2):
            same = [v for v in order if values[v] == shape]
            y = str(rng.choice(same))  # possibly x itself
            op = str(rng.choice(binary))
            g.nodes.append(oh.make_node(op, [x, y] if rng.random() < 0.5 else [y, x], [out]))
            values[out] = shape
        elif kind == 3:
            c = fresh("c")
            cshape = [d if rng.random() < 0.5 else 1 for d in shape][int(rng.integers(0, len(shape) + 1)):]
            g.inits.append((c, values_of(cshape)))
            values[c] = cshape
            g.nodes.append(oh.make_node(str(rng.choice(["Add", "Mul"])), [x, c], [out]))
            values[out] = shape
        elif kind == 4 and len(shape) > 1:
            perm = [int(p) for p in rng.permutation(len(shape))]
            g.nodes.append(oh.make_node("Transpose", [x], [out], perm=perm))
            values[out] = [shape[p] for p in perm]
        elif kind == 5 and shape:
            axis = int(rng.integers(0, len(shape)))
            keep = int(rng.integers(0, 2))
            a = fresh("a")
            g.inits.append((a, np.array([axis], dtype=np.int64)))
            values[a] = [1]
            g.nodes.append(oh.make_node(str(rng.choice(["ReduceSum", "ReduceMax", "ReduceMean"])), [x, a], [out],
                                        keepdims=keep))
            values[out] = [d if i != axis else 1 for i, d in enumerate(shape)] if keep else \
                [d for i, d in enumerate(shape) if i != axis]
        elif kind == 6 and shape:
            k = int(rng.integers(1, 5)) if not wide else int(rng.integers(1, 65))
            w = fresh("m")
            g.inits.append((w, values_of([shape[-1], k])))
            values[w] = [shape[-1], k]
            g.nodes.append(oh.make_node("MatMul", [x, w], [out]))
            values[out] = shape[:-1] + [k]
        elif kind == 7 and shape:
            axis = int(rng.integers(0, len(shape)))
            same = [v for v in order if values[v] == shape]
            y = str(rng.choice(same))
            g.nodes.append(oh.make_node("Concat", [x, y], [out], axis=axis))
            values[out] = [d * 2 if i == axis else d for i, d in enumerate(shape)]
        elif kind == 8 and shape:
            g.nodes.append(oh.make_node("Softmax", [x], [out], axis=int(rng.integers(0, len(shape)))))
            values[out] = shape
        else:
            g.nodes.append(oh.make_node("Identity", [x], [out]))
            values[out] = shape
        order.append(out)
    computed = [n.output[0] for n in g.nodes]
    if not computed:
        g.nodes.append(oh.make_node("Identity", [order[0]], ["v_last"]))
        computed = ["v_last"]
    # The last value, and intermediates now and then (kept alive to the end).
    outs = [computed[-1]] + [v for v in computed[:-1] if rng.random() < 0.25]
    g.outs = list(dict.fromkeys(outs))
    return g


@gen("GraphWide")
def _graph_wide(rng):
    # Sizes at which the fast kernels take their vector and threaded paths, and the
    # determinism runs split the work differently.
    return _graph(rng, wide=True)


# ---------------------------------------------------------------------------------
# Bad input: each generator's cases, broken one way at random, must end in an error
# (exit status 1 and a message) or in a result: never a panic, a signal or a hang.

TYPES = [np.float32, np.float64, np.float16, np.int64, np.int32, np.int8, np.uint8, np.bool_]


def mutate(rng: np.random.Generator, case: Case) -> tuple[Case, str] | None:
    """A copy of `case` with one thing wrong (or unusual): an input's type, shape or
    values, a constant's values or length, an attribute's value, an input left out.
    Returns it with what was done, or None when the case has nothing to break."""
    c = Case(case.op, dict(case.attrs), case.outputs, case.opset, case.domain)
    c.inputs, c.scope = list(case.inputs), list(case.scope)
    present = [i for i, (_, x, _) in enumerate(c.inputs) if x is not None]
    ints = [k for k, v in c.attrs.items() if isinstance(v, int)]
    lists = [k for k, v in c.attrs.items() if isinstance(v, list) and v and isinstance(v[0], int)]
    others = [k for k, v in c.attrs.items() if isinstance(v, (float, str))]
    choices = (["type", "shape", "values", "drop"] if present else []) + \
        (["attr"] if ints or lists else []) + (["other attr"] if others else [])
    if not choices:
        return None
    what = str(rng.choice(choices))
    if what == "other attr":
        key = str(rng.choice(others))
        if isinstance(c.attrs[key], float):
            c.attrs[key] = float(rng.choice([np.nan, np.inf, -np.inf, 0.0, -1.0, 1e30]))
        else:
            c.attrs[key] = str(rng.choice(["", "bogus", c.attrs[key].upper(), c.attrs[key] * 2]))
        return c, f"attribute {key} = {c.attrs[key]!r}"
    if what == "attr":
        key = str(rng.choice(ints + lists))
        bad = int(rng.choice([-1, 0, 7, 99, -(2**40), 2**40]))
        if key in lists and rng.random() < 0.5:
            c.attrs[key] = c.attrs[key][:-1] if len(c.attrs[key]) > 1 else c.attrs[key] * 3
        else:
            c.attrs[key] = bad if key in ints else [bad] * len(c.attrs[key])
        return c, f"attribute {key} = {c.attrs[key]}"
    i = int(rng.choice(present))
    name, x, const = c.inputs[i]
    x = np.asarray(x)
    if what == "drop":
        c.inputs[i] = ("", None, False) if i < len(c.inputs) - 1 else c.inputs[i]
        if i == len(c.inputs) - 1:
            c.inputs.pop()
        return c, f"input {i} left out"
    if what == "type":
        to = TYPES[int(rng.integers(0, len(TYPES)))]
        with np.errstate(all="ignore"):
            y = np.nan_to_num(x.astype(np.float64)).astype(to) if x.dtype.kind in "fiub" else x
    elif what == "shape":
        form = int(rng.integers(0, 3))
        if form == 0:
            y = np.stack([x, x], axis=-1)  # one more dimension
        elif form == 1 and x.ndim and x.shape[-1]:
            y = np.take(x, 0, axis=-1)  # one fewer
        elif x.ndim:
            y = np.take(x, np.arange(0), axis=-1)  # empty
        else:
            y = x.reshape(1, 1)
    else:
        if x.dtype.kind in "iu":
            info = np.iinfo(x.dtype)
            picks = np.array([info.min, info.max, 0, min(2**15, info.max)] + ([-1] if info.min else []),
                             dtype=x.dtype)
            y = rng.choice(picks, size=x.shape)
        elif x.dtype.kind == "f":
            y = rng.choice(np.array([np.nan, np.inf, -np.inf, 1e30, -0.0], dtype=x.dtype), size=x.shape)
        else:
            return None
    c.inputs[i] = (name, np.asarray(y), const)
    return c, f"input {i} {what}: {x.dtype}{list(x.shape)} -> {np.asarray(y).dtype}{list(np.asarray(y).shape)}"


def check_bad_input(deed: Path, root: Path, seed: int, per_generator: int, ops: list[str]) -> list[str]:
    """Runs `per_generator` broken cases of each generator through `deed run` (half of
    them broken twice); returns what ended badly."""
    bad = []
    for op in ops:
        rng = np.random.default_rng([seed, sum(op.encode()), 7])
        for i in range(per_generator):
            case = GENERATORS[op](rng)
            if not isinstance(case, Case):
                continue
            m = mutate(rng, case)
            if m is None:
                continue
            c, what = m
            # Half of them broken twice: an input both emptied and retyped, say.
            again = mutate(rng, c) if rng.random() < 0.5 else None
            if again is not None:
                c, more = again
                what = f"{what}; {more}"
            d = root / f"{op}_bad_{i:03d}"
            d.mkdir(parents=True)
            try:
                (d / "model.onnx").write_bytes(c.model(None).SerializeToString())
            except Exception:  # noqa: BLE001 - onnx cannot even write it: nothing to run
                continue
            # Limits well below the defaults: a value that asks for a huge tensor is
            # refused at once rather than computed.
            args = [str(deed), "run", str(d / "model.onnx"), "--out", str(d),
                    "--max-tensor-elements", str(1 << 24), "--max-activation-bytes", str(1 << 28)]
            for name, x in c.feeds().items():
                (d / f"{name}.pb").write_bytes(numpy_helper.from_array(x, name).SerializeToString())
                args += ["-i", f"{name}={d / f'{name}.pb'}"]
            try:
                r = subprocess.run(args, capture_output=True, text=True, timeout=60)
            except subprocess.TimeoutExpired:
                bad.append(f"{op} ({what}): no answer in 60 s")
                continue
            if r.returncode not in (0, 1) or "panicked" in r.stderr:
                tail = r.stderr.strip().splitlines()[-3:]
                bad.append(f"{op} ({what}): exit {r.returncode}: {' | '.join(tail)[:300]}")
    return bad


# ---------------------------------------------------------------------------------


def write_case(root: Path, name: str, case: Case, outs: list[np.ndarray]) -> None:
    d = root / name
    (d / "test_data_set_0").mkdir(parents=True)
    (d / "model.onnx").write_bytes(case.model(outs).SerializeToString())
    for i, (n, x) in enumerate(case.feeds().items()):
        (d / "test_data_set_0" / f"input_{i}.pb").write_bytes(numpy_helper.from_array(x, n).SerializeToString())
    for i, y in enumerate(outs):
        (d / "test_data_set_0" / f"output_{i}.pb").write_bytes(
            numpy_helper.from_array(np.asarray(y), f"out{i}").SerializeToString())


def deed_outputs(deed: Path, case_dir: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray] | str:
    """What `deed run` computes for a written case, or its error."""
    with tempfile.TemporaryDirectory() as tmp:
        args = [str(deed), "run", str(case_dir / "model.onnx"), "--out", tmp]
        for name, x in feeds.items():
            # TensorProto files: .npy has no string type.
            Path(f"{tmp}/{name}.pb").write_bytes(numpy_helper.from_array(x, name).SerializeToString())
            args += ["-i", f"{name}={tmp}/{name}.pb"]
        r = subprocess.run(args, capture_output=True, text=True)
        if r.returncode != 0:
            return r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "failed"
        outs, i = [], 0
        while os.path.exists(f"{tmp}/out{i}.npy"):
            outs.append(np.load(f"{tmp}/out{i}.npy"))
            i += 1
        return outs


def ort_outputs(case: Case) -> list[np.ndarray] | str:
    """What onnxruntime computes for the case, or its error (a second opinion)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return "onnxruntime is not installed"
    ort.set_default_logger_severity(4)  # its refusals are answers here, not log lines
    try:
        # One thread: a pool of spinning workers per session cost more than the cases.
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        s = ort.InferenceSession(case.model(None).SerializeToString(), opts,
                                 providers=["CPUExecutionProvider"])
        return [np.asarray(y) for y in s.run(None, case.feeds())]
    except Exception as e:  # noqa: BLE001 - any refusal is an answer here
        return str(e).strip().splitlines()[-1][:200]


def agree(a: list[np.ndarray] | str, b: list[np.ndarray] | str) -> bool:
    """Same outputs within the conformance tolerances (NaN equal to NaN)."""
    if isinstance(a, str) or isinstance(b, str) or len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x.shape != y.shape:
            return False
        if x.dtype.kind == "f" or y.dtype.kind == "f":
            if not np.allclose(x.astype(np.float64), y.astype(np.float64), rtol=1e-3, atol=1e-7,
                               equal_nan=True):
                return False
        elif not np.array_equal(x, y):
            return False
    return True


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--deed")
    ap.add_argument("--cases", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only")
    ap.add_argument("--keep")
    ap.add_argument("--json")
    ap.add_argument("--bad-inputs", type=int, default=0, metavar="N",
                    help="also run N broken cases per generator, which must fail cleanly")
    a = ap.parse_args()
    deed = find_deed(a.deed)
    ops = a.only.split(",") if a.only else sorted(GENERATORS)
    unknown = [op for op in ops if op not in GENERATORS]
    if unknown:
        sys.exit(f"no generator for {', '.join(unknown)}")
    root = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="deed-differential-"))
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    refused: dict[str, int] = {}
    written: dict[str, Case] = {}
    np.seterr(all="ignore")
    warnings.filterwarnings("ignore")  # numpy's notes on empty means and the like
    for op in ops:
        rng = np.random.default_rng([a.seed, sum(op.encode())])
        for i in range(a.cases):
            case = GENERATORS[op](rng)
            try:
                asked = case.ref or case
                ref = ReferenceEvaluator(asked.model(None))
                outs = [np.asarray(y) for y in ref.run(None, asked.feeds())]
                if case.ref_outputs is not None:
                    outs = case.ref_outputs(outs)
            except Exception:  # the reference refuses these inputs: not a case
                refused[op] = refused.get(op, 0) + 1
                continue
            write_case(root, f"{op}_{i:04d}", case, outs)
            written[f"{op}_{i:04d}"] = case
    r = subprocess.run([str(deed), "conformance", str(root), "--json", "--determinism"],
                       capture_output=True, text=True)
    if not r.stdout.strip():
        sys.exit(f"deed conformance failed: {r.stderr.strip()}")
    report = json.loads(r.stdout)
    per: dict[str, dict[str, int]] = {}
    failures = []
    for c in report["cases"]:
        name = c["name"]
        op = name.rsplit("_", 1)[0]
        per.setdefault(op, {"passed": 0, "failed": 0, "unsupported": 0, "no_data": 0,
                            "ort_agrees": 0})
        status = c["status"]
        # A run at other threads or kernels that differs or fails is deed's fault
        # whatever the outputs: no second opinion for it.
        own = str(c.get("detail")).startswith(("not deterministic", "ran with "))
        if status == "failed" and not own:
            # A second opinion: where onnxruntime computes what deed computes, the
            # reference is the odd one out (it has known departures from the
            # specification, in pooling shapes for one).
            case = written[name]
            mine = deed_outputs(deed, root / name, case.feeds())
            if agree(mine, ort_outputs(case)):
                status = "ort_agrees"
            else:
                failures.append((name, c.get("detail")))
        elif status == "failed":
            failures.append((name, c.get("detail")))
        per[op][status] = per[op].get(status, 0) + 1
    print(f"{'operator':24} {'passed':>7} {'failed':>7} {'unsup.':>7} {'ref. refused':>13} "
          f"{'ref. differs, ort agrees':>25}")
    for op in ops:
        p = per.get(op, {})
        print(f"{op:24} {p.get('passed', 0):7} {p.get('failed', 0):7} {p.get('unsupported', 0):7} "
              f"{refused.get(op, 0):13} {p.get('ort_agrees', 0):25}")
    for name, detail in failures[:20]:
        print(f"FAILED {name}: {str(detail)[:300]}")
    if len(failures) > 20:
        print(f"... and {len(failures) - 20} more")
    bad: list[str] = []
    if a.bad_inputs:
        bad = check_bad_input(deed, root / "bad", a.seed, a.bad_inputs, ops)
        print(f"bad input: {a.bad_inputs} broken cases per generator, {len(bad)} ended badly")
        for line in bad[:20]:
            print(f"BAD INPUT {line}")
    print(f"cases in {root}" if a.keep else "")
    if not a.keep:
        shutil.rmtree(root)
    if a.json:
        Path(a.json).write_text(json.dumps({"per_operator": per, "refused": refused,
                                            "failures": failures, "bad_input": bad}, indent=2))
    return 1 if failures or bad else 0


if __name__ == "__main__":
    sys.exit(main())
