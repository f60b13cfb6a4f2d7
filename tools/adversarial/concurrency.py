"""Concurrency (issue 9, section 1): many reader threads with one writer, searches right after direct storage changes,
BLAS state, concurrent writers, saves during searches. Each case runs in a worker process of its own."""
import os, subprocess, sys, threading, time, traceback
import numpy as np
from .core import (case, lib, ok, wrong, loss, crash, worst, make_data, make_index, quiet, check_knn, live_state,
                   pair_distances, blas_threads, unexpected, LIB, OK)

D = 16


class Errors:
    "Exceptions raised in threads (first few kept, with where they came from)."
    def __init__(self): self.items, self.n, self.lock = [], 0, threading.Lock()
    def add(self, who, e):
        with self.lock:
            self.n += 1
            if len(self.items) < 3:
                tb = [f for f in traceback.extract_tb(e.__traceback__) if "minivecdb" in f.filename and "/tools/" not in f.filename]
                at = f" at {os.path.basename(tb[-1].filename)}:{tb[-1].lineno}" if tb else ""
                self.items.append((who, e, f"{who}: {type(e).__name__}: {' '.join(str(e).split())[:100]}{at}"))
    def outcome(self):
        if not self.n: return ok()
        o = unexpected(self.items[0][1])
        return type(o)(o.kind, f"{self.n} exceptions in threads: " + "; ".join(x[2] for x in self.items))


def _thread(target, errors, name, *args):
    def run():
        try: target(*args)
        except BaseException as e: errors.add(name, e)
    th = threading.Thread(target=run, name=name, daemon=True)
    th.start()
    return th


def _until(enough, threads, limit=120):
    "Wait (at most `limit` s, a guard against hangs) until `enough()` holds or no thread is left running."
    end = time.time() + limit
    while not enough() and time.time() < end and any(th.is_alive() for th in threads): time.sleep(0.05)


def _join(threads, timeout=60):
    end = time.time() + timeout
    for th in threads: th.join(max(0.1, end - time.time()))
    stuck = [th.name for th in threads if th.is_alive()]
    return crash(f"threads still running {timeout} s after stop: {stuck}") if stuck else None


def _check_distances(ids, dists, Q, allv, metric, who, bad, lock):
    "Every returned distance must be the exact distance from its query to the returned id's vector; ids distinct and sorted."
    ids, dists = np.atleast_2d(np.asarray(ids)), np.atleast_2d(np.asarray(dists, np.float64))
    Q = np.atleast_2d(Q)
    m = ids >= 0
    msgs = []
    if np.any(ids[m] >= len(allv)): msgs.append(f"id {int(ids[m].max())} was never handed out")
    else:
        exact = pair_distances(Q, allv[np.where(m, ids, 0)], metric)
        err = np.where(m, np.abs(exact - dists), 0)
        if np.any(err > 1e-3):
            qi, j = np.unravel_index(np.argmax(err), err.shape)
            msgs.append(f"id {int(ids[qi, j])}: distance {dists[qi, j]:.4f}, exact {exact[qi, j]:.4f}")
        srt = np.sort(np.where(m, ids, -1 - np.arange(ids.shape[1])), axis=1)
        if np.any(np.diff(srt, axis=1) == 0): msgs.append("an id returned twice")
        dd = np.where(m, dists, np.inf)
        if np.any(np.diff(dd, axis=1) < -1e-6): msgs.append("distances not sorted")
    if msgs:
        with lock:
            bad[0] += 1
            if len(bad[1]) < 2: bad[1].append(f"{who}: {msgs[0]}")


