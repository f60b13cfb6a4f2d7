"""Execute one notebook end to end in a real Jupyter kernel (nbclient), from nbs/ as a user would.

The notebook file is not changed: the executed copy goes to a temporary file. Exits 1 on any cell error."""
import sys, tempfile, time
from pathlib import Path
import nbformat
from nbclient import NotebookClient

def main(name):
    path = Path(__file__).resolve().parent.parent/'nbs'/name
    if not path.exists(): print(f'FAIL: {path} does not exist'); sys.exit(1)
    nb = nbformat.read(path, as_version=4)
    t0 = time.time()
    client = NotebookClient(nb, timeout=1200, kernel_name='python3', resources={'metadata': {'path': str(path.parent)}})
    try: client.execute()
    except Exception as e:
        detail = str(e).strip().splitlines() or [type(e).__name__]
        print(f'FAIL: {name} in a Jupyter kernel: {type(e).__name__}: {detail[-1]}'); sys.exit(1)
    with tempfile.NamedTemporaryFile(suffix='.ipynb', delete=False) as f: nbformat.write(nb, f.name)
    n = sum(c.cell_type == 'code' for c in nb.cells)
    print(f'PASS: {name} executed in a Jupyter kernel from nbs/: {n} code cells in {time.time()-t0:.1f}s (copy: {f.name})')

if __name__ == '__main__': main(sys.argv[1] if len(sys.argv) > 1 else 'index.ipynb')
