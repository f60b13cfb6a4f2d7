"""Input validation: arguments of the wrong shape, type or size must give one clear sentence, never numpy's words."""
import numpy as np
from .core import (case, lib, ok, wrong, loss, worst, expect_error, judge_error, make_data, make_index, quiet,
                   chdir, full_probe_check, check_knn, live_state, short, unexpected)

D = 8


def small_index(n=300, metric="cosine", n_clusters=4, meta=True):
    X = make_data(n, D, seed=1)
    metas = [dict(g=i % 3, b=bool(i % 2)) for i in range(n)] if meta else None
    return X, *make_index(X, metric, n_clusters=n_clusters, metadatas=metas)


@case("input validation")
def search_batch_3d_query(t):
    """search_batch(np.ones((1,1,8))): a clear error about the shape, not "query has dimension 8, index expects 8" (issue 9, 4.8)."""
    X, s, ix = small_index()
    return expect_error(lambda: ix.search_batch(np.ones((1, 1, D))), words=[("shape", "2-d", "3-d", "ndim", "dimensions")],
                        forbid=[f"dimension {D}, index expects {D}"])


@case("input validation")
def add_vectors_bulk_1d(t):
    """add_vectors_bulk(np.ones(8)): a clear error about the shape (or one vector added); never "dimension 8, expects 8" (4.8)."""
    X, s, ix = small_index()
    n0 = len(s)
    def accept(r):
        if len(s) == n0 + 1 and np.allclose(s.get(int(np.ravel(r)[0]))[0], 1): return ok("taken as one vector")
        return wrong(f"returned {short(r)} and the storage went from {n0} to {len(s)} vectors")
    return expect_error(lambda: ix.add_vectors_bulk(np.ones(D)), words=[("shape", "2-d", "1-d", "add(", "one vector")],
                        forbid=[f"dimension {D}, index expects {D}"], accept=accept)


@case("input validation")
def get_bool_id(t):
    """get(True): bool is not an id; a TypeError/KeyError naming it (today it returns id 1, or a raw numpy message) (4.8)."""
    X, s, ix = small_index()
    return expect_error(lambda: s.get(True), words=[("bool", "True")])


@case("input validation")
def delete_bool_id(t):
    """delete(True) must not delete id 1: an error naming the bool, or False; id 1 stays. Chosen: bools are not ids."""
    X, s, ix = small_index()
    def accept(r):
        if 1 not in s: return loss(f"delete(True) returned {r!r} and deleted id 1")
        return ok(f"returned {r!r}, id 1 kept") if r is False else wrong(f"returned {r!r}")
    o = expect_error(lambda: s.delete(True), words=[("bool", "True")], accept=accept)
    if 1 not in s and o.kind != "data loss": return loss(f"id 1 is gone after delete(True) ({o.detail})")
    return o


@case("input validation")
def float_id(t):
    """get(1.0) / get('1') / get(np.float64(1)): KeyError or TypeError naming the id, never another vector."""
    X, s, ix = small_index()
    outs = [expect_error(lambda v=v: s.get(v), words=[("id", "int")]) for v in (1.0, "1", np.float64(1), None, [1])]
    return worst(outs, ["1.0", "'1'", "np.float64(1)", "None", "[1]"])


@case("input validation")
def ivfindex_of_numpy_array(t):
    """IVFIndex(numpy_array): a TypeError naming VectorStorage at construction or build, not AttributeError (4.8)."""
    L = lib()
    def go():
        ix = L.IVFIndex(np.ones((50, D), np.float32), n_clusters=2)
        with quiet(): ix.build()
        return ix
    return expect_error(go, words=[("VectorStorage", "storage")])


@case("input validation")
def distance_fn_list(t):
    """distance_fn=['cosine']: a clear error naming distance_fn, not "unhashable type: 'list'" (4.8)."""
    X, s, ix = small_index()
    L = lib()
    return expect_error(lambda: L.IVFIndex(s, distance_fn=["cosine"]), words=["distance_fn"])


@case("input validation")
def ragged_query_list(t):
    """A ragged list of queries: a clear error (rows of different lengths), not numpy's "inhomogeneous shape" (4.8)."""
    X, s, ix = small_index()
    return expect_error(lambda: ix.search_batch([[1.0] * D, [1.0, 2.0]]), words=[("length", "ragged", "dimension", "rows")],
                        forbid=["inhomogeneous"])


