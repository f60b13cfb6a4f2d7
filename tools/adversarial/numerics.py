"""Numerics: full probing must equal float64 brute force, far from the origin, at huge and tiny scales, with ties."""
import numpy as np
from .core import (case, lib, ok, wrong, worst, expect_error, make_data, make_index, quiet, full_probe_check,
                   check_knn, live_state, unexpected)


def _search_check(ix, Q, k=10, what="", where=None):
    try: return full_probe_check(ix, Q, k=k, what=what, where=where)
    except Exception as e: return unexpected(e, what)


@case("numerics", cost=0.8)
def euclidean_far_from_origin(t):
    """Data 1000 + N(0,1), d=16, euclidean, every list probed: equals float64 brute force, self at distance ~0 (issue 9, 4.2)."""
    X = make_data(2000, 16, seed=3, offset=1000.0)
    s, ix = make_index(X, "euclidean", n_clusters=16)
    Q = np.concatenate([X[:100], make_data(100, 16, seed=4, offset=1000.0)])
    o = _search_check(ix, Q, k=10)
    ids, d = ix.search_batch(X[:100], k=1, nprobe=16)
    self_d = float(np.max(d[:, 0]))
    if o.kind == "correct or clear error" and self_d > 1e-2: return wrong(f"a stored vector is at distance {self_d:.3g} from itself")
    return o if o.kind != "correct or clear error" else ok(f"{o.detail}; max self-distance {self_d:.2g}")


@case("numerics")
def euclidean_far_from_origin_small_batch(t):
    """The same far-from-origin data searched one query at a time (the single-query path) equals brute force."""
    X = make_data(1500, 16, seed=5, offset=1000.0)
    s, ix = make_index(X, "euclidean", n_clusters=8)
    li, lx = live_state(s)
    outs = []
    for i in range(20):
        q = X[i * 37] if i % 2 else X[i] + 0.01
        try: ids, d = ix.search_batch(q, k=5, nprobe=8)
        except Exception as e: return unexpected(e)
        outs.append(check_knn(ids, d, q[None], li, lx, "euclidean", 5))
    return worst(outs)


@case("numerics")
def euclidean_huge_query(t):
    """Euclidean query np.full(8, 1e30) (finite): correct finite distances, or a clear error; never inf distances (4.3)."""
    X = make_data(300, 8, seed=6)
    s, ix = make_index(X, "euclidean", n_clusters=4)
    li, lx = live_state(s)
    q = np.full(8, 1e30)
    return expect_error(lambda: ix.search_batch(q, k=5, nprobe=4), words=[("large", "overflow", "range", "magnitude", "float32", "beyond", "limit")],
                        accept=lambda r: check_knn(r[0], r[1], q[None], li, lx, "euclidean", 5))


@case("numerics")
def query_beyond_float32(t):
    """A finite float64 query of 1e39 (beyond float32): correct, or an error saying it is out of float32 range, not "NaN or infinite"."""
    X = make_data(300, 8, seed=7)
    s, ix = make_index(X, "cosine", n_clusters=4)
    li, lx = live_state(s)
    q = np.full(8, 1e39)
    return expect_error(lambda: ix.search_batch(q, k=5, nprobe=4), words=[("float32", "range", "too large", "magnitude", "beyond", "limit")],
                        accept=lambda r: check_knn(r[0], r[1], q[None], li, lx, "cosine", 5))


@case("numerics")
def add_beyond_float32(t):
    """add([1e39, ...]) of a finite float64: refused with a message about float32 range (today: "NaN or infinite ... after conversion")."""
    L = lib(); s = L.VectorStorage(4)
    return expect_error(lambda: s.add([1e39, 0, 0, 0]), words=[("float32", "range", "too large", "beyond", "limit")])


@case("numerics")
def cosine_tiny_query(t):
    """Cosine is scale-invariant: a query scaled by 1e-30 finds the same neighbours at the same distances (or a clear error)."""
    X = make_data(600, 16, seed=8)
    s, ix = make_index(X, "cosine", n_clusters=8)
    li, lx = live_state(s)
    Q = X[:10].astype(np.float64) * 1e-30
    return expect_error(lambda: ix.search_batch(Q, k=5, nprobe=8), words=[("small", "norm", "zero", "scale")],
                        accept=lambda r: check_knn(r[0], r[1], Q, li, lx, "cosine", 5))


_TOO_LARGE = ("large", "overflow", "range", "magnitude", "norm", "beyond", "limit")

