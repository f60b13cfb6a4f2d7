"""The filter language (minivecdb.filters, nbs/00a_filters.ipynb): `where` trees over columnar metadata, and filtered search.
What must hold: a where is compiled whole before any row is read, and every malformed part (unknown operator, an operand of the
wrong type, a tree nested too deep, a non-string field name) is refused in one sentence naming it, never a raw RecursionError
or TypeError and never a silently empty answer; a valid where selects exactly the rows an independent reading of the language
selects (written here, not imported: JSON kinds kept apart, missing fields matching only negations, dotted paths into
objects, `$contains` on lists and texts), on any mix of kinds, Unicode, after writes, deletes and re-layouts; a filtered
search returns only allowed rows and, with every list probed or with the planner's choice, the exact filtered top k.
The category "filters" is added to `core.CATEGORIES` when this module is imported.
"""
import random, time
import numpy as np
from . import core
from .core import case, ok, wrong, worst, expect_error, make_data, make_index, check_knn, unexpected, short

CAT = "filters"
if CAT not in core.CATEGORIES: core.CATEGORIES = core.CATEGORIES + (CAT,)
D = 6
MISSING = object()


# ---------------------------------------------------------------- an independent reading of the language
def _kind(v):
    if isinstance(v, bool): return "bool"
    if isinstance(v, (int, float)): return "number"
    if isinstance(v, str): return "text"
    if v is None: return "null"
    return "list" if isinstance(v, list) else "object"


def _get(m, path):
    "The value at dotted `path` (a literal key with dots also counts), or MISSING."
    if path in m: return m[path]
    head, _, rest = path.partition(".")
    if rest and isinstance(m.get(head), dict): return _get(m[head], rest)
    return MISSING


def _eq(v, a):
    if v is MISSING or _kind(v) != _kind(a): return False
    return float(v) == float(a) if _kind(v) in ("number", "bool") else v == a


def _op(v, op, a):
    if op == "$eq": return _eq(v, a)
    if op == "$ne": return not _eq(v, a)
    if op == "$in": return any(_eq(v, x) for x in a)
    if op == "$nin": return not any(_eq(v, x) for x in a)
    if op == "$exists": return (v is not MISSING) is a
    if op == "$contains": return (isinstance(v, list) and any(_eq(e, a) for e in v)) or (isinstance(v, str) and isinstance(a, str) and a in v)
    if op == "$not": return not _cond(v, a)
    if v is MISSING or _kind(v) != _kind(a) or _kind(a) not in ("number", "text"): return False
    return {"$gt": v > a, "$gte": v >= a, "$lt": v < a, "$lte": v <= a}[op]


def _cond(v, c):
    if isinstance(c, dict): return all(_op(v, o, a) for o, a in c.items())
    return _op(v, "$in", c) if isinstance(c, list) else _op(v, "$eq", c)


def passes(where, m):
    m = m or {}
    out = True
    for k, c in where.items():
        if k == "$and": out &= all(passes(w, m) for w in c)
        elif k == "$or": out &= any(passes(w, m) for w in c)
        elif k == "$not": out &= not passes(c, m)
        else: out &= _cond(_get(m, k), c)
    return out


# ---------------------------------------------------------------- random metadata and filters
TEXTS = ["a", "B", "é", "e\u0301", "🚀", "向量", "", "a\u0000b", "2014", "Sports"]
SCALARS = [0, 1, -1, 2.5, 2014, 10**15, True, False, None] + TEXTS


def _value(r, depth=0):
    x = r.random()
    if x < 0.12 and depth < 2: return [_value(r, depth + 1) for _ in range(r.randint(0, 3))]
    if x < 0.18 and depth < 2: return {"x": r.choice(SCALARS), "ключ": r.choice(TEXTS)}
    return r.choice(SCALARS)


def _meta(r):
    if r.random() < 0.05: return None
    keys = ["n", "t", "mix", "tags", "obj", "ключ🚀"]
    return {k: (_value(r) if k in ("mix", "obj") else r.randint(0, 9) if k == "n" else r.choice(TEXTS) if k != "tags"
                else [r.choice(TEXTS + [1, 2]) for _ in range(r.randint(0, 3))]) for k in keys if r.random() < 0.75}