def _readers_with_writer(t, seconds, metric="cosine"):
    import sys
    sys.setswitchinterval(1e-5)  # switch threads often, so that races show within seconds
    L = lib()
    n0, n_new = 3000, 40000
    allv = make_data(n0 + n_new, D, seed=51)
    s, ix = make_index(allv[:n0], metric, n_clusters=16, metadatas=[dict(i=i) for i in range(n0)])
    nlist = 16
    ix.search_batch(allv[:2], k=2)  # loads the compiled kernels, and the BLAS library numba links, before counting
    blas0 = blas_threads()
    errors, bad, lock = Errors(), [0, []], threading.Lock()
    stop = threading.Event()
    state = dict(next=n0, deleted=set(), searches=0, writes=0)
    rng = np.random.default_rng(52)
    deletable = list(rng.permutation(np.arange(1, n0, 2)))  # even original ids are never deleted
    def writer():
        while not stop.is_set():
            j = state["next"]
            if j + 20 > n0 + n_new: break
            ids = ix.add_vectors_bulk(allv[j:j + 20], [dict(i=i) for i in range(j, j + 20)])
            if list(np.asarray(ids)) != list(range(j, j + 20)):
                with lock: bad[0] += 1; bad[1].append(f"writer: add returned ids {list(ids)[:3]}..., expected {j}...")
            state["next"] = j + 20
            for _ in range(8):
                if deletable: i = int(deletable.pop()); ix.delete(i); state["deleted"].add(i)
            for i in range(j, j + 20, 5): ix.delete(i); state["deleted"].add(i)
            state["writes"] += 1
    def reader(bs, seed):
        r = np.random.default_rng(seed)
        while not stop.is_set():
            Q = r.normal(size=(bs, D)).astype(np.float32)
            ids, dists = ix.search_batch(Q, k=10, nprobe=nlist)
            _check_distances(ids, dists, Q, allv, metric, f"reader(batch {bs})", bad, lock)
            with lock: state["searches"] += 1
    threads = [_thread(writer, errors, "writer")] + [_thread(reader, errors, f"reader{bs}", bs, 60 + bs) for bs in (1, 80, 200)]
    time.sleep(seconds)
    _until(lambda: state["searches"] >= 30 and state["writes"] >= 10, threads)  # a busy machine does less per second: count, not time
    stop.set()
    hung = _join(threads)
    if hung: return hung
    outs, labels = [errors.outcome()], ["exceptions"]
    outs.append(wrong(f"{bad[0]} results whose distances were not their ids' ({'; '.join(bad[1])})") if bad[0] else ok()); labels.append("distances")
    # never-deleted vectors unchanged, the live set is what was written
    live_model = set(range(state["next"])) - state["deleted"]
    try:
        ids_now, V_now = np.asarray(s.ids), np.asarray(s.vectors)
        li = set(ids_now.tolist())
        changed = ids_now[~(V_now == allv[ids_now]).all(1)].tolist()
        changed += [i for i in sorted(live_model)[::7] if i in li and s.get(i)[1] != dict(i=i)]
        if changed or li != live_model:
            outs.append(loss(f"{len(changed)} never-deleted vectors changed (e.g. {changed[:3]}); live ids differ from the writes by "
                             f"{len(li ^ live_model)}"))
        else: outs.append(ok())
    except Exception as e: outs.append(loss(f"the store cannot be read back: {type(e).__name__}: {e}"))
    labels.append("stored vectors")
    try:
        Q = make_data(50, D, seed=53)
        ids, d = ix.search_batch(Q, k=10, nprobe=nlist)
        outs.append(check_knn(ids, d, Q, np.array(sorted(live_model)), allv[sorted(live_model)], metric, 10, what="afterwards: "))
    except Exception as e: outs.append(unexpected(e, "afterwards: "))
    labels.append("full probe after")
    blas1 = blas_threads()
    outs.append(ok() if blas1 == blas0 else wrong(f"BLAS threads {blas0} before, {blas1} after")); labels.append("BLAS")
    o = worst(outs, labels)
    o.detail = f"{o.detail} [{state['searches']} searches, {state['writes']} write rounds in {seconds:.1f} s]"
    return o


@case("concurrency", fresh=True, cost=4, timeout=60)
def readers_during_writer(t):
    """3 reader threads (batches of 1, 80, 200; every list probed) search for ~2.5 s, and until they have made 30 searches and the
    writer 10 rounds, while a writer adds and deletes: no exception,
    every distance is the exact distance to the returned id's vector, never-deleted vectors unchanged, full probing equals brute
    force afterwards, BLAS thread count unchanged (issue 9, section 1; per-search snapshot consistency is not checked)."""
    return _readers_with_writer(t, 2.5)


