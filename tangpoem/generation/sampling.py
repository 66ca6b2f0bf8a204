"""Choosing each token: temperature, top-k, top-p and the repetition penalty over the allowed ids, drawn
by Gumbel-max from the poem's own random stream (see `sample`), and the model's log-probability of a
choice (`log_probs`), by which candidates and drafts are compared."""

from __future__ import annotations

import numpy as np

TOP_P_CANDIDATES = 256  # top-p first looks among the most likely 256, then 4x more while they fall short


def sample(
    logits: np.ndarray,
    allowed: list[np.ndarray],
    banned: list[list[int]],
    rngs: list[np.random.Generator],
    temperature: float,
    top_k: int,
    top_p: float,
    used: list[list[int]] | None = None,
    penalty: float = 0.0,
    favoured: list[list[int]] | None = None,
    favour: float = 0.0,
) -> np.ndarray:
    """One token per row of logits [b, V], among that row's allowed ids, drawn with that row's rng.

    The draw is Gumbel-max: each sampled step takes one 64-bit number from the poem's own stream, makes
    from it a uniform number per token id (`_uniforms_by_id`), and picks argmax(logit / T + Gumbel noise)
    over the allowed, top-k and top-p set, which samples from softmax(logits / T) on that set. Why not
    the usual inverse CDF: a batch of rows is computed by a different BLAS kernel (gemm) than one row
    (gemv), so logits differ in the last bit;
    with an inverse CDF over a sorted, cut-off distribution such a difference moves every later
    boundary (a token entering the nucleus, two near-equal tokens swapping places) and changes the
    draw about once per thousand steps. With Gumbel-max a last-bit change only matters if it swaps
    the two best perturbed scores, so a batch writes the same poems as decoding one by one.
    Rows are computed independently (no cross-row reductions); softmax and filters in float64.

    `banned` ids are removed; `used` ids (characters the poem already has) lose `penalty` nats
    before temperature and filters: Tang verse avoids repeating a character (律诗 forbids 重字),
    and a small model, greedy above all, otherwise loops on one line. `favoured` ids (a keyword the
    line is due to write) gain `favour` nats the same way.
    """
    out = np.empty(len(allowed), dtype=np.int64)
    for r, ids in enumerate(allowed):
        x = logits[r, ids].astype(np.float64)
        if penalty and used and used[r]:
            x[_positions(ids, used[r])] -= penalty
        if favour and favoured and favoured[r]:
            x[_positions(ids, favoured[r])] += favour
        if banned[r]:
            drop = _positions(ids, banned[r])
            if len(drop) and len(drop) < len(ids):  # never ban the last allowed token
                ids, x = np.delete(ids, drop), np.delete(x, drop)
        if temperature <= 0:
            out[r] = ids[int(np.argmax(x))]
            continue
        x /= temperature
        if 0 < top_k < len(x):
            part = np.argpartition(x, len(x) - top_k)[len(x) - top_k :]
            ids, x = ids[part], x[part]
        if top_p < 1:
            keep = _nucleus(x, top_p)
            ids, x = ids[keep], x[keep]
        # Gumbel noise -log(-log(U)): one draw from the stream per step, so it stays aligned whatever the set
        u = _uniforms_by_id(int(rngs[r].integers(0, 2**63)), ids)
        out[r] = ids[int(np.argmax(x - np.log(-np.log(u))))]
    return out


def _positions(ids: np.ndarray, tokens: list[int]) -> np.ndarray:
    """Where tokens sit in the sorted ids (those that are there)."""
    tokens = np.array(sorted(set(tokens)), dtype=ids.dtype)  # a poem's few dozen: np.unique costs 10x more
    at = np.searchsorted(ids, tokens)
    hit = at < len(ids)
    hit[hit] = ids[at[hit]] == tokens[hit]
    return at[hit]


_MIX = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))


def _uniforms_by_id(key: int, ids: np.ndarray) -> np.ndarray:
    """Uniform numbers in (0, 1), one per token id, from one 64-bit key (splitmix64 of key + id): a token
    gets the same number whatever else is allowed, and only the tokens in play cost anything (drawing
    one number per vocabulary entry took longer than the rest of a sampled step)."""
    with np.errstate(over="ignore"):
        z = (ids.astype(np.uint64) + np.uint64(key)) * _MIX[0]
        z = (z ^ (z >> np.uint64(30))) * _MIX[1]
        z = (z ^ (z >> np.uint64(27))) * _MIX[2]
        z ^= z >> np.uint64(31)
    return ((z >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53


def _nucleus(x: np.ndarray, top_p: float) -> np.ndarray:
    """Indices (in id order) of the smallest most-likely set holding top_p of softmax(x)'s probability.

    Gumbel-max needs the set, not its order, so this finds the threshold from values alone: a partition
    (linear) of the most likely 256 logits, then 4x more until they hold top_p, and a sort of only those;
    ties at the threshold are all kept. Only the normaliser needs every token: its exponentials are
    float32 (numpy's float64 exp has no SIMD loop on AVX2 machines: it was a fifth of a sampled step),
    summed in float64; the candidates' probabilities are float64.
    """
    n, k = len(x), TOP_P_CANDIDATES
    top = x.max()
    mass = top_p * np.exp((x - top).astype(np.float32)).sum(dtype=np.float64)  # top_p of the normaliser
    candidates = x
    while k < n:
        candidates = np.partition(x, n - k)[n - k :]
        if np.exp(candidates - top).sum() >= mass:
            break
        k *= 4
    else:
        candidates = x
    candidates = np.sort(candidates)[::-1]
    count = min(int(np.searchsorted(np.cumsum(np.exp(candidates - top)), mass)) + 1, len(candidates))
    return np.flatnonzero(x >= candidates[count - 1])


def log_probs(logits: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """log softmax(logits)[token] per row, in float64: the model's own judgement of each choice."""
    x = logits.astype(np.float64)
    top = x.max(axis=1, keepdims=True)
    lse = np.log(np.exp(x - top).sum(axis=1)) + top[:, 0]
    return x[np.arange(len(x)), tokens] - lse
