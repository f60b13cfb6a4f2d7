"""How long the exported cells are: non-blank lines of each exported code cell, `#|` lines not counted, import-only
cells left out. Prints one row per notebook and the median over all of them; fails when that median is over the
limit (the style's anchors: fastcore's `01_basics` 5, claudette's `00_core` 8, miniai's `09_learner` 6).
Usage: python tools/cell_sizes.py [--limit 10] [NOTEBOOK ...]"""
import argparse, json, statistics, sys
from pathlib import Path

def is_exported(lines):
    "Whether a code cell's directives export it (`#| export`, `#| exports`)."
    return any(l.strip().split()[:2] in (['#|', 'export'], ['#|', 'exports']) for l in lines)

def body(lines):
    "The lines that count: not blank, not a `#|` directive."
    return [l for l in lines if l.strip() and not l.strip().startswith('#|')]

def import_only(lines):
    "Whether a cell only imports, and so stays hidden on the page."
    return all(l.lstrip().startswith(('import ', 'from ', '#')) for l in lines)

def sizes(path):
    "The line counts of the exported, not import-only, code cells of the notebook at `path`."
    out = []
    for c in json.loads(Path(path).read_text())['cells']:
        lines = ''.join(c['source']).splitlines()
        if c['cell_type'] != 'code' or not is_exported(lines): continue
        b = body(lines)
        if b and not import_only(b): out.append(len(b))
    return out

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('notebooks', nargs='*'); p.add_argument('--limit', type=float, default=10)
    a = p.parse_args()
    paths = a.notebooks or sorted(str(f) for f in Path('nbs').glob('*.ipynb'))
    every = []
    for f in paths:
        s = sizes(f)
        if not s: continue
        every += s
        print(f'{Path(f).name:28} {len(s):4} cells  median {statistics.median(s):4.1f}  over 15: {sum(x > 15 for x in s):3}  longest {max(s)}')
    med = statistics.median(every)
    ok = med <= a.limit
    print(f"{'PASS' if ok else 'FAIL'}: exported cells have a median of {med:g} non-blank lines over {len(every)} cells "
          f"(limit {a.limit:g}); {sum(x > 15 for x in every)} are over 15")
    sys.exit(0 if ok else 1)

if __name__ == '__main__': main()
