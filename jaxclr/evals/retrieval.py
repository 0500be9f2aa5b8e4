"""Image<->text retrieval Recall@k (both directions), computed in row chunks.

A query is a hit at k when any of its partners is among its k most similar candidates. Partners
are given by group ids: each row has one id, or several (a [rows, K] array, -1 = unused slot),
and a query and a candidate are partners when they share an id. Identical captions share an id,
and an image with several captions carries the ids of all of them, so an image query hits when
any of its captions is in its top k, and a caption query hits when its image is. Ties count
against the model (docs/reference.md): a candidate tied with the query's best partner ranks ahead of
it unless it is a partner itself, and a query whose scores are not all finite is a miss.
``recall_at_k`` over embeddings that are not all finite is NaN. Only a [chunk, N] similarity
block exists at any time, so N of ~50k fits in memory.
"""
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

_HIGHEST = jax.lax.Precision.HIGHEST
_BLOCK_ELEMENTS = 1 << 24   # size of one [chunk, N] block: 64 MiB in float32
_MAX_CHUNK_ROWS = 4096


def default_chunk_rows(num_rows: int, num_cols: int) -> int:
    """Rows per chunk so that one [chunk, num_cols] block stays near 2^24 elements."""
    return max(1, min(_MAX_CHUNK_ROWS, _BLOCK_ELEMENTS // max(num_cols, 1), num_rows))


def map_row_chunks(fn: Callable, row_args: Sequence[np.ndarray], const_args: Sequence, chunk_rows: int):
    """Applies ``fn(*row_chunks, *const_args)`` over chunks of the rows of ``row_args``.

    Every call sees exactly ``chunk_rows`` rows (the last chunk repeats its final row), so a jitted
    ``fn`` compiles once; the outputs of the padding are dropped. Returns a numpy array [N, ...].
    """
    n = row_args[0].shape[0]
    outputs = []
    for start in range(0, n, chunk_rows):
        rows = min(chunk_rows, n - start)
        chunks = []
        for arg in row_args:
            chunk = arg[start:start + rows]
            if rows < chunk_rows:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], chunk_rows - rows, axis=0)])
            chunks.append(chunk)
        outputs.append(np.asarray(fn(*chunks, *const_args))[:rows])
    return np.concatenate(outputs)


@jax.jit
def _best_positive_rank(query, query_group, cand, cand_group):
    """Per query, the rank of its best-scoring positive: the number of non-positive candidates
    scoring >= it (ties count against the model). N when it has no positive or a non-finite score.
    Groups are [rows, K] int, -1 = unused."""
    scores = jnp.matmul(query, cand.T, precision=_HIGHEST)
    same = query_group[:, :, None, None] == cand_group[None, None, :, :]
    positive = jnp.any(same & (query_group[:, :, None, None] >= 0), axis=(1, 3))
    best = jnp.max(jnp.where(positive, scores, -jnp.inf), axis=1, keepdims=True)
    rank = jnp.sum(~positive & (scores >= best), axis=1, dtype=jnp.int32)
    valid = jnp.any(positive, axis=1) & jnp.all(jnp.isfinite(scores), axis=1)
    return jnp.where(valid, rank, scores.shape[1])


def positive_ranks(query: np.ndarray, query_group: np.ndarray, cand: np.ndarray, cand_group: np.ndarray,
                   chunk_rows: int | None = None) -> np.ndarray:
    """Rank (0 = most similar) of each query's best positive among all candidates; int [Q].

    Groups: int [rows] (one id >= 0 per row) or [rows, K] (several, -1 = unused). Rank = the
    number of non-positive candidates scoring at least as high (ties count against the model).
    A query with no partner, or whose scores are not all finite, gets rank ``len(cand)`` (never
    a hit).
    """
    query = np.asarray(query, np.float32)
    cand = np.asarray(cand, np.float32)
    query_group, cand_group = (np.asarray(g).astype(np.int32) for g in (query_group, cand_group))
    query_group, cand_group = (g[:, None] if g.ndim == 1 else g for g in (query_group, cand_group))
    if query_group.shape[:1] != query.shape[:1] or cand_group.shape[:1] != cand.shape[:1] \
            or query_group.ndim != 2 or cand_group.ndim != 2:
        raise ValueError("each embedding row needs one group id, or one row of ids")
    if query.shape[1] != cand.shape[1]:
        raise ValueError(f"embedding dims differ: {query.shape[1]} vs {cand.shape[1]}")
    chunk_rows = chunk_rows or default_chunk_rows(
        query.shape[0], cand.shape[0] * query_group.shape[1] * cand_group.shape[1])
    consts = (jnp.asarray(cand), jnp.asarray(cand_group))
    return map_row_chunks(_best_positive_rank, (query, query_group), consts, chunk_rows)


def recall_at_k(img_emb: np.ndarray, txt_emb: np.ndarray, img_group: np.ndarray | None = None,
                txt_group: np.ndarray | None = None, ks: Sequence[int] = (1, 5, 10),
                chunk_rows: int | None = None) -> dict[str, float]:
    """Recall@k in both directions: keys ``i2t_R@k`` (image queries) and ``t2i_R@k`` (text queries).

    ``img_group``/``txt_group`` give each row's group id(s) (``positive_ranks``); image i and
    text j are partners when they share an id. ``None`` for both means pairs by position
    (requires as many images as texts).
    When any embedding is not finite, every recall is NaN (a partly broken model gets no score).
    """
    if img_group is None and txt_group is None:
        if len(img_emb) != len(txt_emb):
            raise ValueError("pairing by position needs as many images as texts")
        img_group = txt_group = np.arange(len(img_emb))
    elif img_group is None or txt_group is None:
        raise ValueError("give both img_group and txt_group, or neither")
    if not (np.isfinite(img_emb).all() and np.isfinite(txt_emb).all()):
        return {f"{direction}_R@{k}": float("nan") for direction in ("i2t", "t2i") for k in ks}
    ranks = {
        "i2t": positive_ranks(img_emb, img_group, txt_emb, txt_group, chunk_rows),
        "t2i": positive_ranks(txt_emb, txt_group, img_emb, img_group, chunk_rows),
    }
    return {f"{direction}_R@{k}": float(np.mean(rank < k)) for direction, rank in ranks.items() for k in ks}
