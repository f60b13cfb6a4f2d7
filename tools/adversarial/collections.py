"""Collections (minivecdb.collection, nbs/02a_collection.ipynb): `connect`, named collections, your own string ids.

What must hold: a bad id (empty, longer than 512 characters, not a str, twice in one call), an id that exists on `add`, a missing
id on `update`, a bad vector, a reserved `mvdb:` metadata key or a bad collection name is refused with a `CollectionError` (a
`ValueError`) whose one sentence names the problem, and nothing of the call is applied (in memory, on disk, after reopening);
`upsert` replaces as one change that concurrent readers see whole; every acknowledged write survives SIGKILL of the writer, the
call in flight whole or absent; one writer process per database (a second gets `DatabaseLockedError` naming the pid), any number
of read-only ones that see acknowledged writes, refuse writes and `refresh()`; a collection opened with another model is refused;
close and reopen keeps everything.

Vector collections (embedding=None) keep the fast cases free of the embedding model; one slow case uses the packaged text model.
The category "collections" is added to `core.CATEGORIES` when this module is imported.
"""
import contextlib, json, os, random, subprocess, sys, threading, time
import numpy as np
from . import core
from .core import (case, ok, wrong, unclear, crash, loss, worst, expect_error, judge_error, judge_message, make_data, unexpected,
                   short, LIB, OK)

CAT = "collections"
if CAT not in core.CATEGORIES: core.CATEGORIES = core.CATEGORIES + (CAT,)

D = 8


# ---------------------------------------------------------------- helpers
def mc():
    "The module under test."
    import minivecdb.collection as m
    return m


def _errtypes():
    "A documented refusal is a CollectionError (a ValueError); DatabaseLockedError for a held database."
    m = mc()
    return (m.CollectionError, m.DatabaseLockedError)


@contextlib.contextmanager
def _db(t, name="db", read_only=False):
    "A database under the case's directory, closed at the end (releasing the writer lock)."
    db = mc().connect(t.tmp / name, read_only=read_only)
    try: yield db
    finally:
        with contextlib.suppress(Exception): db.close()


def _vc(db, name="v", d=D, metric="cosine"):
    return db.create_collection(name, embedding=None, dimension=d, metric=metric)


def _snap(c, ids=None):
    "{id: (vector bytes, metadata, document)} of the rows of `c` (every row, or `ids`)."
    r = c.get(ids=ids, include=["documents", "metadatas", "vectors"])
    V = np.asarray(r.vectors, np.float32) if r.vectors is not None and len(r.ids) else np.zeros((0, c.config["dimension"]), np.float32)
    out = {}
    for i, u in enumerate(r.ids):
        if u in out: out[u + "#dup"] = None  # an id returned twice is a difference
        out[u] = (V[i].tobytes(), r.metadatas[i], r.documents[i])
    return out


def _logsize(c):
    p = c.path / "store.ivf.log"
    return p.stat().st_size if p.exists() else 0


def _diff(got: dict, want: dict, what="") -> str:
    "'' when equal, else one phrase saying how `got` differs from `want`."
    if got == want: return ""
    missing = sorted(set(want) - set(got)); extra = sorted(set(got) - set(want))
    changed = sorted(u for u in set(got) & set(want) if got[u] != want[u])
    parts = []
    if missing: parts.append(f"missing {short(missing[:4], 80)}")
    if extra: parts.append(f"unexpected {short(extra[:4], 80)}")
    if changed: parts.append(f"changed {short(changed[:4], 80)}")
    return f"{what}{'; '.join(parts)}"


def _refused(c, call, words, before=None, what=""):
    """`call()` must be refused with a clear CollectionError naming `words`, and change nothing: the rows, in memory and after
    the log (its size) are the same as before."""
    before = _snap(c) if before is None else before
    log0 = _logsize(c)
    o = expect_error(call, words=words, types=_errtypes())
    try: after = _snap(c)
    except Exception as e: return unexpected(e, f"{what}get after the refused call: ")
    d = _diff(after, before)
    if d: return loss(f"{what}{o.kind}: {o.detail}; but rows changed: {d}") if o.kind == OK else type(o)(o.kind, f"{o.detail}; rows changed: {d}")
    if _logsize(c) != log0: return wrong(f"{what}the refused call grew the log ({log0} -> {_logsize(c)} bytes); {o.detail}")
    if o.kind != OK: o.detail = what + o.detail
    return o


def _child(script, *args, timeout=60):
    "Run a Python child with the minivecdb under test first on its path; its stdout as JSON lines."
    r = subprocess.run([sys.executable, "-c", script, str(LIB), *map(str, args)], capture_output=True, text=True, timeout=timeout)
    lines = []
    for l in r.stdout.splitlines():
        with contextlib.suppress(ValueError): lines.append(json.loads(l))
    return r, lines


# ---------------------------------------------------------------- ids
@case(CAT)
def coll_bad_ids(t):
    """add/upsert with an empty id, a 513-character id, an int, None or bytes among good ones, or fewer ids than rows, and add,
    upsert or update with an id twice in one call (['r', 'q', 'r']): a CollectionError naming the id (or the count), nothing of the
    call applied (rows and log unchanged); delete(['p', 'p']) deletes 'p' once (or is refused the same way). A 512-character id and
    odd but valid ids ('../x', 'a\\nb', NUL, emoji, ' ') are accepted and read back."""
    outs, labels = [], []
    with _db(t) as db:
        c = _vc(db)
        c.add(ids=["keep"], vectors=make_data(1, D, seed=1))
        X = make_data(3, D, seed=2)
        bad = [("empty", ["ok1", "", "ok2"], [("empty", "non-empty", "ids[1]")]),
               ("513 chars", ["ok1", "x" * 513, "ok2"], [("512", "long")]),
               ("int", ["ok1", 5, "ok2"], [("string", "str")]),
               ("None", ["ok1", None, "ok2"], [("string", "str", "none")]),
               ("bytes", ["ok1", b"b", "ok2"], [("string", "str")]),
               ("2 ids 3 rows", ["ok1", "ok2"], [("2 ids", "one id", "ids")])]
        for label, ids, words in bad:
            for op in ("add", "upsert"):
                outs.append(_refused(c, lambda: getattr(c, op)(ids=ids, vectors=X), ["id", *words]))
                labels.append(f"{op} {label}")
        odd = ["y" * 512, "../x", "a\nb", "x\x00y", "\U0001f600", " "]
        try:
            got = c.add(ids=odd, vectors=make_data(len(odd), D, seed=3))
            back = c.get(ids=odd).ids
            outs.append(ok() if got == odd and back == odd else wrong(f"odd ids: add returned {short(got, 80)}, get {short(back, 80)}"))
        except Exception as e: outs.append(unexpected(e, "odd valid ids: "))
        labels.append("valid odd ids")
        # an id twice in one call: refused naming it, nothing applied; delete may delete it once instead
        c.add(ids=["p"], vectors=make_data(1, D, seed=4), metadatas=[{"v": 0}])
        for op, call in (("add", lambda: c.add(ids=["r", "q", "r"], vectors=X)),
                         ("upsert", lambda: c.upsert(ids=["p", "q", "p"], vectors=X)),
                         ("update", lambda: c.update(ids=["p", "p"], metadatas=[{"v": 1}, {"v": 2}]))):
            dup = "r" if op == "add" else "p"
            outs.append(_refused(c, call, [f"'{dup}'", ("twice", "duplicate", "more than once", "repeated")])); labels.append(f"{op} twice")
        n0 = c.count()
        try:
            n = c.delete(ids=["p", "p"])
            outs.append(ok() if n == 1 and c.count() == n0 - 1 and not c.get(ids=["p"]).ids else wrong(f"delete(['p', 'p']) -> {n}, count {n0} -> {c.count()}"))
        except Exception as e: outs.append(judge_error(e, words=["'p'"], types=_errtypes()))
        labels.append("delete twice")
    return worst(outs, labels)


