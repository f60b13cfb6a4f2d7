"""`ShardedIndex` (minivecdb.distributed): one IVF index spread over Ray actors by row (id % n_shards).

What must hold (nbs/05b_distributed.ipynb): every search answers exactly what the one-node `IVFIndex` answers with the same
lists (every metric, both codecs, filters, any nprobe, k beyond the collection, deleted ids and tail rows, empty shards); writes
give the ids and booleans one node gives; bad input gets one node's clear one-sentence errors before any shard is written;
save/load round-trip, and a damaged store is refused in one sentence; an acknowledged write survives kill -9 of its shard; a shard
that cannot answer makes the call fail with `ShardUnavailableError` naming it, never a partial answer; the CLI with a sharded
store prints one line `minivecdb: error: ...` and exits 1.

Every case starts its own Ray (two CPUs, ~7 s) in a worker of its own and stops it at the end, so only one is fast.
The category "distributed" is added to `core.CATEGORIES` when this module is imported.
"""
import contextlib, json, os, shutil, signal, subprocess, time, zlib
from pathlib import Path
import numpy as np
from . import core
from .core import (case, lib, ok, wrong, unclear, crash, loss, worst, expect_error, judge_error, make_data, quiet,
                   exact_distances, unexpected, short, run_cli, judge_cli, stderr_lines, cli_command, cli_env, OK)

CAT = "distributed"
if CAT not in core.CATEGORIES: core.CATEGORIES = core.CATEGORIES + (CAT,)

D = 8
METRICS = ("cosine", "euclidean", "dot")
CODECS = ("flat", "sq8")


# ---------------------------------------------------------------- helpers
@contextlib.contextmanager
def ray_up():
    "A local Ray with two CPUs for the length of a case (the running one if a case already started it)."
    import ray, logging
    started = not ray.is_initialized()
    if started: dist()._ray(attempts=5, num_cpus=2, object_store_memory=256 << 20)  # as the library starts it: robust on a busy machine
    try: yield ray
    finally:
        if started: ray.shutdown()


def dist():
    import minivecdb.distributed as m
    return m


def _metas(n, start=0):
    return [dict(i=i, g="abc"[i % 3], text=f"item {i}") for i in range(start, start + n)]


def _one_node(n=300, metric="cosine", codec="flat", n_clusters=8, seed=11, deleted=(3, 50), tail=20, tail_deleted=(),
              delete_last=True):
    """A one-node index over `n` random vectors with `deleted` ids gone (and the last id, so next_id > max live id + 1),
    then `tail` rows added after the build (tail rows) with `tail_deleted` of them deleted."""
    L = lib()
    X = make_data(n, D, seed=seed)
    if metric == "dot": X *= np.random.default_rng(seed).uniform(0.5, 2, size=(n, 1)).astype(np.float32)
    s = L.VectorStorage(D)
    s.add_bulk(X, _metas(n))
    ix = L.IVFIndex(s, nprobe=2, distance_fn=metric, n_clusters=n_clusters, seed=seed, codec=codec, rerank=3)
    with quiet(): ix.build()
    for i in deleted: ix.delete(i)
    if tail:
        ix.add_vectors_bulk(make_data(tail, D, seed=seed + 1), _metas(tail, n))
        for i in tail_deleted: ix.delete(n + i)
    if delete_last: ix.delete(n + tail - 1 if tail else n - 1)
    return s, ix


def _shard(ix, n_shards, path=None):
    with quiet(): return dist().ShardedIndex.from_index(ix, n_shards, path=path, progress=False)


def _live(ix):
    return np.asarray(ix.storage.ids), np.asarray(ix.storage.vectors, np.float32)


def compare(sh_res, one_res, Q, ix, what=""):
    """Sharded (ids, dists) against one node's: equal shapes and distances, and equal ids except where two ids are at the
    same distance (checked against the stored vectors)."""
    (ia, da), (ib, db) = sh_res, one_res
    ia, ib, da, db = np.asarray(ia), np.asarray(ib), np.asarray(da, np.float64), np.asarray(db, np.float64)
    if ia.shape != ib.shape: return wrong(f"{what}shape {ia.shape}, one node {ib.shape}")
    fa, fb = np.isfinite(da), np.isfinite(db)
    if not np.array_equal(fa, fb) or not np.array_equal(ia < 0, ib < 0):
        q = int(np.argmax((fa != fb).any(1) | ((ia < 0) != (ib < 0)).any(1)))
        return wrong(f"{what}query {q}: {int((ia[q] >= 0).sum())} results, one node {int((ib[q] >= 0).sum())} "
                     f"(ids {ia[q][:6].tolist()} vs {ib[q][:6].tolist()})")
    tol = 1e-5 * np.maximum(np.abs(db), 1e-3) + 1e-6
    bad_d = fb & (np.abs(np.where(fb, da - db, 0)) > tol)
    if bad_d.any():
        q, j = map(int, np.argwhere(bad_d)[0])
        return wrong(f"{what}query {q} rank {j}: distance {da[q, j]:.7g}, one node {db[q, j]:.7g} (ids {ia[q, j]} / {ib[q, j]}); "
                     f"{int(bad_d.any(1).sum())}/{len(ia)} queries differ")
    diff = ia != ib
    if diff.any():
        ids, X = _live(ix)
        pos = {int(i): r for r, i in enumerate(ids.tolist())}
        for q, j in np.argwhere(diff).tolist():
            i = int(ia[q, j])
            if i not in pos: return wrong(f"{what}query {q} rank {j}: id {i} is not a live id (one node: {int(ib[q, j])})")
            e = float(exact_distances(Q[q], X[pos[i]][None], ix.distance_fn)[0, 0])
            if abs(e - db[q, j]) > 1e-4 * max(abs(e), 1e-3) + 1e-5:
                return wrong(f"{what}query {q} rank {j}: id {i} (exact distance {e:.6g}), one node id {int(ib[q, j])} "
                             f"at {db[q, j]:.6g}; {int(diff.any(1).sum())}/{len(ia)} queries differ")
        for q in range(len(ia)):
            r = ia[q][ia[q] >= 0]
            if len(set(r.tolist())) != len(r): return wrong(f"{what}query {q}: an id is returned twice: {r.tolist()}")
    return ok(f"{what}{len(ia)} queries equal one node ({int(diff.any(1).sum())} differ only in ties)")


def _ids_after(ix_one, sh, n=3, seed=99):
    "Add the same rows to both; (one node's ids, the sharded ids)."
    Y = make_data(n, D, seed=seed)
    return ix_one.add_vectors_bulk(Y, _metas(n, 10_000)).tolist(), sh.add_vectors_bulk(Y, _metas(n, 10_000)).tolist()


def _close(sh):
    with contextlib.suppress(Exception): sh.close()


# ---------------------------------------------------------------- fast: a smoke test
@case(CAT, "fast", timeout=400, fresh=True, cost=18)
def shard_smoke_equals_one_node(t):
    """from_index over 2 shards (cosine, flat, deleted ids, tail rows): search_batch at nprobe 2 and all lists, with a dict
    filter, and search_records equal one node's; an add gets one node's id."""
    with ray_up():
        s, ix = _one_node(200, tail=10)
        sh = _shard(ix, 2)
        try:
            Q = make_data(12, D, seed=5)
            outs, labels = [], []
            for nprobe in (2, 8):
                for where in (None, {"g": "a"}):
                    outs.append(compare(sh.search_batch(Q, k=7, nprobe=nprobe, where=where), ix.search_batch(Q, k=7, nprobe=nprobe, where=where), Q, ix))
                    labels.append(f"nprobe={nprobe} where={where}")
            a = [(i, round(d, 4), m) for i, d, m in sh.search_records(Q[0], k=5)]
            b = [(i, round(d, 4), m) for i, d, m in ix.search_records(Q[0], k=5)]
            outs.append(ok() if a == b else wrong(f"search_records {short(a)} vs one node {short(b)}")); labels.append("search_records")
            one, shd = _ids_after(ix, sh, 3)
            outs.append(ok() if one == shd else wrong(f"ids {shd}, one node {one}")); labels.append("add ids")
            return worst(outs, labels)
        finally: _close(sh)


