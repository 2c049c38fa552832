"""The official LPD implementation as the benchmark peer (issue 6), timed the way bench_cuda.py
times the engine: random weights, bf16 autocast as its eval scripts run it, cfg 4.8 (lpd_l) /
4.9 (lpd_xl) linear, temperature 1, random orders, the published group sizes; tokens only and
end to end (labels -> uint8 pixels on the host), warm-up then the median of --repeats runs,
and torch's peak GPU memory.

The official code is not part of this project. Fetch mit-han-lab/lpd, copy its `models/` folder
into the ignored folder `.peer/lpd/` and carry that folder to the GPU machine:

    python bench/official_peer.py --out peer.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / ".peer" / "lpd"), str(ROOT / "python")]

from cases import CASES_HELP, DEFAULT_CASES, median_ms, parse_case  # noqa: E402  (bench/, the script's folder)
from lpd_engine import schedule  # noqa: E402


def block_causal_mask(group_sizes, device):
    """Additive mask over [class token, tokens in generation order]: block i sees blocks <= i."""
    sizes = [1, *group_sizes]
    total = sum(sizes)
    mask = torch.full((total, total), float("-inf"), device=device)
    end = 0
    for size in sizes:
        mask[end:end + size, :end + size] = 0
        end += size
    return mask


def run(name, res, steps, batches, repeats):
    from models import lpd as official
    from models.vqgan import VQModel

    torch.manual_seed(0)
    model = getattr(official, name)(img_size=res).cuda().eval()
    vq = VQModel(codebook_size=16384).cuda().eval()
    grid = res // 16
    gs = [int(g) for g in schedule.published_group_sizes(grid, steps)]
    mask = block_causal_mask(gs, "cuda")
    cfg = 4.8 if name == "lpd_l" else 4.9
    rows = []
    for batch in batches:
        labels = torch.arange(batch, device="cuda") % 1000

        def tokens(batch=batch, labels=labels):
            orders = torch.stack([torch.randperm(grid * grid, device="cuda") for _ in range(batch)])
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                return model.sample_tokens(batch, cfg=cfg, cfg_schedule="linear", labels=labels, temperature=1.0,
                                           attn_mask=mask, group_sizes=gs, orders=orders)

        def end_to_end(batch=batch, tokens=tokens):
            t = tokens()
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                img = vq.decode_code(t, shape=(batch, 8, grid, grid))
            return ((img.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()

        end_to_end()
        end_to_end()
        torch.cuda.reset_peak_memory_stats()
        e2e = median_ms(end_to_end, repeats)[0]
        tok = median_ms(tokens, repeats)[0]
        row = dict(impl="official", model=name, res=res, steps=steps, batch=batch, cfg=cfg, tokens_ms=round(tok, 2),
                   end_to_end_ms=round(e2e, 2), images_per_s=round(batch / e2e * 1e3, 1),
                   peak_gib=round(torch.cuda.max_memory_reserved() / 2**30, 2))
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cases", nargs="+", default=DEFAULT_CASES, help=CASES_HELP)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    rows = []
    for case in a.cases:
        rows += run(*parse_case(case), a.repeats)
        torch.cuda.empty_cache()  # the case's models are gone with run()'s frame
    a.out.write_text(json.dumps(dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, rows=rows), indent=1))


if __name__ == "__main__":
    main()
