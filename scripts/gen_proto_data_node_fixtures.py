#!/usr/bin/env python3
"""Writes the official ONNX backend node tests whose data sets hold `TensorProto`s.

These are the cases of the ONNX low-bit dtypes (the float8 types, float4e2m1, uint4,
int4, uint2, int2: numpy has no such dtypes) and the casts between float, double,
float16 and bfloat16, whose data the ONNX package stores as `TensorProto`s already.
`shared/tools/onnx-node-tests.py` drops such data sets; here they are written as
they are (numpy values beside them converted), under the graph's input and output
names, in the layout of the node tests:

    crates/deed-runtime/tests/fixtures/onnx-node-proto-data/<case>/model.onnx
    crates/deed-runtime/tests/fixtures/onnx-node-proto-data/<case>/test_data_set_<i>/{input,output}_<j>.pb

Requires: onnx (the venv's, scripts/venv.sh).
Usage: python scripts/gen_proto_data_node_fixtures.py [OUT_DIR]
"""

import os
import shutil
import sys

import onnx
import onnx.backend.test.case.node as node_cases
from onnx import numpy_helper

def has_proto_data(case) -> bool:
    """True when a data set of `case` holds a value stored as a `TensorProto`."""
    return any(
        isinstance(x, onnx.TensorProto)
        for inputs, outputs in case.data_sets
        for x in list(inputs) + list(outputs)
    )


def tensor(x, name: str) -> onnx.TensorProto:
    if isinstance(x, onnx.TensorProto):
        t = onnx.TensorProto()
        t.CopyFrom(x)
        t.name = name
        return t
    return numpy_helper.from_array(x, name)


def main(out: str) -> None:
    # Cases are rewritten from scratch; the folder's README stays.
    if os.path.isdir(out):
        for name in os.listdir(out):
            if os.path.isdir(os.path.join(out, name)):
                shutil.rmtree(os.path.join(out, name))
    written = 0
    for case in node_cases.collect_testcases(None):
        if not has_proto_data(case):
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
    default = os.path.join(here, "..", "crates", "deed-runtime", "tests", "fixtures", "onnx-node-proto-data")
    main(sys.argv[1] if len(sys.argv) > 1 else default)