@case(CAT)
def coll_add_existing_id(t):
    """add(['c', 'a']) when 'a' exists: a CollectionError naming 'a'; 'c' not added, 'a' keeps its vector and metadata, also
    after close and reopen. upsert of the same batch then succeeds and replaces 'a'."""
    outs, labels = [], []
    with _db(t) as db:
        c = _vc(db)
        c.add(ids=["a", "b"], vectors=make_data(2, D, seed=6), metadatas=[{"n": 1}, {"n": 2}])
        before = _snap(c)
        X = make_data(2, D, seed=7)
        outs.append(_refused(c, lambda: c.add(ids=["c", "a"], vectors=X, metadatas=[{"n": 3}, {"n": 4}]), ["'a'", ("exist", "already")],
                             before)); labels.append("refused")
    with _db(t) as db:
        try: d = _diff(_snap(db.get_collection("v")), before)
        except Exception as e: outs.append(unexpected(e, "reopen: ")); labels.append("reopen"); return worst(outs, labels)
        outs.append(loss(f"after reopening: {d}") if d else ok()); labels.append("reopen")
        c = db.get_collection("v")
        try:
            c.upsert(ids=["c", "a"], vectors=X, metadatas=[{"n": 3}, {"n": 4}])
            s = _snap(c)
            good = set(s) == {"a", "b", "c"} and s["a"][0] == X[1].tobytes() and s["a"][1] == {"n": 4} and s["b"] == before["b"]
            outs.append(ok() if good else wrong(f"after upsert: {short({u: v[1] for u, v in s.items()})}"))
        except Exception as e: outs.append(unexpected(e, "upsert: "))
        labels.append("upsert after")
    return worst(outs, labels)


@case(CAT)
def coll_upsert_replaces(t):
    """upsert of existing and new ids at once replaces the old rows (vector, metadata, document: a field not given is not kept
    from the old row), adds the new ones, keeps the count right; a query for the old vector never returns the id at its old
    distance, one for the new vector finds it once at distance ~0; the same after reopening."""
    outs, labels = [], []
    X = make_data(20, D, seed=8, offset=0.5)
    ids = [f"id{i}" for i in range(20)]
    with _db(t) as db:
        c = _vc(db, metric="euclidean")
        c.add(ids=ids, vectors=X, metadatas=[{"i": i, "old": True} for i in range(20)], documents=[f"doc {i}" for i in range(20)])
        Y = make_data(3, D, seed=9, offset=-3)
        try: c.upsert(ids=["id3", "new1", "id7"], vectors=Y, metadatas=[{"i": 33}, {"i": 100}, None])
        except Exception as e: return unexpected(e, "upsert: ")
        want = {u: (X[i].tobytes(), {"i": i, "old": True}, f"doc {i}") for i, u in enumerate(ids)}
        want.update({"id3": (Y[0].tobytes(), {"i": 33}, None), "new1": (Y[1].tobytes(), {"i": 100}, None), "id7": (Y[2].tobytes(), {}, None)})
        for when in ("live", "reopened"):
            if when == "reopened":
                db.close(); db = mc().connect(t.tmp / "db"); c = db.get_collection("v")
            try:
                s = _snap(c)
                # a row upserted with metadatas=None may read back {} or None: both mean "no metadata"
                s = {u: (v[0], v[1] if v[1] else {}, v[2]) for u, v in s.items()}
                d = _diff(s, want)
                outs.append((loss if any(u not in s for u in want) else wrong)(f"{when}: {d}") if d else ok()); labels.append(f"{when} rows")
                if c.count() != 21: outs.append(wrong(f"{when}: count() {c.count()}, expected 21")); labels.append(f"{when} count")
                r_old = c.query(vectors=X[3], k=21, include=["distances"])
                r_new = c.query(vectors=Y[0], k=21, include=["distances"])
                probs = []
                if r_old.ids.count("id3") != 1 or r_new.ids.count("id3") != 1: probs.append(f"id3 returned {r_old.ids.count('id3')}/{r_new.ids.count('id3')} times")
                if r_new.ids and (r_new.ids[0] != "id3" or r_new.distances[0] > 1e-4): probs.append(f"query for the new vector -> {r_new.ids[0]} at {r_new.distances[0]:.3g}")
                if "id3" in r_old.ids and r_old.distances[r_old.ids.index("id3")] < 1e-4: probs.append("the old vector of id3 is still found")
                if len(r_old.ids) != 21: probs.append(f"{len(r_old.ids)} results for k=21 over 21 rows")
                outs.append(wrong(f"{when}: {'; '.join(probs)}") if probs else ok()); labels.append(f"{when} query")
            except Exception as e: outs.append(unexpected(e, f"{when}: ")); labels.append(when)
        db.close()
    return worst(outs, labels)


