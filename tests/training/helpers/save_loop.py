"""Save ever-newer checkpoints to one path in a loop until killed: `save_loop.py PATH`.

Version i holds a 32 MB tensor filled with i, so a torn or mixed file would show. Prints
`saved i` after each save returns.
"""

import sys

import torch

from cnnlab import checkpoint

path = sys.argv[1]
weights = torch.empty(8 * 2**20)
i = 0
while True:
    i += 1
    weights.fill_(float(i))
    checkpoint.save({"version": i, "model": {"w": weights}}, path)
    print(f"saved {i}", flush=True)