FIELDS = ["n", "t", "mix", "tags", "obj", "obj.x", "obj.ключ", "mix.x", "ключ🚀", "absent"]
OPS = ["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists", "$contains", "$not"]


def _condition(r, depth):
    op = r.choice(OPS + ["value", "list"])
    if op == "value": return r.choice(SCALARS)
    if op in ("list", "$in", "$nin"):
        vs = [r.choice(SCALARS) for _ in range(r.randint(0, 3))]
        return vs if op == "list" else {op: vs}
    if op in ("$gt", "$gte", "$lt", "$lte"): return {op: r.choice([0, 1, 2.5, -1, "a", "é", "B", ""])}
    if op == "$exists": return {op: r.random() < 0.5}
    if op == "$not": return {op: _condition(r, depth + 1) if depth < 3 else 1}
    return {op: r.choice(SCALARS)}


def random_where(r, depth=0):
    w = {}
    for _ in range(r.randint(1, 3)):
        x = r.random()
        if x < 0.15 and depth < 3: w[r.choice(["$and", "$or"])] = [random_where(r, depth + 1) for _ in range(r.randint(1, 3))]
        elif x < 0.22 and depth < 3: w["$not"] = random_where(r, depth + 1)
        else: w[r.choice(FIELDS)] = _condition(r, depth)
    return w


def _storage(n, seed):
    L = core.lib()
    r = random.Random(seed)
    metas = [_meta(r) for _ in range(n)]
    s = L.VectorStorage(D)
    s.add_bulk(make_data(n, D, seed=seed), metas)
    return s, metas, r


# ---------------------------------------------------------------- cases
@case(CAT, cost=3, timeout=120)
def filter_random_trees(t):
    """400 random where trees (every operator, $and/$or/$not three deep, mixed kinds in one field, Unicode field names and
    values, dotted paths, lists) over 600 rows written in two batches with deletes and a reordering between: where_mask
    selects exactly the rows the independent reading selects."""
    s, metas, r = _storage(400, 11)
    s.view().where_mask({"n": 1})  # build the columns, then change the rows under them
    L = core.lib()
    more = [_meta(r) for _ in range(200)]
    s.add_bulk(make_data(200, D, seed=12), more)
    for i in range(0, 600, 37): s.delete(i)
    s.permute(np.random.default_rng(3).permutation(np.flatnonzero(s.view().alive)))
    v = s.view()
    rows = [(int(v.row_ids[i]), v.metadata(i)) for i in range(v.n_rows) if v.alive[i]]
    outs, labels = [], []
    for j in range(400):
        w = random_where(r)
        try: got = set(v.row_ids[v.where_mask(w)].tolist())
        except Exception as e: outs.append(unexpected(e)); labels.append(short(w)); continue
        want = {i for i, m in rows if passes(w, m)}
        outs.append(ok() if got == want else wrong(f"{len(got ^ want)} rows differ, e.g. id {sorted(got ^ want)[0]}")); labels.append(short(w))
    return worst(outs, labels)


@case(CAT, cost=2, timeout=120)
def filter_search_exact_topk(t):
    """Filtered searches (shares of 50% down to 0.1%, and a filter matching nothing) on an IVF index: every result is allowed,
    and the default plan and plan='exact' give the exact filtered top 10 (the planner scans exactly or widens the probes);
    a filter matching nothing gives padding (-1), not an error."""
    X = make_data(3000, D, seed=21)
    bucket = np.random.default_rng(5).permutation(3000) % 1000
    s, ix = make_index(X, "cosine", n_clusters=16, metadatas=[{"b": int(b)} for b in bucket])
    Q = make_data(20, D, seed=22)
    outs, labels = [], []
    for limit in (500, 100, 10, 1, 0):
        keep = bucket < limit
        for plan in ("auto", "exact"):
            label = f"b<{limit} {plan}"
            try: ids, d = ix.search_batch(Q, k=10, where={"b": {"$lt": limit}}, plan=plan)
            except Exception as e: outs.append(unexpected(e)); labels.append(label); continue
            bad = [int(i) for i in ids[ids >= 0] if not bucket[int(i)] < limit]
            if bad: outs.append(wrong(f"returned disallowed ids {bad[:3]}")); labels.append(label); continue
            if plan == "exact" or limit <= 100: outs.append(check_knn(ids, d, Q, np.flatnonzero(keep), X[keep], "cosine", 10))
            else: outs.append(ok())
            labels.append(label)
    return worst(outs, labels)


