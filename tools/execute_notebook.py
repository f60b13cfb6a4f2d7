"""Execute a notebook in place in a Jupyter kernel (from nbs/, as a reader would), storing the outputs the pages show.

Cells whose first lines carry a `tst_flags` flag (`#| slow`) are skipped and keep their stored outputs, unless
`--flags slow` is given: the default run refreshes every quick cell in a minute or two, and the slow benchmarks are
re-run only on purpose. After a run with flags, the quick cells run once more, so that a quick cell reading a file the
slow cells write shows the new file. A notebook that shows another's stored outputs (the benchmarks page shows the
figures of 06_benchmarks_details) is executed after it. Stops at the first failing cell and leaves the file unchanged.
Usage: python tools/execute_notebook.py nbs/01_ivf_index.ipynb [--flags slow]"""
import argparse, re, sys, time
from pathlib import Path
import nbformat
from nbclient import NotebookClient

def cell_flags(cell):
    "The `#| <flag>` words of a code cell's directive lines."
    out = set()
    for line in cell.source.splitlines():
        m = re.match(r'\s*#\|\s*(\w+)\s*$', line)
        if m: out.add(m.group(1))
        elif line.strip() and not line.lstrip().startswith('#|'): break
    return out

def execute(path:Path, flags):
    "Run the cells of the notebook at `path` (those flagged only if their flag is in `flags`) and store their outputs."
    nb = nbformat.read(path, as_version=4)
    skipped = [c for c in nb.cells if c.cell_type == 'code' and (cell_flags(c) & {'slow'}) - set(flags)]
    kept = {id(c): c.outputs for c in skipped}
    run = nbformat.from_dict(nb)
    run.cells = [c for c in nb.cells if id(c) not in kept]
    t0 = time.time()
    client = NotebookClient(run, timeout=3600, kernel_name='python3', resources={'metadata': {'path': str(path.parent)}})
    try: client.execute()
    except Exception as e:
        print(f'FAILED {path.name}: {type(e).__name__}: {str(e).strip()[-3000:]}'); sys.exit(1)
    done = iter(run.cells)
    nb.cells = [c if id(c) in kept else next(done) for c in nb.cells]
    nbformat.write(nb, path)
    print(f'executed {path.name} in {time.time()-t0:.1f}s ({len(skipped)} flagged cells kept their stored outputs)')

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('notebook'); p.add_argument('--flags', nargs='*', default=[])
    args = p.parse_args()
    path = Path(args.notebook).resolve()
    execute(path, args.flags)
    if args.flags: execute(path, [])

if __name__ == '__main__': main()
