#!/usr/bin/env python3
"""Write JPEG test cases and Pillow's decoding of them (libjpeg-turbo, its defaults).

    jpeg_cases.py OUT_DIR [COUNT] [SEED]

For each case: OUT_DIR/cNNN.jpg, cNNN.rgb (the RGB pixels Pillow decodes, row-major)
and cNNN.l (Pillow's convert("L") of them), and a line "cNNN W H PROGRESSIVE" in
OUT_DIR/cases.txt. The images are gradients with noise and sharp specks, of random
sizes (1 to 80 pixels a side), qualities, chroma subsamplings (4:4:4, 4:2:2, 4:2:0),
optimized or default Huffman tables, restart markers, gray or colour, baseline or
progressive.
"""
import io
import os
import sys

import numpy as np
from PIL import Image


def main() -> None:
    out = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 60
    rng = np.random.default_rng(int(sys.argv[3]) if len(sys.argv) > 3 else 0)
    os.makedirs(out, exist_ok=True)
    lines = []
    for i in range(count):
        w, h = int(rng.integers(1, 81)), int(rng.integers(1, 81))
        yy, xx = np.mgrid[0:h, 0:w]
        planes = [
            (xx * rng.uniform(0, 8) + yy * rng.uniform(0, 8) + rng.uniform(0, 255)) % 256
            for _ in range(3)
        ]
        pixels = np.stack(planes, -1) + rng.normal(0, rng.uniform(0, 60), (h, w, 3))
        if rng.random() < 0.3:
            pixels[rng.random((h, w)) < 0.1] = rng.uniform(0, 255)
        pixels = np.clip(pixels, 0, 255).astype(np.uint8)
        gray = rng.random() < 0.2
        img = Image.fromarray(pixels[..., 0] if gray else pixels, "L" if gray else "RGB")
        options = {"quality": int(rng.integers(1, 101))}
        if not gray:
            options["subsampling"] = int(rng.integers(0, 3))
        if rng.random() < 0.3:
            options["optimize"] = True
        if rng.random() < 0.3:
            options["restart_marker_blocks"] = int(rng.integers(1, 5))
        progressive = rng.random() < 0.3
        if progressive:
            options["progressive"] = True
        buf = io.BytesIO()
        img.save(buf, "JPEG", **options)
        name = f"c{i:03d}"
        with open(os.path.join(out, name + ".jpg"), "wb") as f:
            f.write(buf.getvalue())
        decoded = Image.open(io.BytesIO(buf.getvalue()))
        with open(os.path.join(out, name + ".rgb"), "wb") as f:
            f.write(decoded.convert("RGB").tobytes())
        with open(os.path.join(out, name + ".l"), "wb") as f:
            f.write(decoded.convert("L").tobytes())
        lines.append(f"{name} {w} {h} {int(progressive)}\n")
    with open(os.path.join(out, "cases.txt"), "w") as f:
        f.writelines(lines)


if __name__ == "__main__":
    main()