@case("concurrency", "slow", fresh=True, cost=12, timeout=120)
def readers_during_writer_soak(t):
    """readers-during-writer for 10 s, with euclidean distances (the issue's ten-second test)."""
    return _readers_with_writer(t, 10.0, metric="euclidean")


@case("concurrency", fresh=True, cost=4, timeout=90)
def searches_after_direct_storage_change(t):
    """Vectors added and deleted directly on the storage under a built index (20,000 vectors, 32 lists), then searches alone:
    one thread, then six at once (batches of 1 to 200, every list probed), for 12 rounds of changes: no exception, every result
    exact, and the index still exact afterwards (issue 9, section 1: search_batch used to re-lay out the storage from inside a
    reader and break the index for good). The thread switch interval is 1 microsecond to make races likely."""
    import sys
    sys.setswitchinterval(1e-6)
    n0, rounds = 20000, (40 if t.full else 10)
    pool = make_data(n0 + rounds * 400, D, seed=54)
    s, ix = make_index(pool[:n0], "cosine", n_clusters=32)
    rng = np.random.default_rng(55)
    Q = make_data(200, D, seed=56)
    live, nxt = set(range(n0)), n0
    outs, labels = [], []
    errors, bad, lock = Errors(), [0, []], threading.Lock()
    for r in range(rounds):
        m = int(rng.integers(1, 400))
        s.add_bulk(pool[nxt:nxt + m]); live.update(range(nxt, nxt + m)); nxt += m
        ids_now = np.asarray(s.ids)
        for i in ids_now[r::37][:int(rng.integers(0, 300))].tolist(): s.delete(int(i)); live.discard(int(i))
        li = np.array(sorted(live)); lx = pool[li]
        if r == 0:
            try:
                ids, d = ix.search_batch(Q[:20], k=10, nprobe=32)
                outs.append(check_knn(ids, d, Q[:20], li, lx, "cosine", 10)); labels.append("one thread")
            except Exception as e: outs.append(unexpected(e)); labels.append("one thread")
            continue
        results = []
        go = threading.Barrier(6)
        def reader(bs):
            go.wait()
            for _ in range(2):
                ids, d = ix.search_batch(Q[:bs], k=10, nprobe=32)
                results.append((bs, ids, d))
        threads = [_thread(reader, errors, f"reader{bs}", bs) for bs in (1, 80, 200, 1, 1, 5)]
        hung = _join(threads)
        if hung: return hung
        for bs, ids, d in results:
            _check_distances(ids, d, Q[:bs], pool, "cosine", f"round {r} batch {bs}", bad, lock)
            o = check_knn(np.asarray(ids)[:10], np.asarray(d)[:10], Q[:min(bs, 10)], li, lx, "cosine", 10)
            if o.kind != OK:
                with lock:
                    bad[0] += 1
                    if len(bad[1]) < 2: bad[1].append(f"round {r} batch {bs}: {o.detail}")
        try:
            ids, d = ix.search_batch(Q[:30], k=10, nprobe=32)
            o = check_knn(ids, d, Q[:30], li, lx, "cosine", 10)
            if o.kind != OK: outs.append(o); labels.append(f"after round {r}")
        except Exception as e: outs.append(unexpected(e, f"after round {r} (index broken?): ")); labels.append(f"after round {r}")
    outs += [errors.outcome(), wrong(f"{bad[0]} wrong results ({'; '.join(bad[1])})") if bad[0] else ok()]
    labels += ["exceptions", "results"]
    return worst(outs, labels)