def _stored_then_searched(X, metric, words):
    "Store `X`, build an index, search its first 12 rows: exact neighbours, or an error naming one of `words` at any step."
    L = lib(); s = L.VectorStorage(X.shape[1])
    def go():
        s.add_bulk(X)
        ix = L.IVFIndex(s, n_clusters=8, nprobe=8, distance_fn=metric)
        with quiet(): ix.build()
        return ix.search_batch(X[:12], k=5, nprobe=8)
    return expect_error(go, words=[words], accept=lambda r: check_knn(r[0], r[1], X[:12], *live_state(s), metric, 5))


@case("numerics")
def cosine_tiny_stored(t):
    """Cosine over stored vectors of norm ~1e-25 (finite float32): correct neighbours (scale-invariant), or refused at add/build."""
    X = make_data(600, 16, seed=9)
    X[::3] *= 1e-25
    return _stored_then_searched(X, "cosine", ("small", "norm", "zero", "scale"))


@case("numerics")
def cosine_huge_stored(t):
    """Cosine over stored vectors of scale 1e20 (finite float32, squares overflow): correct, or refused with a clear error."""
    X = make_data(600, 16, seed=10) * np.float32(1e20)
    return _stored_then_searched(X, "cosine", _TOO_LARGE)


@case("numerics")
def euclidean_huge_stored(t):
    """Euclidean over stored vectors of scale 1e19 (squared norms overflow float32): correct, or a clear error."""
    X = make_data(600, 16, seed=11) * np.float32(1e19)
    return _stored_then_searched(X, "euclidean", _TOO_LARGE)


@case("numerics")
def dot_far_from_origin(t):
    """Inner product over 1000 + N(0,1) data, every list probed: equals brute force within float32 rounding."""
    X = make_data(1500, 16, seed=12, offset=1000.0)
    s, ix = make_index(X, "dot", n_clusters=8)
    return _search_check(ix, make_data(50, 16, seed=13), k=10)


@case("numerics")
def subnormal_values(t):
    """Vectors with subnormal components (1e-40): euclidean full probing still equals brute force; no crash."""
    X = make_data(400, 8, seed=14)
    X[:50] = np.float32(1e-40) * np.sign(X[:50])
    s, ix = make_index(X, "euclidean", n_clusters=4)
    return _search_check(ix, X[:60], k=5)


@case("numerics")
def zero_vectors_cosine(t):
    """Cosine with zero vectors stored and a zero query: no NaN distances (a zero vector is at distance 1, or a clear error)."""
    X = make_data(300, 8, seed=15)
    X[:5] = 0
    s, ix = make_index(X, "cosine", n_clusters=4)
    outs = [_search_check(ix, X[5:15], k=8, what="nonzero queries: ")]
    def accept(r):
        d = np.asarray(r[1])
        if np.isnan(d).any(): return wrong(f"NaN distances for a zero query: {d}")
        return ok()
    outs.append(expect_error(lambda: ix.search_batch(np.zeros(8), k=5, nprobe=4), words=["zero"], accept=accept))
    return worst(outs, ["rows", "zero query"])


@case("numerics")
def duplicate_vectors(t):
    """200 copies of one vector among 1800 others: the k results are k distinct copies at distance 0; deleted copies never return."""
    outs, labels = [], []
    for metric in ("cosine", "euclidean"):
        X = make_data(2000, 16, seed=16)
        X[100:300] = X[0]
        s, ix = make_index(X, metric, n_clusters=16)
        for i in range(100, 300, 2): ix.delete(i)
        try: ids, d = ix.search_batch(X[0], k=20, nprobe=16)
        except Exception as e: outs.append(unexpected(e)); labels.append(metric); continue
        row = ids[0][ids[0] >= 0]
        copies = {0, *range(101, 300, 2)}
        if len(set(row.tolist())) != len(row) or not set(row.tolist()) <= copies or np.max(np.abs(d[0][:len(row)])) > 1e-3 or len(row) != 20:
            outs.append(wrong(f"{metric}: ids {row[:8].tolist()}..., distances up to {np.max(np.abs(d[0])):.3g}"))
        else: outs.append(ok())
        labels.append(metric)
    return worst(outs, labels)


@case("numerics", cost=1.0)
def all_identical_vectors(t):
    """500 identical vectors, n_clusters=8: build works (or a clear error) and search returns k of them at distance 0."""
    L = lib(); s = L.VectorStorage(8)
    s.add_bulk(np.tile(np.arange(1, 9, dtype=np.float32), (500, 1)))
    ix = L.IVFIndex(s, n_clusters=8, nprobe=8, distance_fn="euclidean")
    def go():
        with quiet(): ix.build()
        return ix.search_batch(np.arange(1, 9), k=10, nprobe=8)
    def accept(r):
        ids, d = r
        if (ids[0] >= 0).sum() != 10 or len(set(ids[0].tolist())) != 10 or np.max(d[0]) > 1e-3: return wrong(f"{ids[0].tolist()} {d[0].tolist()}")
        return ok()
    return expect_error(go, words=[("identical", "distinct", "n_clusters", "cluster")], accept=accept)


