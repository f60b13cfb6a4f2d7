"""Locking & paths: one writer per store file however its path is spelled, clear errors for bad paths, readers never blocked."""
import os, subprocess, sys
from .core import (case, lib, ok, wrong, unclear, loss, worst, expect_error, make_data, chdir, unexpected, LIB)

HOLDER = r'''
import sys
sys.path.insert(0, sys.argv[2])
from minivecdb.vector_storage import VectorStorage
s = VectorStorage(3); s.add([1, 2, 3], {"holder": True}); s.save(sys.argv[1])
print("READY", flush=True)
sys.stdin.read()
'''


def _storage(n=20, d=4):
    L = lib(); s = L.VectorStorage(d); s.add_bulk(make_data(n, d), [dict(i=i) for i in range(n)]); return s


@case("locking & paths")
def lock_absolute_then_relative(t):
    """A writer that saves to /abs/dir/s.mvdb and then to s.mvdb (cwd = dir) is the same writer: no StoreLockedError (issue 9, 4.5)."""
    s = _storage()
    p = (t.tmp / "s.mvdb").resolve()
    try:
        s.save(p)
        s.add([1, 2, 3, 4])
        with chdir(t.tmp): s.save("s.mvdb")
    except Exception as e: return unexpected(e)
    L = lib()
    return ok() if len(L.VectorStorage.load(p)) == 21 else loss("the second save did not land")


@case("locking & paths")
def lock_other_spellings(t):
    """The same file through a symlinked directory, 'a/../a/s.mvdb', './s.mvdb' and a str vs Path: one writer, no self-lockout."""
    s = _storage()
    real = t.tmp / "real"; real.mkdir(); (real / "a").mkdir()
    link = t.tmp / "link"; link.symlink_to(real, target_is_directory=True)
    spellings = [real / "s.mvdb", link / "s.mvdb", real / "a" / ".." / "s.mvdb", str(real / "s.mvdb")]
    outs, labels = [], []
    for i, sp in enumerate(spellings):
        try:
            s.add([i, 0, 0, 0]); s.save(sp); outs.append(ok())
        except Exception as e: outs.append(unexpected(e))
        labels.append(str(sp).replace(str(t.tmp), "T"))
    try:
        with chdir(real): s.add([9, 9, 9, 9]); s.save("./s.mvdb"); outs.append(ok())
    except Exception as e: outs.append(unexpected(e))
    labels.append("./s.mvdb")
    n = len(lib().VectorStorage.load(real / "s.mvdb"))
    if n != len(s): outs.append(loss(f"the file holds {n} vectors, the storage {len(s)}")); labels.append("file")
    return worst(outs, labels)


@case("locking & paths")
def second_storage_same_process(t):
    """Two storages of one process saving one file: the second gets StoreLockedError that does not blame "another process" with
    our own pid; the file keeps the first one's data; after close() the second may save."""
    L = lib()
    a, b = _storage(5), _storage(7)
    p = t.tmp / "s.mvdb"
    a.save(p)
    o = expect_error(lambda: b.save(p), words=[("lock", "writer", "another")], types=(L.StoreLockedError,),
                     forbid=[f"another process (pid {os.getpid()})"])
    outs = [o]
    if len(L.VectorStorage.load(p)) != 5: outs.append(loss("the refused save changed the file"))
    a.close()
    try: b.save(p); outs.append(ok() if len(L.VectorStorage.load(p)) == 7 else wrong("save after close did not land"))
    except Exception as e: outs.append(unexpected(e, "after close: "))
    return worst(outs, ["locked", "file kept", "after close"])


