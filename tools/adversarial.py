#!/usr/bin/env python
"""Adversarial suite for minivecdb: odd inputs, corrupt files, concurrency, the CLI, full disks, and the defects of issue 9.

Every case runs an action and classifies what happened as exactly one of
  correct or clear error | unclear error | wrong result | crash or hang | data loss
against the intended behaviour (brute force in float64 over the live vectors, a dict model of what was stored, or
an error of a sensible type whose one-line message names the problem). Cases run in worker processes with a timeout,
so a hang or a dead interpreter is recorded, not suffered.

  python tools/adversarial.py            fast cases (the default run: 2-8 minutes on a busy 2-core machine); exit 1 if any is not correct
  python tools/adversarial.py --all      fast and slow cases
  python tools/adversarial.py --list     the cases: category, speed, name, intended behaviour
  python tools/adversarial.py --case NAME [--case NAME2]   run some cases (any speed), with details
The cases live in tools/adversarial/ (one module per theme; see `core.case`).
"""
from __future__ import annotations
import argparse, json, os, queue, resource, shutil, signal, subprocess, sys, tempfile, threading, time, traceback
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
REPO = TOOLS.parent
for p in (str(REPO), str(TOOLS)):
    if p not in sys.path: sys.path.insert(0, p)

MEM_LIMIT = 8 << 30  # address-space limit of a worker: a 7 TiB allocation fails at once instead of swapping


# ---------------------------------------------------------------- worker side
def worker_main():
    "Run cases named on stdin, one JSON request per line; answer one JSON line per case on the original stdout."
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    sys.stdout = open(os.devnull, "w")
    try: resource.setrlimit(resource.RLIMIT_AS, (MEM_LIMIT, MEM_LIMIT))
    except (ValueError, OSError): pass
    if os.environ.get("ADVERSARIAL_LIB"): sys.path.insert(0, os.environ["ADVERSARIAL_LIB"])
    try:  # k-means runs on torch: one intra-op thread keeps builds at milliseconds on a busy 2-core machine (numpy's BLAS is untouched)
        import torch
        torch.set_num_threads(int(os.environ.get("ADVERSARIAL_TORCH_THREADS", "1")))
    except ImportError: pass
    from adversarial import load_all
    from adversarial.core import Ctx, Outcome, HarnessError, UNCLEAR, OK, OUTCOMES
    reg = load_all()
    home = os.getcwd()
    for line in sys.stdin:
        req = json.loads(line)
        c = reg[req["case"]]
        ctx = Ctx(Path(req["tmp"]), full=req["full"])
        ctx.tmp.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        try:
            o = c.fn(ctx)
            if not isinstance(o, Outcome): raise HarnessError(f"case returned {o!r}, not an Outcome")
            kind, detail = o.kind, o.detail
        except HarnessError as e: kind, detail = "harness", str(e)
        except MemoryError as e: kind, detail = UNCLEAR, f"MemoryError escaped: {str(e)[:160]}{_where(e)}"
        except BaseException as e:
            kind, detail = UNCLEAR, f"unexpected {type(e).__name__}: {' '.join(str(e).split())[:200]!r}{_where(e)}"
        finally:
            os.chdir(home)
        proto.write(json.dumps(dict(kind=kind, detail=detail, secs=round(time.time() - t0, 2))) + "\n")


def _where(e):
    tb = traceback.extract_tb(e.__traceback__)
    lib = [f for f in tb if "minivecdb" in f.filename and "/tools/" not in f.filename]
    mine = [f for f in tb if "/tools/adversarial" in f.filename]
    parts = []
    if mine: parts.append(f"case line {Path(mine[-1].filename).name}:{mine[-1].lineno}")
    if lib: parts.append(f"raised at {Path(lib[-1].filename).name}:{lib[-1].lineno}")
    return f" ({'; '.join(parts)})" if parts else ""


