"""Published defaults, kept in one place: guidance scale per (model, image size, steps), from
the LPD paper's evaluation settings (lpd-facts.md §2). All use the linear schedule,
temperature 1, top-k 0, top-p 1. Bundles copy the entries for their model into the manifest.
"""

PUBLISHED_CFG = {
    ("lpd_l", 256, 20): 4.8,
    ("lpd_l", 256, 32): 5.4,
    ("lpd_l", 512, 48): 7.3,
    ("lpd_xl", 256, 20): 4.9,
    ("lpd_xl", 256, 32): 5.0,
    ("lpd_xl", 512, 48): 6.0,
    ("lpd_xxl", 256, 20): 5.9,
}

DEFAULT_STEPS = 20


def published_cfg_for(model_name: str, image_size: int) -> dict[int, float]:
    """{steps: cfg} of the published settings for one model and image size ({} if none)."""
    return {s: w for (m, r, s), w in PUBLISHED_CFG.items() if m == model_name and r == image_size}


def preset_name(config) -> str | None:
    """'lpd_l', 'lpd_xl' or 'lpd_xxl' when a transformer config has a published shape, else None."""
    from .config import LPDConfig

    for name in ("lpd_l", "lpd_xl", "lpd_xxl"):
        for image_size in (256, 512):
            p = LPDConfig.preset(name, image_size)
            if (p.dim, p.depth, p.vocab_size, p.num_classes, p.num_tokens) == (
                    config.dim, config.depth, config.vocab_size, config.num_classes, config.num_tokens):
                return name
    return None
