"""Build the documentation site into _docs/ without Quarto.

nbdev processes the notebooks into _proc/ exactly as `nbdev_docs` does (same Quarto configuration from nbs/),
then smalldocs renders that Quarto website project; the output moves to _docs/ as nbdev_docs would move it.
Exits 1 when smalldocs reports a broken link or an error."""
import shutil, subprocess, sys
from pathlib import Path
from nbdev.config import get_config
from nbdev.doclinks import _build_modidx
from nbdev.serve import proc_nbs

def main():
    cfg = get_config()
    _build_modidx()
    cache = proc_nbs(force=True)
    smalldocs = Path(sys.executable).parent/'smalldocs'
    res = subprocess.run([str(smalldocs), 'render', str(cache)], capture_output=True, text=True)
    out = res.stdout + res.stderr
    print(out.strip())
    bad = [l for l in out.splitlines() if 'broken link' in l or l.lower().startswith('error')]
    doc_path = cfg.config_path/cfg.doc_path.name
    shutil.rmtree(doc_path, ignore_errors=True)
    shutil.move(str(cache/cfg.doc_path.name), str(doc_path))
    if res.returncode or bad:
        print(f'site build FAILED (exit {res.returncode}); problems:', *bad, sep='\n  ')
        sys.exit(1)
    pages = sorted(p.relative_to(doc_path) for p in doc_path.glob('*.html'))
    print(f'site built: {len(pages)} pages in {doc_path}:', ', '.join(map(str, pages)))

if __name__ == '__main__': main()
