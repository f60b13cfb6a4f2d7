"""API behaviour: what a careful user of a library expects beyond single calls (no stdout noise, several indexes on one
storage, reproducible builds, stats that add up)."""
import contextlib, io, warnings
import numpy as np
from .core import (case, lib, ok, wrong, loss, worst, make_data, make_index, quiet, full_probe_check,
                   unexpected, judge_error, OK)

D = 8


@case("api behaviour")
def build_prints_nothing(t):
    """build() writes nothing to stdout (a library does not print; the summary belongs in get_stats()/repr) (issue 9, section 3)."""
    L = lib(); s = L.VectorStorage(D); s.add_bulk(make_data(300, D))
    ix = L.IVFIndex(s, n_clusters=4)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf): ix.build()
    out = buf.getvalue().strip()
    return wrong(f"build() printed {out[:100]!r}") if out else ok()


@case("api behaviour")
def two_indexes_one_storage(t):
    """Two indexes (cosine and euclidean) over one storage, writes through either and directly: both stay exact; or the second is
    refused with a clear error when it attaches; or the index built first refuses (clearly) to answer once the second one lays
    out the rows. Chosen: any of these, but never a silent wrong result."""
    L = lib()
    X = make_data(1000, D, seed=81)
    s = L.VectorStorage(D); s.add_bulk(X)
    a = L.IVFIndex(s, n_clusters=8, distance_fn="cosine")
    with quiet(): a.build()
    def second():
        b = L.IVFIndex(s, n_clusters=8, distance_fn="euclidean")
        with quiet(): b.build()
        return b
    try: b = second()
    except Exception as e: return judge_error(e, words=[("index", "attached", "owns", "storage")])
    outs, labels = [], []
    a_refused = []
    def via_a(f, what):
        "Use the first index; a clear refusal (it was superseded) is accepted, once it has refused it stays out."
        if a_refused: return
        try: f()
        except Exception as e:
            o = judge_error(e, words=[("index", "another", "build")])
            if o.kind == OK: a_refused.append(o.detail); outs.append(ok(f"first index refuses: {o.detail}"))
            else: outs.append(o)
            labels.append(f"a {what}")
    Q = make_data(25, D, seed=84)
    try:
        via_a(lambda: a.add_vectors_bulk(make_data(30, D, seed=82)), "add")
        for i in range(0, 1000, 13): b.delete(i)
        s.add_bulk(make_data(20, D, seed=83))
        for _ in range(2):
            via_a(lambda: outs.append(full_probe_check(a, Q, k=6, what="cosine index: ")) or labels.append("a"), "search")
            outs.append(full_probe_check(b, Q, k=6, what="euclidean index: ")); labels.append("b")
        b.add_vectors_bulk(make_data(10, D, seed=85))
        outs.append(full_probe_check(b, Q, k=6, what="euclidean index after its add: ")); labels.append("b after add")
    except Exception as e: outs.append(unexpected(e)); labels.append("exception")
    return worst(outs, labels)


@case("api behaviour", cost=0.8)
def build_is_deterministic(t):
    """Two builds with the same seed over the same data give the same lists and the same results (reproducible experiments)."""
    X = make_data(3000, D, seed=85)
    Q = make_data(50, D, seed=86)
    res = []
    for _ in range(2):
        s, ix = make_index(X, "cosine", n_clusters=16, nprobe=2, seed=7)
        res.append(ix.search_batch(Q, k=5))
    return ok() if np.array_equal(res[0][0], res[1][0]) else wrong(f"{int((res[0][0] != res[1][0]).sum())} result ids differ")


@case("api behaviour")
def stats_add_up(t):
    """get_stats after deletes and tail additions: n_vectors equals len(storage), list sizes sum to it, no negative sizes."""
    X = make_data(1000, D, seed=87)
    s, ix = make_index(X, "cosine", n_clusters=8)
    for i in range(0, 1000, 3): ix.delete(i)
    ix.add_vectors_bulk(make_data(20, D, seed=88))
    s.add_bulk(make_data(5, D, seed=89)); s.delete(1)
    try: st = ix.get_stats()
    except Exception as e: return unexpected(e)
    probs = []
    if st.get("n_vectors") != len(s): probs.append(f"n_vectors {st.get('n_vectors')} vs len {len(s)}")
    if st.get("min_cluster_size", 0) < 0: probs.append(f"min_cluster_size {st['min_cluster_size']}")
    return wrong("; ".join(probs)) if probs else ok()


@case("api behaviour")
def build_on_mmap_storage(t):
    """An index built over a storage loaded with mmap=True (read-only vectors) works and leaves the file unchanged."""
    L = lib()
    X = make_data(800, D, seed=90)
    s = L.VectorStorage(D); s.add_bulk(X); p = t.tmp / "m.mvdb"; s.save(p); s.close()
    before = p.read_bytes()
    try:
        m = L.VectorStorage.load(p, mmap=True)
        ix = L.IVFIndex(m, n_clusters=8)
        with quiet(): ix.build()
        o = full_probe_check(ix, make_data(20, D, seed=91), k=5)
    except Exception as e: o = unexpected(e)
    if p.read_bytes() != before: return loss("building over the mapped storage changed the file")
    return o


@case("api behaviour")
def rebuild_after_many_changes(t):
    """build() again after many adds and deletes re-clusters the live vectors only: exact results, stats count live vectors."""
    X = make_data(1500, D, seed=92)
    s, ix = make_index(X, "euclidean", n_clusters=8)
    for i in range(0, 1500, 2): ix.delete(i)
    ix.add_vectors_bulk(make_data(400, D, seed=93))
    try:
        with quiet(): ix.build()
        o = full_probe_check(ix, make_data(30, D, seed=94), k=8)
        st = ix.get_stats()
        if st["n_vectors"] != len(s): return wrong(f"stats count {st['n_vectors']}, storage {len(s)}")
        return o
    except Exception as e: return unexpected(e)


@case("api behaviour")
def search_emits_no_warnings(t):
    """Ordinary searches (float64, int and float16 queries; filters matching nothing) emit no numpy/Python warnings."""
    X = make_data(500, D, seed=95)
    s, ix = make_index(X, "cosine", n_clusters=4, metadatas=[dict(g=i % 2) for i in range(500)])
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        try:
            ix.search_batch(X[:3].astype(np.float64), k=5)
            ix.search_batch((X[:3] * 10).astype(np.int32), k=5)
            ix.search_batch(X[:3].astype(np.float16), k=5)
            ix.search_batch(X[:3], k=5, where=dict(g=7))
        except Exception as e: return unexpected(e)
    return wrong(f"{len(w)} warnings, e.g. {w[0].category.__name__}: {w[0].message}") if w else ok()