# ---------------------------------------------------------------- same answers as one node
@case(CAT, "slow", timeout=420, fresh=True, cost=120)
def shard_same_answers_metrics_codecs(t):
    """Every metric x codec, 3 shards from an index with deleted ids, tail rows and a deleted last id: nprobe 1, 3, all,
    and > n_clusters; k 10 and k > the collection; dict, list and callable filters; then after adds and deletes on both."""
    outs, labels = [], []
    with ray_up():
        for metric in METRICS:
            for codec in CODECS:
                s, ix = _one_node(240, metric=metric, codec=codec, tail=20, tail_deleted=(3,))
                tag = f"{metric}/{codec}"
                try: sh = _shard(ix, 3)
                except Exception as e:
                    outs.append(unexpected(e, "from_index: ")); labels.append(tag); continue
                try:
                    Q = make_data(25, D, seed=7)
                    for nprobe in (1, 3, 8, 50):
                        for k in (10, 1000):
                            for wl, where in (("none", None), ("dict", {"g": "b"}), ("list", {"g": ["a", "c"]}),
                                              ("callable", lambda m: m.get("i", 0) % 7 == 0)):
                                if k == 1000 and wl in ("list",): continue
                                what = f"{tag} nprobe={nprobe} k={k} where={wl}: "
                                try: a = sh.search_batch(Q, k=k, nprobe=nprobe, where=where)
                                except Exception as e: outs.append(unexpected(e, what)); labels.append(what); continue
                                outs.append(compare(a, ix.search_batch(Q, k=k, nprobe=nprobe, where=where), Q, ix, what)); labels.append(what)
                    # one query, not a batch
                    outs.append(compare(sh.search_batch(Q[3], k=5, nprobe=2), ix.search_batch(Q[3], k=5, nprobe=2), Q[3:4], ix, f"{tag} single query: "))
                    labels.append(f"{tag} single")
                    # writes on both, then search again
                    one, shd = _ids_after(ix, sh, 5)
                    if one != shd: outs.append(wrong(f"{tag}: add ids {shd}, one node {one}")); labels.append(f"{tag} add")
                    dels = [0, 1, 3, 241, one[0], 10**6]
                    b1, b2 = [ix.delete(i) for i in dels], [sh.delete(i) for i in dels]
                    if b1 != b2: outs.append(wrong(f"{tag}: delete({dels}) gave {b2}, one node {b1}")); labels.append(f"{tag} delete")
                    for nprobe in (2, 8):
                        what = f"{tag} after writes nprobe={nprobe}: "
                        outs.append(compare(sh.search_batch(Q, k=10, nprobe=nprobe), ix.search_batch(Q, k=10, nprobe=nprobe), Q, ix, what)); labels.append(what)
                finally: _close(sh); s.close()
    return worst(outs, labels)


@case(CAT, "slow", timeout=300, fresh=True, cost=60)
def shard_build_equals_one_node(t):
    """ShardedIndex.build from an array, from a .npy file and from a VectorStorage with deleted ids (and 4 shards for 3
    vectors): the same lists, hence the same answers, as IVFIndex.build with the same settings; ids of later adds equal."""
    L = lib()
    outs, labels = [], []
    X = make_data(300, D, seed=21)
    np.save(t.tmp / "x.npy", X)
    with ray_up():
        for label, src, nq in (("array", X, 300), ("npy", str(t.tmp / "x.npy"), 300)):
            for metric, codec in (("euclidean", "flat"), ("cosine", "sq8")):
                s = L.VectorStorage(D); s.add_bulk(X, _metas(300))
                ix = L.IVFIndex(s, nprobe=3, distance_fn=metric, n_clusters=6, seed=4, codec=codec)
                with quiet(): ix.build()
                what = f"{label} {metric}/{codec}: "
                try:
                    with quiet(): sh = dist().ShardedIndex.build(src, 3, metadatas=_metas(300), nprobe=3, distance_fn=metric, n_clusters=6, seed=4, codec=codec, progress=False)
                except Exception as e: outs.append(unexpected(e, what)); labels.append(what); continue
                try:
                    Q = make_data(30, D, seed=8)
                    outs.append(compare(sh.search_batch(Q, k=8), ix.search_batch(Q, k=8), Q, ix, what)); labels.append(what)
                    one, shd = _ids_after(ix, sh, 4)
                    outs.append(ok() if one == shd else wrong(f"{what}add ids {shd}, one node {one}")); labels.append(what + "ids")
                finally: _close(sh)
        # a storage with deleted ids (the last one too)
        s = L.VectorStorage(D); s.add_bulk(X, _metas(300))
        for i in (0, 7, 150, 299): s.delete(i)
        ix = L.IVFIndex(s, nprobe=3, n_clusters=6, seed=4)
        with quiet(): ix.build()
        what = "storage with deletes: "
        try:
            with quiet(): sh = dist().ShardedIndex.build(s, 3, nprobe=3, n_clusters=6, seed=4, progress=False)
            try:
                Q = make_data(30, D, seed=9)
                outs.append(compare(sh.search_batch(Q, k=8), ix.search_batch(Q, k=8), Q, ix, what)); labels.append(what)
                one, shd = _ids_after(ix, sh, 4)
                outs.append(ok() if one == shd else wrong(f"{what}add ids {shd}, one node {one}")); labels.append(what + "ids")
                got = [sh.delete(i) for i in (0, 7, 299, 1)]
                outs.append(ok() if got == [False, False, False, True] else wrong(f"{what}delete(0, 7, 299, 1) -> {got}")); labels.append(what + "delete")
            finally: _close(sh)
        except Exception as e: outs.append(unexpected(e, what)); labels.append(what)
        # more shards than vectors
        what = "3 vectors on 4 shards: "
        try:
            s = L.VectorStorage(D); s.add_bulk(X[:3], _metas(3))
            ix = L.IVFIndex(s, nprobe=2, n_clusters=2, seed=0)
            with quiet(): ix.build()
            with quiet(): sh = dist().ShardedIndex.build(X[:3], 4, metadatas=_metas(3), nprobe=2, n_clusters=2, seed=0, progress=False)
            try:
                Q = make_data(5, D, seed=10)
                outs.append(compare(sh.search_batch(Q, k=10), ix.search_batch(Q, k=10), Q, ix, what)); labels.append(what)
            finally: _close(sh)
        except Exception as e: outs.append(unexpected(e, what)); labels.append(what)
    return worst(outs, labels)


