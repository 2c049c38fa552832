"""The LPD transformer in plain PyTorch: the golden model every other backend is tested against.

The state dict has exactly the official key names and shapes (lpd-facts.md §1), so official
checkpoints load strictly. Two entry points share one block implementation:
- `step`: one generation step over a KV cache (lpd-facts.md §2), the shape every backend copies;
- `forward_training`: the whole sequence in one pass under the block mask (lpd-facts.md §3),
  used to train the demo model and as the full-sequence check of `step`.
Both express visibility as a boolean mask over [past slots + new rows] and run the same
attention, so the only difference between them is which rows are computed together.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InvalidScheduleError
from ..config import LPDConfig

_LN_EPS = 1e-6


class Attention(nn.Module):
    """Multi-head self-attention whose keys are the past K/V followed by the new rows'."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, past_k: Tensor, past_v: Tensor, allowed: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x [B, R, D], past_k/past_v [B, H, P, hd], allowed bool [R, P + R] (True = may attend).

        Returns (out [B, R, D], k [B, H, R, hd], v [B, H, R, hd]) where k, v are the new rows'.
        """
        batch, rows, dim = x.shape
        q, k, v = self.qkv(x).view(batch, rows, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        keys = torch.cat([past_k, k], dim=2)
        values = torch.cat([past_v, v], dim=2)
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=allowed, scale=self.head_dim ** -0.5)
        return self.proj(out.transpose(1, 2).reshape(batch, rows, dim)), k, v


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="none"))


class Block(nn.Module):
    """Pre-LN block: x + proj(attn(LN1 x)), then x + fc2(gelu(fc1(LN2 x)))."""

    def __init__(self, config: LPDConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.dim, eps=_LN_EPS)
        self.attn = Attention(config.dim, config.heads)
        self.norm2 = nn.LayerNorm(config.dim, eps=_LN_EPS)
        self.mlp = Mlp(config.dim, config.mlp_hidden)

    def forward(self, x: Tensor, past_k: Tensor, past_v: Tensor, allowed: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Same shapes as Attention.forward."""
        h, k, v = self.attn(self.norm1(x), past_k, past_v, allowed)
        x = x + h
        return x + self.mlp(self.norm2(x)), k, v