@case(CAT)
def coll_update_missing_id(t):
    """update(['a', 'zz'], metadatas=...) with 'zz' missing: a CollectionError naming 'zz', 'a' unchanged, log unchanged;
    update with nothing to change: a clear error; update of metadata only keeps the vector and document; of the vector only keeps
    the metadata and document."""
    outs, labels = [], []
    with _db(t) as db:
        c = _vc(db)
        X = make_data(2, D, seed=10)
        c.add(ids=["a", "b"], vectors=X, metadatas=[{"k": 1}, {"k": 2}], documents=["da", "db"])
        outs.append(_refused(c, lambda: c.update(ids=["a", "zz"], metadatas=[{"k": 9}, {"k": 9}]), ["'zz'", ("no row", "missing", "not", "exist")]))
        labels.append("missing id")
        outs.append(_refused(c, lambda: c.update(ids=["a"]), [("documents", "vectors", "metadatas", "nothing")])); labels.append("nothing given")
        outs.append(_refused(c, lambda: c.update(ids=["a", "b"], metadatas=[{"k": 9}]), [("2", "1", "one")])); labels.append("count mismatch")
        try:
            c.update(ids=["a"], metadatas=[{"k": 5}])
            Y = make_data(1, D, seed=11)
            c.update(ids="b", vectors=Y[0])
            s = _snap(c)
            want = {"a": (X[0].tobytes(), {"k": 5}, "da"), "b": (Y[0].tobytes(), {"k": 2}, "db")}
            d = _diff(s, want)
            outs.append(wrong(f"partial updates: {d}: {short({u: v[1:] for u, v in s.items()})}") if d else ok())
        except Exception as e: outs.append(unexpected(e, "partial update: "))
        labels.append("partial updates")
    return worst(outs, labels)


@case(CAT)
def coll_generated_ids(t):
    """add without ids returns one new distinct non-empty string id per row, in order; get(those ids) gives back each row's own
    vector; the ids are the same after reopening; a second add without ids makes ids distinct from the first."""
    outs, labels = [], []
    X = make_data(50, D, seed=12)
    with _db(t) as db:
        c = _vc(db)
        try:
            a = c.add(vectors=X[:25]); b = c.add(vectors=X[25:])
        except Exception as e: return unexpected(e)
        ids = list(a) + list(b)
        if not (all(isinstance(u, str) and u for u in ids) and len(set(ids)) == 50):
            return wrong(f"generated ids are not 50 distinct non-empty strings: {short(ids, 100)}")
        want = {u: X[i].tobytes() for i, u in enumerate(ids)}
        for when in ("live", "reopened"):
            if when == "reopened": db.close(); db = mc().connect(t.tmp / "db"); c = db.get_collection("v")
            try:
                s = {u: v[0] for u, v in _snap(c).items()}
                d = _diff(s, want)
                outs.append(loss(f"{when}: {d}") if d else ok())
            except Exception as e: outs.append(unexpected(e, f"{when}: "))
            labels.append(when)
        db.close()
    return worst(outs, labels)


# ---------------------------------------------------------------- vectors and metadata
@case(CAT)
def coll_bad_vectors(t):
    """add/upsert/update/query with vectors of the wrong dimension, NaN, infinity, ragged rows, no rows, 3-D, strings, or fewer
    vectors than ids: a clear error naming the problem (dimension, NaN/infinity, rows), nothing applied."""
    outs, labels = [], []
    with _db(t) as db:
        c = _vc(db)
        c.add(ids=["a"], vectors=make_data(1, D, seed=13))
        good = make_data(2, D, seed=14)
        nan = good.copy(); nan[1, 3] = np.nan
        inf = good.copy(); inf[0, 0] = np.inf
        cases = [("dimension 7", make_data(2, 7), [("8", "dimension")]),
                 ("dimension 9", make_data(2, 9), [("8", "dimension")]),
                 ("NaN", nan, ["nan"]),
                 ("inf", inf, [("inf", "infinit")]),
                 ("ragged", [[1.0] * D, [1.0] * (D - 1)], [("length", "ragged", "rows", "dimension")]),
                 ("strings", [["x"] * D, ["y"] * D], [("number", "numeric")]),
                 ("3-D", np.ones((2, 1, D)), [("shape", "rows", "dimension")])]
        for label, V, words in cases:
            outs.append(_refused(c, lambda: c.add(ids=["n1", "n2"], vectors=V), words)); labels.append(f"add {label}")
            outs.append(_refused(c, lambda: c.upsert(ids=["a", "n2"], vectors=V), words)); labels.append(f"upsert {label}")
        outs.append(_refused(c, lambda: c.add(ids=["n1", "n2"], vectors=np.zeros((0, D))), [("rows", "shape", "empty", "no vectors")])); labels.append("no rows")
        outs.append(_refused(c, lambda: c.add(ids=["n1", "n2", "n3"], vectors=good), [("3", "2")])); labels.append("3 ids 2 vectors")
        outs.append(_refused(c, lambda: c.update(ids=["a"], vectors=nan[1]), ["nan"])); labels.append("update NaN")
        outs.append(_refused(c, lambda: c.add(ids=["n1"]), [("vectors", "documents")])); labels.append("no vectors")
        for label, q, words in (("query dim 7", np.ones(7), [("8", "dimension")]), ("query NaN", nan[1], ["nan"])):
            outs.append(expect_error(lambda: c.query(vectors=q, k=1), words=words)); labels.append(label)
    return worst(outs, labels)


@case(CAT)
def coll_reserved_metadata(t):
    """Metadata using the reserved keys 'mvdb:id' or 'mvdb:document' (add, upsert, update), a non-dict metadata, or a count that
    is not one per row: a CollectionError naming the key (or the problem), nothing applied; rows read back carry only the user's
    metadata (no 'mvdb:' key leaks into get or query)."""
    outs, labels = [], []
    with _db(t) as db:
        c = _vc(db)
        c.add(ids=["a"], vectors=make_data(1, D, seed=15), metadatas=[{"u": 1}], documents=["doc a"])
        X = make_data(2, D, seed=16)
        for key in ("mvdb:id", "mvdb:document", "mvdb:other"):
            metas = [{"u": 2}, {key: "evil"}]
            outs.append(_refused(c, lambda: c.add(ids=["n1", "n2"], vectors=X, metadatas=metas), [key, "reserved"])); labels.append(f"add {key}")
            outs.append(_refused(c, lambda: c.upsert(ids=["a", "n2"], vectors=X, metadatas=metas), [key, "reserved"])); labels.append(f"upsert {key}")
            outs.append(_refused(c, lambda: c.update(ids=["a"], metadatas=[{key: "x"}]), [key, "reserved"])); labels.append(f"update {key}")
        outs.append(_refused(c, lambda: c.add(ids=["n1", "n2"], vectors=X, metadatas=["m", "n"]), [("dict", "metadata")])); labels.append("non-dict")
        outs.append(_refused(c, lambda: c.add(ids=["n1", "n2"], vectors=X, metadatas=[{"u": 1}]), [("1", "2", "one")])); labels.append("one for two")
        try:
            g = c.get(ids=["a"]); q = c.query(vectors=X[0], k=1)
            leaks = [m for m in (g.metadatas or []) + (q.metadatas or []) if any(str(k).startswith("mvdb:") for k in (m or {}))]
            outs.append(wrong(f"reserved keys leak into results: {short(leaks)}") if leaks or g.metadatas != [{"u": 1}] else ok())
        except Exception as e: outs.append(unexpected(e))
        labels.append("no leak")
    return worst(outs, labels)


