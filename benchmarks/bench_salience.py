"""Time MFH Algorithm 1's scoring: all channels x permutations batched against the per-channel loop.

    python benchmarks/bench_salience.py [--repeats 7] [--permutations 10] [--threads 1]

Both sides compute the same scores from the same trained networks and the same permutations
(checked equal to 1e-4): :func:`mmdistill.mfh.algorithm1.channel_salience` (vectorised) and
:func:`mmdistill.mfh.algorithm1.channel_salience_loop` (one forward pass per channel and permutation,
the official code's shape). Cases:

* ``table2``: the Table 2 setting (modify-gamma, xs2 = 15): linear teacher on x_a (50 input
  channels), N = 200 training examples, jointly trained with its student;
* ``table2-generic``: the same, with the rank-one shortcut through the following Linear turned off
  (the whole suffix sees C x M copies of the features);
* ``mlp-penultimate``: mfeat-sized MLP teacher 240 -> 64 -> 10 on N = 1,200 examples, scoring the
  64 hidden ReLU channels (random weights: the time does not depend on training);
* ``conv-skip``: a small 1-D CNN whose head also reads the input (no shortcut; the input is
  repeated for the suffix), 16 channels x 32 steps, N = 256.

Times are the minimum over ``--repeats``; the ratio is loop / vectorised.
"""

from __future__ import annotations

import argparse
import platform
import time
from functools import partial

import torch
from torch import nn

from mmdistill.data.generated.venn import draw, preset_spec
from mmdistill.mfh.algorithm1 import INPUT, channel_salience, channel_salience_loop, train_pair
from mmdistill.mfh.ensemble import make_mlp


class ConvSkip(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(4, 16, 5, padding=2)
        self.head = nn.Linear(16 * 32, 10)
        self.skip = nn.Linear(4 * 32, 10)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).flatten(1)) + self.skip(x.flatten(1))


def cases():
    d = draw(preset_spec("modify-gamma", 15), 0)
    torch.manual_seed(0)
    t, s = make_mlp(50, (), 2), make_mlp(50, (), 2)
    train_pair(t, s, d.train.xa, d.train.xb, d.train.y, epochs=300)
    yield "table2", (t, s, d.train.xa, d.train.xb, INPUT), {}
    yield "table2-generic", (t, s, d.train.xa, d.train.xb, INPUT), {"rank_one": False}
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    yield (
        "mlp-penultimate",
        (
            make_mlp(240, (64,), 10),
            make_mlp(47, (64,), 10),
            torch.randn(1200, 240, generator=g),
            torch.randn(1200, 47, generator=g),
            "1",
        ),
        {},
    )
    yield (
        "conv-skip",
        (
            ConvSkip(),
            make_mlp(20, (), 10),
            torch.randn(256, 4, 32, generator=g),
            torch.randn(256, 20, generator=g),
            "conv",
        ),
        {},
    )


def best(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--permutations", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {platform.machine()}, {args.threads} thread(s), M = {args.permutations}, "
        f"min of {args.repeats} repeats"
    )
    print("| case | channels x permutations | examples | per-channel loop (ms) | vectorised (ms) | ratio |")
    print("|---|---|---|---|---|---|")
    for name, (t, s, xa, xb, layer), kw in cases():
        m = args.permutations
        channel_salience(t, s, xa, xb, layer, permutations=m, **kw)  # warm-up
        fast_t, fast = best(partial(channel_salience, t, s, xa, xb, layer, permutations=m, **kw), args.repeats)
        loop_t, loop = best(
            partial(channel_salience_loop, t, s, xa, xb, layer, permutations=m), max(2, args.repeats // 3)
        )
        assert torch.allclose(fast.scores, loop.scores, atol=1e-4), name
        c = fast.scores.shape[0]
        print(
            f"| {name} | {c} x {m} | {fast.info['examples']} | {1e3 * loop_t:.2f} | {1e3 * fast_t:.2f} | "
            f"{loop_t / fast_t:.1f}x |"
        )


if __name__ == "__main__":
    main()
