"""Metadata & filters: the store hands out copies, filters are strict about types, unicode survives both formats."""
import copy
import numpy as np
from .core import (case, lib, ok, wrong, loss, worst, expect_error, make_data, make_index, check_knn,
                   unexpected, short, judge_error)

D = 6


def _store(n=50):
    L = lib(); s = L.VectorStorage(D)
    metas = [dict(i=i, text=f"item {i}", tags=["a", "b"], nested=dict(x=i)) for i in range(n)]
    s.add_bulk(make_data(n, D, seed=1), metas)
    return s, copy.deepcopy(metas)


def _compare(s, model, what):
    "data loss if any stored metadata differs from the model."
    for i, m in enumerate(model):
        got = s.get(i)[1]
        if got != m: return loss(f"{what}: metadata of id {i} is now {short(got)}")
    return ok()


@case("metadata & filters")
def get_returns_copy(t):
    """Changing the dict get() returned (a new key holding a set, a nested edit) leaves the store alone; save still works (4.4)."""
    s, model = _store()
    m = s.get(3)[1]
    m["text"] = "changed"; m["nested"]["x"] = -1; m["tags"].append("z"); m["bad"] = {1, 2}
    o = _compare(s, model, "after editing get()'s dict")
    try: s.save(t.tmp / "s.mvdb")
    except Exception as e: return worst([o, loss(f"save now fails: {type(e).__name__}: {e}")])
    return o


@case("metadata & filters")
def get_all_returns_copies(t):
    """Editing the dicts of get_all() leaves the store alone; writing into .vectors fails (read-only) or leaves it alone."""
    s, model = _store()
    V0 = s.vectors.copy()
    for i, v, m in s.get_all():
        m["i"] = "x"
        if i == 0: m.clear()
    outs = [_compare(s, model, "after editing get_all()'s dicts")]
    try: s.vectors[0, 0] = 123.0
    except (ValueError, TypeError): pass
    try: s.get_all()[1][1][0] = 123.0
    except (ValueError, TypeError): pass
    try: s.ids[0] = 99
    except (ValueError, TypeError): pass
    if not np.array_equal(s.vectors, V0): outs.append(loss("writing into .vectors / get_all() vectors changed the store"))
    if s.ids[0] != 0: outs.append(loss("writing into .ids changed the store"))
    return worst(outs)


@case("metadata & filters")
def search_results_are_copies(t):
    """The (vector, metadata) pairs from IVFIndex.search are copies: editing them leaves the store alone."""
    X = make_data(200, D, seed=2)
    metas = [dict(i=i, tags=["t"]) for i in range(200)]
    s, ix = make_index(X, "cosine", n_clusters=4, metadatas=copy.deepcopy(metas))
    for v, m in ix.search(X[5], k=5, nprobe=4):
        m["i"] = -1; m["tags"].append("x")
        try: v[0] = 1e6
        except ValueError: pass
    outs = [_compare(s, metas, "after editing search() results")]
    if not np.allclose(s.get(5)[0], X[5]): outs.append(loss("editing a searched vector changed the store"))
    return worst(outs)


@case("metadata & filters")
def where_callable_cannot_mutate(t):
    """A where callable that edits the dict it is given leaves the store alone (it gets copies) (4.4)."""
    X = make_data(200, D, seed=3)
    metas = [dict(i=i, g=i % 2) for i in range(200)]
    s, ix = make_index(X, "cosine", n_clusters=4, metadatas=copy.deepcopy(metas))
    def f(m):
        m["g"] = 5; m["hit"] = True; m.pop("i", None)
        return True
    try: ix.search_batch(X[:3], k=5, nprobe=4, where=f)
    except Exception as e: return unexpected(e)
    return _compare(s, metas, "after a mutating where callable")