@case("numerics")
def single_vector_index(t):
    """An index over one vector: build works; k=5 gives that vector then padding (or capped)."""
    L = lib(); s = L.VectorStorage(4); s.add([1, 2, 3, 4])
    ix = L.IVFIndex(s, distance_fn="euclidean")
    try:
        with quiet(): ix.build()
        return _search_check(ix, np.array([[1.0, 2, 3, 5]]), k=5)
    except Exception as e: return unexpected(e)


@case("numerics")
def metrics_with_deletes_tail_and_filter(t):
    """All three metrics, with deletes, tail additions and a metadata filter: full probing equals brute force every time."""
    outs, labels = [], []
    for metric in ("cosine", "euclidean", "dot"):
        X = make_data(1200, 12, seed=17)
        s, ix = make_index(X, metric, n_clusters=8, metadatas=[dict(g=i % 4) for i in range(1200)])
        for i in range(0, 1200, 9): ix.delete(i)
        ix.add_vectors_bulk(make_data(30, 12, seed=18), [dict(g=1)] * 30)
        Q = make_data(40, 12, seed=19)
        outs.append(_search_check(ix, Q, k=7)); labels.append(metric)
        try:
            ids, d = ix.search_batch(Q, k=7, nprobe=8, where=dict(g=1))
            keep = np.array([s.get(int(i))[1].get("g") == 1 for i in s.ids])
            outs.append(check_knn(ids, d, Q, s.ids[keep], s.vectors[keep], metric, 7))
        except Exception as e: outs.append(unexpected(e))
        labels.append(metric + " where")
    return worst(outs, labels)


@case("numerics")
def nprobe_beyond_lists(t):
    """nprobe far larger than n_clusters (1000 vs 8) is full probing: equals brute force, no error."""
    X = make_data(800, 8, seed=20)
    s, ix = make_index(X, "cosine", n_clusters=8)
    li, lx = live_state(s)
    try: ids, d = ix.search_batch(X[:30], k=6, nprobe=1000)
    except Exception as e: return unexpected(e)
    return check_knn(ids, d, X[:30], li, lx, "cosine", 6)


@case("numerics")
def float16_and_large_dimension(t):
    """d=2048 vectors added as float16: stored exactly as float32, and euclidean full probing equals brute force."""
    X = make_data(200, 2048, seed=21).astype(np.float16)
    L = lib(); s = L.VectorStorage(2048); s.add_bulk(X)
    if not np.array_equal(s.vectors, X.astype(np.float32)): return wrong("float16 vectors were not stored exactly")
    ix = L.IVFIndex(s, n_clusters=4, nprobe=4, distance_fn="euclidean")
    with quiet(): ix.build()
    return _search_check(ix, X[:10].astype(np.float32), k=5)


@case("numerics")
def batch_size_does_not_change_results(t):
    """The same query gives the same ids and distances alone, in a batch of 10, and in batches of 64 and 200 (different scan
    paths), at nprobe=2 and with a filter, after deletes and tail additions."""
    X = make_data(3000, 16, seed=22)
    s, ix = make_index(X, "euclidean", n_clusters=16, nprobe=2, metadatas=[dict(g=i % 3) for i in range(3000)])
    for i in range(0, 3000, 17): ix.delete(i)
    ix.add_vectors_bulk(make_data(60, 16, seed=23), [dict(g=1)] * 60)
    Q = make_data(200, 16, seed=24)
    outs, labels = [], []
    for where in (None, dict(g=1)):
        try:
            ref = [ix.search_batch(Q[i], k=7, where=where) for i in range(12)]
            for bs in (10, 64, 200):
                ids, d = ix.search_batch(Q[:bs], k=7, where=where)
                bad = [i for i in range(min(bs, 12)) if not (np.array_equal(ids[i], ref[i][0][0]) and np.allclose(d[i], ref[i][1][0], rtol=1e-5, atol=1e-5))]
                outs.append(wrong(f"query {bad[0]}: alone {ref[bad[0]][0][0].tolist()}, in a batch of {bs} {ids[bad[0]].tolist()}") if bad else ok())
                labels.append(f"batch {bs}{' where' if where else ''}")
        except Exception as e: outs.append(unexpected(e)); labels.append("exception")
    return worst(outs, labels)
