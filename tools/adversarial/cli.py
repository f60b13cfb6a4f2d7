"""The CLI: a mistake is exit status != 0 with one line on stderr, found before the slow embedding; input files are never
overwritten; Ctrl-C exits 130 without a traceback. Most cases call `minivecdb.cli.main` in the worker (the embedding model
is loaded once per worker: group 'cli'); the Ctrl-C and smoke cases run the real `minivecdb` program."""
import json, os, signal, subprocess, sys, time
from pathlib import Path
import numpy as np
from .core import (case, lib, ok, wrong, unclear, loss, crash, worst, run_cli, judge_cli, stderr_lines, make_data,
                   quiet, unexpected, HarnessError, OK, LIB, cli_command, cli_env)

N_TEXTS = 100  # more than one embedding batch (64), so embedding before the check shows a progress bar on stderr


def _texts(t, name="t.txt", n=N_TEXTS):
    p = t.tmp / name
    p.write_text("".join(f"headline number {i} about topic {i % 7}\n" for i in range(n)))
    return p


def _index_store_384(t, name="s.mvdb", n=200):
    "A built index of random 384-d unit vectors (the default model's dimension), made without the model."
    L = lib()
    X = make_data(n, 384, seed=71); X /= np.linalg.norm(X, axis=1, keepdims=True)
    s = L.VectorStorage(384); s.add_bulk(X, [dict(text=f"t{i}", b=bool(i % 2)) for i in range(n)])
    ix = L.IVFIndex(s, n_clusters=4)
    with quiet(): ix.build()
    p = t.tmp / name; ix.save(p)
    return p


@case("CLI", group="cli", cost=8, timeout=120)
def cli_index_output_is_input(t):
    """`minivecdb index F -o F` (also as ./F and through a symlink): refused in one line before embedding; F untouched (issue 9, 4.7)."""
    src = _texts(t)
    data = src.read_bytes()
    (t.tmp / "link.txt").symlink_to(src)
    outs, labels = [], []
    for label, out, cwd in (("same path", src, None), ("./t.txt", "./t.txt", t.tmp), ("symlink", t.tmp / "link.txt", None)):
        src.write_bytes(data)
        rc, so, se = run_cli(["index", src, "-o", out], cwd=cwd)
        o = judge_cli(rc, se, words=[("input", "same file", "overwrite", "itself")])
        if src.read_bytes() != data: o = loss(f"the input file was replaced ({o.detail})")
        outs.append(o); labels.append(label)
    return worst(outs, labels)


@case("CLI", group="cli", cost=2, timeout=120)
def cli_index_output_is_directory(t):
    """`minivecdb index t.txt -o .` (and -o DIR): refused in one line naming the directory, before embedding anything (4.8)."""
    src = _texts(t)
    outs, labels = [], []
    for label, out in ((".", "."), ("absolute dir", t.tmp)):
        before = sorted(p.name for p in t.tmp.iterdir())
        rc, so, se = run_cli(["index", src, "-o", out], cwd=t.tmp)
        o = judge_cli(rc, se, words=["directory"])
        after = sorted(p.name for p in t.tmp.iterdir())
        if after != before and o.kind == OK: o = wrong(f"{o.detail}; it left {sorted(set(after) - set(before))}")
        outs.append(o); labels.append(label)
    return worst(outs, labels)


