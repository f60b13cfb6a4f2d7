"""Build the documentation site into _docs/ without Quarto.

nbdev processes the notebooks into _proc/ exactly as `nbdev_docs` does (same Quarto configuration from nbs/),
then smalldocs renders that Quarto website project; the output moves to _docs/ as nbdev_docs would move it.
The output is then put right where smalldocs differs from Quarto or fastcore's signatures read badly, so that the site
works offline and reads cleanly:
- pages get the names Quarto gives them from nbdev's `output-file` (`00_vector_storage.ipynb` → `vector_storage.html`,
  the names nbdev's cross-reference links use), and every link to them follows;
- cross-reference links to the doc host (`https://…/minivecdb/ivf_index.html#ivfindex`) become relative links, so
  they work on the built site before it is published, and offline;
- maths is rendered to MathML when the site is built (latex2mathml), so no KaTeX is fetched from a CDN, and the
  theme's Google Fonts import is dropped (the theme's own fallback fonts are used);
- fastcore's signatures are put right in the processed notebooks: an exception class reads `class Name(Base):`
  rather than `def Name(*args, **kwargs)`, a parameter without an annotation whose default is None no
  longer reads `x:NoneType=None`, a name in a docments comment keeps its backticks instead of a markdown link that
  code cannot render, and `__dunder__` names in headings are not taken for bold text;
- column names in tables may wrap after an underscore (`one_node_<wbr>build_s`);
- the "Exported source" folds nbdev adds for exported cells are closed (the page reads as signatures, docs and
  lessons; the source is one click away), and exported cells that follow one another with nothing shown between
  them share one fold (a notebook keeps one idea per cell; the page does not grow a fold for each);
- a progress bar's refreshes (tqdm writes each as its own output, ending in `\\r`) are shown as a terminal shows them:
  the final line only.
Exits 1 when smalldocs reports a broken link or an error."""
import html, importlib, inspect, json, re, shutil, subprocess, sys
from pathlib import Path
from latex2mathml.converter import convert
from nbdev.config import get_config
from nbdev.doclinks import _build_modidx, _nbpath2html
from nbdev.serve import proc_nbs

def page_names(doc_path):
    "The new name of each page smalldocs wrote: nbdev's `output-file` name (the numeric prefix dropped)."
    return {p.name: _nbpath2html(p.with_suffix('.ipynb')).name for p in doc_path.glob('*.html')}

def rename_links(text, names):
    "Point every link to an old page name at its new name."
    if not names: return text
    alt = '|'.join(map(re.escape, sorted(names, key=len, reverse=True)))
    return re.sub(rf'(?<![\w./-])({alt})(?=["#?\'\s])', lambda m: names[m.group(1)], text)

def relative_doc_links(text, cfg):
    "Turn links to pages on the doc host into links within the site."
    return text.replace(cfg.doc_host.rstrip('/') + '/' + cfg.doc_baseurl.strip('/') + '/', '')

_math = re.compile(r'<span class="math (inline|display)">\\[(\[](.*?)\\[)\]]</span>', re.S)
_katex = re.compile(r'\s*<(?:link|script)[^>]*katex[^>]*>(?:</script>)?')

def mathml(text):
    "Render each `\\(…\\)` / `\\[…\\]` span to MathML, and drop the KaTeX tags."
    def one(m):
        tex = html.unescape(m.group(2))
        return f'<span class="math {m.group(1)}">{convert(tex, display="block" if m.group(1) == "display" else "inline")}</span>'
    return _katex.sub('', _math.sub(one, text))

def _symbols():
    "Every class the package's modules define, by name."
    from minivecdb._modidx import d
    out = {}
    for mod in d['syms']:
        m = importlib.import_module(mod)
        out.update({k: v for k, v in vars(m).items() if inspect.isclass(v) and v.__module__ == mod})
    return out

def fix_signature(md, classes):
    "Put right one `show_doc` markdown output: class signatures, NoneType defaults, dunder headings."
    md = re.sub(r'(\w+):NoneType=None', r'\1=None', md)
    md = re.sub(r'```python\n.*?```', lambda m: re.sub(r'\[(`[^`]+`)\]\([^)]*\)', r'\1', m.group(0)), md, flags=re.S)
    def cls(m):
        c = classes.get(m.group(1))
        if c is None or not issubclass(c, BaseException): return m.group(0)
        return f'class {m.group(1)}({", ".join(b.__name__ for b in c.__bases__)}):'
    md = re.sub(r'^def (\w+)\(\s*\*args, \*\*kwargs\s*\):', cls, md, flags=re.M)
    return re.sub(r'^(#+ .*?)(__\w+__)', lambda m: m.group(1) + m.group(2).replace('_', r'\_'), md, flags=re.M)

def as_terminal(text):
    "What a terminal shows for `text`: each `\\r` returns to the start of its line, so a progress bar ends as one line."
    return '\n'.join(line.rsplit('\r', 1)[-1] for line in text.rstrip('\r').split('\n'))