@case("metadata & filters")
def where_bool_is_not_int(t):
    """where={'g': True} matches only g == True, not g == 1; {'g': 1} not True; {'g': 0} not False. Chosen: strict (4.10)."""
    X = make_data(300, D, seed=4)
    vals = [True, 1, False, 0, 1.0, "1", None]
    metas = [dict(g=vals[i % len(vals)]) for i in range(300)]
    s, ix = make_index(X, "cosine", n_clusters=4, metadatas=metas)
    outs, labels = [], []
    for want, allowed in ((True, {True}), (1, {1}), (False, {False}), (0, {0})):
        try: ids, _ = ix.search_batch(X[0], k=300, nprobe=4, where=dict(g=want))
        except Exception as e: outs.append(unexpected(e)); labels.append(repr(want)); continue
        got = [s.get(int(i))[1]["g"] for i in ids[0] if i >= 0]
        bad = [g for g in got if isinstance(g, str) or g != want or isinstance(g, bool) != isinstance(want, bool)]
        outs.append(wrong(f"where g={want!r} also matched {sorted(set(map(repr, bad)))}") if bad else ok()); labels.append(repr(want))
    return worst(outs, labels)


@case("metadata & filters")
def where_list_and_missing(t):
    """where={'g': [0, 2]} is any-of; a missing field matches nothing; fewer matches than k are padded (nprobe=1 widened)."""
    X = make_data(400, D, seed=5)
    metas = [dict(g=i % 5) if i % 7 else {} for i in range(400)]
    s, ix = make_index(X, "euclidean", n_clusters=8, metadatas=metas)
    Q = X[:5]
    outs, labels = [], []
    allv, allid = s.vectors, s.ids
    g = np.array([s.get(int(i))[1].get("g", -1) for i in allid])
    for name, where, keep, k in (("any-of", dict(g=[0, 2]), np.isin(g, [0, 2]), 10), ("missing field", dict(zzz=1), g < -5, 5),
                                 ("3 matches, nprobe=1", dict(g=4), None, 10)):
        if keep is None:
            rows = np.flatnonzero(g == 4)[:3]
            for r in np.flatnonzero(g == 4)[3:]: ix.delete(int(allid[r]))
            allv, allid = s.vectors, s.ids
            g = np.array([s.get(int(i))[1].get("g", -1) for i in allid])
            keep = g == 4
        # nprobe=1 is approximate, except that a filter with fewer matches than k must return every match
        try: ids, d = ix.search_batch(Q, k=k, nprobe=1 if "nprobe=1" in name else 8, where=where)
        except Exception as e: outs.append(unexpected(e)); labels.append(name); continue
        outs.append(check_knn(ids, d, Q, allid[keep], allv[keep], "euclidean", k)); labels.append(name)
    return worst(outs, labels)


UNI = dict(emoji="🚀✨", cjk="向量数据库", rtl="שלום", nul="a\u0000b", lone_surrogate="x\ud800y", combining="e\u0301",
           nested={"ключ": ["ü", {"ß": 1}]}, big=10**18, neg=-0.0, tiny=5e-324, empty="")


@case("metadata & filters")
def unicode_metadata_roundtrip(t):
    """Unicode metadata (emoji, CJK, NUL, a lone surrogate, combining marks, unicode keys) survives binary and JSON save/load."""
    L = lib()
    outs, labels = [], []
    s = L.VectorStorage(3)
    try: s.add([1, 2, 3], UNI)
    except Exception as e: return judge_error(e, words=[("surrogate", "unicode", "metadata")])
    for suffix in (".mvdb", ".json"):
        p = t.tmp / f"u{suffix}"
        try:
            s.save(p)
            got = L.VectorStorage.load(p).get(0)[1]
            outs.append(ok() if got == UNI else wrong(f"came back as {short(got)}"))
        except Exception as e: outs.append(unexpected(e))
        labels.append(suffix)
    return worst(outs, labels)


