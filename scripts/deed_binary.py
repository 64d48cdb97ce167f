"""Where the scripts find the `deed` binary they run (they build nothing)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def find_deed(arg: str | None) -> Path:
    """`arg` when given (a script's --deed), else target/release/deed, else
    target/debug/deed, under CARGO_TARGET_DIR when it is set; exits when none is built."""
    if arg:
        return Path(arg)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    for p in (target / "release" / "deed", target / "debug" / "deed"):
        if p.is_file():
            return p
    sys.exit("no deed binary found: build it with `cargo build --release -p deed-cli` or pass --deed")
