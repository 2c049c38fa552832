"""Step-by-step decoding with a KV cache equals the one-pass training forward (lpd-facts.md §2, §3).

Given the tokens, `LPDTransformer.step` run over a schedule (context rows of the previous group,
then g[k] position queries) must reproduce `forward_training`'s logits for every generation
index, for conditional and unconditional rows alike (the two halves of a guided batch). The
step loop below keeps an engine-style static cache of N+1 slots in which the queries' K/V are
written provisionally and overwritten by the next step, and checks they never matter.
"""

import pytest
import torch

from conftest import FP32_LOGITS_RTOL
from factories import make_lpd_state_dict, tiny_lpd_config
from lpd_engine.reference import build_lpd

SCHEDULES = [  # (num_tokens, heads, group sizes)
    (16, 4, [1, 1, 2, 4, 8]),
    (16, 4, [1] * 16),
    (16, 2, [1, 3, 3, 9]),
    (16, 4, [16]),
    (36, 2, [1, 2, 3, 6, 10, 14]),
    (36, 4, [2, 5, 1, 28]),
]


def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def _problem(num_tokens, heads, seed=0):
    """A model and a guided batch: rows 0-1 conditional, rows 2-3 their unconditional twins."""
    cfg = tiny_lpd_config(num_tokens=num_tokens, heads=heads)
    model = build_lpd(make_lpd_state_dict(cfg, seed=seed), heads=heads)
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, cfg.vocab_size, (2, num_tokens), generator=gen).repeat(2, 1)
    orders = torch.stack([torch.randperm(num_tokens, generator=gen) for _ in range(2)]).repeat(2, 1)
    cond_ids = torch.tensor([cfg.class_index(3), cfg.class_index(7), cfg.uncond_index, cfg.uncond_index])
    return model, tokens, cond_ids, orders


def decode_by_steps(model, tokens, cond_ids, orders, group_sizes, poison=None):
    """Teacher-forced generation through `step`; returns logits [B, N, V] in generation order.

    The cache is [L, B, H, N+1, hd] like the engine's; after each step all R rows' K/V are
    written at their slots (queries provisionally). With `poison` set, the query slots are then
    overwritten with that value, which must not change anything.
    """
    cfg = model.config
    batch, n = tokens.shape
    cache_k = torch.full((cfg.depth, batch, cfg.heads, n + 1, cfg.head_dim), float("nan"))
    cache_v = cache_k.clone()
    ordered = tokens.gather(1, orders)
    slot_pos = torch.cat([torch.zeros(batch, 1, dtype=torch.long), 1 + orders], dim=1)  # pos_embed row per slot
    ends = [0, 1]  # c[k]: first slot of step k's context rows
    for g in group_sizes:
        ends.append(ends[-1] + g)
    logits = []
    for k, g in enumerate(group_sizes):
        past, first_query, end = ends[k], ends[k + 1], ends[k + 2]
        context = cond_ids[:, None] if k == 0 else ordered[:, past - 1 : first_query - 1]
        embed_ids = torch.cat([context, torch.full((batch, g), cfg.mask_index)], dim=1)
        num_context = first_query - past
        out, k_new, v_new = model.step(embed_ids, slot_pos[:, past:end], cache_k[:, :, :, :past],
                                       cache_v[:, :, :, :past], num_context)
        cache_k[:, :, :, past:end], cache_v[:, :, :, past:end] = k_new, v_new
        if poison is not None:
            cache_k[:, :, :, first_query:end] = poison
            cache_v[:, :, :, first_query:end] = poison
        assert out.shape == (batch, g, cfg.vocab_size)
        logits.append(out)
    return torch.cat(logits, dim=1)


@pytest.mark.parametrize("num_tokens, heads, group_sizes", SCHEDULES)
@torch.no_grad()
def test_steps_equal_training_forward(num_tokens, heads, group_sizes):
    model, tokens, cond_ids, orders = _problem(num_tokens, heads)
    full = model.forward_training(tokens, cond_ids, orders, group_sizes)
    stepped = decode_by_steps(model, tokens, cond_ids, orders, group_sizes)
    assert full.shape == stepped.shape == (4, num_tokens, model.config.vocab_size)
    for rows in ([0, 1], [2, 3]):  # with guidance: conditional rows, then unconditional rows
        assert _rel(stepped[rows], full[rows]) <= FP32_LOGITS_RTOL
    # Not degenerate: the class row matters, and logits spread.
    assert _rel(full[0], full[2]) > 1e-2
    assert full.std() > 0.1


@pytest.mark.parametrize("poison", [float("nan"), 1e4])
@torch.no_grad()
def test_provisional_query_kv_never_read(poison):
    model, tokens, cond_ids, orders = _problem(36, 2, seed=1)
    sizes = [1, 2, 3, 6, 10, 14]
    clean = decode_by_steps(model, tokens, cond_ids, orders, sizes)
    poisoned = decode_by_steps(model, tokens, cond_ids, orders, sizes, poison=poison)
    assert torch.equal(clean, poisoned)


@torch.no_grad()
def test_step_visibility():
    """Context rows ignore the step's queries; queries see each other (mutual visibility)."""
    model, tokens, cond_ids, orders = _problem(16, 4, seed=2)
    cfg = model.config
    batch = tokens.shape[0]
    empty = torch.zeros(cfg.depth, batch, cfg.heads, 0, cfg.head_dim)
    ids = torch.cat([cond_ids[:, None], torch.full((batch, 3), cfg.mask_index)], dim=1)
    pos = torch.cat([torch.zeros(batch, 1, dtype=torch.long), 1 + orders[:, :3]], dim=1)
    logits, k3, v3 = model.step(ids, pos, empty, empty, 1)
    _, k1, v1 = model.step(ids[:, :2], pos[:, :2], empty, empty, 1)
    assert torch.allclose(k3[:, :, :, :1], k1[:, :, :, :1], rtol=1e-6, atol=1e-6)
    assert torch.allclose(v3[:, :, :, :1], v1[:, :, :, :1], rtol=1e-6, atol=1e-6)
    moved = pos.clone()
    moved[:, 3] = 1 + orders[:, 5]  # move the third query elsewhere: the first query's logits change
    logits_moved, _, _ = model.step(ids, moved, empty, empty, 1)
    assert _rel(logits_moved[:, 0], logits[:, 0]) > 1e-4


@torch.no_grad()
def test_training_forward_is_block_causal():
    """Logits of group k depend on the tokens of groups < k only."""
    model, tokens, cond_ids, orders = _problem(16, 4, seed=3)
    sizes = [1, 1, 2, 4, 8]
    base = model.forward_training(tokens, cond_ids, orders, sizes)
    t = 1 + 1 + 2  # first generation index of group 3
    changed = tokens.clone()
    rows = torch.arange(tokens.shape[0])
    changed[rows, orders[:, t]] = (tokens[rows, orders[:, t]] + 1) % model.config.vocab_size
    out = model.forward_training(changed, cond_ids, orders, sizes)
    assert torch.equal(out[:, : t + 4], base[:, : t + 4])  # groups 0..3: token t is a target, not context
    assert _rel(out[:, t + 4 :], base[:, t + 4 :]) > 1e-4  # group 4 sees it
    last = tokens.clone()
    last[rows, orders[:, -1]] = (tokens[rows, orders[:, -1]] + 1) % model.config.vocab_size
    assert torch.equal(model.forward_training(last, cond_ids, orders, sizes), base)  # never context