# ---------------------------------------------------------------- collections and names
@case(CAT)
def coll_bad_names(t):
    """create/get/delete_collection with '../x', '..', '', 'a/b', '/abs', '.hidden', 64 characters, a space, None or 5: a
    CollectionError naming the name; no directory made inside or outside the database, nothing deleted; a 63-character name works."""
    outs, labels = [], []
    outside = t.tmp / "x"
    with _db(t) as db:
        c = _vc(db, name="keep"); c.add(ids=["a"], vectors=make_data(1, D))
        before_dirs = sorted(p.name for p in t.tmp.iterdir())
        before_db = sorted(p.name for p in (t.tmp / "db").iterdir())
        for name in ("../x", "..", "", "a/b", str(outside), ".hidden", "n" * 64, "a b", None, 5, "keep/../x"):
            for op, call in (("create", lambda: db.create_collection(name, embedding=None, dimension=D)),
                             ("get", lambda: db.get_collection(name)), ("delete", lambda: db.delete_collection(name))):
                o = expect_error(call, words=[("name", "collection")], types=_errtypes())
                outs.append(o); labels.append(f"{op} {name!r:.20}")
        after_dirs = sorted(p.name for p in t.tmp.iterdir())
        after_db = sorted(p.name for p in (t.tmp / "db").iterdir())
        if after_dirs != before_dirs or after_db != before_db or outside.exists():
            outs.append(wrong(f"directories changed: {before_dirs}/{before_db} -> {after_dirs}/{after_db}")); labels.append("no dirs")
        try:
            if db.list_collections() != ["keep"] or db.get_collection("keep").count() != 1: outs.append(loss(f"collections now {db.list_collections()}"))
            else: outs.append(ok())
        except Exception as e: outs.append(unexpected(e))
        labels.append("keep intact")
        try:
            long = "L" * 63
            db.create_collection(long, embedding=None, dimension=D).add(ids=["z"], vectors=make_data(1, D))
            outs.append(ok() if db.get_collection(long).count() == 1 else wrong("63-character name: row not there"))
        except Exception as e: outs.append(unexpected(e, "63-character name: "))
        labels.append("63 chars")
    return worst(outs, labels)


@case(CAT)
def coll_delete_then_get(t):
    """delete_collection('v'): get_collection('v') -> a CollectionError naming 'v'; its old handle refuses writes clearly (reads:
    a clear error or the old rows); creating 'v' again gives an empty collection (no row of the old one comes back, also after
    reopening); deleting a missing collection is a clear error; the other collection is untouched."""
    outs, labels = [], []
    with _db(t) as db:
        v = _vc(db); v.add(ids=["a", "b"], vectors=make_data(2, D, seed=17))
        w = _vc(db, name="w"); w.add(ids=["k"], vectors=make_data(1, D, seed=18))
        try: db.delete_collection("v")
        except Exception as e: return unexpected(e, "delete_collection: ")
        outs.append(expect_error(lambda: db.get_collection("v"), words=["'v'"], types=_errtypes())); labels.append("get")
        outs.append(expect_error(lambda: v.add(ids=["c"], vectors=make_data(1, D)), words=[("closed", "deleted")], types=_errtypes()))
        labels.append("old handle write")
        for label, call in (("old handle count", lambda: v.count()), ("old handle get", lambda: v.get()),
                            ("old handle query", lambda: v.query(vectors=make_data(1, D)[0], k=2))):
            outs.append(expect_error(call, words=[("closed", "deleted")], accept=lambda r: ok("answered"))); labels.append(label)
        outs.append(expect_error(lambda: db.delete_collection("v"), words=["'v'"], types=_errtypes())); labels.append("delete again")
        try:
            v2 = _vc(db)
            n = v2.count(); g = v2.get(ids=["a", "b"]).ids
            outs.append(ok() if n == 0 and g == [] else wrong(f"the new 'v' holds {n} rows, get(['a', 'b']) -> {g}"))
        except Exception as e: outs.append(unexpected(e, "create again: "))
        labels.append("recreated empty")
    with _db(t) as db:
        try:
            n, k = db.get_collection("v").count(), db.get_collection("w").get().ids
            outs.append(ok() if n == 0 and k == ["k"] and db.list_collections() == ["v", "w"] else wrong(f"after reopening: v {n} rows, w {k}, {db.list_collections()}"))
        except Exception as e: outs.append(unexpected(e, "reopen: "))
        labels.append("reopened")
    return worst(outs, labels)


@case(CAT)
def coll_model_mismatch(t):
    """get_collection with another embedding than the collection's: a vector collection asked for 'all-MiniLM-L6-v2', a text
    collection (default model; creating it does not load the model) asked for another model or for None: a CollectionError naming
    the collection's model or vectors; get_or_create_collection with another embedding or dimension is refused too; documents
    given to a vector collection are refused clearly; asking for the right one works. No model is loaded by any of it."""
    m = mc()
    outs, labels, MODEL_LOADED = [], [], []
    real = m._load_model
    def spy(name):
        MODEL_LOADED.append(name)
        raise RuntimeError(f"the case forbids loading a model ({name})")
    m._load_model = spy
    try:
        with _db(t) as db:
            v = _vc(db)
            try: tc = db.create_collection("t")
            except Exception as e: return unexpected(e, "create_collection('t') (default model): ")
            outs.append(ok() if tc.config["dimension"] == 384 else wrong(f"the text collection has dimension {tc.config['dimension']}")); labels.append("text made")
            for label, call, words in (
                    ("vector asked for MiniLM", lambda: db.get_collection("v", embedding=m.DEFAULT_MODEL), [("vectors", "embedding=none", "without a model"), m.DEFAULT_MODEL]),
                    ("text asked for other", lambda: db.get_collection("t", embedding="sentence-transformers/all-mpnet-base-v2"), [m.DEFAULT_MODEL, "all-mpnet-base-v2"]),
                    ("text asked for None", lambda: db.get_collection("t", embedding=None), [m.DEFAULT_MODEL, ("none", "vectors")]),
                    ("get_or_create other model", lambda: db.get_or_create_collection("t", embedding="other-model"), [m.DEFAULT_MODEL]),
                    ("get_or_create other dimension", lambda: db.get_or_create_collection("v", embedding=None, dimension=D + 1), ["dimension"]),
                    ("documents to vectors", lambda: v.add(ids=["d"], documents=["some text"]), [("vectors", "model")])):
                outs.append(expect_error(call, words=words, types=_errtypes())); labels.append(label)
            for label, call in (("right model", lambda: db.get_collection("t", embedding=m.DEFAULT_MODEL)),
                                ("right None", lambda: db.get_collection("v", embedding=None)),
                                ("get_or_create same", lambda: db.get_or_create_collection("v", embedding=None, dimension=D))):
                try: call(); outs.append(ok())
                except Exception as e: outs.append(unexpected(e))
                labels.append(label)
    finally: m._load_model = real
    if MODEL_LOADED: outs.append(wrong(f"a model was loaded: {MODEL_LOADED}")); labels.append("no model loaded")
    return worst(outs, labels)


