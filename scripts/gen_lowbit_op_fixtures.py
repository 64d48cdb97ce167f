#!/usr/bin/env python3
"""Writes data-movement cases of the low-bit dtypes, expected outputs from ONNX's
reference evaluator.

For int4, uint2, float4e2m1, float8e4m3fn and float8e8m0: Identity, Reshape,
Flatten, Transpose, Unsqueeze, Squeeze, Shape, Size, Pad (default value), Concat, a
Constant and an initializer, each a small model in the layout of the node tests:

    crates/deed-runtime/tests/fixtures/lowbit-ops/<case>/model.onnx
    crates/deed-runtime/tests/fixtures/lowbit-ops/<case>/test_data_set_0/{input,output}_<j>.pb

Requires: numpy, onnx, ml_dtypes (the venv's, scripts/venv.sh).
Usage: python scripts/gen_lowbit_op_fixtures.py [OUT_DIR]
"""
import os
import shutil
import sys

import ml_dtypes
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    HERE, "..", "crates", "deed-runtime", "tests", "fixtures", "lowbit-ops")
if os.path.isdir(OUT):
    shutil.rmtree(OUT)
types = {"INT4": (TensorProto.INT4, ml_dtypes.int4), "FLOAT8E4M3FN": (TensorProto.FLOAT8E4M3FN, ml_dtypes.float8_e4m3fn),
         "UINT2": (TensorProto.UINT2, ml_dtypes.uint2), "FLOAT4E2M1": (TensorProto.FLOAT4E2M1, ml_dtypes.float4_e2m1fn),
         "FLOAT8E8M0": (TensorProto.FLOAT8E8M0, ml_dtypes.float8_e8m0fnu)}
def make(name, nodes, inputs, outputs, feeds, inits=()):
    g = helper.make_graph(nodes, name, inputs, outputs, initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 25)])
    m.ir_version = 11
    res = ReferenceEvaluator(m).run(None, feeds)
    d = os.path.join(OUT, name); os.makedirs(os.path.join(d, "test_data_set_0"), exist_ok=True)
    open(os.path.join(d, "model.onnx"), "wb").write(m.SerializeToString())
    for j, (k, v) in enumerate(feeds.items()):
        open(os.path.join(d, "test_data_set_0", f"input_{j}.pb"), "wb").write(numpy_helper.from_array(v, k).SerializeToString())
    for j, v in enumerate(res):
        open(os.path.join(d, "test_data_set_0", f"output_{j}.pb"), "wb").write(numpy_helper.from_array(v, outputs[j].name).SerializeToString())
for tn, (code, npt) in types.items():
    x = np.arange(-3, 3).astype(np.float32).reshape(2, 3)
    if tn == "UINT2": x = np.abs(x) % 4
    if tn == "FLOAT8E8M0": x = np.abs(x) + 1
    xv = x.astype(npt)
    X = helper.make_tensor_value_info("x", code, [2, 3])
    def out(name, t=code, shape=None): return helper.make_tensor_value_info(name, t, shape)
    make(f"t_identity_{tn}", [helper.make_node("Identity", ["x"], ["y"])], [X], [out("y")], {"x": xv})
    shp = numpy_helper.from_array(np.array([3, 2], dtype=np.int64), "s")
    make(f"t_reshape_{tn}", [helper.make_node("Reshape", ["x", "s"], ["y"])], [X], [out("y")], {"x": xv}, [shp])
    make(f"t_flatten_{tn}", [helper.make_node("Flatten", ["x"], ["y"], axis=0)], [X], [out("y")], {"x": xv})
    make(f"t_transpose_{tn}", [helper.make_node("Transpose", ["x"], ["y"])], [X], [out("y")], {"x": xv})
    ax = numpy_helper.from_array(np.array([0], dtype=np.int64), "a")
    make(f"t_unsqueeze_{tn}", [helper.make_node("Unsqueeze", ["x", "a"], ["y"])], [X], [out("y")], {"x": xv}, [ax])
    make(f"t_squeeze_{tn}", [helper.make_node("Unsqueeze", ["x", "a"], ["u"]), helper.make_node("Squeeze", ["u", "a"], ["y"])], [X], [out("y")], {"x": xv}, [ax])
    make(f"t_shape_{tn}", [helper.make_node("Shape", ["x"], ["y"])], [X], [out("y", TensorProto.INT64)], {"x": xv})
    make(f"t_size_{tn}", [helper.make_node("Size", ["x"], ["y"])], [X], [out("y", TensorProto.INT64)], {"x": xv})
    pads = numpy_helper.from_array(np.array([0, 1, 0, 1], dtype=np.int64), "p")
    make(f"t_pad_{tn}", [helper.make_node("Pad", ["x", "p"], ["y"])], [X], [out("y")], {"x": xv}, [pads])
    make(f"t_concat_{tn}", [helper.make_node("Concat", ["x", "x"], ["y"], axis=1)], [X], [out("y")], {"x": xv})
    c = helper.make_tensor("v", code, [2, 3], xv.tobytes() if tn not in ("INT4","UINT2","FLOAT4E2M1") else (onnx.numpy_helper._pack_4bitx2(xv) if tn != "UINT2" else onnx.numpy_helper._pack_2bitx4(xv)).tobytes(), raw=True)
    make(f"t_constant_{tn}", [helper.make_node("Constant", [], ["y"], value=c)], [], [out("y")], {})
    init = helper.make_tensor("w", code, [2, 3], c.raw_data, raw=True)
    make(f"t_initializer_{tn}", [helper.make_node("Identity", ["w"], ["y"])], [], [out("y")], {}, [init])
