#!/usr/bin/env python3
"""Generates the ai.onnx.ml test fixtures of deed-runtime.

Small scikit-learn models are exported with skl2onnx (without ZipMap) and run with
onnxruntime; each case is written in the layout of the ONNX backend node tests:

    crates/deed-runtime/tests/fixtures/ml/<case>/model.onnx
    crates/deed-runtime/tests/fixtures/ml/<case>/test_data_set_0/input_<i>.pb
    crates/deed-runtime/tests/fixtures/ml/<case>/test_data_set_0/output_<i>.pb

Requires: numpy, scikit-learn, skl2onnx, onnx, onnxruntime.
Usage: python scripts/gen_ml_fixtures.py [OUT_DIR]
"""

import os
import shutil
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper
from skl2onnx import to_onnx
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Binarizer, MaxAbsScaler, Normalizer, StandardScaler
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(ROOT, "crates", "deed-runtime", "tests", "fixtures", "ml")
SEED = 7


def write_case(out_dir, name, model, x, expected_from_reference=False):
    """Exports `model`, runs it on `x` and writes the case.

    With `expected_from_reference`, the expected outputs come from the ONNX reference
    evaluator instead of onnxruntime (used where onnxruntime departs from the operator
    definition: its Normalizer MAX divides by the signed maximum, not the largest
    absolute value as scikit-learn and the ONNX reference do).
    """
    onx = to_onnx(model, x[:1], options={id(model): {"zipmap": False}} if hasattr(model, "predict_proba") else None,
                  target_opset={"": 17, "ai.onnx.ml": 3})
    case = os.path.join(out_dir, name)
    data = os.path.join(case, "test_data_set_0")
    os.makedirs(data, exist_ok=True)
    sess = ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0].name
    outs = sess.run(None, {inp: x})
    if expected_from_reference:
        from onnx.reference import ReferenceEvaluator

        outs = ReferenceEvaluator(onx).run(None, {inp: x})
    # skl2onnx declares one column for multi-target forests; declare what is produced.
    for vi, o in zip(onx.graph.output, outs):
        dims = vi.type.tensor_type.shape.dim
        if len(dims) == np.ndim(o):
            for d, size in zip(list(dims)[1:], np.shape(o)[1:]):
                d.Clear()
                d.dim_value = size
    with open(os.path.join(case, "model.onnx"), "wb") as f:
        f.write(onx.SerializeToString())
    t = numpy_helper.from_array(x, inp)
    with open(os.path.join(data, "input_0.pb"), "wb") as f:
        f.write(t.SerializeToString())
    for i, (meta, o) in enumerate(zip(sess.get_outputs(), outs)):
        o = np.asarray(o)
        if o.dtype.kind in "OU":
            o = o.astype(object)
        t = numpy_helper.from_array(o, meta.name)
        with open(os.path.join(data, f"output_{i}.pb"), "wb") as f:
            f.write(t.SerializeToString())
    ops = sorted({(n.domain, n.op_type) for n in onx.graph.node})
    print(f"{name}: {ops}")


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_OUT
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)
    rng = np.random.RandomState(SEED)

    xr, yr = make_regression(n_samples=60, n_features=4, n_targets=1, noise=0.5, random_state=SEED)
    xr = xr.astype(np.float32)
    _, yr2 = make_regression(n_samples=60, n_features=4, n_targets=2, random_state=SEED)
    xc, yc = make_classification(n_samples=80, n_features=5, n_informative=3, n_classes=3,
                                 random_state=SEED)
    xc = xc.astype(np.float32)
    xb, yb = make_classification(n_samples=80, n_features=5, n_informative=3, n_classes=2,
                                 random_state=SEED + 1)
    xb = xb.astype(np.float32)
    test_r = xr[:12]
    test_c = xc[:12]
    test_b = xb[:12]

    write_case(out_dir, "tree_regressor", DecisionTreeRegressor(max_depth=4, random_state=SEED).fit(xr, yr), test_r)
    write_case(out_dir, "forest_regressor_2targets",
               RandomForestRegressor(n_estimators=3, max_depth=3, random_state=SEED).fit(xr, yr2), test_r)
    write_case(out_dir, "gbm_regressor",
               GradientBoostingRegressor(n_estimators=4, max_depth=2, random_state=SEED).fit(xr, yr), test_r)
    write_case(out_dir, "tree_classifier_3class",
               DecisionTreeClassifier(max_depth=4, random_state=SEED).fit(xc, yc), test_c)
    labels = np.array(["ant", "bee", "cat"])[yc]
    write_case(out_dir, "forest_classifier_strings",
               RandomForestClassifier(n_estimators=3, max_depth=3, random_state=SEED).fit(xc, labels), test_c)
    write_case(out_dir, "gbm_classifier_binary",
               GradientBoostingClassifier(n_estimators=3, max_depth=2, random_state=SEED).fit(xb, yb), test_b)
    write_case(out_dir, "gbm_classifier_3class",
               GradientBoostingClassifier(n_estimators=2, max_depth=2, random_state=SEED).fit(xc, yc), test_c)
    write_case(out_dir, "logreg_binary", LogisticRegression().fit(xb, yb), test_b)
    write_case(out_dir, "logreg_3class", LogisticRegression(max_iter=500).fit(xc, yc), test_c)
    write_case(out_dir, "linear_regression", LinearRegression().fit(xr, yr), test_r)
    write_case(out_dir, "scaler_linear", make_pipeline(StandardScaler(), LinearRegression()).fit(xr, yr2), test_r)
    write_case(out_dir, "maxabs_scaler", MaxAbsScaler().fit(xr), test_r)
    for norm in ("l1", "l2", "max"):
        write_case(out_dir, f"normalizer_{norm}", Normalizer(norm=norm).fit(xr), test_r,
                   expected_from_reference=norm == "max")
    write_case(out_dir, "binarizer", Binarizer(threshold=0.25).fit(xr), test_r)
    xm = xr.copy()
    xm[rng.rand(*xm.shape) < 0.2] = np.nan
    write_case(out_dir, "imputer_mean", SimpleImputer(strategy="mean").fit(xm), xm[:12])


if __name__ == "__main__":
    main()
