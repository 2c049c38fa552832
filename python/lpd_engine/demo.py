"""The embedded demo model: until the trained MNIST pair ships, a small random-weight LPD
transformer and VQ decoder made on the spot from a fixed seed. Its images are noise; it exists
so the README's first command and the tests run end to end with no download.

Shape: a 16x16 token grid (so the published 256-px group-size tables apply), D 128, depth 4,
2 heads of 64, 512 codes, 10 classes; the VQ downsamples 4x, so images are 64x64.
"""

from __future__ import annotations

import torch

from .reference import LPDConfig, LPDTransformer, VQConfig, VQModel

DEMO_LPD = LPDConfig(dim=128, depth=4, heads=2, vocab_size=512, num_classes=10, num_tokens=256, mlp_hidden=512)
DEMO_VQ = VQConfig(codebook_size=512, codebook_dim=8, z_channels=64, ch=32, ch_mult=(1, 2, 2),
                   decoder_res_blocks=1, encoder_res_blocks=1, has_encoder=False)


def demo_checkpoints(seed: int = 0) -> tuple[dict, dict]:
    """(LPD state dict, VQ state dict) of the random-weight demo model; deterministic in seed."""
    torch.manual_seed(seed)
    model = LPDTransformer(DEMO_LPD)
    vq = VQModel(DEMO_VQ)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in ("class_emb.weight", "token_emb.weight", "fake_latent", "pos_embed", "mask_token"):
                p.normal_(0.0, 0.02)
    return model.state_dict(), vq.state_dict()