@case("input validation")
def ragged_add_bulk(t):
    """add_bulk of a ragged list: a clear error without numpy's "inhomogeneous shape ... detected shape" text appended."""
    L = lib(); s = L.VectorStorage(D)
    return expect_error(lambda: s.add_bulk([[1.0] * D, [1.0, 2.0]]), words=[("length", "ragged", "dimension", "rows")],
                        forbid=["inhomogeneous", "detected shape"])


@case("input validation", timeout=40)
def k_huge(t):
    """k=10**12: results capped at the collection, or a clear error naming k; never a MemoryError of 7 TiB (4.8)."""
    X, s, ix = small_index()
    def accept(r):
        ids, d = r
        li, lx = live_state(s)
        return check_knn(ids, d, X[:3], li, lx, "cosine", len(s), what="capped: ")
    return expect_error(lambda: ix.search_batch(X[:3], k=10**12, nprobe=4), words=["k"], accept=accept)


@case("input validation")
def k_larger_than_collection(t):
    """k = n + 5 with nprobe=1: every live vector, nearest first, padded with -1/inf (or capped at n); no error."""
    X, s, ix = small_index(n=120)
    for i in range(0, 120, 7): ix.delete(i)
    li, lx = live_state(s)
    try: ids, d = ix.search_batch(X[:4], k=len(s) + 5, nprobe=1)
    except Exception as e: return unexpected(e)
    return check_knn(ids, d, X[:4], li, lx, "cosine", len(s) + 5)


@case("input validation")
def bad_k_and_nprobe(t):
    """k=0, k=-1, k=2.5, k=True, k='5', nprobe=0, nprobe=1.5: a ValueError/TypeError naming the parameter."""
    X, s, ix = small_index()
    q = X[0]
    trials = [("k=0", lambda: ix.search_batch(q, k=0), "k"), ("k=-1", lambda: ix.search_batch(q, k=-1), "k"),
              ("k=2.5", lambda: ix.search_batch(q, k=2.5), "k"), ("k=True", lambda: ix.search_batch(q, k=True), "k"),
              ("k='5'", lambda: ix.search_batch(q, k="5"), "k"), ("nprobe=0", lambda: ix.search_batch(q, nprobe=0), "nprobe"),
              ("nprobe=1.5", lambda: ix.search_batch(q, nprobe=1.5), "nprobe"),
              ("IVFIndex(nprobe=0)", lambda: lib().IVFIndex(s, nprobe=0), "nprobe"),
              ("IVFIndex(n_clusters=0)", lambda: lib().IVFIndex(s, n_clusters=0), "n_clusters")]
    return worst([expect_error(f, words=[w]) for _, f, w in trials], [n for n, _, _ in trials])


@case("input validation")
def n_clusters_larger_than_collection(t):
    """n_clusters > number of vectors: a clear error at build naming n_clusters (or a working index)."""
    L = lib(); s = L.VectorStorage(D); s.add_bulk(make_data(5, D))
    ix = L.IVFIndex(s, n_clusters=10)
    def go():
        with quiet(): ix.build()
        return ix
    def accept(r):
        return full_probe_check(ix, make_data(3, D, seed=9), k=3)
    return expect_error(go, words=["n_clusters"], accept=accept)


@case("input validation")
def seed_negative(t):
    """seed=-1: a clear error naming seed (at construction or build), or a working index; not "expected non-negative integer" (4.8)."""
    X, s, ix = small_index()
    L = lib()
    def go():
        ix2 = L.IVFIndex(s, seed=-1, n_clusters=4)
        with quiet(): ix2.build()
        return ix2
    return expect_error(go, words=["seed"], accept=lambda ix2: full_probe_check(ix2, X[:5], k=5))


@case("input validation")
def seed_bad_types(t):
    """seed=1.5 / seed='x' / seed=2**70: a clear error naming seed, or a working index."""
    X, s, ix = small_index()
    L = lib()
    outs = []
    for sd in (1.5, "x", 2**70):
        def go(sd=sd):
            ix2 = L.IVFIndex(s, seed=sd, n_clusters=4)
            with quiet(): ix2.build()
            return ix2
        outs.append(expect_error(go, words=["seed"], accept=lambda ix2: full_probe_check(ix2, X[:5], k=5)))
    return worst(outs, ["1.5", "'x'", "2**70"])