@case(CAT, "slow", timeout=300, fresh=True, cost=50)
def shard_small_and_empty(t):
    """More shards than vectors (empty shards), then every vector deleted: search_batch pads with -1/inf, search,
    search_records(_batch) give empty answers like one node; a filter that matches nothing too; adds land on the empty shards."""
    L = lib()
    outs, labels = [], []
    with ray_up():
        X = make_data(2, D, seed=31)
        s = L.VectorStorage(D); s.add_bulk(X, _metas(2))
        ix = L.IVFIndex(s, nprobe=1, n_clusters=1)
        with quiet(): ix.build()
        try: sh = _shard(ix, 5)
        except Exception as e: return unexpected(e, "from_index of 2 vectors over 5 shards: ")
        try:
            Q = make_data(3, D, seed=32)
            def trial(label, fn_sh, fn_one, cmp=None):
                try: a = fn_sh()
                except Exception as e: outs.append(unexpected(e, f"{label}: ")); labels.append(label); return
                b = fn_one()
                if cmp: outs.append(cmp(a, b))
                else:
                    na = [[(i, round(float(d), 4)) for i, d, *_ in r] for r in a] if isinstance(a, list) else a
                    nb = [[(i, round(float(d), 4)) for i, d, *_ in r] for r in b] if isinstance(b, list) else b
                    outs.append(ok() if repr(na) == repr(nb) else wrong(f"{label}: {short(na)}, one node {short(nb)}"))
                labels.append(label)
            cmpb = lambda a, b: compare(a, b, Q, ix)
            trial("k=10 over 2 vectors", lambda: sh.search_batch(Q, k=10), lambda: ix.search_batch(Q, k=10), cmpb)
            trial("filter matching nothing: search_batch", lambda: sh.search_batch(Q, k=3, where={"g": "zzz"}), lambda: ix.search_batch(Q, k=3, where={"g": "zzz"}), cmpb)
            trial("filter matching nothing: search_records_batch", lambda: [list(r) for r in sh.search_records_batch(Q, k=3, where={"g": "zzz"})],
                  lambda: [list(r) for r in ix.search_records_batch(Q, k=3, where={"g": "zzz"})])
            trial("filter matching nothing: search", lambda: len(sh.search(Q[0], k=3, where={"g": "zzz"})), lambda: len(ix.search(Q[0], k=3, where={"g": "zzz"})))
            st = sh.get_stats()
            if st.get("n_vectors") != 2: outs.append(wrong(f"get_stats n_vectors {st.get('n_vectors')}, expected 2")); labels.append("stats")
            # adds fill the empty shards 2, 3, 4
            Y = make_data(4, D, seed=33)
            one, shd = ix.add_vectors_bulk(Y, _metas(4, 2)).tolist(), sh.add_vectors_bulk(Y, _metas(4, 2)).tolist()
            outs.append(ok() if one == shd else wrong(f"add ids {shd}, one node {one}")); labels.append("add to empty shards")
            trial("after adds", lambda: sh.search_batch(Q, k=10), lambda: ix.search_batch(Q, k=10), cmpb)
            # empty the collection
            b1 = [ix.delete(i) for i in range(6)]
            b2 = [sh.delete(i) for i in range(6)]
            outs.append(ok() if b1 == b2 else wrong(f"delete -> {b2}, one node {b1}")); labels.append("delete all")
            trial("empty: search_batch", lambda: sh.search_batch(Q, k=4), lambda: ix.search_batch(Q, k=4), cmpb)
            trial("empty: search", lambda: len(sh.search(Q[0], k=4)), lambda: len(ix.search(Q[0], k=4)))
            trial("empty: search_records", lambda: [list(sh.search_records(Q[0], k=4))], lambda: [list(ix.search_records(Q[0], k=4))])
            trial("empty add_vectors_bulk", lambda: sh.add_vectors_bulk(np.zeros((0, D), np.float32)).tolist(),
                  lambda: ix.add_vectors_bulk(np.zeros((0, D), np.float32)).tolist())
            trial("id after empty add", lambda: sh.add(Y[0]), lambda: ix.add(Y[0]))
        finally: _close(sh)
        # no empty shard: 20 vectors over 2 shards; a filter matching nothing, then every vector deleted
        X = make_data(20, D, seed=34)
        s = L.VectorStorage(D); s.add_bulk(X, _metas(20))
        ix = L.IVFIndex(s, nprobe=2, n_clusters=2)
        with quiet(): ix.build()
        sh = _shard(ix, 2)
        try:
            Q = make_data(3, D, seed=35)
            cmpb = lambda a, b: compare(a, b, Q, ix)
            trial("20 on 2 shards, filter matching nothing: search_batch", lambda: sh.search_batch(Q, k=3, where={"g": "zzz"}), lambda: ix.search_batch(Q, k=3, where={"g": "zzz"}), cmpb)
            trial("20 on 2 shards, filter matching nothing: search_records_batch", lambda: [list(r) for r in sh.search_records_batch(Q, k=3, where={"g": "zzz"})],
                  lambda: [list(r) for r in ix.search_records_batch(Q, k=3, where={"g": "zzz"})])
            trial("20 on 2 shards, filter matching nothing: search", lambda: len(sh.search(Q[0], k=3, where={"g": "zzz"})), lambda: len(ix.search(Q[0], k=3, where={"g": "zzz"})))
            for i in range(20): ix.delete(i); sh.delete(i)
            trial("20 on 2 shards, all deleted: search_batch", lambda: sh.search_batch(Q, k=4), lambda: ix.search_batch(Q, k=4), cmpb)
            trial("20 on 2 shards, all deleted: search", lambda: len(sh.search(Q[0], k=4)), lambda: len(ix.search(Q[0], k=4)))
            trial("20 on 2 shards, all deleted: search_records", lambda: [list(sh.search_records(Q[0], k=4))], lambda: [list(ix.search_records(Q[0], k=4))])
            trial("20 on 2 shards, empty add_vectors_bulk", lambda: sh.add_vectors_bulk(np.zeros((0, D), np.float32)).tolist(),
                  lambda: ix.add_vectors_bulk(np.zeros((0, D), np.float32)).tolist())
        finally: _close(sh)
    return worst(outs, labels)


# ---------------------------------------------------------------- writes and ids
@case(CAT, "slow", timeout=240, fresh=True, cost=40)
def shard_ids_gets_deletes(t):
    """add / add_vectors_bulk / delete / get on 3 shards from an index whose last ids are deleted: the ids, booleans, records,
    errors and len() of one node (odd ids: negative, bool, numpy ints, 2**63, strings, floats)."""
    outs, labels = [], []
    with ray_up():
        s, ix = _one_node(100, tail=5, deleted=(2, 98), delete_last=True)
        ix.delete(103)  # the last two ids are gone: next_id stays 105
        sh = _shard(ix, 3)
        try:
            v = make_data(1, D, seed=41)[0]
            a, b = ix.add(v, {"x": 1}), sh.add(v, {"x": 1})
            outs.append(ok() if a == b else wrong(f"add gave {b}, one node {a}")); labels.append("add id")
            one, shd = _ids_after(ix, sh, 7)
            outs.append(ok() if one == shd else wrong(f"add_vectors_bulk gave {shd}, one node {one}")); labels.append("bulk ids")
            for id_ in (0, 2, 98, 103, 104, a, one[-1], one[-1] + 1, -1, np.int64(5), np.int32(6)):
                try: r_sh = ("ok", *[x.tolist() if hasattr(x, "tolist") else x for x in sh.get(id_)])
                except Exception as e: r_sh = ("err", type(e).__name__)
                try: r_one = ("ok", *[x.tolist() if hasattr(x, "tolist") else x for x in ix.storage.get(id_)])
                except Exception as e: r_one = ("err", type(e).__name__)
                outs.append(ok() if r_sh == r_one else wrong(f"get({id_!r}) -> {short(r_sh)}, one node {short(r_one)}")); labels.append(f"get {id_!r}")
            for id_ in (True, "3", 3.0, 2**63, 2**70, -2**70, None):
                try: r_one = ("ok", ix.storage.get(id_))
                except Exception as e: r_one = ("err", type(e).__name__)
                if r_one[0] == "ok": continue
                outs.append(expect_error(lambda: sh.get(id_), words=["id"])); labels.append(f"get {id_!r}")
            dels = [5, 5, 2, 104, 10**9, -1, True, np.int64(8), 2**63, 2**70, "7", 7.0, one[0]]
            b1, b2 = [], []
            for i in dels:
                try: b1.append(ix.delete(i))
                except Exception as e: b1.append(type(e).__name__)
                try: b2.append(sh.delete(i))
                except Exception as e: b2.append(type(e).__name__)
            outs.append(ok() if b1 == b2 else wrong(f"delete({short(dels, 200)}) -> {b2}, one node {b1}")); labels.append("delete booleans")
            outs.append(ok() if len(sh) == len(ix.storage) else wrong(f"len {len(sh)}, one node {len(ix.storage)}")); labels.append("len")
            st1, st2 = ix.get_stats(), sh.get_stats()
            if st1["n_vectors"] != st2["n_vectors"]: outs.append(wrong(f"get_stats n_vectors {st2['n_vectors']}, one node {st1['n_vectors']}")); labels.append("stats")
            a, b = ix.add(v), sh.add(v)
            outs.append(ok() if a == b else wrong(f"add after deletes gave {b}, one node {a}")); labels.append("add after deletes")
            Q = make_data(20, D, seed=42)
            outs.append(compare(sh.search_batch(Q, k=10, nprobe=8), ix.search_batch(Q, k=10, nprobe=8), Q, ix, "search after writes: ")); labels.append("search")
        finally: _close(sh)
    return worst(outs, labels)


