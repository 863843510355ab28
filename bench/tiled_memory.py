"""Peak memory of tiled vs untiled LatticeNet x4 inference as the image grows (each run in a fresh process: peak
RSS from getrusage, minus the RSS after loading the model; CPU).

    python -m bench.tiled_memory [--sizes 128 256 512] [--tile 64]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, torch
import lattice_kernels as lk
from lattice_kernels import inference
size, tile = int(sys.argv[1]), (None if sys.argv[2] == "none" else int(sys.argv[2]))
torch.manual_seed(0)
net = lk.LatticeNet(scale=4).eval()
x = torch.rand(1, 3, size, size) * 255
with torch.no_grad():
    net(x[:, :, :16, :16])  # warm up the allocator and kernels
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
import time
t = time.perf_counter()
y = inference.run(net, x, scale=4, tile=tile, dtype=torch.float32)
dt = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"size": size, "tile": tile, "peak_MiB": (peak - base) / 1024, "seconds": dt,
                  "output_MiB": y.numel() * 4 / 2**20}))
"""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", type=int, default=[128, 256, 512])
    p.add_argument("--tile", type=int, default=64)
    a = p.parse_args(argv)
    rows = []
    for size in a.sizes:
        for tile in (None, a.tile):
            r = subprocess.run([sys.executable, "-c", CHILD, str(size), "none" if tile is None else str(tile)],
                               capture_output=True, text=True, check=True)
            rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
            row = rows[-1]
            print(f"LR {size}x{size} -> {4 * size}x{4 * size}  tile {tile!s:>4}: peak +{row['peak_MiB']:.0f} MiB "
                  f"(output image {row['output_MiB']:.0f} MiB), {row['seconds']:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
