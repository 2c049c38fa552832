"""The reference models hold exactly the official checkpoint layouts (lpd-facts.md §1, §5).

Factory dicts (written from the documentation) must load strictly, configs must be read back
from them, the published shapes must have the published sizes, and every layout mismatch must
surface as a CheckpointError that names the problem.
"""

import argparse
import dataclasses
import json

import numpy as np
import pytest
import torch

from factories import make_lpd_state_dict, make_vq_state_dict, tiny_lpd_config, tiny_vq_config
from lpd_engine.errors import CheckpointError
from lpd_engine.reference import (LPDConfig, LPDTransformer, VQConfig, VQModel, build_lpd, build_vq,
                                  load_lpd_state_dict, load_vq_state_dict, to_uint8)


def _meta(factory):
    with torch.device("meta"):
        return factory()


# --- LPD transformer ---------------------------------------------------------------------------

def test_lpd_factory_dict_loads_strict_and_round_trips():
    cfg = tiny_lpd_config()
    sd = make_lpd_state_dict(cfg, seed=1)
    model = build_lpd(sd, heads=cfg.heads)
    assert model.config == cfg and not model.training
    out = model.state_dict()
    assert out.keys() == sd.keys()
    assert all(torch.equal(out[k], sd[k]) for k in sd)


def test_lpd_config_inference_and_default_heads():
    cfg = LPDConfig(dim=128, depth=3, heads=2, vocab_size=37, num_classes=10, num_tokens=36, mlp_hidden=512)
    sd = make_lpd_state_dict(cfg, seed=0)
    assert LPDConfig.from_state_dict(sd) == cfg  # heads = 128 // 64
    assert LPDConfig.from_state_dict(sd, heads=8) == dataclasses.replace(cfg, heads=8)
    with pytest.raises(CheckpointError, match="heads"):
        LPDConfig.from_state_dict(sd, heads=3)
    odd = make_lpd_state_dict(dataclasses.replace(cfg, dim=96, heads=3), 0)
    with pytest.raises(CheckpointError, match="multiple of 64"):
        LPDConfig.from_state_dict(odd)
    assert LPDConfig.from_state_dict(odd, heads=3).head_dim == 32


def test_lpd_config_properties_and_json():
    cfg = tiny_lpd_config(num_tokens=36)
    assert (cfg.head_dim, cfg.grid, cfg.table_rows) == (16, 6, 37 + 10 + 2)
    assert (cfg.class_index(3), cfg.uncond_index, cfg.mask_index) == (40, 47, 48)
    assert LPDConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError):
        dataclasses.replace(cfg, num_tokens=15).grid
    with pytest.raises(ValueError):
        LPDConfig.from_dict({**cfg.to_dict(), "extra": 1})


@pytest.mark.parametrize("name, dim, depth, heads, params", [
    ("lpd_l", 1024, 24, 16, 337e6), ("lpd_xl", 1280, 36, 20, 752e6), ("lpd_xxl", 1536, 48, 24, 1.41e9)])
def test_lpd_presets_match_published_sizes(name, dim, depth, heads, params):
    cfg = LPDConfig.preset(name)
    assert (cfg.dim, cfg.depth, cfg.heads, cfg.head_dim) == (dim, depth, heads, 64)
    assert (cfg.vocab_size, cfg.num_classes, cfg.num_tokens, cfg.mlp_hidden) == (16384, 1000, 256, 4 * dim)
    assert LPDConfig.preset(name, 512).num_tokens == 1024
    model = _meta(lambda: LPDTransformer(cfg))
    count = sum(p.numel() for p in model.parameters())
    assert abs(count - params) / params < 0.005
    assert LPDConfig.from_state_dict(model.state_dict()) == cfg


def test_embedding_table_rows_and_embed():
    cfg = tiny_lpd_config()
    model = build_lpd(make_lpd_state_dict(cfg, seed=2), heads=cfg.heads)
    table = model.embedding_table()
    assert table.shape == (cfg.table_rows, cfg.dim)
    assert torch.equal(table[5], model.token_emb.weight[5])
    assert torch.equal(table[cfg.class_index(3)], model.class_emb.weight[3])
    assert torch.equal(table[cfg.uncond_index], model.fake_latent[0])
    assert torch.equal(table[cfg.mask_index], model.mask_token[0, 0])
    ids = torch.tensor([[cfg.class_index(9), 0, cfg.vocab_size - 1, cfg.uncond_index, cfg.mask_index]])
    pos = torch.tensor([[0, 16, 3, 0, 7]])
    expected = model.z_proj_ln(table[ids] + model.pos_embed[0, pos])
    assert torch.equal(model.embed(ids, pos), expected)