class LPDTransformer(nn.Module):
    """The LPD decoder. Example (one first step of B sequences, no cache yet):

        cfg = model.config; B, g = 2, 4
        ids = [[cfg.class_index(y)] + [cfg.mask_index] * g for y in labels]     # [B, 1 + g]
        pos = [[0] + [1 + order[t] for t in range(1, 1 + g)] ...]              # [B, 1 + g]
        empty = torch.zeros(cfg.depth, B, cfg.heads, 0, cfg.head_dim)
        logits, k, v = model.step(ids, pos, empty, empty, num_context=1)         # [B, g, V]
    """

    def __init__(self, config: LPDConfig):
        super().__init__()
        self.config = config
        d = config.dim
        self.class_emb = nn.Embedding(config.num_classes, d)
        self.token_emb = nn.Embedding(config.vocab_size, d)
        self.fake_latent = nn.Parameter(torch.empty(1, d))
        self.pos_embed = nn.Parameter(torch.empty(1, config.num_tokens + 1, d))
        self.z_proj_ln = nn.LayerNorm(d, eps=_LN_EPS)
        self.mask_token = nn.Parameter(torch.empty(1, 1, d))
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.norm = nn.LayerNorm(d, eps=_LN_EPS)
        self.head = nn.Linear(d, config.vocab_size, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Fresh-training init: embeddings N(0, 0.02), Xavier-uniform linears, zero biases, unit LNs."""
        for p in (self.class_emb.weight, self.token_emb.weight, self.fake_latent, self.pos_embed, self.mask_token):
            nn.init.normal_(p, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def embedding_table(self) -> Tensor:
        """The unified input table [table_rows, D]: token_emb, class_emb, fake_latent, mask_token."""
        return torch.cat([self.token_emb.weight, self._extra_rows()], dim=0)

    def _extra_rows(self) -> Tensor:
        """The non-token rows of the unified table [num_classes + 2, D]."""
        d = self.config.dim
        return torch.cat([self.class_emb.weight, self.fake_latent, self.mask_token.reshape(1, d)], dim=0)

    def embed(self, embed_ids: Tensor, pos_ids: Tensor) -> Tensor:
        """z_proj_ln(E[embed_ids] + pos_embed[0, pos_ids]): ids [B, R] long -> [B, R, D].

        Gathers token rows and the small extra rows separately, which equals indexing
        embedding_table() without copying the V x D token table every step.
        """
        vocab = self.config.vocab_size
        is_token = (embed_ids < vocab).unsqueeze(-1)
        tokens = self.token_emb(embed_ids.clamp(max=vocab - 1))
        extras = F.embedding((embed_ids - vocab).clamp(min=0), self._extra_rows())
        return self.z_proj_ln(torch.where(is_token, tokens, extras) + self.pos_embed[0, pos_ids])

    def step(self, embed_ids: Tensor, pos_ids: Tensor, past_k: Tensor, past_v: Tensor,
             num_context: int) -> tuple[Tensor, Tensor, Tensor]:
        """One LPD step for B sequences at the same step.

        embed_ids, pos_ids: [B, R] long, the R new rows (num_context context rows, then query
        rows) occupying slots P .. P+R-1. past_k, past_v: [L, B, H, P, hd], P >= 0.
        Context rows see slots [0, P + num_context); query rows see [0, P + R).
        Returns (logits [B, R - num_context, V] of the query rows, k_new, v_new [L, B, H, R, hd]
        of all R rows; only the context rows' belong in the cache).
        """
        cfg = self.config
        batch, rows = embed_ids.shape
        past = past_k.shape[3]
        expected = (cfg.depth, batch, cfg.heads, past, cfg.head_dim)
        if pos_ids.shape != embed_ids.shape or tuple(past_k.shape) != expected or past_v.shape != past_k.shape:
            raise ValueError(f"step: embed_ids {list(embed_ids.shape)}, pos_ids {list(pos_ids.shape)}, "
                             f"past_k {list(past_k.shape)}, past_v {list(past_v.shape)}; "
                             f"expected [B, R], [B, R] and [L, B, H, P, hd] = {list(expected)}")
        if not 0 <= num_context <= rows:
            raise ValueError(f"step: num_context {num_context} not in [0, {rows}]")
        return self.traceable_step(embed_ids, pos_ids, past_k, past_v, num_context)

    def traceable_step(self, embed_ids: Tensor, pos_ids: Tensor, past_k: Tensor, past_v: Tensor,
                       num_context: int | Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """step without its argument checks, written so that num_context may also be a 0-d
        tensor: a trace (the ONNX export) then keeps it dynamic instead of freezing an int."""
        rows, past = embed_ids.shape[1], past_k.shape[3]
        dev = embed_ids.device
        # Row r may see slot s iff s < its visible length (ARCHITECTURE.md, group attention).
        row = torch.arange(rows, device=dev)
        visible = torch.where(row < num_context, past + num_context, past + rows)
        allowed = torch.arange(past + rows, device=dev) < visible.unsqueeze(1)
        x = self.embed(embed_ids, pos_ids)
        ks, vs = [], []
        for layer, block in enumerate(self.blocks):
            x, k, v = block(x, past_k[layer], past_v[layer], allowed)
            ks.append(k)
            vs.append(v)
        queries = x.index_select(1, torch.arange(rows - num_context, device=dev) + num_context)
        return self.head(self.norm(queries)), torch.stack(ks), torch.stack(vs)

    def forward_training(self, tokens: Tensor, cond_ids: Tensor, orders: Tensor,
                         group_sizes: Sequence[int]) -> Tensor:
        """Teacher-forced logits of every token in generation order, one pass (lpd-facts.md §3).

        tokens [B, N] long (raster order); cond_ids [B] long (class_index(y) or uncond_index,
        so label dropout is the caller's); orders [B, N] long permutations of raster positions;
        group_sizes: S positive ints summing to N. The sequence is the context blocks
        [cond] [group 0] .. [group S-2] followed by the query blocks for groups 0 .. S-1.
        Returns logits [B, N, V]; row t predicts tokens[b, orders[b, t]].
        """
        cfg = self.config
        n = cfg.num_tokens
        batch = tokens.shape[0]
        if tokens.shape != (batch, n) or orders.shape != (batch, n) or cond_ids.shape != (batch,):
            raise ValueError(f"forward_training: tokens {list(tokens.shape)}, orders {list(orders.shape)}, "
                             f"cond_ids {list(cond_ids.shape)}; expected [B, {n}], [B, {n}], [B]")
        sizes = _check_group_sizes(group_sizes, n)
        num_context_tokens = n - sizes[-1]
        ordered = tokens.gather(1, orders)
        embed_ids = torch.cat([cond_ids.unsqueeze(1), ordered[:, :num_context_tokens],
                               torch.full_like(ordered, cfg.mask_index)], dim=1)
        pos_ids = torch.cat([torch.zeros_like(cond_ids).unsqueeze(1), 1 + orders[:, :num_context_tokens],
                             1 + orders], dim=1)
        allowed = training_mask(sizes, device=tokens.device)
        x = self.embed(embed_ids, pos_ids)
        empty = x.new_zeros(batch, cfg.heads, 0, cfg.head_dim)
        for block in self.blocks:
            x, _, _ = block(x, empty, empty, allowed)
        return self.head(self.norm(x[:, -n:]))


def _check_group_sizes(group_sizes: Sequence[int], num_tokens: int) -> list[int]:
    sizes = [int(g) for g in group_sizes]
    if not sizes or min(sizes) <= 0 or sum(sizes) != num_tokens:
        raise InvalidScheduleError(f"group sizes must be positive and sum to {num_tokens}, got {sizes}")
    return sizes


def training_mask(group_sizes: Sequence[int], device=None) -> Tensor:
    """Block mask of forward_training: bool [C + N, C + N], C = 1 + N - g[-1] context rows.

    Context block 0 is the class token, block m >= 1 holds group m-1's tokens; query block k
    holds group k's queries. A context row of block m sees context blocks 0..m; a query row of
    group k sees context blocks 0..k and the queries of group k.
    """
    sizes = torch.tensor(list(group_sizes), device=device)
    steps = torch.arange(len(sizes), device=device)
    context_block = torch.repeat_interleave(steps, torch.cat([sizes.new_ones(1), sizes[:-1]]))
    query_group = torch.repeat_interleave(steps, sizes)
    block = torch.cat([context_block, query_group])
    is_context = torch.cat([torch.ones_like(context_block, dtype=torch.bool),
                            torch.zeros_like(query_group, dtype=torch.bool)])
    sees_context = is_context[None, :] & (block[None, :] <= block[:, None])
    sees_own_queries = ~is_context[:, None] & ~is_context[None, :] & (block[None, :] == block[:, None])
    return sees_context | sees_own_queries
