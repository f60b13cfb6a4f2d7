"""Single-thread search speed of this checkout against an earlier commit, measured side by side in one process.

The earlier commit's `minivecdb/` is extracted with `git show` into a temporary package `minivecdb_before`, both
versions build an index over the same vectors (same k-means seed, so the same lists), and each timing alternates the
two (`minivecdb.bench.paired_times`, after one untimed warm-up call of each, so numba's compilation is not timed), one
BLAS thread, median of `--reps` runs. Prints one line per workload with both rates and their ratio
(after / before: above 1 means this checkout is faster).
Usage: python tools/search_speed_vs.py [--rev 4edf10a] [--n 100000] [--reps 7]"""
import argparse, contextlib, importlib, io, subprocess, sys, tempfile
from pathlib import Path
import numpy as np
from threadpoolctl import threadpool_limits
from minivecdb.bench import paired_times

root = Path(__file__).resolve().parent.parent

def extract(rev, dest):
    "Write the `minivecdb` package of commit `rev` into `dest/minivecdb_before`, importable beside this one."
    pkg = Path(dest) / 'minivecdb_before'; pkg.mkdir()
    names = subprocess.run(['git', 'ls-tree', '--name-only', f'{rev}:minivecdb'], cwd=root, capture_output=True, text=True, check=True).stdout.split()
    for name in names:
        if name.endswith('.py'):
            src = subprocess.run(['git', 'show', f'{rev}:minivecdb/{name}'], cwd=root, capture_output=True, text=True, check=True).stdout
            (pkg / name).write_text(src.replace('from minivecdb.', 'from minivecdb_before.').replace('import minivecdb\n', 'import minivecdb_before as minivecdb\n'))
    sys.path.insert(0, str(dest))

def clustered(n, d=384, n_queries=1000, seed=0):
    "Unit vectors shaped like sentence embeddings (the IVF page's `clustered_data`): a 1,000-topic mixture in 32-d, projected."
    r = np.random.default_rng(seed)
    topics = r.normal(size=(1000, 32)).astype(np.float32)
    Z = topics[r.integers(0, 1000, n + n_queries)] + r.normal(size=(n + n_queries, 32)).astype(np.float32)
    X = Z @ r.normal(size=(32, d)).astype(np.float32) + 0.1 * np.sqrt(32) * r.normal(size=(n + n_queries, d)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return np.ascontiguousarray(X[:n]), np.ascontiguousarray(X[n:])

def build(pkg, X, metric):
    "An index of package `pkg` (a module prefix) over `X`."
    vs, ivf = importlib.import_module(f'{pkg}.vector_storage'), importlib.import_module(f'{pkg}.ivf_index')
    s = vs.VectorStorage(X.shape[1]); s.add_bulk(X)
    with contextlib.redirect_stdout(io.StringIO()): return ivf.IVFIndex(s, distance_fn=metric, nprobe=32).build()

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--rev', default='4edf10a'); p.add_argument('--n', type=int, default=100_000); p.add_argument('--reps', type=int, default=7)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        extract(args.rev, tmp)
        X, Q = clustered(args.n)
        for metric in ('cosine', 'euclidean'):
            before, after = build('minivecdb_before', X, metric), build('minivecdb', X, metric)
            workloads = {'batch of 1,000 queries': (lambda ix: ix.search_batch(Q, 10), len(Q)),
                         '200 single queries, one call each': (lambda ix: [ix.search_batch(q, 10) for q in Q[:200]], 200)}
            for name, (run, n_queries) in workloads.items():
                with threadpool_limits(1):
                    t_before, t_after = paired_times((lambda: run(before), lambda: run(after)), reps=args.reps, warmup=True)
                print(f'{metric:9} {name:34} before {n_queries / t_before:8,.0f} q/s   after {n_queries / t_after:8,.0f} q/s   '
                      f'after/before {t_before / t_after:.3f}', flush=True)

if __name__ == '__main__': main()