def merge_streams(outputs):
    "Join consecutive outputs of one stream (tqdm writes each refresh as its own), read as a terminal would."
    out = []
    for o in outputs:
        if o.get('output_type') == 'stream' and out and out[-1].get('output_type') == 'stream' and out[-1]['name'] == o['name']:
            out[-1]['text'] = ''.join(out[-1]['text']) + ''.join(o['text'])
        else: out.append(dict(o))
    for o in out:
        if o.get('output_type') == 'stream': o['text'] = as_terminal(''.join(o['text']))
    return out

def closed_fold(source):
    "An Exported source fold shown closed: the signature and docs are the lesson, the source is one click away."
    return re.sub(r'^#\| code-fold: show\n(?=#\| code-summary: "Exported source")', '#| code-fold: true\n', source, flags=re.M)

FOLD = '#| code-fold: true\n#| code-summary: "Exported source"\n'

def merged_folds(cells):
    "Exported cells that follow one another with nothing shown between them, in one closed fold: a notebook keeps one idea per cell, the page one fold per run of them."
    out = []
    for c in cells:
        prev = out[-1] if out else None
        fold = c['cell_type'] == 'code' and c['source'].startswith(FOLD)
        if fold and prev and prev['cell_type'] == 'code' and prev['source'].startswith(FOLD) and not prev.get('outputs'):
            prev['source'] += '\n\n' + c['source'][len(FOLD):]
            prev['outputs'] = c.get('outputs', [])
            prev['metadata']['exported_cells'] += 1  # check_site.py counts them: no exported cell may go missing
        else:
            if fold: c.setdefault('metadata', {})['exported_cells'] = 1
            out.append(c)
    return out

def fix_outputs(cache):
    "In every processed notebook: Exported source folds closed and merged, `fix_signature` on markdown outputs, `merge_streams` on each cell's outputs."
    classes = _symbols()
    for f in cache.glob('*.ipynb'):
        nb = json.loads(f.read_text())
        for c in nb['cells']:
            if c['cell_type'] == 'code': c['source'] = closed_fold(''.join(c['source']))
        nb['cells'] = merged_folds(nb['cells'])
        for c in nb['cells']:
            if 'outputs' not in c: continue
            c['outputs'] = merge_streams(c['outputs'])
            for o in c['outputs']:
                md = o.get('data', {}).get('text/markdown')
                if md: o['data']['text/markdown'] = fix_signature(''.join(md), classes)
        f.write_text(json.dumps(nb))

def drop_web_fonts(doc_path):
    "Remove the theme's @import of Google Fonts; the theme names fallback fonts after it."
    for css in (doc_path/'site_libs').rglob('*.css'):
        text = css.read_text()
        if 'fonts.googleapis' in text: css.write_text(re.sub(r'@import url\([^)]*fonts\.googleapis[^)]*\);?', '', text))

def breakable_headers(text):
    "Let a table's column names (`one_node_build_s`) wrap after their underscores, and nowhere else."
    return re.sub(r'(<th[^>]*>)([^<]*)(</th>)', lambda m: m.group(1) + m.group(2).replace('_', '_<wbr>') + m.group(3), text)

def fix_site(doc_path, cfg):
    "Rename the pages and rewrite links and maths in every page, the search index and the sitemap."
    names = {k: v for k, v in page_names(doc_path).items() if k != v}
    for f in [*doc_path.glob('*.html'), doc_path/'search.json', doc_path/'sitemap.xml']:
        if not f.exists(): continue
        text = relative_doc_links(rename_links(f.read_text(), names), cfg)
        if f.suffix == '.html': text = breakable_headers(mathml(text))
        f.write_text(text)
    for old, new in names.items(): (doc_path/old).rename(doc_path/new)
    drop_web_fonts(doc_path)

def main():
    cfg = get_config()
    _build_modidx()
    cache = proc_nbs(force=True)
    fix_outputs(cache)
    smalldocs = Path(sys.executable).parent/'smalldocs'
    res = subprocess.run([str(smalldocs), 'render', str(cache)], capture_output=True, text=True)
    out = res.stdout + res.stderr
    print('\n'.join(l for l in out.splitlines() if 'output-file is not read' not in l).strip())
    bad = [l for l in out.splitlines() if 'broken link' in l or l.lower().startswith('error')]
    doc_path = cfg.config_path/cfg.doc_path.name
    shutil.rmtree(doc_path, ignore_errors=True)
    shutil.move(str(cache/cfg.doc_path.name), str(doc_path))
    if res.returncode or bad:
        print(f'site build FAILED (exit {res.returncode}); problems:', *bad, sep='\n  ')
        sys.exit(1)
    fix_site(doc_path, cfg)
    pages = sorted(p.relative_to(doc_path) for p in doc_path.glob('*.html'))
    print(f'site built: {len(pages)} pages in {doc_path.name}/:', ', '.join(map(str, pages)))

if __name__ == '__main__': main()