# --- checkpoint files ----------------------------------------------------------------------------

def test_official_wrapper_by_path(tmp_path):
    cfg = tiny_lpd_config()
    sd = make_lpd_state_dict(cfg, seed=3)
    path = tmp_path / "checkpoint-last.pth"
    # The official training script also pickles its argparse arguments and more.
    torch.save({"model": sd, "epoch": 7, "args": argparse.Namespace(model="lpd_l", lr=1e-4)}, path)
    loaded = load_lpd_state_dict(path)
    assert loaded.keys() == sd.keys()
    assert build_lpd(loaded, heads=cfg.heads).config == cfg
    assert load_lpd_state_dict({"model": sd}).keys() == sd.keys()
    assert load_lpd_state_dict(sd).keys() == sd.keys()

    vq_sd = make_vq_state_dict(tiny_vq_config(), seed=3)
    torch.save({"model": vq_sd}, tmp_path / "vq.pt")
    torch.save(vq_sd, tmp_path / "vq_bare.pt")
    for p in ("vq.pt", "vq_bare.pt"):
        assert build_vq(load_vq_state_dict(tmp_path / p)).config == tiny_vq_config()


def test_unreadable_file_is_checkpoint_error(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="junk.pth"):
        load_lpd_state_dict(path)
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="not a dict"):
        load_vq_state_dict(tmp_path / "list.pth")


# --- layout errors -------------------------------------------------------------------------------

def _lpd_sd():
    return make_lpd_state_dict(tiny_lpd_config(), seed=4)


@pytest.mark.parametrize("edit, message", [
    (lambda sd: sd.pop("blocks.1.attn.proj.bias"), r"missing keys: blocks\.1\.attn\.proj\.bias"),
    (lambda sd: sd.pop("mask_token"), r"missing keys: mask_token"),
    (lambda sd: sd.__setitem__("blocks.0.attn.qkv.extra", torch.zeros(3)),
     r"unexpected keys: blocks\.0\.attn\.qkv\.extra"),
    (lambda sd: sd.__setitem__("head.bias", torch.zeros(37)), r"unexpected keys: head\.bias"),
    (lambda sd: sd.__setitem__("blocks.0.mlp.fc2.weight", torch.zeros(64, 255)),
     r"blocks\.0\.mlp\.fc2\.weight \[64, 255\]"),
    (lambda sd: sd.__setitem__("fake_latent", torch.zeros(64)), r"fake_latent \[64\] \(expected \[1, 64\]\)"),
    (lambda sd: sd.__setitem__("class_emb.weight", torch.zeros(10, 32)), r"inconsistent widths"),
    (lambda sd: sd.pop("token_emb.weight"), r"missing key 'token_emb.weight'"),
])
def test_lpd_layout_errors(edit, message):
    sd = _lpd_sd()
    edit(sd)
    with pytest.raises(CheckpointError, match=message):
        build_lpd(sd, heads=4)


def test_vq_dict_to_build_lpd_and_back():
    vq_sd = make_vq_state_dict(tiny_vq_config(), seed=0)
    with pytest.raises(CheckpointError, match="looks like a LlamaGen VQ tokenizer state dict"):
        build_lpd(vq_sd)
    with pytest.raises(CheckpointError, match="looks like an LPD transformer state dict"):
        build_vq(_lpd_sd())