@case(CAT, cost=1, timeout=60)
def filter_malformed(t):
    """Malformed wheres: unknown operators ($regex, $nor, $type), operands of the wrong type ($gt with a list, a bool or null,
    $in with a string, $exists with "yes", $contains with a list, NaN), an object without operators, a non-string or empty
    field name, an empty $or, a string or list as the whole where, an operator where a field belongs: each a one-sentence
    error naming the operator or field, raised before any row is read."""
    s, _, _ = _storage(50, 31)
    v = s.view()
    cases = [({"n": {"$regex": "a"}}, ["$regex"]), ({"$nor": [{"n": 1}]}, ["$nor"]), ({"n": {"$type": "string"}}, ["$type"]),
             ({"n": {"$gt": [1]}}, ["$gt", "n"]), ({"n": {"$gt": True}}, ["$gt"]), ({"n": {"$lte": None}}, ["$lte"]),
             ({"n": {"$in": "abc"}}, ["$in", "list"]), ({"n": {"$exists": "yes"}}, ["$exists"]), ({"tags": {"$contains": ["a"]}}, ["$contains"]),
             ({"n": float("nan")}, ["finite"]), ({"obj": {"x": 1}}, ["obj.x"]), ({7: 1}, ["field"]), ({"": 1}, ["field"]),
             ({"$or": []}, ["$or"]), ("n=1", ["where"]), ([{"n": 1}], ["where"]), ({"$gt": 1}, ["$gt", "field"]),
             ({"n": {"$not": {"$regex": "x"}}}, ["$regex"]), ({"$and": [{"n": 1}, "x"]}, ["where"])]
    outs, labels = [], []
    for w, words in cases:
        outs.append(expect_error(lambda: v.where_mask(w), words)); labels.append(short(w))
    return worst(outs, labels)


@case(CAT, cost=1, timeout=60)
def filter_deep_trees(t):
    """Where trees nested 33, 1,000 and 200,000 levels deep ($not, $and, a field's $not) are refused in one sentence saying how
    deep a where may nest, by the storage and by a search (which keys its filter cache by the where), never a RecursionError;
    32 levels are answered."""
    s, ix = make_index(make_data(200, D, seed=41), "cosine", n_clusters=4, metadatas=[{"n": i % 3} for i in range(200)])
    outs, labels = [], []
    for depth in (33, 1000, 200_000):
        for kind in ("$not", "$and", "field $not"):
            w = {"n": 1} if kind != "field $not" else 1
            for _ in range(depth): w = {"$not": w} if kind == "$not" else {"$and": [w]} if kind == "$and" else {"$not": w}
            if kind == "field $not": w = {"n": w}
            outs.append(expect_error(lambda: s.view().where_mask(w), ["nested"])); labels.append(f"{kind} x{depth} mask")
            outs.append(expect_error(lambda: ix.search_batch(make_data(1, D), k=3, where=w), ["nested"])); labels.append(f"{kind} x{depth} search")
    w = {"n": 1}
    for _ in range(31): w = {"$not": w}
    try: n = int(s.view().where_mask(w).sum()); outs.append(ok() if n == 133 else wrong(f"31 x $not of n=1 matched {n} rows, not the 133 whose n is not 1"))
    except Exception as e: outs.append(unexpected(e))
    labels.append("31 levels answered")
    return worst(outs, labels)