# ---------------------------------------------------------------- arguments of reads
@case(CAT)
def coll_query_bad_args(t):
    """query with k=0, k=-1, k=2.5, k='3', include=['bogus'], include=['ids'], texts and vectors both, neither, text on a vector
    collection, nprobe=0; get with include=['distances']: a clear error naming the argument. k beyond the count gives every row;
    a query of an empty collection gives no rows; a 1-D vector gives one Result, a 2-D batch a list."""
    outs, labels = [], []
    with _db(t) as db:
        c = _vc(db)
        e = _vc(db, name="empty")
        X = make_data(5, D, seed=19)
        c.add(ids=[f"r{i}" for i in range(5)], vectors=X)
        q = X[0]
        for label, call, words in (("k=0", lambda: c.query(vectors=q, k=0), ["k"]), ("k=-1", lambda: c.query(vectors=q, k=-1), ["k"]),
                                   ("k=2.5", lambda: c.query(vectors=q, k=2.5), ["k"]), ("k='3'", lambda: c.query(vectors=q, k="3"), ["k"]),
                                   ("include bogus", lambda: c.query(vectors=q, include=["bogus"]), ["bogus"]),
                                   ("include ids", lambda: c.query(vectors=q, include=["ids", "distances"]), ["'ids'"]),
                                   ("get include distances", lambda: c.get(include=["distances"]), ["distances"]),
                                   ("both", lambda: c.query("text", vectors=q), [("texts", "vectors")]),
                                   ("neither", lambda: c.query(), [("texts", "vectors")]),
                                   ("text to vectors", lambda: c.query("hello"), [("vectors", "model")]),
                                   ("nprobe=0", lambda: c.query(vectors=q, nprobe=0), ["nprobe"])):
            outs.append(expect_error(call, words=words)); labels.append(label)
        try:
            r = c.query(vectors=q, k=50)
            outs.append(ok() if sorted(r.ids) == [f"r{i}" for i in range(5)] and r.ids[0] == "r0" and len(r.distances) == 5
                        else wrong(f"k=50 over 5 rows -> {short(r.ids)}")); labels.append("k beyond count")
            r = e.query(vectors=q, k=3)
            outs.append(ok() if len(r.ids) == 0 else wrong(f"empty collection -> {short(r.ids)}")); labels.append("empty")
            one, many = c.query(vectors=q, k=2), c.query(vectors=X[:3], k=2)
            shape_ok = hasattr(one, "ids") and isinstance(many, list) and len(many) == 3 and [m.ids[0] for m in many] == ["r0", "r1", "r2"]
            outs.append(ok() if shape_ok else wrong(f"1-D -> {type(one).__name__}, 2-D -> {short(many)}")); labels.append("one vs batch")
        except Exception as ex: outs.append(unexpected(ex)); labels.append("answers")
    return worst(outs, labels)


@case(CAT)
def coll_get_limit_offset(t):
    """get(limit=-1), get(offset=-1), peek(-1), get(limit=2.5), get(limit='2'): a clear error naming limit/offset/n (not Python's
    slice semantics: limit=-1 must not silently drop the last row, offset=-1 must not return the last row alone); limit=0 gives no
    rows; limit and offset page through the rows in the order added."""
    outs, labels = [], []
    with _db(t) as db:
        c = _vc(db)
        ids = [f"r{i}" for i in range(6)]
        c.add(ids=ids, vectors=make_data(6, D, seed=20))
        for label, call, words in (("limit=-1", lambda: c.get(limit=-1), ["limit"]), ("offset=-1", lambda: c.get(offset=-1), ["offset"]),
                                   ("peek(-1)", lambda: c.peek(-1), [("n", "limit")]), ("limit=2.5", lambda: c.get(limit=2.5), ["limit"]),
                                   ("limit='2'", lambda: c.get(limit="2"), ["limit"])):
            outs.append(expect_error(call, words=words, accept=lambda r: wrong(f"no error; returned ids {short(r.ids, 80)}"))); labels.append(label)
        try:
            pages = [c.get(limit=2, offset=o).ids for o in (0, 2, 4, 6)]
            z = c.get(limit=0).ids
            outs.append(ok() if pages == [ids[0:2], ids[2:4], ids[4:6], []] and z == [] else wrong(f"pages {pages}, limit=0 -> {z}"))
        except Exception as e: outs.append(unexpected(e))
        labels.append("paging")
    return worst(outs, labels)


