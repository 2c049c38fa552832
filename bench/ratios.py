"""Prints the engine's figures against the official code's from the same device call:
python bench/ratios.py bench.json peer.json (the outputs of bench_cuda.py and official_peer.py)."""

import json
import sys


def main():
    ours = {(r["model"], r["res"], r["steps"], r["batch"]): r for r in json.load(open(sys.argv[1]))["rows"]}
    peer = {(r["model"], r["res"], r["steps"], r["batch"]): r for r in json.load(open(sys.argv[2]))["rows"]}
    print(f"{'case':22} {'e2e ms':>8} {'official':>9} {'ratio':>6} {'img/s':>7} {'official':>9} "
          f"{'GiB':>5} {'official GiB':>12}")
    for key in sorted(ours.keys() & peer.keys()):
        o, p = ours[key], peer[key]
        case = f"{key[0]} {key[1]}/{key[2]} b{key[3]}"
        print(f"{case:22} {o['end_to_end_ms']:8.2f} {p['end_to_end_ms']:9.2f} "
              f"{p['end_to_end_ms'] / o['end_to_end_ms']:6.2f} {o['images_per_s']:7.1f} {p['images_per_s']:9.1f} "
              f"{o['engine_gib']:5.2f} {p['peak_gib']:12.2f}")


if __name__ == "__main__":
    main()