@case(CAT, "slow", timeout=300, fresh=True, cost=50)
def shard_bad_inputs(t):
    """Bad input to a ShardedIndex and to from_index / build: one node's clear one-sentence error, and nothing written
    (len and the next id unchanged; no store directory left behind by a refused build)."""
    outs, labels = [], []
    def tr(label, fn, words=(), accept=None):
        outs.append(expect_error(fn, words=words, accept=accept)); labels.append(label)
    with ray_up():
        s, ix = _one_node(60, tail=0, deleted=(), delete_last=False)
        sh = _shard(ix, 2)
        try:
            n0 = len(sh)
            v = make_data(1, D, seed=51)[0]
            nan = v.copy(); nan[2] = np.nan
            tr("add wrong dimension", lambda: sh.add(np.zeros(D + 1, np.float32)), ["dimension"])
            tr("add NaN", lambda: sh.add(nan), [("nan", "finite", "infinit")])
            tr("add metadata list", lambda: sh.add(v, [1, 2]), ["metadata"])
            tr("add metadata set value", lambda: sh.add(v, {"a": {1, 2}}), [("metadata", "json")])
            tr("add metadata non-str key", lambda: sh.add(v, {1: "x"}), [("metadata", "key")])
            tr("bulk one vector", lambda: sh.add_vectors_bulk(v), [("2-d", "one vector", "2-D")])
            tr("bulk NaN in 2nd row", lambda: sh.add_vectors_bulk(np.stack([v, nan, v])), [("nan", "finite", "infinit")])
            tr("bulk metadata count", lambda: sh.add_vectors_bulk(np.stack([v, v]), [{"a": 1}]), ["metadata"])
            tr("bulk ragged", lambda: sh.add_vectors_bulk([[1.0] * D, [1.0] * (D - 1)]), [("dimension", "length", "rows")])
            tr("bulk strings", lambda: sh.add_vectors_bulk(np.array([["a"] * D])), [("number", "float", "numeric")])
            Q = make_data(3, D, seed=52)
            for k in (True, 0, -1, "3", 2.0, None):
                tr(f"search k={k!r}", lambda: sh.search_batch(Q, k=k), ["k"])
            for p in (0, -3, False, "2"):
                tr(f"search nprobe={p!r}", lambda: sh.search_batch(Q, k=3, nprobe=p), ["nprobe"])
            tr("query wrong dimension", lambda: sh.search_batch(np.zeros((2, D + 2))), ["dimension"])
            tr("query NaN", lambda: sh.search_batch(np.stack([v, nan])), [("nan", "infinity")])
            tr("query 3-D", lambda: sh.search_batch(np.zeros((2, 2, D))), [("shape", "2-d", "2-D")])
            tr("query strings", lambda: sh.search_batch(np.array(["a"] * D)), [("number", "float", "int")])
            # filters: whatever one node says, the sharded index must say as clearly
            for wl, where in (("where=5", 5), ("where=[1]", [1]), ("raising callable", lambda m: 1 / 0), ("where={'g': {1}}", {"g": {1}})):
                try: ix.search_batch(Q, k=3, where=where); one_err = None
                except Exception as e: one_err = e
                if one_err is None:
                    try: sh.search_batch(Q, k=3, where=where); outs.append(ok())
                    except Exception as e: outs.append(unexpected(e, f"{wl}: one node answers, sharded "))
                elif isinstance(one_err, ZeroDivisionError):
                    try: sh.search_batch(Q, k=3, where=where); outs.append(wrong("a filter that raises gave an answer"))
                    except ZeroDivisionError: outs.append(ok())
                    except Exception as e: outs.append(unclear(f"a ZeroDivisionError in the filter reached the caller as {type(e).__name__}: {short(str(e), 200)}"))
                else: outs.append(expect_error(lambda: sh.search_batch(Q, k=3, where=where), words=[("where", "filter")]))
                labels.append(wl)
            # one node refuses rerank=0 even for flat lists
            try: ix.search_batch(Q, k=3, rerank=0); one_rr = None
            except Exception as e: one_rr = e
            if one_rr is not None: tr("rerank=0 (one node refuses)", lambda: sh.search_batch(Q, k=3, rerank=0), ["rerank"])
            # nothing written by any of the above
            if len(sh) != n0: outs.append(wrong(f"len {len(sh)} after refused writes, expected {n0}")); labels.append("no partial write")
            got = sh.add(v)
            if got != 60: outs.append(wrong(f"the next add got id {got}, expected 60: refused adds used ids")); labels.append("next id")
            # no stray rows stored on a shard by a refused bulk add
            try:
                stray = [i for i in range(61, 66) if _has(sh, i)]
                if stray: outs.append(loss(f"refused adds left rows under ids {stray}")); labels.append("stray rows")
            except Exception as e: outs.append(unexpected(e, "get after refused adds: ")); labels.append("stray rows")
        finally: _close(sh)
        # from_index / build arguments
        for n in (0, -1, "3", True, 2.5, None):
            tr(f"from_index n_shards={n!r}", lambda: _shard(ix, n), ["n_shards"])
        X = make_data(20, D, seed=53)
        tr("build n_shards=0", lambda: dist().ShardedIndex.build(X, 0, progress=False), ["n_shards"])
        tr("build empty array", lambda: dist().ShardedIndex.build(np.zeros((0, D), np.float32), 2, progress=False), [("empty", "no vectors", "non-empty")])
        tr("build 1-D array", lambda: dist().ShardedIndex.build(np.zeros(D, np.float32), 2, progress=False), [("2-d", "(n, d)", "shape")])
        Xn = X.copy(); Xn[4, 1] = np.nan
        before = set(os.listdir(t.tmp))
        tr("build NaN", lambda: dist().ShardedIndex.build(Xn, 2, path=t.tmp / "nan-store", progress=False), [("nan", "finite", "infinit")])
        tr("build metadatas count", lambda: dist().ShardedIndex.build(X, 2, metadatas=[{}] * 3, path=t.tmp / "meta-store", progress=False), ["metadata"])
        tr("build bad metadata", lambda: dist().ShardedIndex.build(X, 2, metadatas=[{"a": object()}] * 20, path=t.tmp / "meta2-store", progress=False), ["metadata"])
        tr("build distance_fn", lambda: dist().ShardedIndex.build(X, 2, distance_fn="manhattan", path=t.tmp / "m-store", progress=False), [("distance", "metric", "manhattan")])
        tr("build codec", lambda: dist().ShardedIndex.build(X, 2, codec="pq", path=t.tmp / "c-store", progress=False), ["codec"])
        tr("build n_clusters > n", lambda: dist().ShardedIndex.build(X, 2, n_clusters=50, path=t.tmp / "k-store", progress=False), ["n_clusters"])
        tr("build .npy missing", lambda: dist().ShardedIndex.build(str(t.tmp / "nope.npy"), 2, path=t.tmp / "f-store", progress=False), [("nope.npy", "no such", "not found", "exist")])
        (t.tmp / "afile").write_text("keep me")
        (t.tmp / "full").mkdir(); (t.tmp / "full" / "x").write_text("keep me")
        tr("path is a file", lambda: dist().ShardedIndex.build(X, 2, path=t.tmp / "afile", progress=False), [("exists", "not a directory", "not an empty")])
        tr("path is a non-empty dir", lambda: dist().ShardedIndex.build(X, 2, path=t.tmp / "full", progress=False), [("exists", "not empty", "not an empty")])
        tr("from_index of an unbuilt index", lambda: dist().ShardedIndex.from_index(lib().IVFIndex(s), 2, path=t.tmp / "u-store", progress=False), [("built", "build")])
        tr("from_index of a storage", lambda: dist().ShardedIndex.from_index(s, 2, path=t.tmp / "v-store", progress=False), [("ivfindex", "index")])
        if (t.tmp / "afile").read_text() != "keep me" or (t.tmp / "full" / "x").read_text() != "keep me" or os.listdir(t.tmp / "full") != ["x"]:
            outs.append(loss("a refused build changed an existing file or directory")); labels.append("existing path kept")
        left = sorted(set(os.listdir(t.tmp)) - before - {"afile", "full"})
        left = [p for p in left if (t.tmp / p).is_dir() and any((t.tmp / p).iterdir()) or (t.tmp / p).is_file()]
        if left: outs.append(wrong(f"refused builds left {left} behind (with {sorted(os.listdir(t.tmp / left[0]))[:5] if (t.tmp / left[0]).is_dir() else 'a file'})")); labels.append("leftovers")
    return worst(outs, labels)


def _has(sh, i):
    try: sh.get(i); return True
    except KeyError: return False


