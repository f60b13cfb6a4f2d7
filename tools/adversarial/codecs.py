"""Codecs: the 8-bit scalar-quantised lists (`codec='sq8'`, re-ranked with the float32 rows), `calibrate` and `explain`.

sq8 keeps uint8 codes per row (per-dimension ranges trained at build, clipped at the 0.001/0.999 quantiles) and re-scores the best
`rerank * k` candidates exactly. What must hold: probing every list with `rerank * k >= n` equals float64 brute force; with any
setting the distances returned are the exact ones of the returned ids, sorted; deleted and filtered-out ids never come back; odd
data (constant, tiny, huge, far-from-origin, duplicate, clipped rows) changes speed and recall, never exactness; damaged files are
refused or re-encoded. `calibrate` must report the recall a search with the setting it chose really reaches, and `explain` must say
why an id is missing in words that, followed, make the search find it.

The category "codecs" is added to `core.CATEGORIES` when this module is imported (the package imports it on load).
"""
import json, re, threading, time, warnings
import numpy as np
from . import core
from .core import (case, lib, ok, wrong, unclear, crash, loss, worst, expect_error, judge_error, make_data, quiet, check_knn,
                   pair_distances, exact_distances, live_state, unexpected, short, OK)

CAT = "codecs"
if CAT not in core.CATEGORIES: core.CATEGORIES = core.CATEGORIES + (CAT,)

D = 8
METRICS = ("cosine", "euclidean", "dot")


# ---------------------------------------------------------------- helpers
def _index(X, metric="cosine", n_clusters=8, codec="sq8", metadatas=None, nprobe=None, rerank=4, seed=0):
    "A storage holding `X` and a built IVFIndex with `codec` over it (quietly)."
    L = lib()
    s = L.VectorStorage(X.shape[1])
    s.add_bulk(X, metadatas)
    ix = L.IVFIndex(s, nprobe=nprobe or n_clusters, distance_fn=metric, n_clusters=n_clusters, seed=seed, codec=codec, rerank=rerank)
    with quiet(): ix.build()
    return s, ix


def _nlist(ix): return len(ix.centroids)