@case("input validation")
def save_empty_path(t):
    """save(''): a clear error naming the path, and no file (no '.lock') created in the working directory (4.8)."""
    X, s, ix = small_index()
    outs = []
    for what, obj in (("VectorStorage.save('')", s), ("IVFIndex.save('')", ix)):
        d = t.tmp / what.split(".")[0]; d.mkdir()
        with chdir(d):
            o = expect_error(lambda: obj.save(""), words=[("path", "file name", "empty")], forbid=["PosixPath"])
        left = sorted(p.name for p in d.iterdir())
        if left and o.kind == "correct or clear error": o = wrong(f"{o.detail}, but it left {left} behind")
        outs.append(o)
    return worst(outs, ["storage", "index"])


@case("input validation")
def query_none(t):
    """search_batch(None): a clear error naming the query, not "tuple index out of range"."""
    X, s, ix = small_index()
    return expect_error(lambda: ix.search_batch(None), words=[("query", "queries")])


@case("input validation")
def query_string(t):
    """search_batch('hello'): a clear error naming the query (it is text, not numbers), not "could not convert string to float"."""
    X, s, ix = small_index()
    return expect_error(lambda: ix.search_batch("hello"), words=[("query", "queries")])


@case("input validation")
def query_complex(t):
    """A complex query: a TypeError naming complex; today the imaginary part is dropped silently (a wrong answer)."""
    X, s, ix = small_index()
    q = X[0] + 1j * X[1]
    return expect_error(lambda: ix.search_batch(q), words=["complex"])


@case("input validation")
def query_odd_dtypes(t):
    """float16, int8, uint64, bool and object-of-floats queries: correct results (converted), or a clear error for bool/object."""
    X, s, ix = small_index()
    li, lx = live_state(s)
    outs, labels = [], []
    for name, q, may_refuse in (("float16", X[:3].astype(np.float16), False), ("int8", (X[:3] * 10).astype(np.int8), False),
                                ("uint64", np.abs(X[:3] * 10).astype(np.uint64), False), ("bool", X[:3] > 0, True),
                                ("object", X[:3].astype(object), True)):
        Q = np.asarray(q, np.float64)
        def accept(r, Q=Q):
            return check_knn(r[0], r[1], Q, li, lx, "cosine", 5)
        if may_refuse: o = expect_error(lambda q=q: ix.search_batch(q, k=5, nprobe=4), words=[("query", "dtype", "numeric", "bool", "object")], accept=accept)
        else:
            try: o = accept(ix.search_batch(q, k=5, nprobe=4))
            except Exception as e: o = unexpected(e)
        outs.append(o); labels.append(name)
    return worst(outs, labels)


@case("input validation")
def add_odd_dtypes(t):
    """add float16/int/uint8 vectors (stored exactly as float32); complex, strings: a clear TypeError; bool/object: either; store intact."""
    L = lib(); s = L.VectorStorage(4)
    model = {}
    outs, labels = [], []
    for name, v, must in (("float16", np.array([1.5, -2, 0.25, 3], np.float16), "ok"), ("int64", np.array([1, 2, 3, 4]), "ok"),
                          ("uint8", np.array([255, 0, 1, 2], np.uint8), "ok"), ("python ints", [1, 2, 3, 4], "ok"),
                          ("complex", np.array([1, 2, 3, 4j]), "err"), ("strings", ["1", "2", "3", "4"], "err"),
                          ("bytes", b"abcd", "err"), ("bool", np.array([True, False, True, True]), "either"),
                          ("object floats", np.array([1.0, 2.0, 3.0, 4.0], object), "either"), ("dict", {0: 1.0}, "err")):
        n0 = len(s)
        def accept(r, v=v, name=name):
            try: got = s.get(int(r))[0]
            except Exception as e: return wrong(f"add returned {r!r} but get fails: {e}")
            want = np.asarray(v, np.float64).astype(np.float32)
            if not np.array_equal(got, want): return wrong(f"stored {got} for {v!r}")
            model[int(r)] = want
            return ok()
        if must == "ok":
            try: o = accept(s.add(v))
            except Exception as e: o = unexpected(e)
        else:
            o = expect_error(lambda v=v: s.add(v), words=[("numeric", "number", "dtype", "complex", "vector", "bool", "object")],
                             accept=accept if must == "either" else None)
            if must == "err" and len(s) != n0: o = wrong(f"{o.detail}; and the storage grew from {n0} to {len(s)}")
        outs.append(o); labels.append(name)
    for i, v in model.items():
        if not np.array_equal(s.get(i)[0], v): outs.append(loss(f"id {i} changed")); labels.append("intact")
    return worst(outs, labels)


