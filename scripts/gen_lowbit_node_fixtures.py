#!/usr/bin/env python3
"""Writes the official ONNX backend node tests that use the low-bit dtypes.

The cases are those whose graph has a value, an initializer or a `Cast` target of
the ONNX low-bit dtypes (codes 17 to 26: the float8 types, float4e2m1, uint4, int4,
uint2, int2). Their data sets are `TensorProto`s already (numpy has no such dtypes),
which `shared/tools/onnx-node-tests.py` drops; here they are written as they are,
under the graph's input and output names, in the layout of the node tests:

    crates/deed-runtime/tests/fixtures/onnx-node-lowbit/<case>/model.onnx
    crates/deed-runtime/tests/fixtures/onnx-node-lowbit/<case>/test_data_set_<i>/{input,output}_<j>.pb

Requires: onnx (the venv's, scripts/venv.sh).
Usage: python scripts/gen_lowbit_node_fixtures.py [OUT_DIR]
"""

import os
import shutil
import sys

import onnx
import onnx.backend.test.case.node as node_cases
from onnx import numpy_helper

LOW_BIT = set(range(17, 27))


def uses_low_bit(model: onnx.ModelProto) -> bool:
    g = model.graph
    for v in list(g.input) + list(g.output) + list(g.value_info):
        if v.type.HasField("tensor_type") and v.type.tensor_type.elem_type in LOW_BIT:
            return True
    if any(t.data_type in LOW_BIT for t in g.initializer):
        return True
    for n in g.node:
        for a in n.attribute:
            if a.name == "to" and a.i in LOW_BIT:
                return True
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type in LOW_BIT:
                return True
    return False


def tensor(x, name: str) -> onnx.TensorProto:
    if isinstance(x, onnx.TensorProto):
        t = onnx.TensorProto()
        t.CopyFrom(x)
        t.name = name
        return t
    return numpy_helper.from_array(x, name)


def main(out: str) -> None:
    if os.path.isdir(out):
        shutil.rmtree(out)
    written = 0
    for case in node_cases.collect_testcases(None):
        if not uses_low_bit(case.model):
            continue
        case_dir = os.path.join(out, case.name)
        os.makedirs(case_dir)
        with open(os.path.join(case_dir, "model.onnx"), "wb") as f:
            f.write(case.model.SerializeToString())
        g = case.model.graph
        for i, (inputs, outputs) in enumerate(case.data_sets):
            data_dir = os.path.join(case_dir, f"test_data_set_{i}")
            os.makedirs(data_dir)
            for kind, values, decl in (("input", inputs, g.input), ("output", outputs, g.output)):
                for j, x in enumerate(values):
                    with open(os.path.join(data_dir, f"{kind}_{j}.pb"), "wb") as f:
                        f.write(tensor(x, decl[j].name).SerializeToString())
        written += 1
    print(written)


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    default = os.path.join(here, "..", "crates", "deed-runtime", "tests", "fixtures", "onnx-node-lowbit")
    main(sys.argv[1] if len(sys.argv) > 1 else default)