def _full(ix, Q, k=10, where=None, what=""):
    "Every list probed and every row re-scored (rerank * k >= n): must equal float64 brute force over the live vectors."
    rr = max(1, -(-len(ix.storage) // k))
    try: ids, d = ix.search_batch(Q, k=k, nprobe=_nlist(ix), rerank=rr, where=where)
    except Exception as e: return unexpected(e, what)
    li, lx = live_state(ix.storage)
    if where is not None:
        keep = np.array([_matches(ix.storage.get(int(i))[1], where) for i in li], bool)
        li, lx = li[keep], lx[keep]
    return check_knn(ids, d, Q, li, lx, ix.distance_fn, k, what=what)


def _matches(meta, where):
    if callable(where): return bool(where(meta))
    return all((meta or {}).get(f) in (v if isinstance(v, list) else [v]) for f, v in where.items())


def _exact_for_ids(ix, Q, ids, dists, what="", dead=(), k=None):
    """Any setting: the distances returned are the exact (float64) distances of the returned ids, sorted, ids distinct and live,
    no deleted id, and (when fewer than k) padding -1 / inf."""
    ids, dists = np.atleast_2d(np.asarray(ids)), np.atleast_2d(np.asarray(dists, np.float64))
    Q = np.atleast_2d(Q)
    li, lx = live_state(ix.storage)
    pos = {int(i): j for j, i in enumerate(li.tolist())}
    m = ids >= 0
    gone = [int(i) for i in ids[m].tolist() if int(i) not in pos]
    if gone: return wrong(f"{what}returned id {gone[0]}, which is not live" + (" (it was deleted)" if gone[0] in set(dead) else ""))
    rows = np.vectorize(lambda i: pos.get(int(i), 0))(np.where(m, ids, li[0] if len(li) else 0)) if ids.size else ids
    exact = pair_distances(Q, lx[rows], ix.distance_fn)
    scale0 = max(float(np.median(np.abs(exact[m]))) if m.any() else 1.0, 1e-6)
    err = np.where(m, np.abs(exact - dists), 0)
    tol = 1e-3 * np.maximum(np.abs(exact), scale0) + 1e-6
    if np.any(err > tol):
        qi, j = np.unravel_index(np.argmax(err / tol), err.shape)
        return wrong(f"{what}query {qi}: id {int(ids[qi, j])} returned at distance {dists[qi, j]:.6g}, exact {exact[qi, j]:.6g}")
    if not np.isfinite(dists[m]).all(): return wrong(f"{what}a non-finite distance for a returned id")
    if np.any(~m & ~np.isinf(dists)): return wrong(f"{what}padding -1 with a finite distance")
    for qi in range(len(ids)):
        r = ids[qi][m[qi]]
        if len(set(r.tolist())) != len(r): return wrong(f"{what}query {qi}: an id is returned twice")
        if np.any(np.diff(dists[qi][m[qi]]) < -1e-6 * np.maximum(1, np.abs(dists[qi][m[qi]][1:]))):
            return wrong(f"{what}query {qi}: distances not sorted: {dists[qi][m[qi]][:5].tolist()}")
        if m[qi].any() and not m[qi][:m[qi].sum()].all(): return wrong(f"{what}query {qi}: -1 before a result")
    return ok(f"{what}{len(ids)} queries, exact distances")


def _scaled_full(ix, Q, sc, k=10, what=""):
    "`_full` for data scaled by `sc`: brute force in float64 on the data divided by `sc` (distances scale as sc**p)."
    p = {"cosine": 0, "euclidean": 1, "dot": 2}[ix.distance_fn]
    rr = max(1, -(-len(ix.storage) // k))
    try: ids, d = ix.search_batch(Q, k=k, nprobe=_nlist(ix), rerank=rr)
    except Exception as e: return unexpected(e, what)
    li, lx = live_state(ix.storage)
    return check_knn(ids, np.asarray(d, np.float64) / sc ** p, np.asarray(Q, np.float64) / sc, li, np.asarray(lx, np.float64) / sc,
                     ix.distance_fn, k, what=what)


def _with_flat(o, flat):
    "Outcome `o` of an sq8 check; when it is not OK, say how the same check fares on a flat index (a shared scan problem or not)."
    if o.kind == OK: return o
    try: f = flat()
    except Exception as e: f = unexpected(e)
    o.detail += f" [flat index, same check: {f.kind}]"
    return o


def _self_recall(ix, k, **search):
    "Recall@k of searching every live vector for its k nearest others (own id dropped) against float64 brute force."
    li, lx = live_state(ix.storage)
    ids, _ = ix.search_batch(lx, k=k + 1, **search)
    Dm = exact_distances(lx, lx, ix.distance_fn)
    np.fill_diagonal(Dm, np.inf)
    truth = li[np.argsort(Dm, axis=1, kind="stable")[:, :k]]
    return float(np.mean([len(set([i for i in f if i != q][:k]) & set(t)) / k for f, q, t in zip(ids.tolist(), li.tolist(), truth.tolist())]))


def _self_recall_tied(ix, k, **search):
    "`_self_recall` counting a returned neighbour as right when its exact distance is within the k-th nearest's (ties are right)."
    li, lx = live_state(ix.storage)
    ids, _ = ix.search_batch(lx, k=k + 1, **search)
    Dm = exact_distances(lx, lx, ix.distance_fn)
    np.fill_diagonal(Dm, np.inf)
    kth = np.sort(Dm, axis=1)[:, k - 1]
    pos = {int(i): j for j, i in enumerate(li.tolist())}
    rec = []
    for qi, (f, q) in enumerate(zip(ids.tolist(), li.tolist())):
        f = [i for i in f if i != q and i >= 0][:k]
        rec.append(sum(Dm[qi, pos[i]] <= kth[qi] + 1e-6 * max(1, abs(kth[qi])) for i in f) / k)
    return float(np.mean(rec))


_RAW_EXTRA = ("could not be broadcast", "maximum allowed dimension", "has no attribute")


def _unexpected(e, what=""):
    "`core.unexpected`, with numpy's broadcasting / size messages counted as raw (unclear), not as a clear refusal."
    if isinstance(e, MemoryError) or not any(r in str(e).lower() for r in _RAW_EXTRA): return unexpected(e, what)
    return unclear(f"{what}raw {type(e).__name__}: {str(e)[:160]!r}{core._origin(e)}")


def _crafted(t, p, change, name):
    "A copy of the index file `p` (same format) whose extras `change(extras)` edited, written by the storage itself (valid CRCs)."
    L = lib()
    s = L.VectorStorage.load(p)
    ex = {k: (np.array(v) if isinstance(v, np.ndarray) else json.loads(json.dumps(v))) for k, v in s.extras.items()}
    change(ex)
    q = t.tmp / f"{name}{p.suffix}"
    try: s.save(q, extras=ex)
    finally: s.close()
    return q


def _saved_sq8(t, metric="euclidean", fmt=".mvdb", n=400):
    "An sq8 index over n vectors (metadata g), saved; returns (X, Q, reference results at rerank=1 every list probed, path)."
    X = make_data(n, D, seed=301)
    Q = make_data(12, D, seed=302)
    s, ix = _index(X, metric, n_clusters=4, metadatas=[dict(g=i % 3) for i in range(n)])
    ref = ix.search_batch(Q, k=5, nprobe=4, rerank=1)
    p = t.tmp / f"base{fmt}"
    ix.save(p)
    s.close()
    return X, Q, ref, p


def _load_and_use(q, Q, ref, metric, X):
    """Load the crafted file `q`: a clear error at load is right; a load must give the reference results (codes re-encoded or
    read faithfully), exact full-probe results, and take an add."""
    L = lib()
    try: ix = L.IVFIndex.load(q)
    except Exception as e: return judge_error(e, words=[("corrupt", "codes", "ivf_codes", "vmin", "scale", "quantis", "8-bit", "sq8")])
    try:
        got = ix.search_batch(Q, k=5, nprobe=4, rerank=1)
        if not np.array_equal(got[0], ref[0]):
            return wrong(f"loaded without complaint, and {int((got[0] != ref[0]).any(1).sum())}/{len(Q)} queries return other ids "
                         "than the index that was saved (rerank=1, every list probed)")
        o = _full(ix, Q, k=5, what="full probe: ")
        if o.kind != OK: return o
        n0 = len(ix.storage)
        try: ix.add(X[0] + 0.5)
        except Exception as e:
            o = _unexpected(e, "add after load: ")
            if len(ix.storage) != n0: o = wrong(f"add raised ({o.detail}) and yet stored the vector")
            return o
        return _full(ix, Q, k=5, what="after an add: ")
    except Exception as e: return _unexpected(e, "loaded, then: ")
    finally:
        try: ix.storage.close()
        except Exception: pass


# ---------------------------------------------------------------- validation
@case(CAT)
def codec_invalid_names(t):
    """IVFIndex(codec='pq' / None / 'SQ8' / 8 / ['sq8']): a ValueError naming the codec and the choices."""
    L = lib(); s = L.VectorStorage(D); s.add_bulk(make_data(50, D))
    vals = ("pq", None, "SQ8", 8, ["sq8"], "")
    return worst([expect_error(lambda v=v: L.IVFIndex(s, codec=v), words=["codec", ("flat", "sq8")], types=(ValueError, TypeError))
                  for v in vals], [repr(v) for v in vals])


@case(CAT)
def rerank_invalid_values(t):
    """rerank=0 / -1 / 2.5 / True / 'x' in IVFIndex(...), search_batch and explain of an sq8 index: a ValueError naming rerank."""
    L = lib()
    X = make_data(200, D, seed=1)
    s, ix = _index(X, n_clusters=4)
    outs, labels = [], []
    for v in (0, -1, 2.5, True, "x", np.float64(2.0)):
        outs.append(expect_error(lambda v=v: L.IVFIndex(s, codec="sq8", rerank=v), words=["rerank"], types=(ValueError, TypeError))); labels.append(f"IVFIndex rerank={v!r}")
        outs.append(expect_error(lambda v=v: ix.search_batch(X[:2], k=3, rerank=v), words=["rerank"], types=(ValueError, TypeError))); labels.append(f"search_batch rerank={v!r}")
        outs.append(expect_error(lambda v=v: ix.explain(X[0], 1, k=3, rerank=v), words=["rerank"], types=(ValueError, TypeError))); labels.append(f"explain rerank={v!r}")
    return worst(outs, labels)


@case(CAT)
def rerank_invalid_on_flat_index(t):
    """A flat index given search_batch(rerank=0 / -1 / 2.5 / True / 'x'): the same ValueError naming rerank as sq8 (and as
    explain on the same index gives), not a silent search that ignores a meaningless argument."""
    X = make_data(200, D, seed=2)
    s, ix = _index(X, n_clusters=4, codec="flat")
    vals = (0, -1, 2.5, True, "x")
    return worst([expect_error(lambda v=v: ix.search_batch(X[:2], k=3, rerank=v), words=["rerank"], types=(ValueError, TypeError))
                  for v in vals], [f"rerank={v!r}" for v in vals])


@case(CAT, timeout=30)
def rerank_huge_is_capped(t):
    """rerank=10**5 / 10**9 / 2**62 on a 400-vector sq8 index ("re-score everything"): results equal brute force, with the
    candidates capped at the collection (the search allocates under 8 MB, measured with tracemalloc, where k * rerank
    candidates would take 36 MB at 10**5); never a MemoryError or numpy's "Maximum allowed dimension exceeded". Memory is
    counted, not time, so a busy machine cannot fail the case."""
    import tracemalloc
    X = make_data(400, D, seed=3)
    s, ix = _index(X, "euclidean", n_clusters=4)
    Q = make_data(3, D, seed=4)
    outs, labels = [], []
    li, lx = live_state(s)
    for q in (Q, Q[0]): ix.search_batch(q, k=10, nprobe=4, rerank=40)  # compile the kernels first: compiling allocates too
    for r in (10**5, 10**9, 2**62):
        for what, q in (("batch of 3", Q), ("one query", Q[0])):
            tracemalloc.start()
            try:
                ids, d = ix.search_batch(q, k=10, nprobe=4, rerank=r)
                peak = tracemalloc.get_traced_memory()[1]
                o = check_knn(ids, d, np.atleast_2d(q), li, lx, "euclidean", 10)
                if o.kind == OK and peak > 8 << 20:
                    o = wrong(f"allocated {peak / 2**20:.0f} MB for {len(np.atleast_2d(q))} queries over 400 vectors: the candidates are not capped at the collection")
            except Exception as e: o = _unexpected(e)
            finally: tracemalloc.stop()
            outs.append(o); labels.append(f"rerank={r} {what}")
    return worst(outs, labels)


@case(CAT)
def nonfinite_queries_sq8(t):
    """NaN / inf / 1e39 queries to search_batch, search, search_records and explain of an sq8 index: a ValueError naming the query."""
    X = make_data(200, D, seed=5)
    s, ix = _index(X, n_clusters=4)
    outs, labels = [], []
    for name, v in (("nan", np.nan), ("inf", np.inf), ("-inf", -np.inf), ("1e39", 1e39)):
        q = X[0].astype(np.float64).copy(); q[3] = v
        for fn, f in (("search_batch", lambda q=q: ix.search_batch(q, k=3)), ("search_batch batch", lambda q=q: ix.search_batch(np.stack([X[1], q]), k=3)),
                      ("search", lambda q=q: ix.search(q, k=3)), ("search_records", lambda q=q: ix.search_records(q, k=3)),
                      ("explain", lambda q=q: ix.explain(q, 0, k=3))):
            outs.append(expect_error(f, words=[("nan", "inf", "finite", "beyond", "range")], types=(ValueError,))); labels.append(f"{fn} {name}")
    return worst(outs, labels)


# ---------------------------------------------------------------- exactness
@case(CAT)
def sq8_full_rerank_equals_brute_force(t):
    """sq8, every list probed and rerank*k >= n: equals float64 brute force for cosine, euclidean and dot, batches and one query."""
    X = make_data(600, D, seed=11)
    Q = np.concatenate([X[:10], make_data(20, D, seed=12)])
    outs, labels = [], []
    for metric in METRICS:
        s, ix = _index(X, metric, n_clusters=8)
        outs.append(_full(ix, Q, k=10)); labels.append(f"{metric} batch")
        rr = -(-len(X) // 10)
        try:
            rows = [ix.search_batch(q, k=10, nprobe=8, rerank=rr) for q in Q[:10]]
            outs.append(check_knn(np.vstack([r[0] for r in rows]), np.vstack([r[1] for r in rows]), Q[:10], *live_state(s), metric, 10))
        except Exception as e: outs.append(unexpected(e))
        labels.append(f"{metric} one query")
    return worst(outs, labels)


@case(CAT)
def sq8_default_rerank_distances_exact(t):
    """sq8 at the default nprobe and rerank (approximate): every returned distance is the exact distance of the returned id,
    sorted, ids distinct; also through search_records; and with rerank=1 and nprobe=1."""
    X = make_data(800, D, seed=13)
    Q = make_data(25, D, seed=14)
    outs, labels = [], []
    for metric in METRICS:
        s, ix = _index(X, metric, n_clusters=16, nprobe=2)
        for kw in (dict(), dict(rerank=1, nprobe=1), dict(rerank=2)):
            try:
                ids, d = ix.search_batch(Q, k=10, **kw)
                outs.append(_exact_for_ids(ix, Q, ids, d))
                one = ix.search_batch(Q[0], k=10, **kw)
                outs.append(_exact_for_ids(ix, Q[:1], *one, what="one query: "))
            except Exception as e: outs.append(unexpected(e)); outs.append(ok())
            labels += [f"{metric} {kw}", f"{metric} {kw} one"]
        try:
            recs = ix.search_records(Q[0], k=10)
            ids = np.array([[r[0] for r in recs]]); d = np.array([[r[1] for r in recs]])
            outs.append(_exact_for_ids(ix, Q[:1], ids, d, what="search_records: "))
        except Exception as e: outs.append(unexpected(e))
        labels.append(f"{metric} search_records")
    return worst(outs, labels)


@case(CAT)
def sq8_constant_dimensions(t):
    """Rows equal in 3 of 8 coordinates (constant dimensions: zero range, floor scale): full probe + full rerank exact, and
    default-setting distances exact, all metrics."""
    X = make_data(400, D, seed=15)
    X[:, 2] = 5.0; X[:, 5] = 0.0; X[:, 7] = -3.25
    Q = np.concatenate([X[:8], make_data(8, D, seed=16)])
    outs, labels = [], []
    for metric in METRICS:
        s, ix = _index(X, metric, n_clusters=4)
        outs.append(_full(ix, Q)); labels.append(f"{metric} full")
        try: outs.append(_exact_for_ids(ix, Q, *ix.search_batch(Q, k=10)))
        except Exception as e: outs.append(unexpected(e))
        labels.append(f"{metric} default")
    return worst(outs, labels)


@case(CAT)
def sq8_duplicates(t):
    """60 distinct vectors each stored 6 times (ties everywhere): full probe + full rerank equal brute force (ties allowed), and
    a stored vector finds its copies at distance 0."""
    X = np.repeat(make_data(60, D, seed=17), 6, axis=0)
    outs, labels = [], []
    for metric in METRICS:
        s, ix = _index(X, metric, n_clusters=6)
        outs.append(_full(ix, X[::37])); labels.append(metric)
        if metric != "dot":
            try:
                ids, d = ix.search_batch(X[6], k=6, nprobe=6, rerank=60)
                outs.append(ok() if sorted(ids[0].tolist()) == list(range(6, 12)) and np.allclose(d, 0, atol=1e-5)
                            else wrong(f"the 6 copies of id 6 are ids 6..11 at distance 0; got {ids[0].tolist()} at {np.round(d[0], 6).tolist()}"))
            except Exception as e: outs.append(unexpected(e))
            labels.append(f"{metric} copies")
    return worst(outs, labels)


@case(CAT)
def sq8_tiny_collections_and_d1(t):
    """A single vector, two vectors (k larger than the collection), and d=1 data: sq8 builds and searches exactly (padding -1/inf)."""
    L = lib()
    outs, labels = [], []
    for metric in METRICS:
        for name, X, nc in (("n=1", make_data(1, D, seed=18), 1), ("n=2", make_data(2, D, seed=19), 1), ("d=1", make_data(300, 1, seed=20), 4)):
            try:
                s, ix = _index(X, metric, n_clusters=nc)
                Q = np.concatenate([X[:1], make_data(3, X.shape[1], seed=21)])
                ids, d = ix.search_batch(Q, k=5, nprobe=nc, rerank=300)
                o = check_knn(ids, d, Q, *live_state(s), metric, 5)
                if o.kind == OK: o = _exact_for_ids(ix, Q, *ix.search_batch(Q, k=5), what="default: ")
                if o.kind == OK and len(ix.search_records(Q[1], k=5)) != min(5, len(X)): o = wrong("search_records length")
            except Exception as e: o = unexpected(e)
            outs.append(o); labels.append(f"{metric} {name}")
    return worst(outs, labels)


@case(CAT)
def sq8_far_from_origin(t):
    """Data 1000 + N(0, s) with s = 1 and s = 0.01 (float32 holds 0.01 at 1000 with ~160 steps of precision): sq8 with every list
    probed and every row re-scored equals float64 brute force, all metrics, batch and one query (the flat index's duty too),
    or the build refuses data too tight for float32 scores with a clear error."""
    outs, labels = [], []
    for spread in (1.0, 0.01):
        X = make_data(500, D, seed=22, offset=1000.0, scale=spread)
        Q = np.concatenate([X[:30], make_data(30, D, seed=23, offset=1000.0, scale=spread)])
        for metric in METRICS:
            try: s, ix = _index(X, metric, n_clusters=8)
            except Exception as e:  # refusing data float32 cannot rank is a clear answer
                outs.append(judge_error(e, words=[("mean", "origin", "tight", "precision")])); labels.append(f"spread {spread} {metric}"); continue
            outs.append(_with_flat(_full(ix, Q), lambda: _full(_index(X, metric, n_clusters=8, codec="flat")[1], Q))); labels.append(f"spread {spread} {metric}")
    return worst(outs, labels)


@case(CAT)
def sq8_huge_values(t):
    """Values up to ±1e15 (the storage limit): sq8 full probe + full rerank equals brute force, default distances exact."""
    X = np.clip(make_data(400, D, seed=24) * np.float32(3e14), -1e15, 1e15).astype(np.float32)
    X[:3] = np.float32(1e15); X[3] = -np.float32(1e15)
    Q = np.concatenate([X[:6], np.clip(make_data(6, D, seed=25) * np.float32(2e14), -1e15, 1e15)])
    outs, labels = [], []
    for metric in METRICS:
        try:
            s, ix = _index(X, metric, n_clusters=4)
            outs.append(_full(ix, Q)); labels.append(f"{metric} full")
            outs.append(_exact_for_ids(ix, Q, *ix.search_batch(Q, k=10))); labels.append(f"{metric} default")
        except Exception as e: outs.append(judge_error(e, words=[("large", "range", "magnitude", "overflow")])); labels.append(metric)
    return worst(outs, labels)


@case(CAT)
def sq8_tiny_values(t):
    """Data N(0,1) scaled by 1e-20 and 1e-25 (finite, normal float32; the storage accepts it): full probe + full rerank returns
    the same neighbours as for the unscaled data, with exact distances (checked scale-aware), or the storage refuses the values."""
    X0 = make_data(400, D, seed=26); Q0 = make_data(15, D, seed=27)
    outs, labels = [], []
    for sc in (1e-20, 1e-25):
        X, Q = (X0 * np.float64(sc)).astype(np.float32), (Q0 * np.float64(sc)).astype(np.float32)
        for metric in METRICS:
            try: s, ix = _index(X, metric, n_clusters=4)
            except Exception as e: outs.append(judge_error(e, words=[("small", "tiny", "range", "magnitude", "underflow")])); labels.append(f"{sc} {metric}"); continue
            outs.append(_with_flat(_scaled_full(ix, Q, sc), lambda: _scaled_full(_index(X, metric, n_clusters=4, codec="flat")[1], Q, sc)))
            labels.append(f"{sc:g} {metric}")
    return worst(outs, labels)


@case(CAT)
def sq8_tail_outside_trained_range(t):
    """Vectors added after build far outside the trained range (offset ±1000 and 1e14; a changed constant dimension): their codes
    clip, yet default-setting distances are exact, full probe + full rerank equals brute force, before and after a re-layout."""
    outs, labels = [], []
    for metric in METRICS:
        X = make_data(300, D, seed=28); X[:, 6] = 2.0
        s, ix = _index(X, metric, n_clusters=4)
        ix.relayout_fraction = 1.0  # keep them in tails first
        new = np.concatenate([make_data(4, D, seed=29, offset=1000.0), make_data(4, D, seed=30, offset=-1000.0),
                              make_data(2, D, seed=31) * np.float32(1e14), make_data(4, D, seed=32)])
        new[-4:, 6] = [2.5, -7, 1e6, 2.0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # warnings have their own case
            try:
                ix.add_vectors_bulk(new[:7]); s.add_bulk(new[7:])
                Q = np.concatenate([new + 0.25, X[:5]]).astype(np.float32)
                outs.append(_full(ix, Q)); labels.append(f"{metric} tails full")
                outs.append(_exact_for_ids(ix, Q, *ix.search_batch(Q, k=10))); labels.append(f"{metric} tails default")
                ix.relayout_fraction = 0.0; ix.delete(0)  # re-lay out with the old quantiser
                if ix.get_stats()["tail_vectors"]: raise AssertionError("no re-layout happened")
                outs.append(_full(ix, Q)); labels.append(f"{metric} relaid full")
                outs.append(_exact_for_ids(ix, Q, *ix.search_batch(Q, k=10), dead=[0])); labels.append(f"{metric} relaid default")
            except AssertionError: raise
            except Exception as e: outs.append(unexpected(e)); labels.append(metric)
    return worst(outs, labels)


@case(CAT)
def sq8_add_emits_no_warnings(t):
    """Adding to an sq8 index vectors that differ from the trained data in a constant dimension (or lie far outside its range)
    emits no numpy RuntimeWarning (a library does not leak 'overflow encountered in divide')."""
    X = make_data(300, D, seed=33); X[:, 1] = 4.0
    s, ix = _index(X, "cosine", n_clusters=4)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        try:
            ix.add(np.where(np.arange(D) == 1, 9.0, 0.5).astype(np.float32))
            ix.add_vectors_bulk(make_data(5, D, seed=34, offset=1e6))
            s.add(make_data(1, D, seed=35)[0] * 1e14)
            ix.search_batch(X[:3], k=5)
        except Exception as e: return unexpected(e)
    return wrong(f"{len(w)} warnings, e.g. {w[0].category.__name__}: {w[0].message} ({w[0].filename.split('/')[-1]}:{w[0].lineno})") if w else ok()


# ---------------------------------------------------------------- updates, filters
@case(CAT, cost=1)
def sq8_adds_deletes_direct_storage(t):
    """sq8 through index.add / add_vectors_bulk / delete and storage.add / add_bulk / delete, with relayout_fraction 0 (re-lay
    out at every change), 0.05 and 1.0 (tails only): full probe + full rerank exact, deleted ids never come back (any setting)."""
    outs, labels = [], []
    for frac in (0.0, 0.05, 1.0):
        for metric in METRICS:
            allv = make_data(650, D, seed=36)
            s, ix = _index(allv[:400], metric, n_clusters=8, metadatas=[dict(g=i % 2) for i in range(400)])
            ix.relayout_fraction = frac
            dead, o = set(), ok()
            try:
                for step in range(5):
                    j = 400 + step * 50
                    if step % 2: s.add_bulk(allv[j:j + 40], [dict(g=i % 2) for i in range(j, j + 40)]); s.add(allv[j + 40], dict(g=1))
                    else: ix.add_vectors_bulk(allv[j:j + 40], [dict(g=i % 2) for i in range(j, j + 40)]); ix.add(allv[j + 40], dict(g=0))
                    for i in range(step, j, 7):
                        if i not in dead: (s.delete if step % 2 else ix.delete)(i); dead.add(i)
                    Q = np.concatenate([allv[step:step + 50:7], make_data(6, D, seed=40 + step)])  # some are deleted vectors
                    o = _full(ix, Q, what=f"step {step}: ")
                    if o.kind != OK: break
                    for kw in (dict(), dict(nprobe=1, rerank=1)):
                        o = _exact_for_ids(ix, Q, *ix.search_batch(Q, k=10, **kw), dead=dead, what=f"step {step} {kw}: ")
                        if o.kind != OK: break
                    if o.kind != OK: break
            except Exception as e: o = unexpected(e)
            outs.append(o); labels.append(f"fraction {frac} {metric}")
    return worst(outs, labels)


@case(CAT)
def sq8_where_filters(t):
    """sq8 with where (dict, list of values, callable, 1% selective, matching nothing), after deletes: full probe + full rerank
    equals brute force over the matching rows; at default settings every returned id matches and distances are exact."""
    n = 800
    X = make_data(n, D, seed=45)
    metas = [dict(g=i % 4, rare=(i % 100 == 7)) for i in range(n)]
    outs, labels = [], []
    for metric in METRICS:
        s, ix = _index(X, metric, n_clusters=8, nprobe=2, metadatas=metas)
        for i in range(0, n, 9): ix.delete(i)
        Q = make_data(12, D, seed=46)
        for name, where in (("g=1", dict(g=1)), ("g in [0,3]", dict(g=[0, 3])), ("callable", lambda m: m.get("g") == 2),
                            ("rare", dict(rare=True)), ("none", dict(g=9))):
            outs.append(_full(ix, Q, where=where)); labels.append(f"{metric} {name} full")
            try:
                ids, d = ix.search_batch(Q, k=10, where=where)
                bad = [int(i) for i in ids[ids >= 0] if not _matches(s.get(int(i))[1], where)]
                o = wrong(f"id {bad[0]} returned, metadata {s.get(bad[0])[1]} does not match") if bad else _exact_for_ids(ix, Q, ids, d)
                if o.kind == OK and name == "rare" and (ids >= 0).sum(1).min() < 7:
                    o = wrong(f"only {(ids >= 0).sum(1).min()} of the 7 live rare rows returned with k=10")  # fewer matches than k: all of them
            except Exception as e: o = unexpected(e)
            outs.append(o); labels.append(f"{metric} {name} default")
    return worst(outs, labels)


@case(CAT)
def sq8_search_paths_agree(t):
    """search, search_records and search_batch (one query) of an sq8 index return the same ids in the same order (index rerank)."""
    X = make_data(500, D, seed=47)
    outs, labels = [], []
    for metric in METRICS:
        s, ix = _index(X, metric, n_clusters=8, nprobe=3, rerank=2, metadatas=[dict(i=i) for i in range(500)])
        for q in make_data(5, D, seed=48):
            try:
                a = ix.search_batch(q, k=7)[0][0].tolist()
                b = [r[0] for r in ix.search_records(q, k=7)]
                c = [m["i"] for v, m in ix.search(q, k=7)]
                o = ok() if a == b == c else wrong(f"search_batch {a}, search_records {b}, search {c}")
            except Exception as e: o = unexpected(e)
            outs.append(o); labels.append(metric)
    return worst(outs, labels)


@case(CAT, fresh=True, cost=3, timeout=60)
def sq8_readers_during_writer(t):
    """3 reader threads (batches of 1, 40, 120; every list probed, rerank covering all rows, and default settings) search for ~1.5 s,
    and until they have made 10 searches and the writer 10 adds, while a writer adds and deletes through an sq8 index: no exception, every distance exact for its id, exact afterwards."""
    import sys
    sys.setswitchinterval(1e-5)
    n0, n_new, metric = 1500, 6000, "euclidean"
    allv = make_data(n0 + n_new, D, seed=49)
    s, ix = _index(allv[:n0], metric, n_clusters=8)
    ix.search_batch(allv[:2], k=2)
    stop, lock = threading.Event(), threading.Lock()
    errors, bad, state = [], [], dict(next=n0, deleted=set(), searches=0)
    def writer():
        rng = np.random.default_rng(50)
        try:
            while not stop.is_set() and state["next"] + 20 <= n0 + n_new:
                j = state["next"]
                ix.add_vectors_bulk(allv[j:j + 20]); state["next"] = j + 20
                for i in rng.choice(j, 6, replace=False).tolist():
                    if i not in state["deleted"]: ix.delete(int(i)); state["deleted"].add(int(i))
        except Exception as e: errors.append(("writer", e))
    def reader(bs, seed):
        r = np.random.default_rng(seed)
        try:
            while not stop.is_set():
                Q = r.normal(size=(bs, D)).astype(np.float32)
                for kw in (dict(nprobe=8, rerank=1000), dict()):
                    ids, d = ix.search_batch(Q, k=10, **kw)
                    m = ids >= 0
                    ex = pair_distances(Q, allv[np.where(m, ids, 0)], metric)
                    err = np.where(m, np.abs(ex - d), 0)
                    if np.any(err > 1e-3 * np.maximum(np.abs(ex), 1) + 1e-5) or np.any(np.diff(np.where(m, d, np.inf), axis=1) < -1e-5):
                        with lock: bad.append(f"reader{bs} {kw}: ids {ids[0][:3].tolist()} distances {np.round(d[0][:3], 4).tolist()} exact {np.round(ex[0][:3], 4).tolist()}")
                with lock: state["searches"] += 1
        except Exception as e: errors.append((f"reader{bs}", e))
    ths = [threading.Thread(target=writer, daemon=True)] + [threading.Thread(target=reader, args=(bs, 60 + bs), daemon=True) for bs in (1, 40, 120)]
    for th in ths: th.start()
    time.sleep(1.5)
    end = time.time() + 120  # a busy machine does less per second: wait for counts (a guard against hangs, not a measurement)
    while (state["searches"] < 10 or state["next"] < n0 + 200) and time.time() < end and any(th.is_alive() for th in ths): time.sleep(0.05)
    stop.set()
    for th in ths: th.join(60)
    if any(th.is_alive() for th in ths): return crash("threads still running 60 s after stop")
    outs, labels = [], []
    if errors: outs.append(unexpected(errors[0][1], f"{errors[0][0]}: ")); labels.append("exceptions")
    outs.append(wrong(f"{len(bad)} results with wrong distances: {bad[0]}") if bad else ok()); labels.append("distances")
    live = sorted(set(range(state["next"])) - state["deleted"])
    if sorted(np.asarray(s.ids).tolist()) != live: outs.append(loss("the live ids differ from what was written")); labels.append("ids")
    outs.append(_full(ix, make_data(20, D, seed=55), what="afterwards: ")); labels.append("after")
    o = worst(outs, labels)
    o.detail += f" [{state['searches']} searches, {state['next'] - n0} adds]"
    return o


# ---------------------------------------------------------------- persistence & corrupt files
@case(CAT, cost=1)
def sq8_roundtrip_both_formats(t):
    """sq8 index with tails, deletes and a calibration saved to .mvdb (loaded with mmap False/True) and .json: same results at
    default settings, codec / rerank / nprobe / calibration kept, exact full-probe results, and an add after loading works."""
    L = lib()
    outs, labels = [], []
    for metric in METRICS:
        X = make_data(500, D, seed=56)
        s, ix = _index(X, metric, n_clusters=8, metadatas=[dict(i=i) for i in range(500)], rerank=3)
        for i in range(0, 500, 13): ix.delete(i)
        ix.add_vectors_bulk(make_data(20, D, seed=57, offset=3.0), [dict(i=1000 + j) for j in range(20)])
        ix.calibrate(0.9, k=5, n_queries=100)
        Q = make_data(15, D, seed=58)
        ref = ix.search_batch(Q, k=5)
        for fmt in (".mvdb", ".json"):
            p = t.tmp / f"{metric}{fmt}"
            try: ix.save(p)
            except Exception as e: outs.append(unexpected(e, "save: ")); labels.append(f"{metric} {fmt}"); continue
            for mm in ((False, True) if fmt == ".mvdb" else (False,)):
                try:
                    ix2 = L.IVFIndex.load(p, mmap=mm)
                    got = ix2.search_batch(Q, k=5)
                    kept = dict(codec=ix2.codec == "sq8", rerank=ix2.rerank == ix.rerank, nprobe=ix2.nprobe == ix.nprobe,
                                calibration=ix2.calibration == ix.calibration)
                    if not all(kept.values()): o = wrong(f"not kept: {[k for k, v in kept.items() if not v]}")
                    elif not (np.array_equal(ref[0], got[0]) and np.allclose(ref[1], got[1], rtol=1e-5, atol=1e-6)):
                        o = wrong(f"{int((ref[0] != got[0]).any(1).sum())}/{len(Q)} queries differ after save/load")
                    else:
                        o = _full(ix2, Q)
                        if o.kind == OK:
                            ix2.add_vectors_bulk(make_data(5, D, seed=59)); ix2.delete(1)
                            o = _full(ix2, Q, what="after add+delete: ")
                    ix2.storage.close()
                except Exception as e: o = unexpected(e)
                outs.append(o); labels.append(f"{metric} {fmt} mmap={mm}")
        s.close()
    return worst(outs, labels)


@case(CAT)
def sq8_corrupt_missing_extras(t):
    """An sq8 index file (.mvdb and .json) without ivf_codes, ivf_sq8_vmin or ivf_sq8_scale, or with one of them a JSON value:
    a clear error at load (CorruptStoreError or a ValueError naming what is missing)."""
    L = lib()
    outs, labels = [], []
    for fmt in (".mvdb", ".json"):
        X, Q, ref, p = _saved_sq8(t, fmt=fmt)
        for name, ch in (("no ivf_codes", lambda e: e.pop("ivf_codes")), ("no vmin", lambda e: e.pop("ivf_sq8_vmin")),
                         ("no scale", lambda e: e.pop("ivf_sq8_scale")), ("vmin a list", lambda e: e.update(ivf_sq8_vmin=e["ivf_sq8_vmin"].tolist())),
                         ("codes a string", lambda e: e.update(ivf_codes="x"))):
            q = _crafted(t, p, ch, "m")
            outs.append(expect_error(lambda: L.IVFIndex.load(q), words=[("corrupt", "codes", "missing", "vmin", "scale", "8-bit")],
                                     accept=lambda r: wrong("loaded without complaint"))); labels.append(f"{fmt} {name}")
    return worst(outs, labels)


@case(CAT)
def sq8_corrupt_codes_shape(t):
    """ivf_codes of the wrong shape (one row short, one column more, flattened, empty): a clear error at load, or detected and
    re-encoded (then the same results as the index that was saved)."""
    outs, labels = [], []
    for fmt in (".mvdb", ".json"):
        X, Q, ref, p = _saved_sq8(t, fmt=fmt)
        n = len(X)
        for name, ch in (("n-1 rows", lambda e: e.update(ivf_codes=e["ivf_codes"][:-1])),
                         ("d+1 columns", lambda e: e.update(ivf_codes=np.zeros((n, D + 1), np.uint8))),
                         ("flattened", lambda e: e.update(ivf_codes=e["ivf_codes"].ravel())),
                         ("empty", lambda e: e.update(ivf_codes=np.zeros((0, D), np.uint8)))):
            q = _crafted(t, p, ch, "s")
            outs.append(_load_and_use(q, Q, ref, "euclidean", X)); labels.append(f"{fmt} {name}")
    return worst(outs, labels)


@case(CAT)
def sq8_corrupt_codes_dtype(t):
    """ivf_codes of the wrong dtype (float32 holding the same values, float32 noise, int64 beyond 255, int8 negative): a clear
    error at load, or detected and re-encoded / read faithfully (the same results as the index that was saved); never cast silently
    into other codes."""
    outs, labels = [], []
    rng = np.random.default_rng(60)
    for fmt in (".mvdb", ".json"):
        X, Q, ref, p = _saved_sq8(t, fmt=fmt)
        n = len(X)
        for name, ch in (("float32 same values", lambda e: e.update(ivf_codes=e["ivf_codes"].astype(np.float32))),
                         ("float32 noise", lambda e: e.update(ivf_codes=(rng.normal(size=(n, D)) * 1000).astype(np.float32))),
                         ("int64 + 300", lambda e: e.update(ivf_codes=e["ivf_codes"].astype(np.int64) + 300)),
                         ("int8 negative", lambda e: e.update(ivf_codes=-(e["ivf_codes"] // 2).astype(np.int8) - 1))):
            q = _crafted(t, p, ch, "d")
            outs.append(_load_and_use(q, Q, ref, "euclidean", X)); labels.append(f"{fmt} {name}")
    return worst(outs, labels)


@case(CAT)
def sq8_corrupt_quantiser_length(t):
    """ivf_sq8_vmin / ivf_sq8_scale of the wrong length (d-1, d+1, 1) or shape (1, d): a clear error at load (naming the quantiser
    tables), or detected and re-trained/re-encoded; never a raw numpy error at search, a load that crashes, an add that raises yet
    stores the vector, or other results."""
    outs, labels = [], []
    for fmt in (".mvdb", ".json"):
        X, Q, ref, p = _saved_sq8(t, fmt=fmt)
        for name, ch in (("vmin d-1", lambda e: e.update(ivf_sq8_vmin=e["ivf_sq8_vmin"][:-1])),
                         ("vmin 1", lambda e: e.update(ivf_sq8_vmin=e["ivf_sq8_vmin"][:1])),
                         ("scale d+1", lambda e: e.update(ivf_sq8_scale=np.concatenate([e["ivf_sq8_scale"], [1]]).astype(np.float32))),
                         ("scale 1", lambda e: e.update(ivf_sq8_scale=e["ivf_sq8_scale"][:1])),
                         ("scale (1, d)", lambda e: e.update(ivf_sq8_scale=e["ivf_sq8_scale"][None]))):
            q = _crafted(t, p, ch, "l")
            outs.append(_load_and_use(q, Q, ref, "euclidean", X)); labels.append(f"{fmt} {name}")
    return worst(outs, labels)


@case(CAT)
def sq8_corrupt_quantiser_values(t):
    """ivf_sq8_scale all 0, negative or NaN, ivf_sq8_vmin NaN (impossible for a trained quantiser; valid CRCs): a clear error at
    load, or detected and re-trained; never wrong results (with NaN even the full-probe, full-rerank search may lose neighbours)."""
    outs, labels = [], []
    X, Q, ref, p = _saved_sq8(t)
    for name, ch in (("scale 0", lambda e: e.update(ivf_sq8_scale=np.zeros(D, np.float32))),
                     ("scale negative", lambda e: e.update(ivf_sq8_scale=-e["ivf_sq8_scale"])),
                     ("scale NaN", lambda e: e.update(ivf_sq8_scale=np.full(D, np.nan, np.float32))),
                     ("vmin NaN", lambda e: e.update(ivf_sq8_vmin=np.full(D, np.nan, np.float32)))):
        q = _crafted(t, p, ch, "v")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            outs.append(_load_and_use(q, Q, ref, "euclidean", X)); labels.append(name)
    return worst(outs, labels)


@case(CAT)
def sq8_corrupt_settings(t):
    """ivf_settings with codec 'pq' / None / 7, rerank 0 / 'x' / True: a clear error at load naming the setting."""
    L = lib()
    X, Q, ref, p = _saved_sq8(t)
    outs, labels = [], []
    for field, v in (("codec", "pq"), ("codec", None), ("codec", 7), ("rerank", 0), ("rerank", "x"), ("rerank", True)):
        q = _crafted(t, p, lambda e: e["ivf_settings"].update({field: v}), "st")
        outs.append(expect_error(lambda: L.IVFIndex.load(q), words=[("corrupt", "invalid"), field], accept=lambda r: wrong("loaded without complaint")))
        labels.append(f"{field}={v!r}")
    return worst(outs, labels)


# ---------------------------------------------------------------- calibrate
@case(CAT)
def calibrate_bad_targets(t):
    """calibrate(target_recall=0 / 1.5 / -1 / NaN / 'x' / True / None / [0.9]): a ValueError naming target_recall; nprobe unchanged."""
    X = make_data(200, D, seed=61)
    s, ix = _index(X, n_clusters=4, nprobe=2)
    vals = (0, 1.5, -1, float("nan"), "x", True, None, [0.9], float("inf"))
    outs = [expect_error(lambda v=v: ix.calibrate(v, k=5, n_queries=50), words=["target_recall"], types=(ValueError, TypeError)) for v in vals]
    if ix.nprobe != 2 or ix.rerank != 4: outs.append(wrong(f"refused calls changed nprobe/rerank to {ix.nprobe}/{ix.rerank}"))
    return worst(outs, [repr(v) for v in vals] + ["unchanged"] * (len(outs) - len(vals)))


@case(CAT)
def calibrate_numpy_targets(t):
    """calibrate(np.float32(0.9)), np.float64(0.9), np.int64(1): numbers in (0, 1] (taken from numpy results) are accepted."""
    X = make_data(200, D, seed=62)
    s, ix = _index(X, n_clusters=4)
    outs, labels = [], []
    for v in (np.float32(0.9), np.float64(0.9), np.int64(1), 0.9):
        try:
            r = ix.calibrate(v, k=5, n_queries=50)
            outs.append(ok() if r["reached"] else wrong(f"not reached: {r}"))
        except Exception as e: outs.append(unexpected(e))
        labels.append(f"{type(v).__name__}({v})")
    return worst(outs, labels)


@case(CAT)
def calibrate_bad_k_queries_seed(t):
    """calibrate(k=0 / 2.0 / True, n_queries=0 / -5 / 1.5, seed=-1 / 'x' / 2.5): a clear error naming the argument (for seed, as
    IVFIndex(seed=...) words it, not numpy's SeedSequence message)."""
    X = make_data(200, D, seed=63)
    s, ix = _index(X, n_clusters=4)
    outs, labels = [], []
    for kw in (dict(k=0), dict(k=2.0), dict(k=True), dict(n_queries=0), dict(n_queries=-5), dict(n_queries=1.5),
               dict(seed=-1), dict(seed="x"), dict(seed=2.5)):
        (name, v), = kw.items()
        outs.append(expect_error(lambda kw=kw: ix.calibrate(0.9, **kw), words=[name], forbid=["seedsequence", "entropy"], types=(ValueError, TypeError)))
        labels.append(f"{name}={v!r}")
    return worst(outs, labels)


@case(CAT)
def calibrate_small_collections(t):
    """calibrate on 1 vector and on all-but-one deleted (a clear error), on 2 and 3 vectors, with k and n_queries larger than the
    collection (works: capped, reported honestly, recall 1.0 reachable), flat and sq8."""
    outs, labels = [], []
    for codec in ("flat", "sq8"):
        s, ix = _index(make_data(1, D, seed=64), n_clusters=1, codec=codec)
        outs.append(expect_error(lambda: ix.calibrate(0.9), words=[("vector", "collection", "at least")])); labels.append(f"{codec} n=1")
        s, ix = _index(make_data(60, D, seed=65), n_clusters=2, codec=codec)
        for i in range(1, 60): ix.delete(i)
        outs.append(expect_error(lambda: ix.calibrate(0.9), words=[("vector", "collection", "at least")])); labels.append(f"{codec} all but one deleted")
        for n in (2, 3, 40):
            s, ix = _index(make_data(n, D, seed=66 + n), n_clusters=1 if n < 40 else 4, codec=codec)
            try:
                r = ix.calibrate(1.0, k=50, n_queries=10**6)
                want_k = n - 1
                if r["k"] != want_k or r["n_queries"] != n: o = wrong(f"report k={r['k']} n_queries={r['n_queries']}, expected {want_k} and {n}")
                elif not r["reached"] or r["recall"] < 1: o = wrong(f"recall {r['recall']} reached={r['reached']} on {n} vectors")
                else:
                    rec = _self_recall_tied(ix, want_k)
                    o = ok() if rec >= 1 - 1e-9 else wrong(f"report says recall {r['recall']}, a search with nprobe={ix.nprobe} rerank={ix.rerank} reaches {rec:.3f}")
            except Exception as e: o = unexpected(e)
            outs.append(o); labels.append(f"{codec} n={n}")
    return worst(outs, labels)


@case(CAT, cost=1.5, timeout=40)
def calibrate_report_is_honest(t):
    """After calibrate(t) (flat and sq8, 3 metrics, t = 0.5 / 0.9 / 1.0, with tail rows and deletes, n_queries covering every
    vector): index.nprobe/rerank are the reported ones, a search with them of the same vectors reaches the reported recall
    (float64 truth), `reached` is honest, reached for t <= 0.9 on plain data, and calibrate(1.0) reaches recall 1.0."""
    outs, labels = [], []
    for codec in ("flat", "sq8"):
        for metric in METRICS:
            X = make_data(500, D, seed=70)
            s, ix = _index(X, metric, n_clusters=12, codec=codec)
            for i in range(0, 500, 7): ix.delete(i)
            ix.add_vectors_bulk(make_data(20, D, seed=71))
            for target in (0.5, 0.9, 1.0):
                try:
                    r = ix.calibrate(target, k=5, n_queries=10**4)
                    rec = _self_recall(ix, r["k"])
                    probs = []
                    if ix.nprobe != r["nprobe"] or (codec == "sq8" and ix.rerank != r["rerank"]): probs.append("index settings differ from the report")
                    if abs(rec - r["recall"]) > 0.005: probs.append(f"reported recall {r['recall']}, measured {rec:.4f}")
                    if r["reached"] != (rec >= target - 1e-9): probs.append(f"reached={r['reached']} but recall is {rec:.4f}")
                    if not r["reached"]: probs.append(f"target {target} not reached on plain Gaussian data (recall {r['recall']}, nprobe {r['nprobe']}, rerank {r['rerank']})")
                    if not 0 <= r["lost_to_probing"] <= 1 or not 0 <= r["lost_to_quantisation"] <= 1: probs.append(f"losses out of range {r}")
                    o = wrong("; ".join(probs)) if probs else ok()
                except Exception as e: o = unexpected(e)
                outs.append(o); labels.append(f"{codec} {metric} t={target}")
    return worst(outs, labels)


@case(CAT)
def calibrate_with_duplicates(t):
    """calibrate(1.0) on data where every vector is stored 5 times (ties): the chosen setting gives exact results, so the report must
    say recall 1.0 and reached=True (a tied neighbour is a right answer), never 'lost to quantisation'."""
    X = np.repeat(make_data(60, D, seed=72), 5, axis=0)
    outs, labels = [], []
    for codec in ("flat", "sq8"):
        for metric in METRICS:
            s, ix = _index(X, metric, n_clusters=6, codec=codec)
            try:
                r = ix.calibrate(1.0, k=5, n_queries=10**4)
                rec = _self_recall_tied(ix, r["k"])
                if rec >= 1 - 1e-9 and (not r["reached"] or r["recall"] < 1):
                    o = wrong(f"the chosen setting (nprobe {r['nprobe']}, rerank {r['rerank']}) returns exact neighbours (tie-aware recall 1.0), "
                              f"the report says recall {r['recall']}, reached={r['reached']}, lost_to_quantisation={r['lost_to_quantisation']}")
                elif rec < 1 - 1e-9: o = wrong(f"recall {rec:.3f} at the chosen setting, report {r}")
                else: o = ok()
            except Exception as e: o = unexpected(e)
            outs.append(o); labels.append(f"{codec} {metric}")
    return worst(outs, labels)


@case(CAT)
def calibrate_sq8_needs_large_rerank(t):
    """sq8, cosine, 300 vectors: 20 of scale 100 stretch the 8-bit range so the other 280 (scale 1e-3) share few codes. Probing every
    list with rerank 60 gives recall 1.0; calibrate(1.0) and calibrate(0.95) must find such a setting (reached=True), not stop at
    rerank 16 and report failure."""
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(300, 4)) * 1e-3).astype(np.float32)
    X[:20] = (rng.normal(size=(20, 4)) * 100).astype(np.float32)
    L = lib(); s = L.VectorStorage(4); s.add_bulk(X)
    ix = L.IVFIndex(s, nprobe=1, n_clusters=4, codec="sq8", distance_fn="cosine")
    with quiet(): ix.build()
    best = _self_recall(ix, 5, nprobe=4, rerank=60)
    if best < 1: return ok(f"no setting reaches 1.0 here (recall {best:.3f} at full probe and rerank): case not applicable")
    outs, labels = [], []
    for target in (1.0, 0.95):
        try:
            r = ix.calibrate(target, k=5, n_queries=10**4)
            rec = _self_recall(ix, 5)
            o = ok() if r["reached"] and rec >= target else wrong(f"calibrate({target}) chose nprobe {r['nprobe']} rerank {r['rerank']}: recall {r['recall']}, "
                                                                  f"reached={r['reached']}; nprobe 4 rerank 60 reaches {best}")
        except Exception as e: o = unexpected(e)
        outs.append(o); labels.append(f"target {target}")
    return worst(outs, labels)


@case(CAT)
def calibrate_persists_and_metadata(t):
    """calibrate on an sq8 index with where-heavy metadata, after adds and deletes: index.calibration survives save/load (.mvdb
    and .json) with nprobe and rerank; filtered searches at the calibrated setting return only matching ids with exact distances."""
    L = lib()
    X = make_data(500, D, seed=73)
    metas = [dict(g=i % 5, tag=["a", "b"][i % 2], rare=i % 50 == 3) for i in range(500)]
    s, ix = _index(X, "cosine", n_clusters=8, metadatas=metas)
    for i in range(0, 500, 11): ix.delete(i)
    ix.add_vectors_bulk(make_data(30, D, seed=74), [dict(g=7) for _ in range(30)])
    outs, labels = [], []
    try: r = ix.calibrate(0.9, k=8, n_queries=200)
    except Exception as e: return unexpected(e)
    Q = make_data(10, D, seed=75)
    for where in (dict(g=2), dict(rare=True), dict(g=7)):
        ids, d = ix.search_batch(Q, k=8, where=where)
        bad = [int(i) for i in ids[ids >= 0] if not _matches(s.get(int(i))[1], where)]
        outs.append(wrong(f"id {bad[0]} does not match {where}") if bad else _exact_for_ids(ix, Q, ids, d)); labels.append(f"where {where}")
    for fmt in (".mvdb", ".json"):
        p = t.tmp / f"cal{fmt}"
        try:
            ix.save(p)
            ix2 = L.IVFIndex.load(p)
            got = (ix2.calibration, ix2.nprobe, ix2.rerank)
            outs.append(ok() if got == (r, r["nprobe"], r["rerank"]) else wrong(f"after load: calibration/nprobe/rerank {short(got)}, saved {short((r, r['nprobe'], r['rerank']))}"))
            ix2.storage.close()
        except Exception as e: outs.append(unexpected(e))
        labels.append(fmt)
    return worst(outs, labels)


# ---------------------------------------------------------------- explain
@case(CAT)
def explain_odd_ids(t):
    """explain with an unknown id, -1, 'x', 3.5, 3.0, None, True, a deleted id: a clear error naming the id, or found=False with a
    reason that says there is no such vector / it was deleted; never 'found' and never a raw error."""
    X = make_data(300, D, seed=76)
    s, ix = _index(X, n_clusters=4)
    ix.delete(7)
    outs, labels = [], []
    for v, words in ((10**9, ("no vector", "unknown", "no such")), (-1, ("no vector", "unknown", "no such", "negative")), ("x", ("no vector", "id", "int")),
                     (3.5, ("no vector", "id", "int")), (3.0, ("no vector", "id", "int")), (None, ("no vector", "id", "int")),
                     (True, ("no vector", "id", "bool")), (7, ("deleted",))):
        def accept(r, words=words):
            if not isinstance(r, dict) or r.get("found") is not False: return wrong(f"returned {short(r)}")
            return judge_error(ValueError(r.get("reason", "")), words=[words])
        outs.append(expect_error(lambda v=v: ix.explain(X[3], v, k=5), words=[("id",)], types=(ValueError, TypeError, KeyError), accept=accept))
        labels.append(repr(v))
    return worst(outs, labels)


@case(CAT)
def explain_bad_queries(t):
    """explain with a 2-row query, a query of the wrong dimension, a 3-D array, a NaN query, or nprobe=0 / k=0: a clear error."""
    X = make_data(300, D, seed=77)
    s, ix = _index(X, n_clusters=4)
    outs, labels = [], []
    for name, f, words in (("2 rows", lambda: ix.explain(X[:2], 1), [("one", "single", "2", "vector", "shape")]),
                           ("dimension 5", lambda: ix.explain(X[0][:5], 1), [("dimension",)]),
                           ("3-D", lambda: ix.explain(X[None, :1], 1), [("shape", "2-d", "3-d", "dimension", "vector")]),
                           ("NaN", lambda: ix.explain(np.full(D, np.nan), 1), [("nan", "finite")]),
                           ("nprobe=0", lambda: ix.explain(X[0], 1, nprobe=0), ["nprobe"]),
                           ("k=0", lambda: ix.explain(X[0], 1, k=0), ["k"])):
        outs.append(expect_error(f, words=words, types=(ValueError, TypeError))); labels.append(name)
    return worst(outs, labels)


@case(CAT)
def explain_found_and_filtered(t):
    """explain of returned ids says 'found at position p' with p the id's position in search_batch's results; of an id a where
    filter excludes, that it is filtered out (naming where/metadata); flat and sq8, all metrics."""
    X = make_data(500, D, seed=78)
    metas = [dict(g=i % 3) for i in range(500)]
    outs, labels = [], []
    for codec in ("flat", "sq8"):
        for metric in METRICS:
            s, ix = _index(X, metric, n_clusters=8, nprobe=2, codec=codec, metadatas=metas)
            probs = []
            for q in make_data(4, D, seed=79):
                ids = ix.search_batch(q, k=10)[0][0].tolist()
                for p, i in enumerate(ids):
                    e = ix.explain(q, i, k=10)
                    if not (e.get("found") is True and f"position {p + 1} " in e.get("reason", "")): probs.append(f"id {i} at position {p + 1}: {e.get('reason')!r}")
                fid = next(i for i in ids if metas[i]["g"] != 1)
                e = ix.explain(q, fid, k=10, where=dict(g=1))
                if e.get("found") is not False or not re.search(r"filter|where|metadata", e.get("reason", "")): probs.append(f"filtered id {fid}: {e.get('reason')!r}")
            outs.append(wrong(f"{len(probs)} wrong: {probs[0]}") if probs else ok()); labels.append(f"{codec} {metric}")
    return worst(outs, labels)


def _explain_sweep(codec, metric, n=800, n_clusters=16, nq=15, k=10, seed=80, where=None, rerank=1):
    "(index, list of (query, id, float64 rank, explain dict)) for every float64 top-(k+2) id of nq queries, away from near-ties."
    X = make_data(n, D, seed=seed)
    metas = [dict(g=i % 3) for i in range(n)]
    s, ix = _index(X, metric, n_clusters=n_clusters, nprobe=1, codec=codec, metadatas=metas, rerank=rerank)
    Q = make_data(nq, D, seed=seed + 1)
    Dm = exact_distances(Q, X, metric)
    if where is not None: Dm[:, [not _matches(m, where) for m in metas]] = np.inf
    out = []
    for qi, q in enumerate(Q):
        order = np.argsort(Dm[qi])
        for r, i in enumerate(order[:k + 2].tolist()):
            nb = [Dm[qi, order[j]] for j in (r - 1, r + 1) if 0 <= j < n]
            if min(abs(Dm[qi, i] - x) for x in nb) < 1e-5 * max(1, abs(Dm[qi, i])): continue  # near-tie: either order is right
            out.append((q, i, r + 1, ix.explain(q, i, k=k, where=where)))
    return ix, out


@case(CAT)
def explain_exact_rank_is_right(t):
    """explain's exact_rank and kth_distance agree with float64 brute force (ids away from near-ties; flat and sq8, all metrics, with
    and without where), and its reason never says 'not among the k nearest' of an id that is among them."""
    outs, labels = [], []
    for codec in ("flat", "sq8"):
        for metric in METRICS:
            for where in (None, dict(g=1)):
                ix, rows = _explain_sweep(codec, metric, where=where)
                bad = [(i, r, e) for q, i, r, e in rows if e.get("exact_rank") != r]
                lie = [(i, r, e) for q, i, r, e in rows if r <= 10 and "not among" in e.get("reason", "")]
                if lie: i, r, e = lie[0]; o = wrong(f"{len(lie)} ids among the 10 nearest explained as not: id {i} is {r}th, reason {e['reason']!r}; "
                                                    f"{len(bad)}/{len(rows)} exact_rank wrong")
                elif bad: i, r, e = bad[0]; o = wrong(f"{len(bad)}/{len(rows)} exact_rank wrong, e.g. id {i}: {r}th, explain says {e.get('exact_rank')}")
                else: o = ok(f"{len(rows)} ids")
                outs.append(o); labels.append(f"{codec} {metric} where={where}")
    return worst(outs, labels)


@case(CAT)
def explain_nprobe_advice_flat(t):
    """Flat index, nprobe=1: each true top-10 id (float64, away from ties) that the search misses is explained as 'use nprobe >= r',
    and search_batch with nprobe=r then finds it (with and without where)."""
    outs, labels = [], []
    for metric in METRICS:
        for where in (None, dict(g=1)):
            ix, rows = _explain_sweep("flat", metric, where=where)
            probs, n_adv, n_rank = [], 0, 0
            for q, i, r, e in rows:
                if r > 10 or e.get("found"): continue
                if "not among" in e.get("reason", ""): n_rank += 1; continue  # explain's own rank is off: explain-exact-rank-is-right
                m = re.search(r"use nprobe >= (\d+)", e.get("reason", ""))
                if not m: probs.append(f"id {i} ({r}th) missed, reason {e.get('reason')!r}"); continue
                n_adv += 1
                ids = ix.search_batch(q, k=10, nprobe=int(m.group(1)), where=where)[0][0].tolist()
                if i not in ids: probs.append(f"id {i}: advice {m.group(0)!r} followed, still missing")
            outs.append(wrong(f"{len(probs)} problems: {probs[0]}") if probs else ok(f"{n_adv} pieces of advice followed, {n_rank} left to the rank case"))
            labels.append(f"{metric} where={where}")
    return worst(outs, labels)


@case(CAT)
def explain_rerank_advice_sq8(t):
    """sq8, every list probed, rerank=1: each true top-10 id the search misses is explained as pushed out by quantisation with
    'use rerank >= r', and search_batch with that rerank then finds it."""
    outs, labels = [], []
    for metric in METRICS:
        X = make_data(800, D, seed=82)
        s, ix = _index(X, metric, n_clusters=4, nprobe=4, rerank=1)
        Q = make_data(15, D, seed=83)
        Dm = exact_distances(Q, X, metric)
        probs, n_adv, n_rank = [], 0, 0
        for qi, q in enumerate(Q):
            order = np.argsort(Dm[qi]); found = ix.search_batch(q, k=10)[0][0].tolist()
            for r, i in enumerate(order[:10].tolist()):
                if i in found or Dm[qi, order[10]] - Dm[qi, i] < 1e-5: continue
                e = ix.explain(q, i, k=10)
                if "not among" in e.get("reason", ""): n_rank += 1; continue  # explain's own rank is off: explain-exact-rank-is-right
                m = re.search(r"use rerank >= (\d+)", e.get("reason", ""))
                if not m or "quantis" not in e["reason"]: probs.append(f"id {i} ({r + 1}th) missed, reason {e.get('reason')!r}"); continue
                n_adv += 1
                if i not in ix.search_batch(q, k=10, rerank=int(m.group(1)))[0][0].tolist(): probs.append(f"id {i}: {m.group(0)!r} followed, still missing")
        outs.append(wrong(f"{len(probs)} problems: {probs[0]}") if probs else ok(f"{n_adv} pieces of advice followed, {n_rank} left to the rank case"))
        labels.append(metric)
    return worst(outs, labels)


@case(CAT)
def explain_sq8_nprobe_advice_suffices(t):
    """sq8, nprobe=1, rerank=1: for a true top-10 id the search misses, following explain's advice (nprobe, then whatever explain
    says next) must find it within the first piece of advice, or the reason must name both obstacles (lists and quantisation)."""
    outs, labels = [], []
    for metric in METRICS:
        ix, rows = _explain_sweep("sq8", metric)
        probs, n = [], 0
        for q, i, r, e in rows:
            if r > 10 or e.get("found"): continue
            m = re.search(r"use nprobe >= (\d+)", e.get("reason", ""))
            if not m: continue
            n += 1
            if i in ix.search_batch(q, k=10, nprobe=int(m.group(1)))[0][0].tolist() or "rerank" in e["reason"]: continue
            e2 = ix.explain(q, i, k=10, nprobe=int(m.group(1)))
            probs.append(f"id {i} ({r}th): {e['reason']!r}; with nprobe={m.group(1)} still missing: {e2.get('reason')!r}")
        outs.append(wrong(f"{len(probs)}/{n} nprobe advices insufficient: {probs[0]}") if probs else ok(f"{n} advices")); labels.append(metric)
    return worst(outs, labels)


@case(CAT)
def explain_code_ties(t):
    """sq8, dot, one list: 290 rows of scale 1e-3 share one 8-bit code in the queried dimension (10 rows at -100 stretch its range),
    so their 8-bit scores tie; with rerank=1 the search misses the true nearest. explain must say it was pushed out by quantisation
    (use rerank >= r, and that rerank finds it), not 'tied at the k-th distance' (its exact distance is not tied)."""
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(300, 4)) * 1e-3).astype(np.float32)
    X[:10, 0] = -100
    L = lib(); s = L.VectorStorage(4); s.add_bulk(X)
    ix = L.IVFIndex(s, nprobe=1, n_clusters=1, codec="sq8", distance_fn="dot", rerank=1)
    with quiet(): ix.build()
    q = np.array([1, 0, 0, 0], np.float32)
    found = ix.search_batch(q, k=10)[0][0].tolist()
    truth = np.argsort(exact_distances(q, X, "dot")[0])[:10].tolist()
    missed = [i for i in truth if i not in found]
    if not missed: return ok("the search found all 10: case not applicable")
    outs, labels = [], []
    for i in missed[:4]:
        e = ix.explain(q, i, k=10)
        m = re.search(r"use rerank >= (\d+)", e.get("reason", ""))
        if not m: o = wrong(f"id {i} (exact rank {truth.index(i) + 1}, distance {e.get('distance')}, 10th at {e.get('kth_distance')}) explained as {e.get('reason')!r}")
        elif i not in ix.search_batch(q, k=10, rerank=int(m.group(1)))[0][0].tolist(): o = wrong(f"id {i}: {m.group(0)!r} followed, still missing")
        else: o = ok()
        outs.append(o); labels.append(f"id {i}")
    return worst(outs, labels)