@case(CAT, cost=3, timeout=120)
def filter_huge_in(t):
    """$in and $nin with 1,000,000 values (texts, integers, a mix with booleans and null), and an $or of 20,000 clauses, on 20,000
    rows: the right rows, without a hang (each under the case's timeout)."""
    L = core.lib()
    s = L.VectorStorage(2)
    s.add_bulk(make_data(20_000, 2), [{"id": f"doc-{i}", "n": i, "f": i % 2 == 0} for i in range(20_000)])
    v = s.view()
    outs, labels = [], []
    for label, w, want in (("1M texts", {"id": {"$in": [f"doc-{i}" for i in range(0, 2_000_000, 2)]}}, 10_000),
                           ("1M ints $nin", {"n": {"$nin": list(range(1_000_000))}}, 0),
                           ("mixed", {"n": {"$in": list(range(0, 1_000_000, 4)) + [True, None, "7"]}}, 5_000),
                           ("bools in $in", {"f": {"$in": [True, 1]}}, 10_000),
                           ("20k-clause $or", {"$or": [{"n": i} for i in range(0, 40_000, 2)]}, 10_000)):
        t0 = time.perf_counter()
        try: n = int(v.where_mask(w).sum())
        except Exception as e: outs.append(unexpected(e)); labels.append(label); continue
        took = time.perf_counter() - t0
        outs.append(ok(f"{took:.2f} s") if n == want else wrong(f"{n} rows, expected {want}")); labels.append(label)
    return worst(outs, labels)


@case(CAT, cost=3, timeout=120)
def filter_collection_writes(t):
    """A collection's filters follow its writes: after adds, upserts that change metadata, updates, deletes by where and
    a retraining, get(where=) and query(where=, where_document=) return exactly the rows the independent reading selects;
    where_document finds texts inside documents (Unicode included), a malformed where_document is one sentence."""
    import minivecdb
    db = minivecdb.connect(t.tmp / "f.db")
    c = db.create_collection("c", dimension=D)
    r = random.Random(51)
    rows = {}
    def put(ids, upsert=False):
        metas = [{"g": r.randint(0, 4), "t": r.choice(TEXTS)} for _ in ids]
        docs = [f"doc {u} {r.choice(TEXTS)}" for u in ids]
        (c.upsert if upsert else c.add)(ids=ids, vectors=make_data(len(ids), D, seed=r.randint(0, 10**6)), metadatas=metas, documents=docs)
        rows.update({u: (m, d) for u, m, d in zip(ids, metas, docs)})
    outs, labels = [], []
    def check(step):
        for w, wd in (({"g": {"$gte": 2}}, None), ({"$or": [{"g": 0}, {"t": {"$in": ["é", "🚀"]}}]}, None), (None, {"$contains": "🚀"}),
                      ({"g": {"$ne": 1}}, {"$not_contains": "é"}), ({"t": {"$contains": "a"}}, {"$or": [{"$contains": "doc 1"}, {"$contains": "B"}]})):
            want = {u for u, (m, d) in rows.items() if (w is None or passes(w, m)) and (wd is None or _doc_passes(wd, d))}
            try: got = set(c.get(where=w, where_document=wd).ids)
            except Exception as e: outs.append(unexpected(e)); labels.append(f"{step} {short(w)} {short(wd)}"); continue
            outs.append(ok() if got == want else wrong(f"{len(got ^ want)} ids differ, e.g. {sorted(got ^ want)[:2]}")); labels.append(f"{step} {short(w)} {short(wd)}")
    put([f"id{i}" for i in range(1500)]); check("added")
    put([f"id{i}" for i in range(0, 1500, 3)], upsert=True); check("upserted")
    n = c.delete(where={"g": 4})
    rows = {u: v for u, v in rows.items() if v[0]["g"] != 4}
    outs.append(ok() if n == 1500 - len(rows) else wrong(f"delete(where=) deleted {n}")); labels.append("delete count")
    check("deleted")
    c.optimize(); check("retrained")
    for wd, words in (({"$regex": "a"}, ["$regex"]), ({"$contains": ""}, ["$contains"]), ({"$contains": 3}, ["$contains"]), ("a", ["where_document"])):
        outs.append(expect_error(lambda: c.get(where_document=wd), words)); labels.append(f"bad {short(wd)}")
    db.close()
    return worst(outs, labels)


def _doc_passes(wd, d):
    (op, a), = wd.items()
    if op == "$and": return all(_doc_passes(x, d) for x in a)
    if op == "$or": return any(_doc_passes(x, d) for x in a)
    return (a in d) if op == "$contains" else (a not in d)
