"""The one random number generator of lpd-engine, written so every backend can reproduce it.

Definition (docs/rng.md repeats it; engine/src/rng.cpp is the C++ twin, bit for bit):

    philox(seed, c0, c1, c2, c3) = Philox4x32-10 (Salmon et al. 2011, Random123) with
        key     = (seed & 0xFFFFFFFF, seed >> 32)          seed: unsigned 64-bit
        counter = (c0, c1, c2, c3)                          four unsigned 32-bit words
    -> four unsigned 32-bit words x[0..3].

    uniform(x) = ((x >> 8) + 0.5) * 2**-24, a float64 in (0, 1), computed exactly.

Streams (the last counter word says which):
    STREAM_SAMPLING = 0: u(seed, image, gen_index, vocab_id)
        = uniform(philox(seed, vocab_id // 4, gen_index, image, 0)[vocab_id % 4]).
        image is the image's index within its request, gen_index the 0-based generation index
        t of the token (its position in the order), so the same seed gives the same image
        whatever else is in the batch.
    STREAM_SCHEDULE = 1 and STREAM_SCHEDULE_PICK = 2: the locality-order generator
        (lpd_engine.schedule), philox(seed, cell // 4, step, order_index, stream)[cell % 4].
    STREAM_RANDOM_ORDER = 3: uniformly random orders, philox(seed, cell // 4, 0, order_index, 3).
    STREAM_ORDER_PICK = 4: which of a bundle's K precomputed orders image i uses:
        philox(seed, i // 4, 0, 0, 4)[i % 4] mod K.

Sampling uses these numbers as Gumbel noise: token = argmax over the kept vocabulary of
float64(logits / T) - log(-log(u)); see lpd_engine.sampling.
"""

import numpy as np

STREAM_SAMPLING = 0
STREAM_SCHEDULE = 1
STREAM_SCHEDULE_PICK = 2
STREAM_RANDOM_ORDER = 3
STREAM_ORDER_PICK = 4

_M0 = np.uint64(0xD2511F53)
_M1 = np.uint64(0xCD9E8D57)
_W0 = np.uint32(0x9E3779B9)
_W1 = np.uint32(0xBB67AE85)
_MASK32 = np.uint64(0xFFFFFFFF)


def philox4x32(seed: int, c0, c1, c2, c3) -> np.ndarray:
    """Philox4x32-10 of broadcastable counter arrays; returns uint32 [..., 4]."""
    if not 0 <= int(seed) < 2**64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    c = [np.asarray(v, dtype=np.uint64) & _MASK32 for v in np.broadcast_arrays(c0, c1, c2, c3)]
    k0 = np.uint32(int(seed) & 0xFFFFFFFF)
    k1 = np.uint32(int(seed) >> 32)
    with np.errstate(over="ignore"):
        for r in range(10):
            if r:
                k0 = np.uint32(k0 + _W0)
                k1 = np.uint32(k1 + _W1)
            p0 = _M0 * c[0]
            p1 = _M1 * c[2]
            c = [
                (p1 >> np.uint64(32)) ^ c[1] ^ np.uint64(k0),
                p1 & _MASK32,
                (p0 >> np.uint64(32)) ^ c[3] ^ np.uint64(k1),
                p0 & _MASK32,
            ]
    return np.stack(c, axis=-1).astype(np.uint32)


def to_uniform(x: np.ndarray) -> np.ndarray:
    """uint32 -> float64 in (0, 1): ((x >> 8) + 0.5) * 2**-24."""
    return ((np.asarray(x, dtype=np.uint32) >> np.uint32(8)).astype(np.float64) + 0.5) * 2.0**-24


def uniform_ids(seed: int, ids: np.ndarray, c1, c2, stream: int) -> np.ndarray:
    """uniform(philox(seed, id // 4, c1, c2, stream)[id % 4]) for every id; float64."""
    ids = np.asarray(ids, dtype=np.int64)
    words = philox4x32(seed, ids // 4, c1, c2, stream)
    return to_uniform(np.take_along_axis(words, (ids % 4)[..., None], axis=-1)[..., 0])


def sampling_uniforms(seed: int, image: int, gen_index, vocab_size: int) -> np.ndarray:
    """u(seed, image, t, v) for each t of gen_index (scalar or [G]) and v in [0, vocab_size).

    Returns float64 [vocab_size] for a scalar gen_index, else [G, vocab_size].
    """
    gen = np.asarray(gen_index, dtype=np.uint64)
    blocks = np.arange((vocab_size + 3) // 4, dtype=np.uint64)
    words = philox4x32(seed, blocks, gen[..., None], image, STREAM_SAMPLING)  # [..., V/4, 4]
    return to_uniform(words.reshape(*gen.shape, -1)[..., :vocab_size])