@case("locking & paths", cost=0.8)
def locked_by_other_process(t):
    """A store another process is writing: save raises StoreLockedError naming that process's pid; the file is untouched;
    loading it (a reader) still works."""
    L = lib()
    p = t.tmp / "held.mvdb"
    h = subprocess.Popen([sys.executable, "-c", HOLDER, str(p), str(LIB)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        if h.stdout.readline().strip() != "READY": return unclear("the lock-holding process did not start")
        before = p.read_bytes()
        s = _storage()
        outs = [expect_error(lambda: s.save(p), words=[("lock", "another"), str(h.pid)], types=(L.StoreLockedError,))]
        if p.read_bytes() != before: outs.append(loss("the refused save changed the other writer's file"))
        try: r = L.VectorStorage.load(p); outs.append(ok() if r.get(0)[1] == {"holder": True} else wrong("read back wrong"))
        except Exception as e: outs.append(unexpected(e, "reader: "))
        return worst(outs, ["locked", "file kept", "reader"])
    finally:
        h.stdin.close(); h.wait(10)


@case("locking & paths")
def save_into_missing_directory(t):
    """save('missing/dir/s.mvdb'): an OSError naming the missing directory (not only a '.lock' file), nothing created."""
    s = _storage()
    q = t.tmp / "missing" / "dir" / "s.mvdb"
    o = expect_error(lambda: s.save(q), words=[("no such", "does not exist", "missing")], forbid=[".lock'"])
    if (t.tmp / "missing").exists(): o = wrong(f"{o.detail}; and it created {t.tmp / 'missing'}")
    return o


@case("locking & paths")
def save_onto_a_directory(t):
    """save(DIR) where DIR is an existing directory: a clear error naming the directory; DIR and its files untouched."""
    s = _storage()
    d = t.tmp / "adir"; d.mkdir(); (d / "keep.txt").write_text("x")
    o = expect_error(lambda: s.save(d), words=["directory"])
    if not (d.is_dir() and (d / "keep.txt").read_text() == "x"): return loss(f"the directory was changed ({o.detail})")
    left = [f.name for f in t.tmp.iterdir() if f.name.startswith(".adir.")]
    if left: return wrong(f"{o.detail}; left {left}")
    return o


@case("locking & paths")
def lock_released_by_close_and_with(t):
    """close() and `with` release the writer lock: another storage can then save the same file."""
    L = lib()
    p = t.tmp / "s.mvdb"
    outs = []
    try:
        with _storage(3) as a: a.save(p)
        b = _storage(4); b.save(p); b.close()
        c = L.VectorStorage.load(p); c.add([0, 0, 0, 1]); c.save(p); c.close()
        outs.append(ok() if len(L.VectorStorage.load(p)) == 5 else wrong("the last save did not land"))
    except Exception as e: outs.append(unexpected(e))
    return worst(outs)


@case("locking & paths")
def one_storage_two_files(t):
    """One storage saving a.mvdb then b.mvdb: both files load; after it moved on, another storage may write a.mvdb (or a clear
    StoreLockedError if a writer keeps every file it wrote locked)."""
    L = lib()
    s = _storage(6)
    a, b = t.tmp / "a.mvdb", t.tmp / "b.mvdb"
    try:
        s.save(a); s.save(b)
        if len(L.VectorStorage.load(a)) != 6 or len(L.VectorStorage.load(b)) != 6: return loss("a file did not land")
    except Exception as e: return unexpected(e)
    o = expect_error(lambda: _storage(2).save(a), words=[("lock", "writer")], types=(L.StoreLockedError,), accept=lambda r: ok("a released"))
    return o


CRASHER = r"""
import os, sys
sys.path.insert(0, sys.argv[2])
from minivecdb.vector_storage import VectorStorage
s = VectorStorage(3); s.add([1, 2, 3]); s.save(sys.argv[1])
open(os.path.join(os.path.dirname(sys.argv[1]), "." + os.path.basename(sys.argv[1]) + ".crashed.tmp"), "wb").write(b"x" * 1000)
os._exit(9)  # die holding the lock, leaving a temporary file behind, as a crash would
"""


@case("locking & paths")
def stale_lock_after_crash(t):
    """A writer process that died without closing (lock file and a temporary file left behind): the next writer saves without
    StoreLockedError and the stale temporary file is cleaned up."""
    L = lib()
    p = t.tmp / "c.mvdb"
    r = subprocess.run([sys.executable, "-c", CRASHER, str(p), str(LIB)], capture_output=True, text=True, timeout=60)
    if r.returncode != 9: return unclear(f"the crashing writer did not run: {r.stderr[-200:]!r}")
    s = _storage(4)
    try: s.save(p)
    except Exception as e: return unexpected(e)
    left = [f.name for f in t.tmp.iterdir() if f.name.endswith(".tmp")]
    if len(L.VectorStorage.load(p)) != 4: return loss("the save did not land")
    return wrong(f"stale temporary files left: {left}") if left else ok()


@case("locking & paths")
def save_through_symlinked_file(t):
    """Saving to link.mvdb, a symlink to real.mvdb (say current.mvdb -> v3.mvdb): the data lands in real.mvdb and the link stays
    a link; and the writer lock is the target's, so a second storage saving real.mvdb meanwhile gets StoreLockedError.
    Chosen: a path is the file it names, as SQLite treats a symlinked database."""
    import os
    L = lib()
    real, link = t.tmp / "real.mvdb", t.tmp / "link.mvdb"
    a = _storage(3); a.save(real); a.close()
    os.symlink("real.mvdb", link)
    outs, labels = [], []
    b = L.VectorStorage.load(link); b.add([9, 9, 9, 9])
    try: b.save(link)
    except Exception as e: return unexpected(e)
    probs = []
    if not link.is_symlink(): probs.append("the symlink was replaced by a regular file")
    if len(L.VectorStorage.load(real)) != 4: probs.append(f"real.mvdb still holds {len(L.VectorStorage.load(real))} vectors")
    outs.append(wrong("; ".join(probs)) if probs else ok()); labels.append("target updated")
    c = _storage(2)
    outs.append(expect_error(lambda: c.save(real), words=[("lock", "writer", "another")], types=(L.StoreLockedError,),
                             accept=lambda r: wrong("a second writer saved the target while the first held it through the link")))
    labels.append("one lock")
    return worst(outs, labels)
