#!/usr/bin/env python3
"""Generate Deed's benchmark models and the runtime's test fixtures.

    python scripts/gen_models.py OUTDIR              # benchmark models
    python scripts/gen_models.py --fixtures OUTDIR   # tiny models for the runtime's tests

Every case is a folder OUTDIR/<case>/ holding

    model.onnx           the model
    input_<name>.npy     one file per graph input, named after the input
    output_<name>.npy    onnxruntime's outputs for those inputs (the reference)
    case.json            the same list with shapes and dtypes, and how the
                         reference was computed

Everything is seeded, so running the script twice writes the same models and
inputs. The references come from onnxruntime with graph optimizations disabled and
one thread, the closest it gets to plain ONNX semantics; they are references for a
tolerance comparison (float results of any two runtimes differ in the last bits),
except for integer and quantized outputs, which are exact.

Models are built with onnx.helper at opset 17 (IR 8), which every maintained runtime
loads; the ai.onnx.ml models are skl2onnx exports pinned to ai.onnx.ml opset 3, the
TreeEnsembleRegressor/TreeEnsembleClassifier form that skl2onnx writes by default.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8
ML_OPSET = 3
SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


# ---------------------------------------------------------------------------
# Graph building helpers


class Graph:
    """Accumulates nodes and initializers with unique, readable names."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.counts: dict[str, int] = {}

    def name(self, base: str) -> str:
        n = self.counts.get(base, 0)
        self.counts[base] = n + 1
        return f"{base}_{n}"

    def const(self, base: str, value: np.ndarray) -> str:
        name = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, **attrs) -> str | list[str]:
        node_name = self.name(op_type.lower())
        outs = [f"{node_name}_out{i}" if n_out > 1 else f"{node_name}_out" for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=node_name, **attrs))
        return outs[0] if n_out == 1 else outs

    def weight(self, base: str, shape: tuple[int, ...], fan_in: int) -> str:
        # He-style scale keeps activations in a sensible range through deep stacks.
        w = self.rng.normal(0.0, math.sqrt(2.0 / fan_in), size=shape).astype(np.float32)
        return self.const(base, w)

    def bias(self, base: str, n: int) -> str:
        return self.const(base, self.rng.normal(0.0, 0.05, size=(n,)).astype(np.float32))

    def model(
        self,
        name: str,
        inputs: list[onnx.ValueInfoProto],
        outputs: list[onnx.ValueInfoProto],
        rename_last: dict[str, str],
    ) -> onnx.ModelProto:
        # Give graph outputs stable, meaningful names instead of node-derived ones.
        for node in self.nodes:
            node.output[:] = [rename_last.get(o, o) for o in node.output]
            node.input[:] = [rename_last.get(i, i) for i in node.input]
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.inits)
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            ir_version=IR_VERSION,
            producer_name="deed-gen-models",
        )
        onnx.checker.check_model(model, full_check=True)
        return model