# ---------------------------------------------------------------- save / load
@case(CAT, "slow", timeout=300, fresh=True, cost=60)
def shard_save_load_roundtrip(t):
    """save() in place after writes, close, load: same answers and next id; save(new dir) while running, then load the copy
    (while the original is still open, and after); later writes to the original stay out of the copy; save to an existing
    non-empty directory or a file is refused in one sentence without touching it."""
    outs, labels = [], []
    D_ = dist()
    with ray_up():
        s, ix = _one_node(150, tail=6, metric="euclidean", codec="sq8")
        store = t.tmp / "store"
        sh = _shard(ix, 3, path=store)
        Q = make_data(15, D, seed=61)
        try:
            one, shd = _ids_after(ix, sh, 4)
            ix.delete(one[1]); sh.delete(shd[1])
            sh.save()
            a, b = ix.add(make_data(1, D, seed=62)[0]), sh.add(make_data(1, D, seed=62)[0])  # after the save: only in the log
            copy = t.tmp / "copy"
            sh.save(copy)
            try:
                cp = D_.ShardedIndex.load(copy)
                try: outs.append(compare(cp.search_batch(Q, k=10, nprobe=8), ix.search_batch(Q, k=10, nprobe=8), Q, ix, "copy loaded while the original runs: "))
                finally: _close(cp)
            except Exception as e: outs.append(unexpected(e, "load of a copy while the original runs: "))
            labels.append("copy while open")
            late = sh.add(make_data(1, D, seed=63)[0])  # after the copy
            (t.tmp / "afile").write_text("keep")
            (t.tmp / "full").mkdir(); (t.tmp / "full" / "x").write_text("keep")
            outs.append(expect_error(lambda: sh.save(t.tmp / "afile"), words=[("exists", "directory")])); labels.append("save to a file")
            outs.append(expect_error(lambda: sh.save(t.tmp / "full"), words=[("exists", "empty")])); labels.append("save to a non-empty dir")
            if (t.tmp / "afile").read_text() != "keep" or sorted(os.listdir(t.tmp / "full")) != ["x"]:
                outs.append(loss("save() changed an existing file or directory")); labels.append("kept")
            # save into itself given another way
            try: sh.save(str(store) + "/"); outs.append(ok())
            except Exception as e: outs.append(unexpected(e, "save(same dir + '/'): "))
            labels.append("save same dir spelled differently")
        finally: _close(sh)
        try:
            re_ = D_.ShardedIndex.load(store)
            try:
                got = [_has(re_, i) for i in (a, late, shd[1], shd[0])]
                outs.append(ok() if got == [True, True, False, True] else loss(f"after close and load: present(a, late, deleted, added) = {got}")); labels.append("reload original")
                n = re_.add(make_data(1, D, seed=64)[0])
                outs.append(ok() if n == late + 1 else wrong(f"next id after reload {n}, expected {late + 1}")); labels.append("next id after reload")
            finally: _close(re_)
        except Exception as e: outs.append(unexpected(e, "reload of the original: ")); labels.append("reload original")
        try:
            cp = D_.ShardedIndex.load(copy)
            try:
                has = [_has(cp, i) for i in (a, late)]
                outs.append(ok() if has == [True, False] else wrong(f"copy holds (write before copy, write after copy) = {has}")); labels.append("copy contents")
                n = cp.add(make_data(1, D, seed=64)[0])
                outs.append(ok() if n == a + 1 else wrong(f"next id in the copy {n}, expected {a + 1}")); labels.append("next id in copy")
            finally: _close(cp)
        except Exception as e: outs.append(unexpected(e, "load of the copy after close: ")); labels.append("copy after close")
    return worst(outs, labels)


def _pristine(t, ix, n_shards=2):
    store = t.tmp / "pristine"
    sh = _shard(ix, n_shards, path=store)
    sh.close()
    return store