@case("concurrency", fresh=True, cost=3, timeout=60)
def blas_threads_unchanged(t):
    """numpy's BLAS thread count (threadpoolctl) is the same before and after 1,200 searches from 4 threads at once
    (batches of 1, 8, 80, 200): nothing process-global is left changed by a search (issue 9, section 1)."""
    import sys
    sys.setswitchinterval(1e-5)  # switch threads often: overlapping save/restore of a global setting shows at once
    X = make_data(4000, D, seed=57)
    s, ix = make_index(X, "cosine", n_clusters=16, nprobe=4)
    ix.search_batch(X[:2], k=2)  # loads the compiled kernels, and the BLAS library numba links, before counting
    before = blas_threads()
    if not before: return ok("no BLAS found by threadpoolctl")
    errors = Errors()
    def reader(bs):
        Q = make_data(bs, D, seed=bs)
        for _ in range(150 if bs < 80 else 30): ix.search_batch(Q, k=5)
    for round_ in range(2):
        threads = [_thread(reader, errors, f"reader{bs}", bs) for bs in (1, 8, 80, 200)]
        hung = _join(threads, 60)
        if hung: return hung
        after = blas_threads()
        if after != before: break
    outs = [errors.outcome(), ok() if after == before else wrong(f"BLAS threads {before} before, {after} after concurrent searches")]
    return worst(outs, ["exceptions", "BLAS"])


@case("concurrency", fresh=True, cost=2, timeout=60)
def two_writer_threads_index(t):
    """Two threads adding (and deleting their own) vectors through one index at once: writes are queued, not interleaved:
    distinct ids, each id holds what its writer gave, and full probing equals brute force."""
    import sys
    sys.setswitchinterval(1e-5)
    X = make_data(1000, D, seed=58)
    s, ix = make_index(X, "euclidean", n_clusters=8)
    errors, got = Errors(), {}
    gl = threading.Lock()
    def writer(tid):
        r = np.random.default_rng(tid)
        mine = []
        for j in range(120):
            V = r.normal(size=(5, D)).astype(np.float32)
            ids = ix.add_vectors_bulk(V, [dict(t=tid, j=j, k=k) for k in range(5)])
            with gl:
                for k, i in enumerate(np.asarray(ids).tolist()): got.setdefault(i, []).append((V[k], dict(t=tid, j=j, k=k)))
            mine.extend(np.asarray(ids).tolist())
            if j % 3 == 0: i = mine.pop(0); ix.delete(i); got[i].append("deleted")
    threads = [_thread(writer, errors, f"writer{tid}", tid) for tid in (1, 2)]
    hung = _join(threads)
    if hung: return hung
    return _check_writes(s, ix, X, got, errors)


def _check_writes(s, ix, X, got, errors):
    outs, labels = [errors.outcome()], ["exceptions"]
    dup = [i for i, v in got.items() if len([x for x in v if not isinstance(x, str)]) > 1]
    wrongs = []
    try:
        for i, v in got.items():
            if isinstance(v[-1], str):
                if i in s: wrongs.append(f"deleted id {i} is still there")
                continue
            vec, meta = v[0]
            g = s.get(i)
            if not np.array_equal(g[0], vec) or g[1] != meta: wrongs.append(f"id {i} holds {g[1]}, its writer gave {meta}")
        for i in range(len(X)):
            if not np.array_equal(s.get(i)[0], X[i]): wrongs.append(f"untouched id {i} changed")
    except Exception as e: wrongs.append(f"reading back: {type(e).__name__}: {e}")
    if dup: outs.append(wrong(f"{len(dup)} ids handed to two writes (e.g. {dup[:3]})")); labels.append("ids")
    outs.append(loss(f"{len(wrongs)} problems: {'; '.join(wrongs[:3])}") if wrongs else ok()); labels.append("contents")
    if ix is not None:
        try:
            Q = make_data(30, D, seed=59)
            ids, d = ix.search_batch(Q, k=8, nprobe=8)
            li, lx = live_state(s)
            outs.append(check_knn(ids, d, Q, li, lx, ix.distance_fn, 8))
        except Exception as e: outs.append(unexpected(e))
        labels.append("full probe")
    return worst(outs, labels)


