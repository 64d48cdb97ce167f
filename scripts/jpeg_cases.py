#!/usr/bin/env python3
"""Write JPEG test cases and Pillow's decoding of them (libjpeg-turbo, its defaults).

    jpeg_cases.py OUT_DIR [COUNT] [SEED] [SYNTHETIC]

For each case: OUT_DIR/NAME.jpg, NAME.rgb (the RGB pixels Pillow decodes, row-major)
and NAME.l (Pillow's convert("L") of them), and a line "NAME W H PROGRESSIVE" in
OUT_DIR/cases.txt.

COUNT cases `cNNN` are images Pillow encodes: gradients with noise and sharp specks,
of random sizes (1 to 80 pixels a side), qualities, chroma subsamplings (4:4:4,
4:2:2, 4:2:0), optimized or default Huffman tables, restart markers, gray or colour,
baseline or progressive. SYNTHETIC cases `sNNN` (default 44) are baseline files
written here, with random coefficients, with the sampling factors Pillow cannot
write (4:4:0, 4:1:1, 3:1, 2:3, 1:4, luma sampled below chroma), interleaved or one scan
per component, with restart intervals.
"""
import io
import os
import sys

import numpy as np
from PIL import Image


# A baseline JPEG writer for the synthetic cases, with T.81 Annex K's Huffman tables.
ZIGZAG = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48,
    41, 34, 27, 20, 13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15,
    23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
]
DC_COUNTS = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0]
DC_VALUES = bytes(range(12))
AC_COUNTS = [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7D]
AC_VALUES = bytes.fromhex(
    "01020300041105122131410613516107227114328191a1082342b1c11552d1f024336272"
    "82090a161718191a25262728292a3435363738393a434445464748494a53545556575859"
    "5a636465666768696a737475767778797a838485868788898a92939495969798999aa2a3"
    "a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae1e2"
    "e3e4e5e6e7e8e9eaf1f2f3f4f5f6f7f8f9fa"
)


def huffman_codes(counts, values):
    """symbol -> (code, length) of the canonical code (T.81 Annex C)."""
    out, code, k = {}, 0, 0
    for length in range(1, 17):
        for _ in range(counts[length - 1]):
            out[values[k]] = (code, length)
            code += 1
            k += 1
        code <<= 1
    return out


DC_CODES = huffman_codes(DC_COUNTS, DC_VALUES)
AC_CODES = huffman_codes(AC_COUNTS, AC_VALUES)


class BitWriter:
    """Entropy-coded bytes, a zero stuffed after each 0xFF."""

    def __init__(self):
        self.out = bytearray()
        self.acc = 0
        self.n = 0

    def put(self, value, n):
        for i in range(n - 1, -1, -1):
            self.acc = (self.acc << 1) | ((value >> i) & 1)
            self.n += 1
            if self.n == 8:
                self.out.append(self.acc)
                if self.acc == 0xFF:
                    self.out.append(0)
                self.acc = self.n = 0

    def pad(self):
        """Fills the last byte with 1 bits."""
        while self.n:
            self.put(1, 1)

    def symbol(self, codes, s):
        code, length = codes[s]
        self.put(code, length)

    def value(self, v, size):
        """`v` in `size` bits: negative values as v + 2^size - 1 (T.81 F.1.2.1)."""
        if size:
            self.put(v if v > 0 else v + (1 << size) - 1, size)


def bit_size(v):
    return abs(int(v)).bit_length()


def encode_block(w, coefs, pred):
    """One block (natural order) after the DC prediction `pred`; returns its DC."""
    diff = int(coefs[0]) - pred
    w.symbol(DC_CODES, bit_size(diff))
    w.value(diff, bit_size(diff))
    run = 0
    for k in range(1, 64):
        v = int(coefs[ZIGZAG[k]])
        if v == 0:
            run += 1
            continue
        while run > 15:
            w.symbol(AC_CODES, 0xF0)
            run -= 16
        w.symbol(AC_CODES, (run << 4) | bit_size(v))
        w.value(v, bit_size(v))
        run = 0
    if run:
        w.symbol(AC_CODES, 0x00)
    return int(coefs[0])


def segment(marker, body):
    return bytes([0xFF, marker]) + (len(body) + 2).to_bytes(2, "big") + body