@case("input validation")
def bad_dimension(t):
    """VectorStorage(0 / -1 / '3' / 3.5 / True / None / 2**70): a clear error naming dimension; np.int64(3) works."""
    L = lib()
    outs = [expect_error(lambda d=d: L.VectorStorage(d), words=["dimension"]) for d in (0, -1, "3", 3.5, True, None, 2**70)]
    try:
        s = L.VectorStorage(np.int64(3)); s.add([1, 2, 3]); outs.append(ok())
    except Exception as e: outs.append(unexpected(e, "np.int64(3): "))
    return worst(outs, ["0", "-1", "'3'", "3.5", "True", "None", "2**70", "np.int64(3)"])


@case("input validation")
def metadata_count_mismatch(t):
    """add_bulk with 3 vectors and 2 metadatas (and a dict instead of a list): a clear error; nothing stored."""
    L = lib(); s = L.VectorStorage(D)
    outs = [expect_error(lambda: s.add_bulk(np.ones((3, D)), [{}, {}]), words=[("metadata", "metadatas")]),
            expect_error(lambda: s.add_bulk(np.ones((3, D)), {"a": 1}), words=[("metadata", "metadatas")]),
            expect_error(lambda: s.add(np.ones(D), [1, 2]), words=["metadata"])]
    if len(s) or s.next_id: outs.append(wrong(f"the storage holds {len(s)} vectors, next_id {s.next_id} after refused adds"))
    return worst(outs)


@case("input validation")
def add_bulk_nan_is_atomic(t):
    """add_bulk with NaN in row 5: refused naming row 5, nothing stored, next ids and metadata still line up."""
    L = lib(); s = L.VectorStorage(D)
    s.add_bulk(np.zeros((3, D)) + 1, [dict(i=i) for i in range(3)])
    V = make_data(10, D); V[5, 2] = np.nan
    o = expect_error(lambda: s.add_bulk(V, [dict(i=100 + i) for i in range(10)]), words=["5", "NaN"])
    outs = [o]
    if len(s) != 3 or s.next_id != 3: outs.append(wrong(f"after the refused add: {len(s)} vectors, next_id {s.next_id}"))
    i = s.add(np.full(D, 7.0), dict(i=3))
    if i != 3 or s.get(i)[1] != dict(i=3) or not np.all(s.get(i)[0] == 7): outs.append(wrong(f"next add got id {i}, {s.get(i)}"))
    for j in range(3):
        if s.get(j)[1] != dict(i=j): outs.append(loss(f"metadata of id {j} changed to {s.get(j)[1]}"))
    return worst(outs)


@case("input validation")
def index_add_rejected_keeps_index(t):
    """IVFIndex.add of a NaN vector / bad metadata: a clear error, and the index still answers exactly afterwards."""
    X, s, ix = small_index(meta=False)
    v = X[0].copy(); v[0] = np.inf
    outs = [expect_error(lambda: ix.add(v), words=[("NaN", "infinite", "finite")]),
            expect_error(lambda: ix.add(X[1], {"x": {1, 2}}), words=[("JSON", "serial")]),
            expect_error(lambda: ix.add_vectors_bulk(X[:3], [{}, {}]), words=[("metadata",)])]
    ix.add(X[2] * 1.01)
    outs.append(full_probe_check(ix, X[:20], k=5))
    return worst(outs, ["inf vector", "set metadata", "metadata count", "still exact"])


@case("input validation")
def build_empty_and_search_unbuilt(t):
    """build() on an empty storage, search before build, get_stats before build: clear errors or sane answers."""
    L = lib(); s = L.VectorStorage(D)
    ix = L.IVFIndex(s)
    def build():
        with quiet(): ix.build()
    outs = [expect_error(build, words=["empty"]),
            expect_error(lambda: ix.search_batch(np.ones(D)), words=["build"])]
    try:
        st = ix.get_stats()
        outs.append(ok() if isinstance(st, dict) else wrong(f"get_stats returned {st!r}"))
    except Exception as e: outs.append(judge_error(e, words=["build"]))
    return worst(outs, ["build empty", "search unbuilt", "stats unbuilt"])


