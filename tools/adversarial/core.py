"""Registry, outcomes, error judging, oracles and file-format helpers shared by the adversarial cases.

Outcomes, most severe first when a case holds several trials: data loss, crash or hang, wrong result,
unclear error, correct or clear error.
"""
from __future__ import annotations
import contextlib, io, json, os, re, struct, sys, tempfile, traceback, zlib
from dataclasses import dataclass, field
from pathlib import Path
import numpy as np

REPO = Path(__file__).resolve().parents[2]
# the minivecdb under test: the repository, or another tree given with `tools/adversarial.py --lib DIR`
LIB = Path(os.environ.get("ADVERSARIAL_LIB") or REPO).resolve()

OK, UNCLEAR, WRONG, CRASH, LOSS = "correct or clear error", "unclear error", "wrong result", "crash or hang", "data loss"
OUTCOMES = (OK, UNCLEAR, WRONG, CRASH, LOSS)
_SEVERITY = {OK: 0, UNCLEAR: 1, WRONG: 2, CRASH: 3, LOSS: 4}
CATEGORIES = ("input validation", "numerics", "metadata & filters", "persistence & corruption", "locking & paths",
              "concurrency", "CLI", "api behaviour")


@dataclass
class Outcome:
    kind: str
    detail: str = ""
    def __post_init__(self): assert self.kind in OUTCOMES, self.kind


def ok(detail=""): return Outcome(OK, detail)
def unclear(detail): return Outcome(UNCLEAR, detail)
def wrong(detail): return Outcome(WRONG, detail)
def crash(detail): return Outcome(CRASH, detail)
def loss(detail): return Outcome(LOSS, detail)


def worst(outcomes, label=None) -> Outcome:
    "The most severe of `outcomes` (sub-trials of one case); its detail lists every trial that was not OK."
    outcomes = list(outcomes)
    labels = label or [None] * len(outcomes)
    bad = [(l, o) for l, o in zip(labels, outcomes) if o.kind != OK]
    if not bad: return ok(f"{len(outcomes)} trials")
    top = max(bad, key=lambda lo: _SEVERITY[lo[1].kind])[1].kind
    parts = [f"[{l}] {o.kind}: {o.detail}" if l else f"{o.kind}: {o.detail}" for l, o in bad]
    return Outcome(top, f"{len(bad)}/{len(outcomes)} trials: " + " | ".join(parts))


class HarnessError(Exception):
    "The suite itself could not do what a case needs (not a finding about minivecdb)."


# ---------------------------------------------------------------- registry
@dataclass
class Case:
    name: str
    category: str
    speed: str          # 'fast' or 'slow'
    fn: object
    doc: str
    timeout: float = 30
    fresh: bool = False  # run in a worker process of its own (process-wide state: threads, BLAS, signals)
    group: str = None    # cases of one group run one after another in the same worker (to share a loaded model)
    cost: float = 0.3    # rough seconds, to schedule long cases first


REGISTRY: dict = {}


def case(category, speed="fast", *, timeout=30, fresh=False, group=None, cost=0.3):
    "Register the decorated function `f(ctx) -> Outcome` as a case named after it."
    assert category in CATEGORIES, category
    assert speed in ("fast", "slow")
    def deco(fn):
        name = fn.__name__.replace("_", "-")
        assert name not in REGISTRY, name
        REGISTRY[name] = Case(name, category, speed, fn, (fn.__doc__ or "").strip(), timeout, fresh, group, cost)
        return fn
    return deco


@dataclass
class Ctx:
    "What a case gets: a fresh temporary directory, and whether this is the long (`--all`) run."
    tmp: Path
    full: bool = False
    notes: list = field(default_factory=list)


def lib():
    "The public API under test, as a namespace."
    import types
    from minivecdb import vector_storage as vs, ivf_index as ii
    return types.SimpleNamespace(VectorStorage=vs.VectorStorage, IVFIndex=ii.IVFIndex, CorruptStoreError=vs.CorruptStoreError,
                                 StoreLockedError=vs.StoreLockedError)