# ---------------------------------------------------------------- concurrency within a process
@case(CAT, fresh=True, cost=3, timeout=60)
def coll_upsert_atomic_readers(t):
    """One thread upserts all 120 rows of a collection in one call, round after round (each round's vectors = base + round); two
    reader threads get() every row and query with k=120 meanwhile (~1.5 s, switch interval 10 us): every answer holds each id
    exactly once, and one get's vectors all come from one round (an upsert is one change)."""
    sys.setswitchinterval(1e-5)
    n = 120
    ids = [f"u{i}" for i in range(n)]
    X = make_data(n, D, seed=21, offset=3)
    want = sorted(ids)
    bad, errors, stop, counts = [], [], threading.Event(), dict(rounds=0, reads=0, bad=0)
    lock = threading.Lock()
    with _db(t) as db:
        c = _vc(db, metric="euclidean")
        c.add(ids=ids, vectors=X)
        order = {u: i for i, u in enumerate(ids)}
        def writer():
            r = 0
            while not stop.is_set():
                r += 1
                c.upsert(ids=ids, vectors=X + np.float32(r))
                counts["rounds"] = r
        def reader(kind):
            q = X[0] + 1
            while not stop.is_set():
                if kind == "get":
                    g = c.get(include=["vectors"])
                    got, V = g.ids, np.asarray(g.vectors)
                else:
                    g = c.query(vectors=q, k=n, include=["vectors"])
                    got, V = g.ids, np.asarray(g.vectors)
                with lock:
                    counts["reads"] += 1
                    if sorted(got) != want:
                        counts["bad"] += 1
                        if len(bad) >= 3: continue
                        missing = sorted(set(want) - set(got)); twice = sorted({u for u in got if got.count(u) > 1})
                        bad.append(f"{kind}: {len(got)} ids, missing {missing[:3]}, twice {twice[:3]}")
                    elif len(got) == n:
                        shift = V - X[[order[u] for u in got]]
                        if not np.allclose(shift, shift[0, 0], atol=1e-3):
                            counts["bad"] += 1
                            if len(bad) < 3: bad.append(f"{kind}: one answer mixes rounds {sorted(set(np.round(shift[:, 0]).astype(int).tolist()))[:4]}")
        def run(f, *a):
            def g():
                try: f(*a)
                except BaseException as e: errors.append(e); stop.set()
            th = threading.Thread(target=g, daemon=True); th.start(); return th
        ths = [run(writer), run(reader, "get"), run(reader, "query")]
        t0 = time.time()
        while time.time() - t0 < 1.5 and not stop.is_set(): time.sleep(0.05)
        stop.set()
        for th in ths: th.join(20)
        if any(th.is_alive() for th in ths): return crash("a thread did not finish within 20 s of being told to stop")
        outs, labels = [], []
        if errors: outs.append(unexpected(errors[0], f"{len(errors)} exception(s) in threads: ")); labels.append("exceptions")
        outs.append(wrong(f"{counts['bad']} inconsistent answers in {counts['reads']} reads: {'; '.join(bad)}") if bad else ok()); labels.append("answers")
        if counts["rounds"] < 3 or counts["reads"] < 6: outs.append(unclear(f"too little overlap to judge: {counts}")); labels.append("overlap")
        try:
            s = _snap(c)
            last = counts["rounds"]
            okv = sorted(s) == want and all(np.array_equal(np.frombuffer(s[u][0], np.float32), X[order[u]] + np.float32(last)) for u in ids)
            outs.append(ok() if okv else wrong(f"after {last} rounds the rows are not the last round's"))
        except Exception as e: outs.append(unexpected(e, "final get: "))
        labels.append("final")
    o = worst(outs, labels)
    if o.kind == OK: o.detail += f"; {counts['rounds']} upsert rounds, {counts['reads']} reads"
    return o


# ---------------------------------------------------------------- processes: kill -9, read-only, second writer
KILL_CHILD = r'''
import json, sys
sys.path.insert(0, sys.argv[1])
import numpy as np
import minivecdb, minivecdb.collection as mc
mc.CHECKPOINT_BYTES = int(sys.argv[4])  # checkpoint every few kB so that kills land inside checkpoints too
ops = json.load(open(sys.argv[3]))
db = minivecdb.connect(sys.argv[2])
c = db.get_or_create_collection("k", embedding=None, dimension=4, metric="euclidean")
print("READY", flush=True)
for i, (kind, ids, V, metas) in enumerate(ops):
    if kind == "upsert": c.upsert(ids=ids, vectors=np.array(V, np.float32), metadatas=metas)
    elif kind == "add": c.add(ids=ids, vectors=np.array(V, np.float32), metadatas=metas)
    elif kind == "update": c.update(ids=ids, metadatas=metas)
    else: c.delete(ids=ids)
    print(i, flush=True)
print("DONE", flush=True)
'''


def _kill_ops(n, seed):
    "n valid calls (upsert, add of new ids, update of existing ids, delete) and the state after each: states[i] = after i calls."
    rng = random.Random(seed)
    state, states, ops, fresh = {}, [{}], [], 0
    pool = [f"id{j}" for j in range(40)]
    for i in range(n):
        kind = rng.choice(["upsert", "upsert", "add", "update", "delete"])
        if kind == "update" and not state: kind = "upsert"
        if kind == "upsert":
            ids = rng.sample(pool, rng.randint(1, 6))
        elif kind == "add":
            ids = [f"new{fresh + j}" for j in range(rng.randint(1, 4))]; fresh += len(ids)
        elif kind == "update":
            ids = rng.sample(sorted(state), min(len(state), rng.randint(1, 3)))
        else:
            ids = rng.sample(pool + sorted(state), rng.randint(1, 4))
            ids = list(dict.fromkeys(ids))
        V = [[float(rng.randint(-100, 100)) for _ in range(4)] for _ in ids] if kind in ("upsert", "add") else None
        metas = [{"op": i, "j": j} for j in range(len(ids))] if kind != "delete" else None
        ops.append((kind, ids, V, metas))
        if kind in ("upsert", "add"): state.update({u: (tuple(v), m) for u, v, m in zip(ids, V, metas)})
        elif kind == "update": state.update({u: (state[u][0], m) for u, m in zip(ids, metas)})
        else:
            for u in ids: state.pop(u, None)
        states.append(dict(state))
    return ops, states


def _state_of(c):
    r = c.get(include=["metadatas", "vectors"])
    return {u: (tuple(float(x) for x in r.vectors[i]), r.metadatas[i]) for i, u in enumerate(r.ids)}, len(r.ids)