@case("input validation")
def where_of_wrong_type(t):
    """where=['g'] / where='g=1' / where=5: a TypeError naming where."""
    X, s, ix = small_index()
    return worst([expect_error(lambda w=w: ix.search_batch(X[0], where=w), words=["where"]) for w in (["g"], "g=1", 5)],
                 ["list", "str", "int"])


@case("input validation")
def query_empty_batch(t):
    """search_batch(np.empty((0, d))): empty (0, k) results, or a clear error; not a crash."""
    X, s, ix = small_index()
    def accept(r):
        ids, d = r
        if np.shape(ids)[0] == 0 and np.shape(d)[0] == 0: return ok(f"shapes {np.shape(ids)}")
        return wrong(f"shapes {np.shape(ids)} / {np.shape(d)}")
    return expect_error(lambda: ix.search_batch(np.empty((0, D)), k=3), words=[("query", "empty")], accept=accept)


@case("input validation")
def empty_adds(t):
    """add_bulk of an empty (0, d) array or [] and add_vectors_bulk of (0, d): empty int64 ids, nothing changed, no error."""
    X, s, ix = small_index()
    n0, nid = len(s), s.next_id
    outs = []
    for name, f in (("add_bulk((0,d))", lambda: s.add_bulk(np.empty((0, D)))), ("add_bulk([])", lambda: s.add_bulk([])),
                    ("add_vectors_bulk((0,d))", lambda: ix.add_vectors_bulk(np.empty((0, D)))),
                    ("add_bulk((0,d), [])", lambda: s.add_bulk(np.empty((0, D)), []))):
        try:
            r = np.asarray(f())
            outs.append(ok() if r.shape == (0,) and len(s) == n0 and s.next_id == nid else wrong(f"{name}: returned {r!r}, len {len(s)}"))
        except Exception as e: outs.append(unexpected(e, f"{name}: "))
    try: outs.append(full_probe_check(ix, X[:5], k=3))
    except Exception as e: outs.append(unexpected(e))
    return worst(outs)


@case("input validation")
def huge_k_and_nprobe_variants(t):
    """k=10**12 through the one-query path, with a filter, and k=2**70; nprobe=2**70: capped results or a clear error naming
    k/nprobe, never MemoryError or OverflowError."""
    X, s, ix = small_index()
    li, lx = live_state(s)
    g = np.array([s.get(int(i))[1]["g"] for i in li])
    trials = (("one query, k=10**12", lambda: ix.search_batch(X[0], k=10**12, nprobe=4), X[:1], li, lx, "k"),
              ("filter, k=10**12", lambda: ix.search_batch(X[:2], k=10**12, nprobe=4, where=dict(g=1)), X[:2], li[g == 1], lx[g == 1], "k"),
              ("k=2**70", lambda: ix.search_batch(X[:2], k=2**70, nprobe=4), X[:2], li, lx, "k"),
              ("nprobe=2**70", lambda: ix.search_batch(X[:2], k=5, nprobe=2**70), X[:2], li, lx, "nprobe"))
    outs = []
    for name, f, Q, ii, xx, w in trials:
        kk = 5 if w == "nprobe" else len(ii)
        outs.append(expect_error(f, words=[w], accept=lambda r, Q=Q, ii=ii, xx=xx, kk=kk: check_knn(r[0], r[1], Q, ii, xx, "cosine", kk)))
    return worst(outs, [x[0] for x in trials])


@case("input validation")
def permute_bad_orders(t):
    """VectorStorage.permute with a repeated row, a missing live row, rows out of range, floats, a 2-D order: a clear
    ValueError/TypeError naming the order, and the storage unchanged."""
    L = lib(); s = L.VectorStorage(3); s.add_bulk(make_data(5, 3), [dict(i=i) for i in range(5)])
    before = [(i, v.copy(), m) for i, v, m in s.get_all()]
    outs = [expect_error(lambda o=o: s.permute(o), words=[("order", "row")]) for o in
            ([0, 0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 2, 3, 9], [0, 1, 2, 3, -1], [0.0, 1, 2, 3, 4], [[0, 1, 2, 3, 4]])]
    after = list(s.get_all())
    if len(after) != 5 or any(a[0] != b[0] or not np.array_equal(a[1], b[1]) or a[2] != b[2] for a, b in zip(before, after)):
        outs.append(loss("a refused permute changed the storage"))
    return worst(outs, ["repeat", "missing", "9", "-1", "floats", "2-D", "unchanged"][:len(outs)])