@pytest.mark.parametrize("edit, message", [
    (lambda sd: sd.pop("decoder.conv_blocks.1.res.0.nin_shortcut.weight"),
     r"missing keys: decoder\.conv_blocks\.1\.res\.0\.nin_shortcut\.weight"),
    (lambda sd: sd.__setitem__("decoder.conv_blocks.1.attn.0.q.weight", torch.zeros(32, 32, 1, 1)),
     r"unexpected keys: decoder\.conv_blocks\.1\.attn\.0\.q\.weight"),
    (lambda sd: sd.__setitem__("post_quant_conv.bias", torch.zeros(31)), r"post_quant_conv\.bias \[31\]"),
    (lambda sd: sd.__setitem__("quantize.codebook_used", torch.zeros(100)), r"quantize\.codebook_used \[100\]"),
    (lambda sd: sd.pop("quant_conv.weight"), r"missing keys: quant_conv\.weight"),
])
def test_vq_layout_errors(edit, message):
    sd = make_vq_state_dict(tiny_vq_config(), seed=0)
    edit(sd)
    with pytest.raises(CheckpointError, match=message):
        build_vq(sd)


# --- VQ ------------------------------------------------------------------------------------------

def test_vq_factory_dicts_load_strict():
    cfg = tiny_vq_config()
    full = make_vq_state_dict(cfg, seed=5)
    vq = build_vq(full)
    assert vq.config == cfg and not vq.training
    assert vq.state_dict().keys() == full.keys()
    dec = make_vq_state_dict(cfg, seed=5, with_encoder=False)
    assert not any(k.startswith(("encoder.", "quant_conv.")) for k in dec)
    vq_dec = build_vq(dec)
    assert vq_dec.config == dataclasses.replace(cfg, has_encoder=False)
    assert vq_dec.state_dict().keys() == dec.keys()
    codes = torch.randint(0, cfg.codebook_size, (2, 16))
    assert torch.equal(vq.decode_codes(codes), vq_dec.decode_codes(codes))
    # The usage buffer is unused at inference; a dict without it still loads.
    del dec["quantize.codebook_used"]
    assert build_vq(dec).config == vq_dec.config


def test_llamagen_ds16_layout():
    cfg = VQConfig.llamagen_ds16()
    assert cfg.downsample == 16
    model = _meta(lambda: VQModel(cfg))
    sd = model.state_dict()
    assert len(sd) == 344
    decoder = sum(t.numel() for k, t in sd.items() if k.startswith("decoder."))
    assert abs(decoder - 42.4e6) / 42.4e6 < 0.005
    assert VQConfig.from_state_dict(sd) == cfg
    documented = make_vq_state_dict(cfg, seed=0)
    assert {k: tuple(t.shape) for k, t in documented.items()} == {k: tuple(t.shape) for k, t in sd.items()}
    assert VQConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_vq_encode_decode_shapes():
    cfg = tiny_vq_config()
    vq = build_vq(make_vq_state_dict(cfg, seed=6))
    codes = torch.randint(0, cfg.codebook_size, (2, 16))
    with torch.no_grad():
        images = vq.decode_codes(codes)
        assert images.shape == (2, 3, 8, 8) and images.dtype == torch.float32
        assert torch.isfinite(images).all() and images.std() > 1e-3
        back = vq.encode_codes(torch.tanh(images))
        assert back.shape == (2, 16) and back.dtype == torch.long
        assert 0 <= back.min() and back.max() < cfg.codebook_size
        assert vq.encode_codes(torch.zeros(1, 3, 12, 4)).shape == (1, 6 * 2)
    with pytest.raises(ValueError):
        vq.decode_codes(torch.zeros(1, 15, dtype=torch.long))
    with pytest.raises(CheckpointError, match="encoder"):
        build_vq(make_vq_state_dict(cfg, seed=6, with_encoder=False)).encode_codes(images)


def test_to_uint8_rounding():
    # (x + 1) / 2 * 255 in float32 gives exactly 127.5, 126.5, 125.5, 254.5 for the middle four.
    x = torch.tensor([-3.0, -1.0, 0.0, -0.007843142, -0.015686285, 0.9960784, 1.0, 3.0])
    expected = np.array([0, 0, 128, 126, 126, 254, 255, 255], dtype=np.uint8)  # half to even
    images = x.reshape(1, 1, 1, 8).expand(2, 3, 1, 8).clone()
    images[1, 2] = 0.0  # blue channel of image 1: mid grey
    out = to_uint8(images)
    assert out.dtype == np.uint8 and out.shape == (2, 1, 8, 3)
    assert np.array_equal(out[0, 0, :, 0], expected) and np.array_equal(out[0, 0, :, 2], expected)
    assert np.array_equal(out[1, 0, :, 2], np.full(8, 128, np.uint8))