# ---------------------------------------------------------------- parent side
class Worker:
    "A worker process running cases one at a time; killed (with everything it started) on a timeout."
    def __init__(self, logdir: Path, n: int):
        self.log = logdir / f"worker-{n}.stderr"
        self.logf = open(self.log, "wb")
        self.p = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker"], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=self.logf, start_new_session=True, cwd=str(logdir))
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout: self.lines.put(line.decode())
        self.lines.put(None)

    def run(self, name, tmp, full, timeout):
        "(kind, detail, secs) of one case; 'crash or hang' if the worker dies or does not answer in time."
        from adversarial.core import CRASH
        t0 = time.time()
        try:
            self.p.stdin.write((json.dumps(dict(case=name, tmp=str(tmp), full=full)) + "\n").encode()); self.p.stdin.flush()
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            self.kill()
            return CRASH, f"no answer within {timeout:.0f} s (worker killed)", time.time() - t0
        except (BrokenPipeError, OSError): line = None
        if line is None:
            rc = self.p.wait()
            how = f"killed by signal {-rc}" if rc < 0 else f"exit status {rc}"
            self.kill()
            tail = " ".join(self.log.read_text(errors="replace")[-300:].split())
            return CRASH, f"worker process died ({how}); stderr: {tail!r}", time.time() - t0
        r = json.loads(line)
        return r["kind"], r["detail"], r["secs"]

    def alive(self): return self.p.poll() is None

    def kill(self):
        if self.p.poll() is None:
            try: os.killpg(self.p.pid, signal.SIGKILL)
            except ProcessLookupError: pass
        self.p.wait()
        self.logf.close()

    def close(self):
        try: self.p.stdin.close()
        except OSError: pass
        try: self.p.wait(timeout=10)
        except subprocess.TimeoutExpired: pass
        self.kill()