@case(CAT, fresh=True, cost=8, timeout=90)
def coll_sigkill_writer(t):
    """A child process makes 40 calls (upserts, adds, metadata updates, deletes) on a vector collection, printing each call's number
    once it has returned, with a checkpoint every 1 kB (every few calls); it is SIGKILLed at 4 moments (just after opening, after
    4, 15 and 33 acknowledged calls, plus 0-4 ms). Reopened, the collection holds exactly the acknowledged calls' result, or that
    plus the call in flight (whole); the same after closing and reopening again."""
    import signal
    n = 40
    ops, states = _kill_ops(n, seed=22)
    (t.tmp / "ops.json").write_text(json.dumps(ops))
    outs, labels = [], []
    rng = random.Random(23)
    inflight_whole = 0
    for point in (0, 4, 15, 33):
        path = t.tmp / f"db{point}"
        p = subprocess.Popen([sys.executable, "-c", KILL_CHILD, str(LIB), str(path), str(t.tmp / "ops.json"), "1024"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        acked, done = 0, False
        try:
            deadline = time.time() + 40
            line = p.stdout.readline().strip()
            if line != "READY": return unclear(f"the writing child did not start: {line!r} {p.stderr.read()[-300:]!r}")
            while acked < point and time.time() < deadline:
                line = p.stdout.readline().strip()
                if not line: break
                if line == "DONE": done = True; break
                acked = int(line) + 1
            time.sleep(rng.uniform(0, 0.004))
            p.send_signal(signal.SIGKILL)
            p.wait(timeout=20)
            rest, err = p.stdout.read(), p.stderr.read()  # through the buffer readline filled (communicate() reads past it)
        finally:
            if p.poll() is None: p.kill(); p.wait()
        for line in rest.split():
            if line == "DONE": done = True
            elif line.isdigit(): acked = max(acked, int(line) + 1)
        if p.returncode != -signal.SIGKILL and not done:
            outs.append(unclear(f"kill point {point}: the child ended with {p.returncode} before the kill: {err[-200:]!r}")); labels.append(f"kill {point}"); continue
        label = f"kill after {acked} acked"
        for when in ("reopened", "reopened twice"):
            try:
                db = mc().connect(path)
                try:
                    names = db.list_collections()
                    if "k" not in names:
                        got, cnt = {}, 0
                    else: got, cnt = _state_of(db.get_collection("k"))
                finally: db.close()
            except Exception as e:
                outs.append(unexpected(e, f"{when}: ")); labels.append(f"{label} {when}"); break
            want, inflight = states[acked], states[min(acked + 1, n)]
            if got == want or got == inflight:
                if got != want and when == "reopened": inflight_whole += 1
                outs.append(ok() if cnt == len(got) else wrong(f"{when}: {cnt} rows for {len(got)} ids")); labels.append(f"{label} {when}")
                continue
            d = _diff(got, want)
            lost = [u for u in want if u not in got or (got[u] != want[u] and got.get(u) != inflight.get(u))]
            kind = loss if lost else wrong
            outs.append(kind(f"{when}: the state is neither the {acked} acknowledged calls' nor with call {acked} ({ops[min(acked, n - 1)][0]}) whole: {d}"))
            labels.append(f"{label} {when}")
    o = worst(outs, labels)
    if o.kind == OK: o.detail += f"; acknowledged calls at the kills {[l.split()[2] for l in labels[::2]]}, the call in flight found whole {inflight_whole} time(s)"
    return o


READER_CHILD = r'''
import json, sys
sys.path.insert(0, sys.argv[1])
import numpy as np
import minivecdb
from minivecdb.collection import CollectionError
def out(**kw): print(json.dumps(kw), flush=True)
def err(step, e): out(step=step, type=type(e).__name__, collerr=isinstance(e, (CollectionError, PermissionError)), msg=str(e))
db = minivecdb.connect(sys.argv[2], read_only=True)
c = db.get_collection("v")
def state():
    r = c.get(include=["metadatas"])
    return dict(zip(r.ids, r.metadatas))
out(step="open", rows=state(), count=c.count())
for step, call in (("add", lambda: c.add(ids=["ro"], vectors=np.ones((1, 8)))),
                   ("delete", lambda: c.delete(ids=["a0"])),
                   ("create", lambda: db.create_collection("w", embedding=None, dimension=3)),
                   ("delete_collection", lambda: db.delete_collection("v"))):
    try: call(); out(step=step, refused=False)
    except Exception as e: err(step, e)
for line in sys.stdin:
    try: c.refresh(); out(step=line.strip(), rows=state(), count=c.count())
    except Exception as e: err(line.strip(), e)
'''


@case(CAT, fresh=True, cost=3, timeout=60)
def coll_read_only_process(t):
    """A second process opens the database read_only while this one writes it: it sees every acknowledged write; its add, delete,
    create_collection and delete_collection are refused with a clear error saying read-only, and leave no trace; refresh() then
    sees later upserts, updates and deletes, before and after the writer checkpoints."""
    outs, labels = [], []
    with _db(t) as db:
        c = _vc(db)
        c.add(ids=[f"a{i}" for i in range(10)], vectors=make_data(10, D, seed=24), metadatas=[{"i": i} for i in range(10)])
        c.update(ids=["a1"], metadatas=[{"i": 100}])
        c.delete(ids=["a2"])
        def model():
            r = c.get(include=["metadatas"]); return dict(zip(r.ids, r.metadatas))
        p = subprocess.Popen([sys.executable, "-c", READER_CHILD, str(LIB), str(t.tmp / "db")], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            def read():
                line = p.stdout.readline()
                if not line: raise EOFError(p.stderr.read()[-300:])
                return json.loads(line)
            try:
                first = read()
                want = model()
                outs.append(ok() if first.get("rows") == want else loss(f"the reader sees {_diff(first.get('rows') or {}, want)}"))
                labels.append("open sees acked")
                for step in ("add", "delete", "create", "delete_collection"):
                    r = read()
                    if r.get("refused") is False: outs.append(wrong(f"a read-only {step} succeeded"))
                    elif not r.get("collerr"): outs.append(unclear(f"{r.get('type')}: {r.get('msg', '')[:160]!r}"))
                    else: outs.append(judge_message(r["msg"], words=[("read_only", "read-only", "read only")]))
                    labels.append(f"ro {step}")
                trace = [u for u in ("ro",) if u in model()] + (["v deleted"] if "v" not in db.list_collections() else []) + \
                        (["w made"] if (t.tmp / "db" / "w").exists() else []) + (["a0 gone"] if "a0" not in model() else [])
                outs.append(loss(f"read-only writes left traces: {trace}") if trace else ok()); labels.append("no trace")
                steps = (("after upserts", lambda: (c.upsert(ids=["a3", "n1"], vectors=make_data(2, D, seed=25), metadatas=[{"i": 33}, {"i": 1000}]),
                                                   c.update(ids=["a4"], metadatas=[{"i": 44}]), c.delete(ids=["a5"]))),
                         ("after checkpoint", lambda: (c.checkpoint(), c.add(ids=["n2"], vectors=make_data(1, D, seed=26), metadatas=[{"i": 2000}]))),
                         ("after close", lambda: (c.delete(ids=["a6"]), c.close())))
                for label, change in steps:
                    change()
                    if c.closed: c = db.get_collection("v")
                    want = model()
                    p.stdin.write(label + "\n"); p.stdin.flush()
                    r = read()
                    if "rows" not in r: outs.append(unexpected(RuntimeError(f"{r.get('type')}: {r.get('msg')}"), "refresh: "))
                    else: outs.append(ok() if r["rows"] == want and r["count"] == len(want) else wrong(f"refresh {label}: {_diff(r['rows'], want)} (count {r['count']})"))
                    labels.append(f"refresh {label}")
            except (EOFError, ValueError) as e: outs.append(unclear(f"the reader process failed: {str(e)!r:.300}")); labels.append("reader")
        finally:
            with contextlib.suppress(Exception): p.stdin.close()
            with contextlib.suppress(Exception): p.wait(20)
            if p.poll() is None: p.kill(); p.wait()
    return worst(outs, labels)


WRITER_CHILD = r'''
import json, sys
sys.path.insert(0, sys.argv[1])
import numpy as np
import minivecdb
from minivecdb.collection import DatabaseLockedError
try:
    db = minivecdb.connect(sys.argv[2])
    c = db.get_collection("v")
    c.add(ids=["second"], vectors=np.ones((1, 8)))
    print(json.dumps(dict(opened=True, count=c.count())), flush=True); db.close()
except Exception as e:
    print(json.dumps(dict(opened=False, type=type(e).__name__, locked=isinstance(e, DatabaseLockedError), msg=str(e))), flush=True)
'''


@case(CAT, fresh=True, cost=2, timeout=60)
def coll_second_writer_process(t):
    """While this process writes a database, another process's connect(path) (for writing) gets DatabaseLockedError naming this
    pid, and the rows are untouched; within this process connect() again is the same writer (no self-lockout); after close(), the
    other process may write."""
    outs, labels = [], []
    with _db(t) as db:
        c = _vc(db)
        c.add(ids=["a"], vectors=make_data(1, D, seed=27))
        try: outs.append(ok() if mc().connect(t.tmp / "db") is db else wrong("connect() twice in one process gave two Database objects"))
        except Exception as e: outs.append(unexpected(e, "connect again in this process: "))
        labels.append("same process")
        r, lines = _child(WRITER_CHILD, t.tmp / "db")
        res = lines[-1] if lines else {}
        if not res: outs.append(unclear(f"the second process printed nothing: {r.stderr[-300:]!r}"))
        elif res["opened"]: outs.append(wrong(f"a second writing process opened the database and wrote (count {res['count']})"))
        elif not res["locked"]: outs.append(unclear(f"{res['type']} instead of DatabaseLockedError: {res['msg'][:160]!r}"))
        else: outs.append(judge_message(res["msg"], words=[str(os.getpid()), ("another process", "lock", "writing")]))
        labels.append("refused")
        try:
            s = c.get().ids
            outs.append(ok() if s == ["a"] else loss(f"rows after the refusal: {s}"))
            c.add(ids=["b"], vectors=make_data(1, D, seed=28))
        except Exception as e: outs.append(unexpected(e, "writer after the refusal: "))
        labels.append("writer intact")
    r, lines = _child(WRITER_CHILD, t.tmp / "db")
    res = lines[-1] if lines else {}
    outs.append(ok() if res.get("opened") and res.get("count") == 3 else wrong(f"after close, the other process: {short(res or r.stderr[-200:])}"))
    labels.append("after close")
    return worst(outs, labels)


# ---------------------------------------------------------------- close and reopen
@case(CAT, cost=1.5)
def coll_reopen_after_close(t):
    """Adds, upserts, updates and deletes on two collections (one trained by optimize() at 1,200 rows, one with documents and
    metadata), then close: after connect again every row comes back bit-exact (vector, metadata, document), count() agrees, and a
    query probing every list finds each probed row itself; the closed database and handles refuse use clearly."""
    outs, labels = [], []
    X = make_data(1200, D, seed=29)
    with _db(t) as db:
        a = _vc(db, name="big", metric="euclidean")
        b = _vc(db, name="small")
        ids = [f"b{i}" for i in range(1200)]
        a.add(ids=ids, vectors=X, metadatas=[{"i": i} for i in range(1200)])
        a.delete(ids=ids[::7])
        a.optimize()
        Y = make_data(30, D, seed=30)
        a.upsert(ids=ids[1:31], vectors=Y, metadatas=[{"i": -i} for i in range(30)])
        a.update(ids=["b500"], metadatas=[{"i": "changed"}])
        b.add(ids=["x", "y", "z"], vectors=make_data(3, D, seed=31), documents=["dx", "dy", "dz"], metadatas=[{"t": "x"}, None, {"t": ["z", 1]}])
        b.delete(ids=["y"])
        want_a, want_b, state = _snap(a), _snap(b), a.state
        db.close()
        outs.append(expect_error(lambda: a.add(ids=["late"], vectors=make_data(1, D)), words=[("closed",)], types=_errtypes())); labels.append("closed handle")
        outs.append(expect_error(lambda: db.get_collection("big"), words=[("closed",)], types=_errtypes())); labels.append("closed db")
    with _db(t) as db:
        try:
            a, b = db.get_collection("big"), db.get_collection("small")
            for name, c, want in (("big", a, want_a), ("small", b, want_b)):
                d = _diff(_snap(c), want)
                outs.append(loss(f"{name}: {d}") if d else ok() if c.count() == len(want) else wrong(f"{name}: count() {c.count()} for {len(want)} rows"))
                labels.append(name)
            if a.state != state: outs.append(wrong(f"state {state!r} before, {a.state!r} after reopening")); labels.append("state")
            probe = [u for u in list(want_a)[::97]]
            V = np.stack([np.frombuffer(want_a[u][0], np.float32) for u in probe])
            res = a.query(vectors=V, k=1, nprobe=10_000)
            miss = [(u, r.ids[:1]) for u, r in zip(probe, res) if r.ids[:1] != [u]]
            outs.append(wrong(f"{len(miss)}/{len(probe)} rows do not find themselves with every list probed: {short(miss[:3])}") if miss else ok())
            labels.append("query")
        except Exception as e: outs.append(unexpected(e, "after reopening: ")); labels.append("reopen")
    return worst(outs, labels)


# ---------------------------------------------------------------- the packaged text model (slow: loads it)
@case(CAT, "slow", cost=15, timeout=120)
def coll_text_collection(t):
    """A text collection with the default model: add documents, query a paraphrase finds the right one first; a document updated
    is embedded again (the old text no longer finds it first); after reopening the same; blank documents are refused clearly."""
    outs, labels = [], []
    docs = ["The cat sat on the warm windowsill.", "Stock markets fell sharply on Monday.", "A recipe for chocolate chip cookies."]
    with _db(t) as db:
        try:
            c = db.create_collection("t")
            c.add(ids=["cat", "stocks", "cookies"], documents=docs)
            r = c.query("baking sweet biscuits", k=3)
            outs.append(ok() if r.ids[0] == "cookies" else wrong(f"'baking sweet biscuits' -> {r.ids}")); labels.append("query")
            c.update(ids=["cat"], documents=["Football match ends in a draw."])
            r = c.query("a kitten resting by the window", k=3)
            s = c.query("soccer game result", k=1)
            outs.append(ok() if s.ids == ["cat"] and r.documents[r.ids.index("cat")].startswith("Football")
                        else wrong(f"after update: soccer -> {s.ids}, kitten -> {r.ids}")); labels.append("update re-embeds")
            outs.append(_refused(c, lambda: c.add(ids=["blank"], documents=["   "]), [("blank", "empty", "document")])); labels.append("blank")
        except Exception as e: return unexpected(e)
    with _db(t) as db:
        try:
            r = db.get_collection("t").query("soccer game result", k=1)
            outs.append(ok() if r.ids == ["cat"] else loss(f"after reopening: {r.ids}"))
        except Exception as e: outs.append(unexpected(e, "reopen: "))
        labels.append("reopen")
    return worst(outs, labels)