@case("concurrency", fresh=True, cost=1.5, timeout=60)
def two_writer_threads_storage(t):
    """Two threads calling VectorStorage.add_bulk/delete at once: distinct ids, every id holds what its writer gave. Chosen:
    the storage is as thread-safe for writers as the index (a user holding only a storage expects no torn writes)."""
    L = lib()
    X = make_data(200, D, seed=60)
    s = L.VectorStorage(D); s.add_bulk(X)
    errors, got = Errors(), {}
    gl = threading.Lock()
    def writer(tid):
        r = np.random.default_rng(tid)
        mine = []
        for j in range(400):
            V = r.normal(size=(3, D)).astype(np.float32)
            ids = s.add_bulk(V, [dict(t=tid, j=j, k=k) for k in range(3)])
            with gl:
                for k, i in enumerate(np.asarray(ids).tolist()): got.setdefault(i, []).append((V[k], dict(t=tid, j=j, k=k)))
            mine.extend(np.asarray(ids).tolist())
            if j % 2 == 0: i = mine.pop(0); s.delete(i); got[i].append("deleted")
    threads = [_thread(writer, errors, f"writer{tid}", tid) for tid in (1, 2)]
    hung = _join(threads)
    if hung: return hung
    return _check_writes(s, None, X, got, errors)


@case("concurrency", fresh=True, cost=3, timeout=60)
def save_while_searching(t):
    """A writer adds, deletes and saves the index to a new file five times while two threads search: every saved file holds exactly
    the writer's state at that save, and no search fails."""
    L = lib()
    n0 = 2000
    allv = make_data(n0 + 1000, D, seed=61)
    s, ix = make_index(allv[:n0], "cosine", n_clusters=16)
    errors, stop = Errors(), threading.Event()
    snaps = []
    def writer():
        nxt = n0
        for r in range(5):
            ix.add_vectors_bulk(allv[nxt:nxt + 100]); nxt += 100
            for i in range(r, n0, 37): ix.delete(i)
            p = t.tmp / f"snap{r}.mvdb"
            snaps.append((p, set(np.asarray(s.ids).tolist())))
            ix.save(p)
        stop.set()
    def reader(bs):
        Q = make_data(bs, D, seed=bs)
        while not stop.is_set(): ix.search_batch(Q, k=10, nprobe=4)
    threads = [_thread(reader, errors, f"reader{bs}", bs) for bs in (1, 100)] + [_thread(writer, errors, "writer")]
    threads[-1].join(40); stop.set()
    hung = _join(threads)
    if hung: return hung
    outs, labels = [errors.outcome()], ["exceptions"]
    for p, ids in snaps:
        try:
            ix2 = L.IVFIndex.load(p)
            li, lx = live_state(ix2.storage)
            if set(li.tolist()) != ids or not np.array_equal(lx, allv[li]): outs.append(loss(f"{p.name} does not hold the state at its save"))
            else:
                Q = make_data(10, D, seed=62)
                ids_, d = ix2.search_batch(Q, k=5, nprobe=16)
                outs.append(check_knn(ids_, d, Q, li, lx, "cosine", 5))
        except Exception as e: outs.append(unexpected(e, f"{p.name}: "))
        labels.append(p.name)
    return worst(outs, labels)


@case("concurrency", fresh=True, cost=2.5, timeout=60)
def storage_reads_during_writes(t):
    """Threads calling get / get_all / len / vectors / ids while a writer adds and deletes on the storage: every answer is right for
    some moment (get(i) gives i's own vector or KeyError; get_all pairs ids with their own vectors), no other exception."""
    L = lib()
    total = 30000
    allv = make_data(total, D, seed=63)
    s = L.VectorStorage(D); s.add_bulk(allv[:2000], [dict(i=i) for i in range(2000)])
    errors, stop, bad, lock = Errors(), threading.Event(), [0, []], threading.Lock()
    def note(msg):
        with lock:
            bad[0] += 1
            if len(bad[1]) < 2: bad[1].append(msg)
    def writer():
        nxt = 2000
        while not stop.is_set() and nxt + 20 <= total:
            s.add_bulk(allv[nxt:nxt + 20], [dict(i=i) for i in range(nxt, nxt + 20)]); nxt += 20
            for i in range(nxt - 20, nxt, 3): s.delete(i)
            for i in range(nxt - 2000, nxt - 1990): s.delete(i) if i in s else None
    def getter(seed):
        r = np.random.default_rng(seed)
        while not stop.is_set():
            i = int(r.integers(0, 4000))
            try: v, m = s.get(i)
            except KeyError: continue
            if not np.array_equal(v, allv[i]) or m != dict(i=i): note(f"get({i}) gave {m}")
    def lister():
        while not stop.is_set():
            for i, v, m in list(s.get_all())[::50]:
                if not np.array_equal(v, allv[i]) or m != dict(i=i): note(f"get_all paired id {i} with {m}"); break
            ids, V = s.ids, s.vectors
            if len(ids) == len(V):
                k = np.arange(0, len(ids), 97)
                if not np.array_equal(V[k], allv[ids[k]]): note("ids and vectors out of step")
            len(s)
    threads = [_thread(writer, errors, "writer"), _thread(getter, errors, "get", 1), _thread(getter, errors, "get2", 2),
               _thread(lister, errors, "get_all")]
    time.sleep(2.0); stop.set()
    hung = _join(threads)
    if hung: return hung
    return worst([errors.outcome(), wrong(f"{bad[0]} wrong answers ({'; '.join(bad[1])})") if bad[0] else ok()], ["exceptions", "answers"])


