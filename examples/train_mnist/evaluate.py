"""What train.py measures and draws after training: a simple LPD sampler, an MNIST classifier
that scores generated digits, and the PNG grid.

The sampler is deliberately our own and small (one `LPDTransformer.step` per group, KV cache as
plain concatenation, torch multinomial): it runs batched on the training GPU so that scoring a
thousand generations costs about a second. The package's real generation path
(lpd_engine.Generator) is exercised separately in train.py for a few images.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn


@torch.no_grad()
def generate_tokens(model, labels: torch.Tensor, group_sizes, orders: torch.Tensor, cfg: float,
                    temperature: float, generator: torch.Generator) -> torch.Tensor:
    """Class-conditional tokens [B, N] (raster) by LPD decoding (lpd-facts.md §2).

    labels [B] long (class ids), orders [B, N] long permutations, group_sizes summing to N.
    cfg: linear-schedule guidance scale (1.0 = no unconditional rows).
    """
    cfg_on = cfg != 1.0
    c = model.config
    batch, n = orders.shape
    device = orders.device
    cond = labels + c.vocab_size  # class_index
    if cfg_on:
        cond = torch.cat([cond, torch.full_like(cond, c.uncond_index)])
        orders = torch.cat([orders, orders])
    rows = cond.shape[0]
    past_k = torch.zeros(c.depth, rows, c.heads, 0, c.head_dim, device=device)
    past_v = torch.zeros_like(past_k)
    ctx_ids, ctx_pos = cond[:, None], torch.zeros(rows, 1, dtype=torch.long, device=device)
    generated, t = [], 0
    for g in group_sizes:
        g = int(g)
        q_pos = 1 + orders[:, t:t + g]
        embed_ids = torch.cat([ctx_ids, torch.full_like(q_pos, c.mask_index)], dim=1)
        pos_ids = torch.cat([ctx_pos, q_pos], dim=1)
        nctx = ctx_ids.shape[1]
        logits, k_new, v_new = model.step(embed_ids, pos_ids, past_k, past_v, num_context=nctx)
        past_k = torch.cat([past_k, k_new[:, :, :, :nctx].to(past_k.dtype)], dim=3)
        past_v = torch.cat([past_v, v_new[:, :, :, :nctx].to(past_v.dtype)], dim=3)
        logits = logits.float()
        if cfg_on:
            cond_l, uncond_l = logits[:batch], logits[batch:]
            w = 1 + (cfg - 1) * (t + torch.arange(g, device=device, dtype=torch.float32)) / n
            logits = uncond_l + w[None, :, None] * (cond_l - uncond_l)
        probs = torch.softmax(logits / max(temperature, 1e-5), dim=-1)
        sampled = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator).reshape(batch, g)
        generated.append(sampled)
        ctx_ids = torch.cat([sampled, sampled]) if cfg_on else sampled
        ctx_pos = q_pos
        t += g
    tokens = torch.empty(batch, n, dtype=torch.long, device=device)
    tokens.scatter_(1, orders[:batch], torch.cat(generated, dim=1))
    return tokens


class DigitClassifier(nn.Module):
    """A small CNN on 28x28 grey digits in [0, 1]; about 99% on MNIST after a few epochs."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x):
        return self.net(x)


def train_classifier(images: np.ndarray, labels: np.ndarray, val_images: np.ndarray, val_labels: np.ndarray,
                     device, seed: int, epochs: int, log) -> DigitClassifier:
    """images uint8 [M, 28, 28]; fixed data order from a numpy Generator. Logs the val accuracy."""
    torch.manual_seed(seed)
    clf = DigitClassifier().to(device)
    opt = torch.optim.Adam(clf.parameters(), lr=1e-3)
    x = torch.from_numpy(images).float().div(255).unsqueeze(1).to(device)
    y = torch.from_numpy(labels.astype(np.int64)).to(device)
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        for idx in np.array_split(rng.permutation(len(x)), max(1, len(x) // 128)):
            idx = torch.from_numpy(idx).to(device)
            loss = F.cross_entropy(clf(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    clf.eval()
    acc = classify(clf, torch.from_numpy(val_images).float().div(255).unsqueeze(1).to(device)).eq(
        torch.from_numpy(val_labels.astype(np.int64)).to(device)).float().mean().item()
    log(f"classifier: {epochs} epochs, held-out accuracy {100 * acc:.2f}% on {len(val_images)} real digits")
    return clf


@torch.no_grad()
def classify(clf: DigitClassifier, x: torch.Tensor) -> torch.Tensor:
    """x [B, 1, 28, 28] float in [0, 1] -> predicted labels [B]."""
    return torch.cat([clf(chunk).argmax(1) for chunk in x.split(1000)])


def to_grey28(images: torch.Tensor) -> torch.Tensor:
    """VQ output [B, 3, 32, 32] about [-1, 1] -> [B, 1, 28, 28] in [0, 1] (channel mean, 2 px crop)."""
    return ((images.float().mean(1, keepdim=True) + 1) / 2).clamp(0, 1)[:, :, 2:30, 2:30]


def save_grid(rows: list[np.ndarray], path, scale: int = 3, gap: int = 2) -> None:
    """rows: each uint8 [k, H, W] grey images; one grid row each, white gaps, upscaled by `scale`."""
    h, w = rows[0].shape[1:]
    cols = max(len(r) for r in rows)
    canvas = np.full((len(rows) * (h + gap) + gap, cols * (w + gap) + gap), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            y, x = gap + i * (h + gap), gap + j * (w + gap)
            canvas[y:y + h, x:x + w] = img
    Image.fromarray(canvas).resize((canvas.shape[1] * scale, canvas.shape[0] * scale), Image.NEAREST).save(path)
