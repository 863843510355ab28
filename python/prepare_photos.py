"""Write scikit-image's photographs as PNG folders for the CPU training recipe: a training set and a held-out set.

    python python/prepare_photos.py data/photos
    -> data/photos/train/*.png (astronaut, chelsea, coffee, rocket), data/photos/val/*.png (motorcycle_left,
       immunohistochemistry)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from lattice_kernels.train.photos import photo

TRAIN = ("astronaut", "chelsea", "coffee", "rocket")
VAL = ("motorcycle_left", "immunohistochemistry")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path)
    a = p.parse_args(argv)
    for split, names in (("train", TRAIN), ("val", VAL)):
        (a.out / split).mkdir(parents=True, exist_ok=True)
        for n in names:
            Image.fromarray(photo(n)).save(a.out / split / f"{n}.png")
    print(f"wrote {a.out}/train ({len(TRAIN)} images) and {a.out}/val ({len(VAL)} images)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
