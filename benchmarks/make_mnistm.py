"""Build the MNIST-M-style target domain from ``mnist.npz`` and scikit-image's photos (a few seconds).

python benchmarks/make_mnistm.py            # writes runs/data/mnistm.npz from ../shared/data/mnist.npz
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DATA_DIR, REPO  # noqa: E402

from unitgan.data.mnistm import build_mnistm  # noqa: E402

DEFAULT_OUT = REPO / "runs" / "data" / "mnistm.npz"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mnist", type=Path, default=DATA_DIR / "mnist.npz")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=0, help="keep only the first N digits per split (0 = all)")
    args = p.parse_args(argv)
    path = build_mnistm(args.mnist, args.out, args.seed, args.limit)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