@case(CAT, "slow", timeout=400, fresh=True, cost=80)
def shard_load_damaged(t):
    """load of damaged stores: manifest not JSON / a list / missing keys / wrong types / no shards, quantizer.npz flipped or
    missing, a shard file missing or corrupt, an empty directory, a file, a missing path: one clear sentence naming the
    problem (a shard's by its number), quickly, with no traceback text."""
    outs, labels = [], []
    D_ = dist()
    with ray_up():
        s, ix = _one_node(80, tail=0, deleted=(), delete_last=False)
        base = _pristine(t, ix)
        man = json.loads((base / "manifest.json").read_text())
        def variant(label, damage, words, accept=None):
            p = t.tmp / f"v{len(labels)}"
            shutil.copytree(base, p)
            damage(p)
            def load():
                sh = D_.ShardedIndex.load(p)
                try:
                    sh.search_batch(make_data(2, D, seed=1), k=3)
                    return sh
                finally: _close(sh)
            outs.append(expect_error(load, words=words, accept=accept)); labels.append(label)
        def put(obj): return lambda p: (p / "manifest.json").write_text(json.dumps(obj) if not isinstance(obj, str) else obj)
        variant("manifest not JSON", put("{not json"), [("json", "manifest")])
        variant("manifest is a list", put([1, 2]), ["manifest"])
        variant("manifest empty file", put(""), [("json", "manifest", "empty")])
        variant("manifest lacks settings", put({k: v for k, v in man.items() if k != "settings"}), ["settings"])
        variant("manifest shards a string", put({**man, "shards": "shard-0.ivf"}), [("manifest", "shards")])
        variant("manifest shards ints", put({**man, "shards": [0, 1]}), [("manifest", "shards")])
        variant("manifest no shards", put({**man, "shards": []}), [("manifest", "shard")])
        variant("manifest next_id a string", put({**man, "next_id": "x"}), [("manifest", "next_id")])
        variant("manifest settings lack distance_fn", put({**man, "settings": {k: v for k, v in man["settings"].items() if k != "distance_fn"}}), [("manifest", "distance_fn", "settings")])
        variant("manifest dimension wrong", put({**man, "dimension": D + 3}), [("dimension", "manifest")])
        def flip_q(p):
            b = bytearray((p / "quantizer.npz").read_bytes()); b[len(b) // 2] ^= 0x40; (p / "quantizer.npz").write_bytes(bytes(b))
        variant("quantizer.npz flipped", flip_q, [("quantizer", "damaged", "checksum")])
        variant("quantizer.npz missing", lambda p: (p / "quantizer.npz").unlink(), ["quantizer"])
        def bad_npz(p):  # a readable npz with the CRC updated, but no 'centroids' key
            np.savez(p / "quantizer.npz", other=np.zeros(3))
            m = json.loads((p / "manifest.json").read_text()); m["quantizer_crc32"] = f"{zlib.crc32((p / 'quantizer.npz').read_bytes()):08x}"
            (p / "manifest.json").write_text(json.dumps(m))
        variant("quantizer.npz without centroids (CRC matches)", bad_npz, ["quantizer", ("centroid", "corrupt", "damaged")])
        variant("shard file missing", lambda p: (p / "shard-1.ivf").unlink(), ["shard-1"])
        def corrupt_shard(p):
            f = p / "shard-1.ivf"; b = bytearray(f.read_bytes()); b[100:140] = b"\xff" * 40; f.write_bytes(bytes(b))
        variant("shard file corrupt", corrupt_shard, [("shard 1", "shard-1")])
        variant("shard file truncated", lambda p: (p / "shard-0.ivf").write_bytes((p / "shard-0.ivf").read_bytes()[:50]), [("shard 0", "shard-0")])
        variant("shard log garbage", lambda p: (p / "shard-0.ivf.log").write_bytes(b"\x00garbage\xff" * 10), [("shard 0", "shard-0", "log")], accept=lambda r: ok("garbage log discarded as a torn tail"))
        for label, target, words in (("empty directory", t.tmp / "emptydir", [("manifest", "not a sharded store")]),
                                     ("a file", t.tmp / "plain.txt", [("not a sharded store", "directory", "manifest")]),
                                     ("missing path", t.tmp / "nope", [("not a sharded store", "no such", "exist", "manifest")])):
            if label == "empty directory": target.mkdir()
            if label == "a file": target.write_text("hello")
            outs.append(expect_error(lambda: D_.ShardedIndex.load(target), words=words)); labels.append(label)
        # the pristine store still loads (the harness damaged only copies)
        try:
            sh = D_.ShardedIndex.load(base)
            try: outs.append(compare(sh.search_batch(make_data(5, D, seed=2), k=5, nprobe=8), ix.search_batch(make_data(5, D, seed=2), k=5, nprobe=8), make_data(5, D, seed=2), ix, "pristine: "))
            finally: _close(sh)
        except Exception as e: outs.append(unexpected(e, "pristine store: "))
        labels.append("pristine")
    return worst(outs, labels)


@case(CAT, "slow", timeout=240, fresh=True, cost=40)
def shard_open_twice(t):
    """Loading a sharded store that another ShardedIndex has open: refused in one sentence (the shard files are locked),
    or served; never two writers of one shard file, and the first index keeps working."""
    outs, labels = [], []
    D_ = dist()
    with ray_up():
        s, ix = _one_node(80, tail=0, deleted=(), delete_last=False)
        store = t.tmp / "store"
        sh = _shard(ix, 2, path=store)
        try:
            try:
                sh2 = D_.ShardedIndex.load(store)
                try:
                    a = sh.add(make_data(1, D, seed=3)[0]); b = sh2.add(make_data(1, D, seed=4)[0])
                    outs.append(wrong(f"a second writer opened the store; both added (ids {a} and {b})") if a == b else ok("served"))
                finally: _close(sh2)
            except Exception as e:
                outs.append(judge_error(e, words=[("lock", "in use", "open", "another")]))
            labels.append("second load")
            try:
                sh.add(make_data(1, D, seed=5)[0]); sh.search_batch(make_data(2, D, seed=6), k=3); outs.append(ok())
            except Exception as e: outs.append(unexpected(e, "the first index after a second load: "))
            labels.append("first keeps working")
        finally: _close(sh)
    return worst(outs, labels)


# ---------------------------------------------------------------- kill -9 and unavailable shards
@case(CAT, "slow", timeout=300, fresh=True, cost=60)
def shard_kill9_keeps_writes(t):
    """An acknowledged add and delete, then SIGKILL of the owning shard's process: get, search and len still see them after
    Ray restarts it; the next id is unchanged; after killing both shards, close and load, the writes are still there."""
    outs, labels = [], []
    D_ = dist()
    with ray_up():
        s, ix = _one_node(120, tail=0, deleted=(), delete_last=False)
        store = t.tmp / "store"
        sh = _shard(ix, 2, path=store)
        sh.timeout = 90
        try:
            v = make_data(1, D, seed=71)[0] * 5
            new = sh.add(v, {"tag": "acked"})
            gone = 41 if sh.owner(41) == sh.owner(new) else 42
            sh.delete(gone)
            pids = sh.pids()
            os.kill(pids[sh.owner(new)], signal.SIGKILL)
            try:
                vec, meta = sh.get(new)
                outs.append(ok() if meta == {"tag": "acked"} and np.allclose(vec, v) else loss(f"get({new}) after kill -9 -> {short(meta)}"))
            except KeyError: outs.append(loss(f"id {new} (an acknowledged add) is gone after kill -9 of its shard"))
            except Exception as e: outs.append(unexpected(e, "get after kill -9: "))
            labels.append("add survives")
            try:
                ids, _ = sh.search_batch(v, k=1, nprobe=8)
                outs.append(ok() if ids[0, 0] == new else loss(f"search for the added vector returns {ids[0].tolist()}, not {new}"))
            except Exception as e: outs.append(unexpected(e, "search after kill -9: "))
            labels.append("search finds it")
            outs.append(ok() if not _has(sh, gone) else loss(f"deleted id {gone} is back after kill -9")); labels.append("delete survives")
            np2 = sh.pids()
            outs.append(ok() if np2[sh.owner(new)] != pids[sh.owner(new)] else wrong("the killed shard still reports the old pid")); labels.append("restarted")
            n = sh.add(v)
            outs.append(ok() if n == new + 1 else wrong(f"next id after restart {n}, expected {new + 1}")); labels.append("next id")
            # kill both, then close (the dead shards' writes wait in their logs) and load again
            n2 = sh.add_vectors_bulk(make_data(4, D, seed=72), [{"tag": f"b{i}"} for i in range(4)]).tolist()
            for p in sh.pids(): os.kill(p, signal.SIGKILL)
            time.sleep(0.5)
        finally: _close(sh)
        try:
            re_ = D_.ShardedIndex.load(store)
            try:
                present = [_has(re_, i) for i in [new, n, *n2]]
                outs.append(ok() if all(present) and not _has(re_, gone) else loss(f"after kill -9 of both shards, close and load: present {dict(zip([new, n, *n2], present))}, deleted {gone} present={_has(re_, gone)}"))
                labels.append("after reload")
                m = re_.add(v)
                outs.append(ok() if m == n2[-1] + 1 else wrong(f"next id after reload {m}, expected {n2[-1] + 1}")); labels.append("next id after reload")
            finally: _close(re_)
        except Exception as e: outs.append(unexpected(e, "load after kill -9: ")); labels.append("reload")
    return worst(outs, labels)


@case(CAT, "slow", timeout=240, fresh=True, cost=40)
def shard_delete_again_after_restart(t):
    """delete(i) -> True, kill -9 of i's shard, delete(i) again: False, as one node answers for an id already deleted
    (the restarted shard replayed the first delete from its log)."""
    with ray_up():
        s, ix = _one_node(60, tail=0, deleted=(), delete_last=False)
        sh = _shard(ix, 2, path=t.tmp / "store")
        sh.timeout = 90
        try:
            first = sh.delete(10)
            os.kill(sh.pids()[sh.owner(10)], signal.SIGKILL)
            try: again = sh.delete(10)
            except Exception as e: return unexpected(e, "delete after kill -9: ")
            third = sh.delete(10)
            one = [ix.delete(10), ix.delete(10), ix.delete(10)]
            got = [first, again, third]
            if got != one: return wrong(f"delete(10) three times (the shard killed after the first) -> {got}; one node {one}")
            return ok(f"{got}")
        finally: _close(sh)


@case(CAT, "slow", timeout=300, fresh=True, cost=60)
def shard_unavailable_names_shard(t):
    """A stopped shard (SIGSTOP) fails a search after `timeout` with ShardUnavailableError naming it, then answers after
    SIGCONT; a shard that cannot restart (file gone, then kill -9) fails search / search_records / get / add naming it, never
    a partial answer; a failed add stores nothing on the healthy shard; close() does not hang."""
    outs, labels = [], []
    D_ = dist()
    with ray_up():
        s, ix = _one_node(100, tail=0, deleted=(), delete_last=False)
        store = t.tmp / "store"
        sh = _shard(ix, 2, path=store)
        Q = make_data(4, D, seed=81)
        try:
            sh.timeout = 5
            pid = sh.pids()[1]
            os.kill(pid, signal.SIGSTOP)
            try:
                r = sh.search_batch(Q, k=5)
                outs.append(wrong(f"a search with shard 1 stopped returned {r[0][0].tolist()}"))
            except D_.ShardUnavailableError as e:
                outs.append(judge_error(e, words=["shard 1"]))
            except Exception as e: outs.append(unexpected(e, "stopped shard: "))
            finally: os.kill(pid, signal.SIGCONT)
            labels.append("stopped shard")
            sh.timeout = 60
            try: outs.append(compare(sh.search_batch(Q, k=5, nprobe=8), ix.search_batch(Q, k=5, nprobe=8), Q, ix, "after SIGCONT: "))
            except Exception as e: outs.append(unexpected(e, "after SIGCONT: "))
            labels.append("resumed")
            # shard 1 can no longer start: its file is gone
            (store / "shard-1.ivf").rename(t.tmp / "shard-1.saved")
            os.kill(sh.pids()[1], signal.SIGKILL)
            sh.timeout = 60
            def must_fail(label, fn):
                try:
                    r = fn()
                    outs.append(wrong(f"{label}: returned {short(r)} with shard 1 down"))
                except D_.ShardUnavailableError as e:
                    outs.append(judge_error(e, words=["shard 1"]))
                except Exception as e:
                    outs.append(unclear(f"{label}: {type(e).__name__} rather than ShardUnavailableError: {short(str(e), 200)}"))
                labels.append(label)
            must_fail("search_batch", lambda: sh.search_batch(Q, k=5))
            must_fail("search_records", lambda: sh.search_records(Q[0], k=5))
            must_fail("search with filter", lambda: sh.search_batch(Q, k=5, where={"g": "a"}))
            must_fail("get of an id on shard 1", lambda: sh.get(1))
            must_fail("delete of an id on shard 1", lambda: sh.delete(3))
            must_fail("get_stats", lambda: sh.get_stats())
            n_before = sh.next_id
            said = []
            def add_both():
                try: sh.add_vectors_bulk(make_data(4, D, seed=82), [{"p": i} for i in range(4)])
                except Exception as e: said.append(e); raise
            must_fail("add_vectors_bulk over both shards", add_both)
            # was part of the refused add stored on the healthy shard 0? Allowed only when the error says so (no cross-shard transaction)
            try:
                stray = [i for i in range(n_before, n_before + 4) if i % 2 == 0 and _has(sh, i)]
                told = bool(said) and sorted(getattr(said[0], "stored_ids", []).tolist()) == stray and "stored" in str(said[0])
                if stray and told: outs.append(ok()); labels.append("partial add, reported")
                elif stray: outs.append(wrong(f"add_vectors_bulk failed (shard 1 down) but ids {stray} were stored on shard 0 and are "
                                            f"served by get: a partial write the caller was told failed")); labels.append("partial add")
            except Exception as e: outs.append(unexpected(e, "get on shard 0 after a failed add: ")); labels.append("partial add")
            try:
                v0 = sh.get(0); outs.append(ok())
            except Exception as e: outs.append(unexpected(e, "get of an id on the healthy shard 0: "))
            labels.append("healthy shard still answers get")
            sh.close()  # within the case's timeout
            outs.append(ok()); labels.append("close")
        finally: _close(sh)
    return worst(outs, labels)


# ---------------------------------------------------------------- the CLI
def _cli_store(t, name="cli-store", n=60, d=384, n_shards=2):
    "A sharded store of random unit vectors of the model's dimension, made without the model; closed."
    L = lib()
    X = make_data(n, d, seed=91); X /= np.linalg.norm(X, axis=1, keepdims=True)
    s = L.VectorStorage(d); s.add_bulk(X, [dict(text=f"stored item {i}", g=f"g{i % 2}") for i in range(n)])
    ix = L.IVFIndex(s, n_clusters=3, nprobe=3)
    with quiet(): ix.build()
    p = t.tmp / name
    _shard(ix, n_shards, path=p).close()
    return p


@case(CAT, "slow", timeout=400, fresh=True, cost=90)
def cli_shards_odd_input(t):
    """`minivecdb index F -o DIR --shards N` with N 0 / -2, an existing non-empty DIR, a file as DIR; `search` / `stats` on
    an empty directory, a directory of other files, a store with a damaged manifest or a missing shard: exit 1 with one
    line `minivecdb: error: ...`, no traceback, nothing overwritten; `stats` of a good sharded store works."""
    outs, labels = [], []
    src = t.tmp / "t.txt"; src.write_text("".join(f"headline {i} about topic {i % 3}\n" for i in range(5)))
    def cli(label, argv, words=(), keep=None):
        snap = {p: p.read_bytes() for p in (keep or []) if p.is_file()}
        rc, so, se = run_cli(argv)
        o = judge_cli(rc, se, words=words)
        if o.kind == OK and not stderr_lines(se)[0].startswith("minivecdb: error:"): o = unclear(f"stderr line is not 'minivecdb: error: ...': {stderr_lines(se)[0][:160]!r}")
        for p, b in snap.items():
            if not p.is_file() or p.read_bytes() != b: o = loss(f"{p.name} was changed ({o.detail})")
        outs.append(o); labels.append(label)
    with ray_up():  # one Ray for the whole case: the CLI's ray_session uses the running one
        cli("--shards 0", ["index", src, "-o", t.tmp / "o0", "--shards", "0"], ["shards"])
        cli("--shards -2", ["index", src, "-o", t.tmp / "o1", "--shards", "-2"], ["shards"])
        full = t.tmp / "full"; full.mkdir(); (full / "keep.txt").write_text("keep")
        cli("-o an existing non-empty dir", ["index", src, "-o", full, "--shards", "2"], [("exists", "not an empty")], keep=[full / "keep.txt"])
        afile = t.tmp / "afile.bin"; afile.write_bytes(b"precious")
        cli("-o a file", ["index", src, "-o", afile, "--shards", "2"], [("exists", "directory")], keep=[afile])
        cli("-o is the input file", ["index", src, "-o", src, "--shards", "2"], [("exists", "input", "directory")], keep=[src])
        empty = t.tmp / "emptydir"; empty.mkdir()
        cli("search an empty dir", ["search", empty, "hello"], [("not a sharded store", "manifest", "store")])
        cli("stats an empty dir", ["stats", empty], [("not a sharded store", "manifest", "store")])
        other = t.tmp / "otherdir"; other.mkdir(); (other / "notes.txt").write_text("x"); (other / "shard-0.ivf").write_text("x")
        cli("stats a dir of other files", ["stats", other], [("not a sharded store", "manifest", "store")])
        good = _cli_store(t)
        rc, so, se = run_cli(["stats", good, "--json"])
        try:
            st = json.loads(so) if rc == 0 else None
            outs.append(ok() if st and st.get("n_vectors") == 60 and st.get("n_shards") == 2 else wrong(f"stats of a good sharded store: exit {rc}, {short(so or se, 200)}"))
        except ValueError: outs.append(wrong(f"stats --json printed no JSON: {short(so, 200)}"))
        labels.append("stats of a good store")
        bad = t.tmp / "badman"; shutil.copytree(good, bad); (bad / "manifest.json").write_text("{oops")
        cli("stats with a damaged manifest", ["stats", bad], [("manifest", "json")])
        miss = t.tmp / "missing-shard"; shutil.copytree(good, miss); (miss / "shard-1.ivf").unlink()
        cli("stats with a shard file missing", ["stats", miss], ["shard-1"])
        corrupt = t.tmp / "corrupt-shard"; shutil.copytree(good, corrupt)
        f = corrupt / "shard-0.ivf"; b = bytearray(f.read_bytes()); b[90:130] = b"\xee" * 40; f.write_bytes(bytes(b))
        cli("stats with a corrupt shard file", ["stats", corrupt], [("shard 0", "shard-0")])
        d8 = t.tmp / "d8"
        L = lib(); X = make_data(20, 8, seed=3); s = L.VectorStorage(8); s.add_bulk(X); ix = L.IVFIndex(s, n_clusters=2)
        with quiet(): ix.build()
        _shard(ix, 2, path=d8).close()
        cli("search a store of another dimension", ["search", d8, "hello"], [("dimension", "model", "384")])
        cli("search with a bad --where", ["search", good, "hello", "--where", "novalue"], ["where"])
        cli("search -k 0", ["search", good, "hello", "-k", "0"], ["k"])
    return worst(outs, labels)


@case(CAT, "slow", timeout=600, fresh=True, cost=200)
def cli_index_shards_tiny(t):
    """`minivecdb index F -o DIR --shards 4` on 3 texts (empty shards), then `stats` and `search --json`: works, the search
    finds the matching text first, with the metadata columns; an empty input file is refused in one line."""
    outs, labels = [], []
    src = t.tmp / "t.csv"
    src.write_text("text,topic\nthe cat sat on the mat,pets\nstock markets fell sharply today,finance\nthe football team won the cup,sport\n")
    out = t.tmp / "store"
    with ray_up():
        rc, so, se = run_cli(["index", src, "-o", out, "--shards", "4", "-q"])
        if rc != 0:
            return wrong(f"index --shards 4 on 3 texts: exit {rc}: {' / '.join(stderr_lines(se))[-300:]!r}") if rc != "traceback" else unclear(f"traceback: {stderr_lines(se)[-1][:200]!r}")
        outs.append(ok() if "3 texts" in so else wrong(f"index printed {so.strip()[:160]!r}")); labels.append("index")
        rc, so, se = run_cli(["stats", out, "--json"])
        try: st = json.loads(so)
        except ValueError: st = {}
        outs.append(ok() if rc == 0 and st.get("n_vectors") == 3 and st.get("n_shards") == 4 else wrong(f"stats: exit {rc} {short(so or se, 200)}")); labels.append("stats")
        rc, so, se = run_cli(["search", out, "a kitten on a rug", "--json", "-k", "2"])
        try: res = json.loads(so)
        except ValueError: res = None
        good = rc == 0 and res and res[0]["metadata"].get("text") == "the cat sat on the mat" and res[0]["metadata"].get("topic") == "pets" and len(res) == 2
        outs.append(ok() if good else wrong(f"search: exit {rc} {short(res or se, 240)}")); labels.append("search")
        rc, so, se = run_cli(["search", out, "money", "--json", "-k", "10", "--where", "topic=finance"])
        try: res = json.loads(so)
        except ValueError: res = None
        outs.append(ok() if rc == 0 and res and len(res) == 1 and res[0]["metadata"]["topic"] == "finance" else wrong(f"filtered search: exit {rc} {short(res or se, 240)}")); labels.append("filtered search")
        empty = t.tmp / "empty.txt"; empty.write_text("")
        rc, so, se = run_cli(["index", empty, "-o", t.tmp / "e-store", "--shards", "2"])
        o = judge_cli(rc, se, words=[("empty", "no text", "no item", "nothing")])
        if (t.tmp / "e-store").exists() and any((t.tmp / "e-store").iterdir()): o = wrong(f"an empty input left a store behind ({o.detail})")
        outs.append(o); labels.append("empty input")
    return worst(outs, labels)


@case(CAT, "slow", timeout=300, fresh=True, cost=50)
def shard_load_again_after_fix(t):
    """load of a store whose shard 1 file is damaged fails naming shard 1; once the file is put back, load in the same
    process works (the healthy shards of the failed load must not keep their files locked), with the same answers."""
    D_ = dist()
    with ray_up():
        s, ix = _one_node(80, tail=0, deleted=(), delete_last=False)
        store = t.tmp / "store"
        _shard(ix, 2, path=store).close()
        f = store / "shard-1.ivf"
        good = f.read_bytes()
        b = bytearray(good); b[100:140] = b"\xff" * 40; f.write_bytes(bytes(b))
        first = expect_error(lambda: D_.ShardedIndex.load(store), words=[("shard 1", "shard-1")])
        f.write_bytes(good)
        outs, labels = [first], ["damaged load"]
        Q = make_data(6, D, seed=3)
        try:
            sh = D_.ShardedIndex.load(store)
            try: outs.append(compare(sh.search_batch(Q, k=5, nprobe=8), ix.search_batch(Q, k=5, nprobe=8), Q, ix, "after the fix: "))
            finally: _close(sh)
        except Exception as e:
            o = unexpected(e, "load after putting the shard file back: ")
            outs.append(wrong(o.detail) if o.kind == OK else o)
        labels.append("load after fix")
    return worst(outs, labels)


# ---------------------------------------------------------------- Ray without CPUs, Ray shut down, a closed index (issue 21)
@case(CAT, "fast", timeout=400, fresh=True, cost=15)
def shard_no_cpu_for_tasks(t):
    """Ray started with num_cpus=0 (a head node's usual setting): from_index and build fail at once in one sentence that
    names the missing CPUs, instead of waiting forever for a CPU to run the shard-writing tasks on."""
    import ray
    dist()._ray(attempts=5, num_cpus=0, object_store_memory=256 << 20)
    try:
        s, ix = _one_node(100, tail=0)
        X = make_data(100, D, seed=3)
        outs = [expect_error(lambda: dist().ShardedIndex.from_index(ix, 2, path=t.tmp / "a", progress=False), words=["CPU"]),
                expect_error(lambda: dist().ShardedIndex.build(X, 2, path=t.tmp / "b", n_clusters=4, progress=False), words=["CPU"])]
        return worst(outs, ["from_index", "build"])
    finally: ray.shutdown()


@case(CAT, "fast", timeout=400, fresh=True, cost=20)
def shard_closed_or_ray_stopped(t):
    """After close(), a search, an add and a delete say in one sentence that the index is closed, and the add uses no
    id; after the user's ray.shutdown(), a search says that Ray was shut down, and no new Ray is started behind their back."""
    import ray
    outs, labels = [], []
    with ray_up():
        s, ix = _one_node(100, tail=0)
        sh = _shard(ix, 2, path=t.tmp / "a")
        Q = make_data(3, D, seed=4)
        sh.close()
        n = sh.next_id
        for label, fn in (("search after close", lambda: sh.search_batch(Q, k=3)), ("add after close", lambda: sh.add(Q[0])),
                          ("delete after close", lambda: sh.delete(1))):
            outs.append(expect_error(fn, words=["closed"], forbid=["could not be restarted"])); labels.append(label)
        outs.append(ok() if sh.next_id == n else wrong(f"an add after close used up ids {n}..{sh.next_id - 1}")); labels.append("no id used")
        sh = _shard(ix, 2, path=t.tmp / "b")
        ray.shutdown()
        outs.append(expect_error(lambda: sh.search_batch(Q, k=3), words=["shut down"], forbid=["Can't find actor"])); labels.append("search after ray.shutdown()")
        outs.append(ok() if not ray.is_initialized() else wrong("the search started a new Ray")); labels.append("no new Ray")
        try: sh.close(); outs.append(ok())
        except Exception as e: outs.append(unexpected(e, "close after ray.shutdown(): "))
        labels.append("close after ray.shutdown()")
    return worst(outs, labels)


def _group_left(pgid:int, limit:float=120.0) -> list:
    "The live processes still in process group `pgid` after waiting up to `limit` seconds (a limit against a leak, not a measurement)."
    t0 = time.time()
    while True:
        ps = subprocess.run(["ps", "-eo", "pgid=,stat=,args="], capture_output=True, text=True).stdout.splitlines()
        left = [l.split(None, 2)[2][:60] for l in ps if l.split()[0] == str(pgid) and not l.split()[1].startswith("Z")]
        if not left or time.time() - t0 > limit: return left
        time.sleep(1)


@case(CAT, "fast", timeout=600, fresh=True, cost=40)
def cli_damaged_shard_program(t):
    """The real `minivecdb` program (a process of its own, which starts its own Ray) on a sharded store with a damaged
    shard: `stats` with flipped bytes in shard 0's rows, and with the two shard files swapped: exit 1 with one line
    `minivecdb: error: ...` naming the shard file, no Ray traceback or log on stderr, and no Ray process left behind."""
    with ray_up(): good = _cli_store(t)
    outs, labels = [], []
    flipped = t.tmp / "flipped"; shutil.copytree(good, flipped)
    f = flipped / "shard-0.ivf"; b = bytearray(f.read_bytes()); mid = len(b) // 2; b[mid:mid + 64] = bytes(x ^ 0xFF for x in b[mid:mid + 64]); f.write_bytes(bytes(b))
    swapped = t.tmp / "swapped"; shutil.copytree(good, swapped)
    (swapped / "shard-0.ivf").rename(swapped / "tmp.ivf"); (swapped / "shard-1.ivf").rename(swapped / "shard-0.ivf"); (swapped / "tmp.ivf").rename(swapped / "shard-1.ivf")
    for label, argv, words in (("stats, flipped bytes in shard 0", ["stats", flipped], [("corrupt", "checksum")]),
                               ("stats, shard files swapped", ["stats", swapped], [("shard 0", "shard 1", "position", "place")])):
        # this worker's 8 GiB address-space limit is inherited: a smaller object store keeps Ray's mmap inside it
        env = {**cli_env(), "RAY_DEFAULT_OBJECT_STORE_MEMORY_PROPORTION": "0.05"}
        p = subprocess.Popen(cli_command() + [str(a) for a in argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=env, start_new_session=True)
        try: so, se = p.communicate(timeout=400)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL); p.communicate()
            outs.append(crash(f"no answer within 400 s")); labels.append(label); continue
        o = judge_cli(p.returncode, se, words=words)
        if o.kind == OK and not stderr_lines(se)[0].startswith("minivecdb: error:"): o = unclear(f"stderr line is not 'minivecdb: error: ...': {stderr_lines(se)[0][:160]!r}")
        left = _group_left(p.pid)
        if o.kind == OK and left: o = unclear(f"{len(left)} Ray processes still running 120 s after the program exited: {left[:3]}")
        outs.append(o); labels.append(label)
    return worst(outs, labels)


def _descendants(pid:int) -> dict:
    "{pid: command} of every live process below `pid`, from `ps`."
    rows = [l.split(None, 3) for l in subprocess.run(["ps", "-eo", "pid=,ppid=,stat=,args="], capture_output=True, text=True).stdout.splitlines()]
    kids, cmd = {}, {}
    for r in rows:
        if len(r) < 4 or r[2].startswith("Z"): continue
        kids.setdefault(int(r[1]), []).append(int(r[0])); cmd[int(r[0])] = r[3][:60]
    out, todo = {}, [pid]
    while todo:
        for k in kids.get(todo.pop(), []): out[k] = cmd[k]; todo.append(k)
    return out


_HOLD = """import sys, time
from minivecdb.distributed import ShardedIndex
ix = ShardedIndex.load(sys.argv[1]); ix.search_batch(ix.quantizer.centroids[:2], k=3)
print("ready", flush=True); time.sleep(3600)"""


@case(CAT, "slow", timeout=600, fresh=True, cost=120)
def shard_driver_sigkill_leaves_nothing(t):
    """A program that started Ray and opened a sharded store is killed with SIGKILL: every process it started (raylet, GCS,
    shard actors, Ray's dashboard and runtime-env agents) exits by itself within 240 s (a limit against a leak: Ray's agents
    notice the raylet's death about a minute later), and the store opens again afterwards."""
    with ray_up(): good = _cli_store(t)
    env = {**cli_env(), "RAY_DEFAULT_OBJECT_STORE_MEMORY_PROPORTION": "0.05"}  # inside this worker's 8 GiB address space
    p = subprocess.Popen([os.sys.executable, "-c", _HOLD, str(good)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=env, start_new_session=True)
    line = p.stdout.readline()
    if line.strip() != "ready":
        p.kill(); return crash(f"the program holding the store did not start: {short(p.stderr.read(), 200)}")
    started = _descendants(p.pid)
    os.kill(p.pid, signal.SIGKILL); p.wait()
    t0 = time.time()
    while time.time() - t0 < 240:
        left = {k: v for k, v in _descendants(1).items() if k in started}
        if not left: break
        time.sleep(2)
    if left: return wrong(f"{len(left)} of the {len(started)} processes it started still run 240 s after SIGKILL: {sorted(set(left.values()))[:4]}")
    with ray_up():
        try:
            sh = dist().ShardedIndex.load(good)
            n = len(sh); _close(sh)
        except Exception as e: return unexpected(e, "load after the killed program: ")
    return ok(f"{len(started)} processes started, none left after {time.time() - t0:.0f} s; the store opens again with {n} vectors")
