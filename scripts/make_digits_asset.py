"""Write kdcore/assets/digits.npz: scikit-learn's 1797 8×8 digits (pixels 0..16 as uint8, labels as uint8).

    .venv/bin/python scripts/make_digits_asset.py

Run once (the file is committed): the trainer then reads digits without importing scikit-learn, which costs
about a second of start-up. tests/test_data.py checks the file still equals scikit-learn's copy."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ASSET = Path(__file__).resolve().parents[1] / "kdcore" / "assets" / "digits.npz"


def main() -> int:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.uint8)
    assert np.array_equal(images, digits.images), "digits pixels are integers 0..16"
    np.savez_compressed(ASSET, images=images, labels=digits.target.astype(np.uint8))
    print(f"wrote {ASSET} ({ASSET.stat().st_size:,} bytes, {len(images)} images)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