def f32_info(name: str, shape: list[int | str]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


# ---------------------------------------------------------------------------
# Models


def mlp(rng: np.random.Generator, batch: int, dims: list[int]) -> onnx.ModelProto:
    """Gemm + Relu layers; the last layer has no activation."""
    g = Graph(rng)
    h = "x"
    for i, (a, b) in enumerate(zip(dims, dims[1:])):
        w = g.weight(f"fc{i}_w", (a, b), a)
        bias = g.bias(f"fc{i}_b", b)
        h = g.op("Gemm", [h, w, bias])
        if i < len(dims) - 2:
            h = g.op("Relu", [h])
    return g.model(
        "mlp",
        [f32_info("x", [batch, dims[0]])],
        [f32_info("logits", [batch, dims[-1]])],
        {h: "logits"},
    )


def conv_bn(g: Graph, x: str, c_in: int, c_out: int, k: int, stride: int, relu: bool) -> str:
    w = g.weight("conv_w", (c_out, c_in, k, k), c_in * k * k)
    pad = k // 2
    y = g.op("Conv", [x, w], kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4)
    scale = g.const("bn_scale", rng_uniform(g.rng, 0.5, 1.5, c_out))
    shift = g.const("bn_bias", g.rng.normal(0.0, 0.1, c_out).astype(np.float32))
    mean = g.const("bn_mean", g.rng.normal(0.0, 0.1, c_out).astype(np.float32))
    var = g.const("bn_var", rng_uniform(g.rng, 0.5, 1.5, c_out))
    y = g.op("BatchNormalization", [y, scale, shift, mean, var], epsilon=1e-5)
    return g.op("Relu", [y]) if relu else y


def rng_uniform(rng: np.random.Generator, lo: float, hi: float, n: int) -> np.ndarray:
    return rng.uniform(lo, hi, size=(n,)).astype(np.float32)


def residual_block(g: Graph, x: str, c_in: int, c_out: int, stride: int) -> str:
    """ResNet basic block: two 3x3 conv+BN, shortcut (1x1 conv with bias when the shape changes)."""
    y = conv_bn(g, x, c_in, c_out, 3, stride, relu=True)
    y = conv_bn(g, y, c_out, c_out, 3, 1, relu=False)
    if stride != 1 or c_in != c_out:
        w = g.weight("proj_w", (c_out, c_in, 1, 1), c_in)
        b = g.bias("proj_b", c_out)
        x = g.op("Conv", [x, w, b], kernel_shape=[1, 1], strides=[stride, stride])
    return g.op("Relu", [g.op("Add", [y, x])])


def cnn(
    rng: np.random.Generator,
    size: int,
    stem: int,
    stages: list[tuple[int, int]],
    classes: int,
) -> onnx.ModelProto:
    """Stem conv + max pool, residual stages of (channels, stride), global pool, Gemm."""
    g = Graph(rng)
    h = conv_bn(g, "x", 3, stem, 3, 1, relu=True)
    h = g.op("MaxPool", [h], kernel_shape=[2, 2], strides=[2, 2])
    c = stem
    for c_out, stride in stages:
        h = residual_block(g, h, c, c_out, stride)
        c = c_out
    h = g.op("GlobalAveragePool", [h])
    h = g.op("Flatten", [h], axis=1)
    w = g.weight("fc_w", (classes, c), c)
    b = g.bias("fc_b", classes)
    h = g.op("Gemm", [h, w, b], transB=1)
    return g.model(
        "cnn",
        [f32_info("x", [1, 3, size, size])],
        [f32_info("logits", [1, classes])],
        {h: "logits"},
    )


def linear(g: Graph, x: str, a: int, b: int) -> str:
    return g.op("Add", [g.op("MatMul", [x, g.weight("w", (a, b), a)]), g.bias("b", b)])


def layer_norm(g: Graph, x: str, width: int) -> str:
    scale = g.const("ln_scale", rng_uniform(g.rng, 0.8, 1.2, width))
    shift = g.const("ln_bias", g.rng.normal(0.0, 0.05, width).astype(np.float32))
    return g.op("LayerNormalization", [x, scale, shift], axis=-1, epsilon=1e-5)


def gelu_erf(g: Graph, x: str) -> str:
    """x * 0.5 * (1 + erf(x / sqrt(2))), the form BERT exports use."""
    e = g.op("Erf", [g.op("Div", [x, g.const("sqrt2", np.array(math.sqrt(2.0), np.float32))])])
    e = g.op("Add", [e, g.const("one", np.array(1.0, np.float32))])
    return g.op("Mul", [g.op("Mul", [x, e]), g.const("half", np.array(0.5, np.float32))])


def encoder_block(rng: np.random.Generator, seq: int, width: int, heads: int, ffn: int) -> onnx.ModelProto:
    """One post-LayerNorm transformer encoder block (BERT layout)."""
    g = Graph(rng)
    hd = width // heads
    to_heads = g.const("heads_shape", np.array([1, seq, heads, hd], np.int64))
    from_heads = g.const("model_shape", np.array([1, seq, width], np.int64))
    q = g.op("Transpose", [g.op("Reshape", [linear(g, "x", width, width), to_heads])], perm=[0, 2, 1, 3])
    k = g.op("Transpose", [g.op("Reshape", [linear(g, "x", width, width), to_heads])], perm=[0, 2, 3, 1])
    v = g.op("Transpose", [g.op("Reshape", [linear(g, "x", width, width), to_heads])], perm=[0, 2, 1, 3])
    scores = g.op("Mul", [g.op("MatMul", [q, k]), g.const("inv_sqrt_d", np.array(1.0 / math.sqrt(hd), np.float32))])
    probs = g.op("Softmax", [scores], axis=-1)
    ctx = g.op("Transpose", [g.op("MatMul", [probs, v])], perm=[0, 2, 1, 3])
    ctx = g.op("Reshape", [ctx, from_heads])
    h = layer_norm(g, g.op("Add", ["x", linear(g, ctx, width, width)]), width)
    f = linear(g, gelu_erf(g, linear(g, h, width, ffn)), ffn, width)
    out = layer_norm(g, g.op("Add", [h, f]), width)
    return g.model(
        "encoder_block",
        [f32_info("x", [1, seq, width])],
        [f32_info("y", [1, seq, width])],
        {out: "y"},
    )


def mlp_int8(rng: np.random.Generator, batch: int, dims: list[int], calib: np.ndarray) -> onnx.ModelProto:
    """A three-layer int8 MLP using only default-domain operators.

    uint8 activations with zero points, symmetric int8 weights, f32 biases. Layers
    alternate between QLinearMatMul (requantized output) and MatMulInteger (int32
    accumulator rescaled in f32), so both integer matmul forms are exercised. Scales
    are calibrated on `calib` by running the float model in numpy.
    """
    assert len(dims) == 4, "three layers"
    g = Graph(rng)
    ws = [rng.normal(0.0, math.sqrt(2.0 / a), size=(a, b)).astype(np.float32) for a, b in zip(dims, dims[1:])]
    bs = [rng.normal(0.0, 0.05, size=(b,)).astype(np.float32) for b in dims[1:]]

    def u8_params(t: np.ndarray) -> tuple[np.float32, np.uint8]:
        lo, hi = min(float(t.min()), 0.0), max(float(t.max()), 0.0)
        scale = np.float32((hi - lo) / 255.0 or 1.0)
        zp = np.uint8(np.clip(round(-lo / float(scale)), 0, 255))
        return scale, zp

    def i8_weight(w: np.ndarray) -> tuple[np.ndarray, np.float32]:
        scale = np.float32(np.abs(w).max() / 127.0)
        return np.clip(np.rint(w / scale), -127, 127).astype(np.int8), scale

    # Float activations on the calibration batch fix every scale. They are computed in
    # f64: numpy's f32 product sums in whatever order the CPU's BLAS kernel takes, so
    # its last bits (and then a scale) would differ between machines, and with them the
    # model. f64 results differ far below what rounding a scale to f32 keeps.
    acts = [calib.astype(np.float64)]
    pre = []
    for i, (w, b) in enumerate(zip(ws, bs)):
        z = acts[-1] @ w.astype(np.float64)
        pre.append(z)
        a = z + b
        acts.append(np.maximum(a, 0) if i < 2 else a)

    h = "x"
    for i, (w, b) in enumerate(zip(ws, bs)):
        s_x, zp_x = u8_params(acts[i])
        wq, s_w = i8_weight(w)
        c_sx, c_zx = g.const("x_scale", s_x), g.const("x_zero_point", zp_x)
        c_w = g.const("w_q", wq)
        c_zw = g.const("w_zero_point", np.int8(0))
        xq = g.op("QuantizeLinear", [h, c_sx, c_zx])
        if i % 2 == 0:
            c_sw = g.const("w_scale", s_w)
            s_y, zp_y = u8_params(pre[i])
            c_sy, c_zy = g.const("y_scale", s_y), g.const("y_zero_point", zp_y)
            yq = g.op("QLinearMatMul", [xq, c_sx, c_zx, c_w, c_sw, c_zw, c_sy, c_zy])
            y = g.op("DequantizeLinear", [yq, c_sy, c_zy])
        else:
            acc = g.op("MatMulInteger", [xq, c_w, c_zx, c_zw])
            y = g.op("Cast", [acc], to=TensorProto.FLOAT)
            y = g.op("Mul", [y, g.const("acc_scale", np.float32(s_x * s_w))])
        h = g.op("Add", [y, g.const("b", b)])
        if i < 2:
            h = g.op("Relu", [h])
    return g.model(
        "mlp_int8",
        [f32_info("x", [batch, dims[0]])],
        [f32_info("logits", [batch, dims[-1]])],
        {h: "logits"},
    )


# ---------------------------------------------------------------------------
# scikit-learn exports


def sklearn_cases(rng_seed: int) -> dict[str, tuple[onnx.ModelProto, dict[str, np.ndarray]]]:
    from sklearn.datasets import make_classification, make_regression
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeRegressor
    from skl2onnx import to_onnx

    xr, yr = make_regression(n_samples=200, n_features=5, noise=0.5, random_state=rng_seed)
    xc, yc = make_classification(
        n_samples=200, n_features=5, n_informative=3, n_classes=3, random_state=rng_seed
    )
    xr, xc = xr.astype(np.float32), xc.astype(np.float32)
    # Skew the scales so that the scaler has real work to do.
    xc_skewed = (xc * np.array([1, 10, 100, 0.1, 5], np.float32) + 3).astype(np.float32)
    opsets = {"": OPSET, "ai.onnx.ml": ML_OPSET}

    def export(est, x, options=None):
        model = to_onnx(est, x[:1], target_opset=opsets, options=options)
        model.ir_version = IR_VERSION
        onnx.checker.check_model(model, full_check=True)
        return model

    cases = {}
    est = DecisionTreeRegressor(max_depth=5, random_state=rng_seed).fit(xr, yr)
    cases["sk_decision_tree_regressor"] = (export(est, xr), {"X": xr[:16]})
    est = RandomForestClassifier(n_estimators=4, max_depth=4, random_state=rng_seed).fit(xc, yc)
    cases["sk_random_forest_classifier"] = (export(est, xc, {"zipmap": False}), {"X": xc[:16]})
    est = LinearRegression().fit(xr, yr)
    cases["sk_linear_regression"] = (export(est, xr), {"X": xr[:16]})
    est = LogisticRegression(max_iter=500).fit(xc, yc)
    cases["sk_logistic_regression"] = (export(est, xc, {"zipmap": False}), {"X": xc[:16]})
    est = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(xc_skewed, yc)
    cases["sk_scaler_logistic_pipeline"] = (
        export(est, xc_skewed, {LogisticRegression: {"zipmap": False}}),
        {"X": xc_skewed[:16]},
    )
    return cases


# ---------------------------------------------------------------------------
# Writing cases


def reference_outputs(model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, inputs)))