# ---------------------------------------------------------------- judging errors
# Phrases that betray a raw numpy / Python / pathlib message instead of one written for the user.
RAW_MARKERS = ("inhomogeneous", "ufunc", "has no attribute", "unhashable", "requested and", "unable to allocate",
               "only integer scalar arrays", "index out of range", "could not convert", "setting an array element",
               "not subscriptable", "not supported between", "invalid literal for int",
               "cannot reshape", "expected non-negative integer", "has an empty name", "object is not callable",
               "object is not iterable", "takes no keyword", "positional argument", "must be real number",
               "'nonetype' object", "list indices must", "string indices must", "index is out of bounds", "buffer is smaller",
               "negative dimensions", "array is too big", "data type", "not understood", "maximum supported dimension")
RAW_TYPES = ("UFuncTypeError", "AxisError", "JSONDecodeError", "_ArrayMemoryError", "ComplexWarning", "UnicodeDecodeError")


def sensible_types():
    L = lib()
    return (ValueError, TypeError, KeyError, RuntimeError, OSError, L.CorruptStoreError, L.StoreLockedError)


def message_of(e: BaseException) -> str:
    if isinstance(e, KeyError) and len(e.args) == 1 and isinstance(e.args[0], str): return e.args[0]
    return str(e)


def _words_ok(msg, words):
    "Missing word groups: each group is a word or a tuple of alternatives, matched case-insensitively."
    low = msg.lower()
    missing = []
    for g in words:
        alts = (g,) if isinstance(g, str) else tuple(g)
        if not any(a.lower() in low for a in alts): missing.append("/".join(alts))
    return missing


_TMP_PATH = re.compile(re.escape(str(Path(tempfile.gettempdir()).resolve())) + r"/[^\s'\",;:)]*")


def judge_message(msg: str, words=(), forbid=()) -> Outcome:
    """One clear sentence that names what was wrong (`words`), with no raw internals and nothing misleading (`forbid`).
    Paths under the temporary directory are blanked first: a word must not count because it is in a file name."""
    m = msg.strip()
    if not m: return unclear("empty error message")
    if "\n" in m or "Traceback" in m: return unclear(f"message is not one line: {m[:160]!r}")
    if len(m) > 600: return unclear(f"message is {len(m)} characters long: {m[:160]!r}...")
    low = _TMP_PATH.sub("<path>", m).lower()
    for r in RAW_MARKERS:
        if r in low: return unclear(f"raw message ({r!r}): {m[:200]!r}")
    for f in forbid:
        if f.lower() in low: return unclear(f"misleading message ({f!r}): {m[:200]!r}")
    missing = _words_ok(low, words)
    if missing: return unclear(f"message does not mention {', '.join(map(repr, missing))}: {m[:200]!r}")
    return ok(m[:200])


def judge_error(e: BaseException, words=(), forbid=(), types=None) -> Outcome:
    "Classify an exception raised where an error was the right answer."
    types = types or sensible_types()
    tn = type(e).__name__
    where = _origin(e)
    if tn in RAW_TYPES or type(e).__module__.split(".")[0] in ("numpy", "json") or not isinstance(e, types):
        return unclear(f"raw {tn}: {message_of(e)[:200]!r}{where}")
    o = judge_message(message_of(e), words, forbid)
    if o.kind != OK: o.detail = f"{tn}: {o.detail}"
    else: o.detail = f"{tn}: {o.detail}"
    return o


def _origin(e):
    "' (at file:line)' of the innermost frame in minivecdb, for the report."
    tb = traceback.extract_tb(e.__traceback__)
    mine = [f for f in tb if "minivecdb" in f.filename and "tools" not in f.filename]
    if not mine: return ""
    f = mine[-1]
    return f" (at {Path(f.filename).name}:{f.lineno})"


def unexpected(e: BaseException, what="") -> Outcome:
    "An exception where an answer was due: raw ones are unclear errors, a clear refusal is still a wrong result."
    j = judge_error(e) if not isinstance(e, MemoryError) else unclear(f"MemoryError: {str(e)[:160]!r}")
    if j.kind == OK: return wrong(f"{what}refused where an answer was due: {j.detail}")
    j.detail = f"{what}{j.detail}{_origin(e) if _origin(e) not in j.detail else ''}"
    return j