def write(width, height, factors, rng, interleave=True, restart=0):
    """A baseline JPEG of `width` x `height` whose components have the sampling
    `factors` [(h, v), ...], with random quantized coefficients and quantization
    values: interleaved in one scan, or one scan per component; a restart marker
    every `restart` MCUs (none if 0)."""
    hmax = max(h for h, _ in factors)
    vmax = max(v for _, v in factors)
    mcux, mcuy = -(-width // (8 * hmax)), -(-height // (8 * vmax))
    grids = []
    for h, v in factors:
        shape = (mcuy * v, mcux * h)
        coefs = np.zeros(shape + (64,), np.int32)
        coefs[..., 0] = rng.integers(-60, 61, shape)
        coefs[..., 1:] = np.where(
            rng.random(shape + (63,)) < 0.25, rng.integers(-12, 13, shape + (63,)), 0
        )
        grids.append(coefs)
    q = rng.integers(1, 30, 64)
    out = bytearray(b"\xff\xd8")
    out += segment(0xDB, bytes([0]) + bytes(int(q[ZIGZAG[k]]) for k in range(64)))
    frame = bytes([8]) + height.to_bytes(2, "big") + width.to_bytes(2, "big")
    frame += bytes([len(factors)])
    for i, (h, v) in enumerate(factors):
        frame += bytes([i + 1, (h << 4) | v, 0])
    out += segment(0xC0, frame)
    out += segment(0xC4, bytes([0x00]) + bytes(DC_COUNTS) + DC_VALUES)
    out += segment(0xC4, bytes([0x10]) + bytes(AC_COUNTS) + AC_VALUES)
    if restart:
        out += segment(0xDD, restart.to_bytes(2, "big"))

    def scan(components, units):
        """`units`: for each MCU, its blocks as (scan index, component, y, x)."""
        header = bytes([len(components)])
        header += b"".join(bytes([c + 1, 0x00]) for c in components) + bytes([0, 63, 0])
        w, preds, rst = BitWriter(), [0] * len(components), 0
        for u, blocks in enumerate(units):
            if restart and u and u % restart == 0:
                w.pad()
                w.out += bytes([0xFF, 0xD0 + rst])
                rst = (rst + 1) % 8
                preds = [0] * len(components)
            for si, ci, y, x in blocks:
                preds[si] = encode_block(w, grids[ci][y, x], preds[si])
        w.pad()
        return segment(0xDA, header) + bytes(w.out)

    if interleave and len(factors) > 1:
        units = [
            [
                (ci, ci, my * v + y, mx * h + x)
                for ci, (h, v) in enumerate(factors)
                for y in range(v)
                for x in range(h)
            ]
            for my in range(mcuy)
            for mx in range(mcux)
        ]
        out += scan(list(range(len(factors))), units)
    else:
        for ci, (h, v) in enumerate(factors):
            # A scan of one component codes its blocks that hold real samples.
            bw = -(-(-(-width * h // hmax)) // 8)
            bh = -(-(-(-height * v // vmax)) // 8)
            out += scan([ci], [[(0, ci, y, x)] for y in range(bh) for x in range(bw)])
    return bytes(out + b"\xff\xd9")


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
    samplings = [
        [(1, 2), (1, 1), (1, 1)],
        [(4, 1), (1, 1), (1, 1)],
        [(1, 1), (2, 2), (1, 1)],
        [(3, 1), (1, 1), (1, 1)],
        [(2, 2), (1, 1), (1, 1)],
        [(2, 1), (1, 1), (1, 1)],
        [(1, 1)],
        [(2, 2)],
        [(1, 4), (1, 2), (1, 1)],
        [(2, 3), (1, 1), (1, 1)],
        [(1, 1), (1, 1), (1, 1)],
    ]
    synthetic = int(sys.argv[4]) if len(sys.argv) > 4 else 44
    for i in range(synthetic):
        w, h = int(rng.integers(1, 60)), int(rng.integers(1, 60))
        data = write(
            w,
            h,
            samplings[i % len(samplings)],
            rng,
            interleave=bool(rng.random() < 0.6),
            restart=int(rng.integers(0, 4)),
        )
        name = f"s{i:03d}"
        with open(os.path.join(out, name + ".jpg"), "wb") as f:
            f.write(data)
        decoded = Image.open(io.BytesIO(data))
        with open(os.path.join(out, name + ".rgb"), "wb") as f:
            f.write(decoded.convert("RGB").tobytes())
        with open(os.path.join(out, name + ".l"), "wb") as f:
            f.write(decoded.convert("L").tobytes())
        lines.append(f"{name} {w} {h} 0\n")
    with open(os.path.join(out, "cases.txt"), "w") as f:
        f.writelines(lines)


if __name__ == "__main__":
    main()