PROC_WRITER = r'''
import sys, time, numpy as np
sys.path.insert(0, sys.argv[2])
from minivecdb.vector_storage import VectorStorage
vec = lambda i: np.sin(np.arange(16) * 0.1 + i).astype(np.float32)
s = VectorStorage(16); s.add_bulk(np.stack([vec(i) for i in range(2000)]), [dict(i=i) for i in range(2000)])
s.save(sys.argv[1]); print("READY", flush=True)
n = 2000
end = time.time() + float(sys.argv[3])
while time.time() < end:
    s.add_bulk(np.stack([vec(i) for i in range(n, n + 200)]), [dict(i=i) for i in range(n, n + 200)]); n += 200
    for i in range(n - 1000, n - 950): s.delete(i) if i in s else None
    s.save(sys.argv[1])
print("DONE", n, flush=True)
'''
PROC_READER = r'''
import sys, time, numpy as np
sys.path.insert(0, sys.argv[2])
from minivecdb.vector_storage import VectorStorage
vec = lambda i: np.sin(np.arange(16) * 0.1 + i).astype(np.float32)
end = time.time() + float(sys.argv[3]); loads = bad = 0; err = ""
while time.time() < end:
    try:
        r = VectorStorage.load(sys.argv[1], mmap=True); loads += 1
        ids = r.ids; V = r.vectors
        exp = np.stack([vec(i) for i in ids[::25]])
        if not np.allclose(V[::25], exp, atol=1e-6): bad += 1
        if r.get(int(ids[-1]))[1] != dict(i=int(ids[-1])): bad += 1
    except Exception as e: bad += 1; err = f"{type(e).__name__}: {e}"
print("READER", loads, bad, err, flush=True)
'''