def expect_error(fn, words=(), forbid=(), types=None, accept=None) -> Outcome:
    """Run `fn()`: an error must be a clear one (judge_error). If it returns, `accept(result)` (-> Outcome or None)
    decides; without `accept` a return is a wrong result."""
    try:
        with warnings_as_errors_off():
            r = fn()
    except MemoryError as e:
        return unclear(f"MemoryError: {str(e)[:160]!r}{_origin(e)}")
    except Exception as e:
        return judge_error(e, words, forbid, types)
    if accept is not None:
        o = accept(r)
        if o is not None: return o
    return wrong(f"no error; returned {short(r)}")


@contextlib.contextmanager
def warnings_as_errors_off():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def short(x, n=160):
    s = repr(x)
    s = " ".join(s.split())
    return s if len(s) <= n else s[:n] + "..."


@contextlib.contextmanager
def quiet():
    "Swallow what the library prints (build() prints a summary today)."
    with contextlib.redirect_stdout(io.StringIO()): yield


@contextlib.contextmanager
def chdir(path):
    old = os.getcwd()
    os.chdir(path)
    try: yield
    finally: os.chdir(old)


# ---------------------------------------------------------------- oracles
def exact_distances(Q, X, metric) -> np.ndarray:
    """(nq, n) float64 distances. Cosine is the true scale-invariant 1 - cos (distance 1 when a vector is zero);
    euclidean from the differences, never from expanded norms."""
    Q, X = np.atleast_2d(np.asarray(Q, np.float64)), np.atleast_2d(np.asarray(X, np.float64))
    if metric == "dot": return -(Q @ X.T)
    if metric == "cosine":
        def unit(A):
            m = np.abs(A).max(1, keepdims=True); m[m == 0] = 1
            A = A / m                                          # rescale first: tiny and huge vectors stay exact
            n = np.linalg.norm(A, axis=1, keepdims=True); n[n == 0] = 1
            return A / n
        return 1 - unit(Q) @ unit(X).T
    out = np.empty((len(Q), len(X)))
    step = max(1, 4_000_000 // max(1, X.size))
    for i in range(0, len(Q), step):
        diff = Q[i:i + step, None, :] - X[None]
        scale = np.abs(diff).max(-1, keepdims=True); scale[scale == 0] = 1
        out[i:i + step] = np.linalg.norm(diff / scale, axis=-1) * scale[..., 0]
    return out


def pair_distances(Q, V, metric) -> np.ndarray:
    "(nq, k) float64 distances from query i to each vector V[i, j] (V: (nq, k, d)), with the conventions of exact_distances."
    Q, V = np.asarray(Q, np.float64), np.asarray(V, np.float64)
    if metric == "dot": return -np.einsum("id,ikd->ik", Q, V)
    if metric == "cosine":
        def unit(A):
            m = np.abs(A).max(-1, keepdims=True); m[m == 0] = 1
            A = A / m
            n = np.linalg.norm(A, axis=-1, keepdims=True); n[n == 0] = 1
            return A / n
        return 1 - np.einsum("id,ikd->ik", unit(Q), unit(V))
    diff = Q[:, None, :] - V
    scale = np.abs(diff).max(-1, keepdims=True); scale[scale == 0] = 1
    return np.linalg.norm(diff / scale, axis=-1) * scale[..., 0]


def check_knn(ids, dists, Q, live_ids, live_X, metric, k, rel=1e-3, what="") -> Outcome:
    """Full-probe results against brute force in float64 over the live vectors. Ties are fine: the exact distances
    of the returned ids must match the brute-force top-k distances. Results may be padded (-1, inf) or capped."""
    ids, dists = np.atleast_2d(np.asarray(ids)), np.atleast_2d(np.asarray(dists, np.float64))
    live_ids = np.asarray(live_ids, np.int64)
    Q = np.atleast_2d(Q)
    if ids.shape != dists.shape or ids.shape[0] != len(Q): return wrong(f"{what}result shapes {ids.shape}/{dists.shape} for {len(Q)} queries")
    nq, want_n = len(Q), min(k, len(live_ids))
    if ids.shape[1] < want_n: return wrong(f"{what}{ids.shape[1]} results per query, expected {want_n}")
    if want_n == 0:
        bad = ~np.all(ids == -1, axis=1)
        return wrong(f"{what}results from an empty collection: {ids[bad][0][:5].tolist()}") if bad.any() else ok(f"{what}{nq} queries, no vectors")
    D = exact_distances(Q, live_X, metric)
    top = np.sort(np.partition(D, want_n - 1, axis=1)[:, :want_n], axis=1)
    scale0 = max(float(np.median(np.abs(top[:, -1]))), 1e-6)
    order = np.argsort(live_ids); sid = live_ids[order]
    first, fd = ids[:, :want_n], dists[:, :want_n]
    p = np.clip(np.searchsorted(sid, first), 0, len(sid) - 1)
    found = sid[p] == first
    exact = np.take_along_axis(D, order[p], 1)
    srt = np.sort(first, axis=1)
    row_ok = found.all(1) & (np.diff(srt, axis=1) != 0).all(1) & np.isfinite(fd).all(1)
    row_ok &= (np.abs(fd - exact) <= rel * np.maximum(np.abs(exact), scale0) + 1e-6).all(1)
    row_ok &= (np.abs(np.sort(exact, axis=1) - top) <= rel * np.maximum(np.abs(top), scale0) + 1e-6).all(1)
    if ids.shape[1] > want_n:
        row_ok &= (ids[:, want_n:] == -1).all(1) & np.isinf(dists[:, want_n:]).all(1)
    if row_ok.all(): return ok(f"{what}{nq} queries equal brute force")
    bad = np.flatnonzero(~row_ok)
    problems = []
    for qi in bad[:2].tolist():
        row, f = first[qi], found[qi]
        if not f.all(): msg = f"id {int(row[~f][0])} is not live" if row[~f][0] >= 0 else f"{int((row >= 0).sum())} results, expected {want_n}"
        elif len(set(row.tolist())) != want_n: msg = "an id is returned twice"
        elif not np.isfinite(fd[qi]).all(): msg = f"non-finite distance {fd[qi][~np.isfinite(fd[qi])][0]}"
        elif np.any(np.abs(fd[qi] - exact[qi]) > rel * np.maximum(np.abs(exact[qi]), scale0) + 1e-6):
            j = int(np.argmax(np.abs(fd[qi] - exact[qi])))
            msg = f"id {int(row[j])}: returned distance {fd[qi][j]:.6g}, exact {exact[qi][j]:.6g}"
        elif ids.shape[1] > want_n and not ((ids[qi, want_n:] == -1).all() and np.isinf(dists[qi, want_n:]).all()):
            msg = "padding is not -1 / inf"
        else: msg = f"not the nearest: k-th exact distance {np.sort(exact[qi])[-1]:.6g}, brute force {top[qi][-1]:.6g}"
        problems.append(f"query {qi}: {msg}")
    bf = live_ids[np.argsort(D[bad], axis=1)[:, :want_n]]
    recall = np.mean([len(set(a.tolist()) & set(b.tolist())) / want_n for a, b in zip(first[bad], bf)] + [1.0] * (nq - len(bad)))
    return wrong(f"{what}{len(bad)}/{nq} queries differ from brute force, recall@{k} {recall:.3f} ({'; '.join(problems)})")


def live_state(storage):
    "(ids, vectors float32) of the live vectors, through the public API."
    return np.asarray(storage.ids).copy(), np.asarray(storage.vectors, np.float32).copy()


def make_data(n, d, seed=0, offset=0.0, scale=1.0):
    rng = np.random.default_rng(seed)
    return (offset + scale * rng.normal(size=(n, d))).astype(np.float32)


def make_index(X, metric="cosine", n_clusters=8, nprobe=None, metadatas=None, seed=0):
    "A storage holding `X` and a built IVFIndex over it (quietly)."
    L = lib()
    s = L.VectorStorage(X.shape[1])
    s.add_bulk(X, metadatas)
    ix = L.IVFIndex(s, nprobe=nprobe or n_clusters, distance_fn=metric, n_clusters=n_clusters, seed=seed)
    with quiet(): ix.build()
    return s, ix


def full_probe_check(ix, Q, k=10, what="", where=None):
    "Search `Q` probing every list and compare with brute force over the storage's live vectors."
    ids, d = ix.search_batch(Q, k=k, nprobe=_nlist(ix), where=where)
    li, lx = live_state(ix.storage)
    return check_knn(ids, d, Q, li, lx, ix.distance_fn, k, what=what)


def _nlist(ix):
    c = getattr(ix, "centroids", None)
    return len(c) if c is not None else (ix.n_clusters or 1)


def blas_threads():
    "numpy's BLAS thread counts (threadpoolctl), as a tuple."
    from threadpoolctl import threadpool_info
    return tuple(i["num_threads"] for i in threadpool_info() if i.get("user_api") == "blas")


# ---------------------------------------------------------------- the binary store format (prefix, JSON header, sections)
PREFIX = struct.Struct("<8sIII")  # magic, format version, header length, header CRC-32
ALIGN = 64
def aligned(n): return -(-n // ALIGN) * ALIGN


def read_store(path):
    "(bytes, header dict, base offset of the sections) of a binary store."
    raw = Path(path).read_bytes()
    try:
        magic, ver, hlen, hcrc = PREFIX.unpack(raw[:PREFIX.size])
        header = json.loads(raw[PREFIX.size:PREFIX.size + hlen])
    except Exception as e: raise HarnessError(f"cannot parse the store format of {path}: {e}")
    return raw, header, aligned(PREFIX.size + hlen)


def section_span(header, base, name):
    "(start, nbytes) in the file of section `name`: 'vectors', 'ids', 'metadata' or an extras array name."
    try:
        n, d = header["n_rows"], header["dimension"]
        if name == "vectors": return base + header["vectors"], n * d * 4
        if name == "ids": return base + header["ids"], n * 8
        if name == "metadata": return base + header["metadata"]["offset"], header["metadata"]["nbytes"]
        e = header["extras"][name]
        return base + e["offset"], int(np.prod(e["shape"])) * np.dtype(e["dtype"]).itemsize
    except (KeyError, TypeError) as ex: raise HarnessError(f"cannot locate section {name!r} in the header ({ex!r}); the format changed")


def rewrite_header(path, header, raw=None, version=None, out=None):
    "Write the store at `path` again with `header` (a valid CRC), moving the sections if the header's length changes."
    raw = raw if raw is not None else Path(path).read_bytes()
    magic, ver, hlen, _ = PREFIX.unpack(raw[:PREFIX.size])
    body = raw[aligned(PREFIX.size + hlen):]
    h = json.dumps(header).encode()
    head = PREFIX.pack(magic, ver if version is None else version, len(h), zlib.crc32(h)) + h
    head += b"\0" * (aligned(len(head)) - len(head))
    Path(out or path).write_bytes(head + body)


def flip_bit(raw: bytes, bit: int) -> bytes:
    b = bytearray(raw)
    b[bit // 8] ^= 1 << (bit % 8)
    return bytes(b)


# ---------------------------------------------------------------- the CLI, in this process (model loaded once per worker)
def run_cli(argv, cwd=None, env=None):
    "(exit status, stdout, stderr) of `minivecdb argv` run in this process; status 'traceback' if an exception escaped."
    from minivecdb.cli import main
    out, err = io.StringIO(), io.StringIO()
    old_env = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update({k: str(v) for k, v in (env or {}).items()})
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), chdir(cwd or os.getcwd()):
            try: rc = main([str(a) for a in argv])
            except SystemExit as e: rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException:
                rc = "traceback"
                err.write(traceback.format_exc())
    finally:
        for k, v in old_env.items():
            if v is None: os.environ.pop(k, None)
            else: os.environ[k] = v
    return rc, out.getvalue(), err.getvalue()


def stderr_lines(err):
    return [l for l in re.split(r"[\r\n]+", err) if l.strip()]


def judge_cli(rc, err, words=(), forbid=()) -> Outcome:
    "Exit status != 0 with exactly one line on stderr that names what was wrong."
    lines = stderr_lines(err)
    if rc == "traceback" or "Traceback" in err:
        last = lines[-1] if lines else ""
        return unclear(f"traceback from the CLI: {last[:200]!r}")
    if rc == 0: return wrong(f"exit status 0 (stderr: {' / '.join(lines)[:160]!r})")
    if len(lines) != 1: return unclear(f"exit {rc} with {len(lines)} lines on stderr: {' / '.join(lines)[:200]!r}")
    o = judge_message(lines[0], words, forbid)
    o.detail = f"exit {rc}: {o.detail}"
    return o


def cli_command():
    """The `minivecdb` program as its console script runs it (`sys.exit(main())`), from the minivecdb under test."""
    return [sys.executable, "-c", "import sys; from minivecdb.cli import main; sys.exit(main())"]


def cli_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(LIB)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env