@case("CLI", group="cli", cost=2, timeout=120)
def cli_index_output_locked(t):
    """`minivecdb index t.txt -o S` while another process writes S: one line naming the lock, before embedding; S untouched."""
    from .locking import HOLDER
    src = _texts(t)
    p = t.tmp / "held.mvdb"
    h = subprocess.Popen([sys.executable, "-c", HOLDER, str(p), str(LIB)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        if h.stdout.readline().strip() != "READY": raise HarnessError("the lock holder did not start")
        before = p.read_bytes()
        rc, so, se = run_cli(["index", src, "-o", p])
        o = judge_cli(rc, se, words=[("lock", "another process", "being written")])
        if p.read_bytes() != before: o = loss(f"the locked store changed ({o.detail})")
        return o
    finally:
        h.stdin.close(); h.wait(10)


@case("CLI", group="cli", cost=2, timeout=120)
def cli_index_quiet(t):
    """`minivecdb index -q` prints one line (the "indexed N texts" summary) and nothing on stderr: no "Average list size" (issue 9, 3)."""
    src = _texts(t)
    rc, so, se = run_cli(["index", src, "-o", t.tmp / "q.mvdb", "-q"])
    if rc != 0: return wrong(f"exit {rc}: {' / '.join(stderr_lines(se))[-200:]!r}")
    lines = [l for l in so.splitlines() if l.strip()]
    if len(lines) != 1 or not lines[0].startswith("indexed") or stderr_lines(se):
        return wrong(f"stdout {lines!r}, stderr {stderr_lines(se)!r}")
    return ok()


@case("CLI", group="cli", cost=2, timeout=120)
def cli_index_unusable_input(t):
    """`minivecdb index` of a missing file, a directory, non-UTF-8 bytes, an empty file, a header-only CSV: one line each."""
    (t.tmp / "bin.txt").write_bytes(b"\xff\xfe\x00abc\n" * 3)
    (t.tmp / "empty.txt").write_text("")
    (t.tmp / "head.csv").write_text("text,genre\n")
    (t.tmp / "d").mkdir()
    outs, labels = [], []
    for name, words in (("missing.txt", [("no such", "not found", "does not exist")]), ("d", ["directory"]),
                        ("bin.txt", [("utf-8", "utf8", "text")]), ("empty.txt", ["empty"]), ("head.csv", [("no rows", "nothing")])):
        rc, so, se = run_cli(["index", t.tmp / name, "-o", t.tmp / "o.mvdb"])
        outs.append(judge_cli(rc, se, words=words)); labels.append(name)
    return worst(outs, labels)


@case("CLI", group="cli", cost=3, timeout=120)
def cli_csv_extra_fields(t):
    """A CSV row with more fields than the header: refused in one line naming the row (or indexed with a warning naming it);
    never stored silently under a None key. Chosen: refuse or warn, both name the row (issue 9, 4.10)."""
    rows = [f"headline {i},g{i % 3}" for i in range(N_TEXTS)]
    rows[1] = "headline 1,g1,EXTRA,MORE"
    p = t.tmp / "x.csv"; p.write_text("text,genre\n" + "\n".join(rows) + "\n")
    out = t.tmp / "x.mvdb"
    rc, so, se = run_cli(["index", p, "-o", out, "-q"])
    if rc != 0: return judge_cli(rc, se, words=[("field", "column"), ("row 2", "line 3")])
    warn = [l for l in stderr_lines(se) if any(w in l.lower() for w in ("field", "column", "extra"))]
    if not warn: return wrong("indexed silently: the extra fields were dropped without a word")
    s = lib().VectorStorage.load(out)
    bad = [m for _, _, m in s.get_all() if None in m or "null" in m]
    return wrong(f"warned, but stored a None key: {bad[0]}") if bad else ok(f"warned: {warn[0][:120]}")


@case("CLI", group="cli", cost=3, timeout=120)
def cli_csv_duplicate_columns(t):
    """A CSV header naming a column twice (text,genre,genre): refused in one line naming the column (or a warning naming it);
    not silently keeping the last value (issue 9, 4.10)."""
    rows = [f"headline {i},a{i},b{i}" for i in range(N_TEXTS)]
    p = t.tmp / "dup.csv"; p.write_text("text,genre,genre\n" + "\n".join(rows) + "\n")
    rc, so, se = run_cli(["index", p, "-o", t.tmp / "dup.mvdb", "-q"])
    if rc != 0: return judge_cli(rc, se, words=[("duplicate", "twice", "more than once"), "genre"])
    warn = [l for l in stderr_lines(se) if "genre" in l and any(w in l.lower() for w in ("duplicate", "twice", "more than once"))]
    return ok(f"warned: {warn[0][:120]}") if warn else wrong("indexed silently: one of the two genre columns was dropped")


@case("CLI", group="cli", cost=2, timeout=120)
def cli_jsonl_nan(t):
    """A JSONL field holding NaN on line 5: refused in one line before embedding, counting lines from 1 like the other CLI
    messages ("line 5", not "row 4") (issue 9, 4.10)."""
    lines = [json.dumps(dict(text=f"headline {i}", score=i)) for i in range(N_TEXTS)]
    lines[4] = '{"text": "headline 4", "score": NaN}'
    p = t.tmp / "n.jsonl"; p.write_text("\n".join(lines) + "\n")
    rc, so, se = run_cli(["index", p, "-o", t.tmp / "n.mvdb"])
    return judge_cli(rc, se, words=[("line 5", "row 5"), ("NaN", "not a number", "finite")], forbid=["row 4"])


@case("CLI", group="cli", cost=1, timeout=120)
def cli_demo_corrupt_store(t):
    """`minivecdb demo` with a corrupt demo store (the store file of its database's collection, or of old versions the
    demo's own store file): one line that says to run with --rebuild (issue 9, 4.10)."""
    home = t.tmp / "home"
    import minivecdb.cli as mc
    env = dict(MINIVECDB_HOME=home)
    old = os.environ.get("MINIVECDB_HOME"); os.environ["MINIVECDB_HOME"] = str(home)
    try:
        if hasattr(mc, "demo_database_path"):  # a database with the collection `headlines`, whose store file is then damaged
            import minivecdb.collection as coll
            db = coll.connect(mc.demo_database_path()); db.create_collection("headlines"); db.close()
            p = Path(mc.demo_database_path()) / "headlines" / "store.ivf"
        elif hasattr(mc, "demo_store_path"): p = Path(mc.demo_store_path())
        else: raise HarnessError("minivecdb.cli has neither demo_database_path nor demo_store_path: cannot find the demo store")
    finally:
        if old is None: os.environ.pop("MINIVECDB_HOME", None)
        else: os.environ["MINIVECDB_HOME"] = old
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"MINIVEC\0garbage" * 10)
    rc, so, se = run_cli(["demo", "-q"], env=env)
    return judge_cli(rc, se, words=["--rebuild"])


@case("CLI", group="cli", cost=2, timeout=120)
def cli_search_bad_arguments(t):
    """`minivecdb search` with -k 0, -k -3, --nprobe 0, an empty query, --where without '=': one line naming the problem."""
    p = _index_store_384(t)
    outs, labels = [], []
    for label, args, words in (("-k 0", ["q", "-k", "0"], ["k"]), ("-k -3", ["q", "-k", "-3"], ["k"]),
                               ("--nprobe 0", ["q", "--nprobe", "0"], ["nprobe"]), ("empty query", ["  "], [("empty", "query")]),
                               ("--where g", ["q", "--where", "g"], ["where"])):
        rc, so, se = run_cli(["search", p, *args])
        outs.append(judge_cli(rc, se, words=words)); labels.append(label)
    return worst(outs, labels)


@case("CLI", group="cli", cost=2, timeout=120)
def cli_where_bool_flag(t):
    """`minivecdb search S q --where b=true -k 200` returns only items whose b is true (not those with b == 1): strict, as the API."""
    L = lib()
    X = make_data(100, 384, seed=72); X /= np.linalg.norm(X, axis=1, keepdims=True)
    s = L.VectorStorage(384); s.add_bulk(X, [dict(b=[True, 1, False, 0][i % 4], i=i) for i in range(100)])
    ix = L.IVFIndex(s, n_clusters=2)
    with quiet(): ix.build()
    p = t.tmp / "b.mvdb"; ix.save(p)
    rc, so, se = run_cli(["search", p, "anything", "--where", "b=true", "-k", "100", "--nprobe", "2", "--json"])
    if rc != 0: return unclear(f"exit {rc}: {' / '.join(stderr_lines(se))[-200:]!r}") if "Traceback" in se else wrong(f"exit {rc}: {se.strip()[-200:]!r}")
    got = [r["metadata"]["b"] for r in json.loads(so)]
    bad = [g for g in got if g is not True]
    return wrong(f"--where b=true also matched b={sorted(set(map(repr, bad)))}") if bad else ok(f"{len(got)} results")


@case("CLI", group="cli", cost=2, timeout=120)
def cli_search_dimension_mismatch(t):
    """`minivecdb search` on a store of dimension 8 (not the model's 384): one line naming both dimensions."""
    L = lib(); s = L.VectorStorage(8); s.add_bulk(make_data(50, 8))
    ix = L.IVFIndex(s, n_clusters=2)
    with quiet(): ix.build()
    p = t.tmp / "d8.mvdb"; ix.save(p)
    rc, so, se = run_cli(["search", p, "hello"])
    return judge_cli(rc, se, words=["8", "384"])


@case("CLI", cost=1.5, timeout=60)
def cli_stats_bad_stores(t):
    """The real `minivecdb stats` on a missing file, garbage, a directory, a store without an index, a truncated store:
    exit 1 with one line on stderr, no traceback."""
    p = _index_store_384(t)
    L = lib(); s = L.VectorStorage(3); s.add([1, 2, 3]); s.save(t.tmp / "plain.mvdb"); s.close()
    (t.tmp / "garbage.mvdb").write_bytes(b"x" * 100)
    raw = p.read_bytes(); (t.tmp / "cut.mvdb").write_bytes(raw[:len(raw) // 2])
    (t.tmp / "d.mvdb").mkdir()
    outs, labels = [], []
    for name, words in (("missing.mvdb", [("no such", "not found")]), ("garbage.mvdb", [("not a minivecdb", "corrupt")]),
                        ("d.mvdb", ["directory"]), ("plain.mvdb", ["index"]), ("cut.mvdb", [("truncated", "corrupt")])):
        r = subprocess.run(cli_command() + ["stats", str(t.tmp / name)], capture_output=True, text=True, timeout=60, env=cli_env())
        outs.append(judge_cli(r.returncode, r.stderr, words=words)); labels.append(name)
    return worst(outs, labels)


def _sigint_default():
    "Start a child with SIGINT at its default, as a terminal does, even when this suite runs as a background job."
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _ctrl_c(t, when, attempts, delays=(0.0,)):
    "Run the real `minivecdb index` and send SIGINT just after the store appears ('after save') or while embedding."
    src = _texts(t, n=400 if when == "during embedding" else N_TEXTS)
    out = t.tmp / "c.mvdb"
    results = []
    for a in range(attempts + 2):  # a run that ends before the signal is inconclusive: try again, a little
        if len([r for r in results if r is not None]) >= attempts: break
        for f in t.tmp.glob("*c.mvdb*"): f.unlink()
        so_path, se_path = t.tmp / "ctrl_c.out", t.tmp / "ctrl_c.err"
        with open(so_path, "w") as so_f, open(se_path, "w") as se_f:
            p = subprocess.Popen(cli_command() + ["index", str(src), "-o", str(out)] + (["-q"] if when == "after save" else []),
                                 stdout=so_f, stderr=se_f, env=cli_env(), preexec_fn=_sigint_default)
        t0 = time.time()  # the waits below are limits against a hang (the case's own timeout is larger), not measurements
        if when == "after save":
            while not out.exists() and p.poll() is None and time.time() - t0 < 600: time.sleep(0.0005)
            time.sleep(delays[a % len(delays)])  # the store is saved; the process is finishing
        else:  # wait for the progress bar: embedding has started
            while p.poll() is None and "embedding" not in se_path.read_text() and time.time() - t0 < 600: time.sleep(0.01)
        if p.poll() is not None:
            p.wait(); results.append(None); continue
        os.kill(p.pid, signal.SIGINT)
        try: p.wait(timeout=300)
        except subprocess.TimeoutExpired:
            p.kill(); p.wait(); return crash("still running 300 s after Ctrl-C")
        results.append((p.returncode, so_path.read_text(), se_path.read_text()))
    return results


AT_IMPORT = """import os, signal, sys
sys.addaudithook(lambda event, args: event == "import" and args[0] == os.environ["SIGINT_AT_IMPORT"] and os.kill(os.getpid(), signal.SIGINT))
from minivecdb.cli import main
sys.exit(main())"""


@case("CLI", cost=4, timeout=150)
def cli_ctrl_c_during_imports(t):
    """`minivecdb index` (run as its console script runs it) interrupted exactly as numpy imports `datetime` from its compiled
    core, and as `torch` starts to be imported (an audit hook sends the SIGINT, whatever the machine's load): exit 130 with the
    one line "minivecdb: interrupted", never numpy's "PyCapsule_Import could not import module" ImportError (issue 21)."""
    src = _texts(t, n=5)
    outs, labels = [], []
    for module in ("datetime", "torch"):
        r = subprocess.run([sys.executable, "-c", AT_IMPORT, "index", str(src), "-o", str(t.tmp / "i.mvdb"), "-q"], capture_output=True,
                           text=True, timeout=300, env={**cli_env(), "SIGINT_AT_IMPORT": module}, preexec_fn=_sigint_default)
        if (r.returncode, r.stdout, r.stderr) == (130, "", "minivecdb: interrupted\n"): outs.append(ok())
        elif "Traceback" in r.stderr or "Original error" in r.stderr:
            outs.append(unclear(f"exit {r.returncode}: {' / '.join(stderr_lines(r.stderr))[-200:]!r}"))
        else: outs.append(wrong(f"exit {r.returncode} (expected 130), stdout {r.stdout[-80:]!r}, stderr {stderr_lines(r.stderr)[-2:]!r}"))
        labels.append(f"at import {module}")
    if (t.tmp / "i.mvdb").exists(): outs.append(wrong("a store was written though the run was interrupted before embedding"))
    return worst(outs, labels + ["store"][:len(outs) - len(labels)])


@case("CLI", cost=8, timeout=150)
def cli_ctrl_c_after_save(t):
    """`minivecdb index` (run as its console script runs it), interrupted (SIGINT) 10 ms after the store file appears, while the
    process finishes: exit status 130 (or death by SIGINT, which a shell also shows as 130), at most one line on stderr and no
    traceback; the store loads (issue 9, 4.9). A run that ends before the signal is inconclusive and retried; --all also tries
    0 and 30 ms."""
    # 5-15 ms after the save is where an interrupt used to land in the interpreter's teardown and print a traceback
    res = _ctrl_c(t, "after save", 3 if t.full else 1, (0.01, 0.0, 0.03))
    if not isinstance(res, list): return res
    outs = []
    for r in res:
        if r is None: continue
        rc, so, se = r
        if "Traceback" in se or "KeyboardInterrupt" in se:
            outs.append(unclear(f"exit {rc} with a traceback: {' / '.join(stderr_lines(se))[-160:]!r}"))
        elif rc in (130, -signal.SIGINT) and len(stderr_lines(se)) <= 1: outs.append(ok(f"exit {rc}"))
        elif rc == 0 and not stderr_lines(se): outs.append(ok("exit 0: the process was already ending when the signal came"))
        else: outs.append(wrong(f"exit {rc} after Ctrl-C (expected 130), stderr {stderr_lines(se)[-2:]!r}"))
    out = t.tmp / "c.mvdb"
    if out.exists():
        try: lib().IVFIndex.load(out)
        except Exception as e: outs.append(loss(f"the store saved before Ctrl-C does not load: {type(e).__name__}: {e}"))
    if not outs: return ok("inconclusive: every run ended before the signal")
    return worst(outs)


@case("CLI", "slow", cost=8, timeout=150)
def cli_ctrl_c_during_embedding(t):
    """The real `minivecdb index` interrupted while embedding: exit 130, one line ("interrupted"), no traceback, no store and no
    temporary file left."""
    res = _ctrl_c(t, "during embedding", 1)
    if not isinstance(res, list): return res
    if res[0] is None: return ok("inconclusive: the run ended before the signal")
    rc, so, se = res[0]
    if "Traceback" in se: return unclear(f"traceback: {stderr_lines(se)[-1][:160]!r}")
    lines = [l for l in stderr_lines(se) if "embedding" not in l]
    if rc != 130 or len(lines) > 1: return wrong(f"exit {rc}, stderr {lines[-2:]!r}")
    left = [f.name for f in t.tmp.iterdir() if "c.mvdb" in f.name and not f.name.endswith(".lock")]
    return wrong(f"left {left}") if left else ok()


@case("CLI", "slow", group="cli", cost=6, timeout=180)
def cli_index_json_output(t):
    """`minivecdb index F -o x.json` reloads with the right results (each stored text finds itself), or refuses .json clearly (4.1)."""
    src = _texts(t, n=300)
    out = t.tmp / "x.json"
    rc, so, se = run_cli(["index", src, "-o", out, "-q"])
    if rc != 0: return judge_cli(rc, se, words=["json"])
    L = lib()
    try:
        ix = L.IVFIndex.load(out)
        ids = np.asarray(ix.storage.ids)[:100]
        Q = np.stack([ix.storage.get(int(i))[0] for i in ids])
        got, _ = ix.search_batch(Q, k=1, nprobe=len(ix.centroids))
        frac = float(np.mean(np.asarray(got)[:, 0] == ids))
    except Exception as e: return unexpected(e)
    return ok() if frac == 1 else wrong(f"after `index -o x.json`, a stored text finds itself {frac:.3f} of the time with every list probed")


@case("CLI", "slow", cost=14, timeout=240)
def cli_real_index_then_search(t):
    """Smoke test of the real programs: `minivecdb index` then `search --json` and `stats --json` exit 0 and agree."""
    src = _texts(t)
    out = t.tmp / "s.mvdb"
    r = subprocess.run(cli_command() + ["index", str(src), "-o", str(out), "-q"], capture_output=True, text=True, timeout=120, env=cli_env())
    if r.returncode != 0: return wrong(f"index: exit {r.returncode}: {r.stderr[-200:]!r}")
    r = subprocess.run(cli_command() + ["search", str(out), "headline number 3 about topic 3", "-k", "3", "--json"],
                       capture_output=True, text=True, timeout=120, env=cli_env())
    if r.returncode != 0: return wrong(f"search: exit {r.returncode}: {r.stderr[-200:]!r}")
    res = json.loads(r.stdout)
    if res[0]["metadata"]["text"] != "headline number 3 about topic 3": return wrong(f"top result {res[0]}")
    r = subprocess.run(cli_command() + ["stats", str(out), "--json"], capture_output=True, text=True, timeout=60, env=cli_env())
    st = json.loads(r.stdout)
    return ok() if st.get("n_vectors") == N_TEXTS else wrong(f"stats: {st}")


@case("CLI", group="cli", cost=3, timeout=120)
def cli_csv_numbers_are_numbers(t):
    """`minivecdb index` of a CSV with a year column and a zip-code column: the year is stored as a number, so
    `{"year": 2010}` matches it, and the zip codes keep their leading zeros as text (issue 21: every CSV column was text)."""
    rows = [f"headline number {i},{2010 if i % 2 else 2024},{i:05d}" for i in range(N_TEXTS)]
    p = t.tmp / "y.csv"; p.write_text("text,year,zip\n" + "\n".join(rows) + "\n")
    out = t.tmp / "y.mvdb"
    rc, so, se = run_cli(["index", p, "-o", out, "-q"])
    if rc != 0: return wrong(f"index: exit {rc}: {' / '.join(stderr_lines(se))[-200:]!r}")
    L = lib()
    ix = L.IVFIndex.load(out)
    try:
        metas = [m for _, _, m in ix.storage.get_all()]
        got = ix.search(np.asarray(ix.storage.get(1)[0]), k=N_TEXTS, nprobe=len(ix.centroids), where={"year": 2010})
    except Exception as e: return unexpected(e)
    finally: ix.storage.close()
    if [type(m["year"]) for m in metas[:2]] != [int, int]: return wrong(f"year stored as {type(metas[0]['year']).__name__}: {metas[0]}")
    if metas[1]["zip"] != "00001": return wrong(f"zip 00001 stored as {metas[1]['zip']!r}")
    n = len(list(got))
    return ok(f"{n} matches") if n == N_TEXTS // 2 else wrong(f'where={{"year": 2010}} matched {n} of {N_TEXTS // 2} items')