@case("metadata & filters")
def metadata_non_string_keys(t):
    """metadata {1: 'a', (1,2): 'b'}: refused with a clear error (JSON keys are strings), not silently turned into {'1': 'a'}. Chosen: refuse."""
    L = lib(); s = L.VectorStorage(3)
    def accept(i):
        got = s.get(i)[1]
        return ok() if got == {1: "a"} else wrong(f"stored {{1: 'a'}} came back as {got!r}")
    return expect_error(lambda: s.add([1, 2, 3], {1: "a"}), words=[("key", "string", "str")], accept=accept)


@case("metadata & filters")
def metadata_not_json(t):
    """metadata holding NaN, a set, bytes, or a huge int: a clear error naming the metadata; nothing stored."""
    L = lib(); s = L.VectorStorage(3)
    outs = [expect_error(lambda m=m: s.add([1, 2, 3], m), words=["metadata"]) for m in
            ({"x": float("nan")}, {"x": {1}}, {"x": b"ab"}, {"x": object()})]
    if len(s): outs.append(wrong(f"{len(s)} vectors stored after refused adds"))
    return worst(outs, ["nan", "set", "bytes", "object"])


@case("metadata & filters")
def filter_after_lazy_load(t):
    """A store loaded from disk (metadata parsed lazily) filters exactly like the one that was saved."""
    X = make_data(500, D, seed=6)
    metas = [dict(g=i % 3) for i in range(500)]
    s, ix = make_index(X, "cosine", n_clusters=4, metadatas=metas)
    p = t.tmp / "f.mvdb"
    ix.save(p)
    L = lib()
    try:
        ix2 = L.IVFIndex.load(p)
        a = ix.search_batch(X[:10], k=8, nprobe=4, where=dict(g=2))
        b = ix2.search_batch(X[:10], k=8, nprobe=4, where=dict(g=2))
    except Exception as e: return unexpected(e)
    return ok() if np.array_equal(a[0], b[0]) else wrong("filtered results differ after save/load")


@case("metadata & filters")
def where_with_numpy_scalars(t):
    """where={'b': np.bool_(True)}, {'g': np.int64(1)}, {'f': np.float32(0.5)}, {'s': np.str_('x')} match exactly what the
    Python values True, 1, 0.5, 'x' match (values taken from numpy arrays are common)."""
    X = make_data(200, D, seed=7)
    metas = [dict(b=bool(i % 2), g=i % 3, f=0.5 if i % 4 == 0 else 0.25, s="x" if i % 5 == 0 else "y") for i in range(200)]
    s, ix = make_index(X, "cosine", n_clusters=4, metadatas=metas)
    outs, labels = [], []
    for field, py, npv in (("b", True, np.bool_(True)), ("g", 1, np.int64(1)), ("f", 0.5, np.float32(0.5)), ("s", "x", np.str_("x"))):
        try:
            a = ix.search_batch(X[0], k=200, nprobe=4, where={field: py})[0]
            b = ix.search_batch(X[0], k=200, nprobe=4, where={field: npv})[0]
            outs.append(ok() if np.array_equal(a, b) else wrong(f"{field}=np.{type(npv).__name__}({npv}) matched {int((b >= 0).sum())} rows, "
                                                               f"the Python value {int((a >= 0).sum())}"))
        except Exception as e: outs.append(unexpected(e))
        labels.append(f"np.{type(npv).__name__}")
    return worst(outs, labels)


@case("metadata & filters")
def numpy_values_in_metadata(t):
    """Metadata holding numpy scalars (np.int64, np.float32, np.bool_) is stored as the equal JSON values, or refused with a clear
    error naming the metadata; never stored as something else."""
    L = lib(); s = L.VectorStorage(3)
    m = dict(a=np.int64(3), b=np.float32(0.5), c=np.bool_(True))
    def accept(i):
        got = s.get(i)[1]
        return ok("converted") if got == dict(a=3, b=0.5, c=True) and type(got["c"]) is bool else wrong(f"stored as {got!r}")
    return expect_error(lambda: s.add([1, 2, 3], m), words=["metadata"], accept=accept)