def run_cases(cases, jobs, full, base: Path, progress):
    "Run `cases` on `jobs` workers (groups together, fresh cases alone, longest first); {name: (kind, detail, secs)}."
    units, groups = [], {}
    for c in cases:
        if c.group: groups.setdefault((c.group, c.fresh), []).append(c)
        else: units.append((c.fresh, [c]))
    units += [(fresh, cs) for (g, fresh), cs in groups.items()]
    units.sort(key=lambda u: -sum(c.cost for c in u[1]))
    q = queue.Queue()
    for u in units: q.put(u)
    results, lock, counter = {}, threading.Lock(), [0]
    order = {c.name: i for i, c in enumerate(cases)}  # case directories are numbered: a case's name must not leak into messages
    # a case's timeout is a limit against hangs, not a measurement: four times its idle budget, so a machine busy with
    # other work (CI's may be) does not turn a slow answer into a "hang"
    mult = float(os.environ.get("ADVERSARIAL_TIMEOUT_FACTOR", "4"))
    def slot():
        w = None
        while True:
            try: fresh, cs = q.get_nowait()
            except queue.Empty: break
            if fresh and w is not None: w.close(); w = None
            for c in cs:
                if w is None or not w.alive():
                    with lock: counter[0] += 1; n = counter[0]
                    w = Worker(base, n)
                r = w.run(c.name, base / "cases" / f"c{order[c.name]:03d}", full, c.timeout * mult)
                if not w.alive(): w = None
                with lock:
                    results[c.name] = r
                    progress(c, r, len(results), len(cases))
            if fresh and w is not None: w.close(); w = None
        if w is not None: w.close()
    threads = [threading.Thread(target=slot) for _ in range(max(1, jobs))]
    for t in threads: t.start()
    for t in threads: t.join()
    return results


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--all", action="store_true", help="run the slow cases too")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("--case", action="append", metavar="NAME", help="run only this case (repeatable; any speed)")
    ap.add_argument("--category", help="run only the cases of this category")
    ap.add_argument("--jobs", "-j", type=int, default=2, help="worker processes at once (default 2)")
    ap.add_argument("--verbose", "-v", action="store_true", help="print a line for every case, passing or not")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory of the cases")
    ap.add_argument("--lib", metavar="DIR", help="test the minivecdb package inside DIR instead of this repository's "
                    "(e.g. an old tree from `git archive COMMIT minivecdb | tar -x -C DIR`)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker: return worker_main()
    if a.lib:
        if not (Path(a.lib) / "minivecdb" / "__init__.py").exists(): ap.error(f"{a.lib} holds no minivecdb package")
        os.environ["ADVERSARIAL_LIB"] = str(Path(a.lib).resolve())
    from adversarial import load_all
    from adversarial.core import OUTCOMES, OK, CATEGORIES
    reg = load_all()
    if a.list:
        for c in sorted(reg.values(), key=lambda c: (CATEGORIES.index(c.category), c.speed, c.name)):
            print(f"{c.category:<25} {c.speed:<4}  {c.name:<40} {' '.join(c.doc.split())}")
        print(f"{len(reg)} cases: {sum(c.speed == 'fast' for c in reg.values())} fast, {sum(c.speed == 'slow' for c in reg.values())} slow")
        return 0
    if a.case:
        names = [n for arg in a.case for n in arg.split(",")]
        unknown = [n for n in names if n not in reg]
        if unknown: ap.error(f"unknown case(s) {', '.join(unknown)}; see --list")
        cases = [reg[n] for n in names]
    else:
        cases = [c for c in reg.values() if a.all or c.speed == "fast"]
    if a.category: cases = [c for c in cases if c.category == a.category]
    if not cases: ap.error("no case selected")
    base = Path(tempfile.mkdtemp(prefix="adv-"))
    (base / "cases").mkdir()
    t0 = time.time()
    verbose = a.verbose or bool(a.case)
    def progress(c, r, i, n):
        if verbose: print(f"[{i}/{n}] {c.name}: {r[0]} ({r[2]:.1f}s) {r[1]}", flush=True)
    try: results = run_cases(cases, a.jobs, a.all, base, progress)
    finally:
        if not a.keep: shutil.rmtree(base, ignore_errors=True)
        else: print(f"kept {base}")
    took = time.time() - t0
    harness = {n: r for n, r in results.items() if r[0] == "harness"}
    cats = [cat for cat in CATEGORIES if any(c.category == cat for c in cases)]
    head = ["category", "cases tried", *OUTCOMES]
    rows = []
    for cat in cats + ["total"]:
        cs = [c for c in cases if cat in ("total", c.category)]
        rows.append([cat, str(len(cs)), *(str(sum(results[c.name][0] == o for c in cs)) for o in OUTCOMES)])
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    fmt = lambda r: " | ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths)))
    print()
    print(fmt(head)); print("-+-".join("-" * w for w in widths))
    for r in rows[:-1]: print(fmt(r))
    print("-+-".join("-" * w for w in widths)); print(fmt(rows[-1]))
    bad = [c for c in cases if results[c.name][0] != OK]
    if bad:
        print(f"\nnot correct or clear error ({len(bad)}):")
        order = {o: i for i, o in enumerate(reversed(OUTCOMES))}
        for c in sorted(bad, key=lambda c: (order.get(results[c.name][0], -1), CATEGORIES.index(c.category), c.name)):
            kind, detail, secs = results[c.name]
            print(f"  {c.name} [{c.category}, {c.speed}]: {kind.upper() if kind == 'harness' else kind} -- {detail}")
    n_fast = sum(c.speed == "fast" for c in cases); n_slow = len(cases) - n_fast
    counts = ", ".join(f"{sum(results[c.name][0] == o for c in cases)} {o}" for o in OUTCOMES[1:] if any(results[c.name][0] == o for c in cases))
    what = f"{n_fast} fast case{'s' if n_fast != 1 else ''}" + (f" and {n_slow} slow" if n_slow else "")
    verdict = "all correct or clear error" if not bad else f"{len(bad)} not correct or clear error ({counts})"
    if harness: verdict += f"; {len(harness)} HARNESS ERROR(S): the suite needs fixing"
    print(f"\nadversarial suite: {what}, {verdict}, {took:.0f}s")
    if harness: return 2
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