def describe(name: str, file: str, a: np.ndarray) -> dict:
    return {"name": name, "file": file, "dtype": str(a.dtype), "shape": list(a.shape)}


def write_case(out: str, case: str, model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> int:
    d = os.path.join(out, case)
    os.makedirs(d, exist_ok=True)
    outputs = reference_outputs(model, inputs)
    for name in list(inputs) + list(outputs):
        if not SAFE_NAME.match(name):
            raise SystemExit(f"{case}: tensor name {name!r} cannot be used as a file name")
    with open(os.path.join(d, "model.onnx"), "wb") as f:
        f.write(model.SerializeToString())
    ins, outs = [], []
    for name, a in inputs.items():
        np.save(os.path.join(d, f"input_{name}.npy"), a, allow_pickle=False)
        ins.append(describe(name, f"input_{name}.npy", a))
    for name, a in outputs.items():
        np.save(os.path.join(d, f"output_{name}.npy"), a, allow_pickle=False)
        outs.append(describe(name, f"output_{name}.npy", a))
    ops = sorted({(n.domain or "ai.onnx", n.op_type) for n in model.graph.node})
    meta = {
        "model": "model.onnx",
        "inputs": ins,
        "outputs": outs,
        "operators": [f"{dom}:{op}" for dom, op in ops],
        "nodes": len(model.graph.node),
        "reference": f"onnxruntime {ort.__version__}, graph optimizations disabled, 1 thread",
    }
    with open(os.path.join(d, "case.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    size = sum(os.path.getsize(os.path.join(d, p)) for p in os.listdir(d))
    print(f"{case:32} {len(model.graph.node):4} nodes {size / 1024:9.1f} KiB", file=sys.stderr)
    return size


def bench_cases() -> dict[str, Callable[[], tuple[onnx.ModelProto, dict[str, np.ndarray]]]]:
    mlp_dims = [784, 512, 512, 10]

    def pixels(seed: int, batch: int) -> np.ndarray:
        return np.random.default_rng(seed).random((batch, 784), dtype=np.float32)

    return {
        "mlp_b1": lambda: (mlp(np.random.default_rng(1), 1, mlp_dims), {"x": pixels(101, 1)}),
        "mlp_b64": lambda: (mlp(np.random.default_rng(1), 64, mlp_dims), {"x": pixels(101, 64)}),
        "cnn": lambda: (
            cnn(np.random.default_rng(2), 32, 32, [(32, 1), (64, 2), (128, 2), (128, 1)], 10),
            {"x": np.random.default_rng(102).normal(size=(1, 3, 32, 32)).astype(np.float32)},
        ),
        "transformer": lambda: (
            encoder_block(np.random.default_rng(3), 128, 256, 4, 1024),
            {"x": np.random.default_rng(103).normal(size=(1, 128, 256)).astype(np.float32)},
        ),
        "mlp_int8": lambda: (
            mlp_int8(np.random.default_rng(4), 64, mlp_dims, pixels(204, 256)),
            {"x": pixels(104, 64)},
        ),
    }


def fixture_cases() -> dict[str, Callable[[], tuple[onnx.ModelProto, dict[str, np.ndarray]]]]:
    def normal(seed: int, shape: tuple[int, ...]) -> np.ndarray:
        return np.random.default_rng(seed).normal(size=shape).astype(np.float32)

    def unit(seed: int, shape: tuple[int, ...]) -> np.ndarray:
        return np.random.default_rng(seed).random(shape, dtype=np.float32)

    cases = {
        "mlp_tiny": lambda: (mlp(np.random.default_rng(11), 3, [8, 16, 16, 4]), {"x": normal(111, (3, 8))}),
        "cnn_tiny": lambda: (
            cnn(np.random.default_rng(12), 8, 4, [(4, 1)], 3),
            {"x": normal(112, (1, 3, 8, 8))},
        ),
        "attention_tiny": lambda: (
            encoder_block(np.random.default_rng(13), 8, 16, 2, 32),
            {"x": normal(113, (1, 8, 16))},
        ),
        "mlp_int8_tiny": lambda: (
            mlp_int8(np.random.default_rng(14), 4, [16, 32, 32, 4], unit(214, (64, 16))),
            {"x": unit(114, (4, 16))},
        ),
    }
    for name, (model, inputs) in sklearn_cases(15).items():
        cases[name] = (lambda m=model, i=inputs: (m, i))
    return cases


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("outdir")
    p.add_argument("--fixtures", action="store_true", help="write the tiny test fixtures instead")
    p.add_argument("--only", action="append", default=[], help="write only this case (repeatable)")
    args = p.parse_args()

    cases = fixture_cases() if args.fixtures else bench_cases()
    unknown = set(args.only) - set(cases)
    if unknown:
        raise SystemExit(f"unknown case(s): {', '.join(sorted(unknown))}; known: {', '.join(cases)}")
    total = 0
    for name, build in cases.items():
        if args.only and name not in args.only:
            continue
        model, inputs = build()
        total += write_case(args.outdir, name, model, inputs)
    print(f"{'total':32} {total / 1024 / 1024:16.2f} MiB", file=sys.stderr)


if __name__ == "__main__":
    main()