@case("concurrency", "slow", cost=8, timeout=90)
def reader_processes_while_writer_saves(t):
    """One writer process saving every few ms and two reader processes loading with mmap=True over 5 s: every load succeeds and
    holds consistent vectors and metadata (issue 9: one writer process, any number of reader processes)."""
    p = t.tmp / "shared.mvdb"
    w = subprocess.Popen([sys.executable, "-c", PROC_WRITER, str(p), str(LIB), "5"], stdout=subprocess.PIPE, text=True)
    if w.stdout.readline().strip() != "READY": return crash("the writer process did not start")
    rs = [subprocess.Popen([sys.executable, "-c", PROC_READER, str(p), str(LIB), "4.5"], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = []
    for r in rs:
        out, _ = r.communicate(timeout=60)
        parts = out.strip().split(" ", 3) if out.strip() else []
        if r.returncode != 0 or len(parts) < 3: outs.append(crash(f"reader exit {r.returncode}: {out[-200:]!r}")); continue
        loads, bad = int(parts[1]), int(parts[2])
        outs.append(wrong(f"{bad} of {loads} loads inconsistent or failed ({parts[3] if len(parts) > 3 else ''})") if bad else ok(f"{loads} loads"))
    w.communicate(timeout=60)
    if w.returncode != 0: outs.append(crash(f"writer exit {w.returncode}"))
    return worst(outs)


@case("concurrency")
def view_is_a_snapshot(t):
    """A StorageView taken with storage.view() never changes: after adds, deletes, a compaction and an index build that permutes
    the rows, it still holds exactly the ids, vectors and metadata it had (the storage page's promise)."""
    L = lib()
    X = make_data(600, D, seed=64)
    s = L.VectorStorage(D); s.add_bulk(X, [dict(i=i) for i in range(600)])
    for i in range(0, 600, 10): s.delete(i)
    try: v = s.view()
    except AttributeError: return ok("no public view() (nothing to check)")
    ids0, V0 = np.array(v.ids), np.array(v.vectors)
    all0 = [(i, vec.copy(), m) for i, vec, m in v.get_all()]
    s.add_bulk(make_data(50, D, seed=65), [dict(i=-1)] * 50)
    for i in range(1, 600, 2): s.delete(i)  # past half dead: compaction moves every row
    ix = L.IVFIndex(s, n_clusters=4)
    with quiet(): ix.build()
    ix.add_vectors_bulk(make_data(10, D, seed=66))
    probs = []
    if not np.array_equal(np.array(v.ids), ids0) or not np.array_equal(np.array(v.vectors), V0): probs.append("ids/vectors changed")
    all1 = list(v.get_all())
    if len(all1) != len(all0) or any(a[0] != b[0] or not np.array_equal(a[1], b[1]) or a[2] != b[2] for a, b in zip(all0, all1)):
        probs.append("get_all changed")
    for i in ids0[:50].tolist():
        try:
            g = v.get(i)
            if not np.array_equal(g[0], X[i]) or g[1] != dict(i=i): probs.append(f"get({i}) changed"); break
        except Exception as e: probs.append(f"get({i}): {type(e).__name__}: {e}"); break
    if 1 not in v: probs.append("id 1 (deleted later) vanished from the old view")
    return loss("the snapshot changed under its reader: " + "; ".join(probs)) if probs else ok()


@case("concurrency", fresh=True, cost=3, timeout=60)
def write_lock_groups_changes(t):
    """`with storage.write_lock:` around an add and a delete (moving an item to a new id) makes them one step for readers too:
    a reader's view never holds both the old and the new id, nor neither. (The storage page: "Hold the lock yourself to make
    several changes one step"; "a reader never sees a half-made change".) Same through the index's search."""
    import sys
    sys.setswitchinterval(1e-5)
    L = lib()
    X = make_data(2000, D, seed=67)
    s, ix = make_index(X, "euclidean", n_clusters=8)
    stop, errors = threading.Event(), Errors()
    seen = dict(both=0, neither=0, views=0, search_both=0, search_neither=0, searches=0)
    def writer():
        old = 0  # the item with vector X[0] moves to a new id 400 times: at every moment exactly one copy is live
        for j in range(400):
            with s.write_lock:
                new = ix.add(X[0], dict(moved=j))
                ix.delete(old)
            old = new
        stop.set()
    def view_reader():
        while not stop.is_set():
            v = s.view(); seen["views"] += 1
            live = int((np.asarray(v.ids) >= len(X)).sum()) + (0 in v)
            if live > 1: seen["both"] += 1
            if live == 0: seen["neither"] += 1
    def search_reader():
        while not stop.is_set():
            ids, d = ix.search_batch(X[0], k=3, nprobe=8)
            seen["searches"] += 1
            zero = int((np.asarray(d)[0] < 1e-4).sum())
            if zero > 1: seen["search_both"] += 1
            if zero == 0: seen["search_neither"] += 1
    threads = [_thread(writer, errors, "writer"), _thread(view_reader, errors, "view reader"), _thread(search_reader, errors, "search reader")]
    hung = _join(threads, 150)
    if hung: return hung
    outs = [errors.outcome()]
    if seen["both"] or seen["neither"] or seen["search_both"] or seen["search_neither"]:
        outs.append(wrong(f"readers saw half of a locked add+delete: {seen['both']} views with both ids, {seen['neither']} with neither "
                          f"(of {seen['views']}); searches found it twice {seen['search_both']} times, never {seen['search_neither']} "
                          f"times (of {seen['searches']})"))
    else: outs.append(ok())
    return worst(outs, ["exceptions", "atomic"])
