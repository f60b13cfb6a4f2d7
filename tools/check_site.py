"""Check the built site in headless Chromium, driven over the DevTools protocol, served on 127.0.0.1 with every other
host unreachable (so a page that needs the network shows it).

For every page of the sidebar, at a 1280 px window and at a 390 px phone width, it checks:
1. links: every internal link and asset answers 200 and every `#anchor` exists on its target page; no link points
   to a private name (`#_…`) or to the doc host instead of the site itself;
2. widths: no code block, output, table or figure runs past the text column or hides part of itself behind a
   scroll bar, the page never scrolls sideways, and no figure is shown at less than 60% of its size (on a phone a
   wide table may scroll inside its own box);
3. readable code: every exported cell of the notebook appears in an "Exported source" fold (cells that follow one
   another share one); no signature shows
   `NoneType=None`, no exception class shows as `(*args, **kwargs)`, no docstring reads "Call self as a function.";
4. offline: nothing is requested from another host, and no formula is left as raw TeX;
5. debris: no machine path, no unfinished progress bar and no raw markdown link in what the page shows;
6. length: the page is at most MAX_SCREENS screens of the 1280 x 900 px window tall (what a reader can finish;
   checks that teach nothing new go to a companion test notebook outside the sidebar);
7. screenshots: a full-page one at 1280 px (`_docs/screenshots/PAGE.png`) and the first phone screen
   (`_docs/screenshots/phone/PAGE.png`).
The search index must list every page. Prints one `PASS: ...` or `FAIL: ...` line per page and check; exits 1 if any
check failed. If Chromium cannot start, that is a failure with Chromium's own words, never a skip."""
import base64, functools, http.server, io, json, re, shutil, subprocess, sys, tempfile, threading, time
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import Request, urlopen
import websocket, yaml
from PIL import Image
from nbdev.config import get_config
from nbdev.doclinks import _nbpath2html
from cell_sizes import sizes as exported_sizes  # one definition of an exported cell: the folds a page shows

root = Path(__file__).resolve().parent.parent
docs = root/'_docs'
results = []

def report(ok, what):
    results.append(ok)
    print(('PASS: ' if ok else 'FAIL: ') + what, flush=True)

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args): pass

class _QuietServer(http.server.ThreadingHTTPServer):
    "Chromium drops connections it no longer needs; that is not an error of the site."
    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)): super().handle_error(request, client_address)

class Browser:
    "Headless Chromium with one page, driven over the DevTools protocol."
    def __init__(self, profile):
        exe = shutil.which('chromium') or shutil.which('chromium-browser')
        if not exe: sys.exit('FAIL: chromium is not installed (apt-get install chromium)')
        self.proc = subprocess.Popen(
            [exe, '--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars', '--no-first-run',
             '--disable-background-networking', '--disable-component-update', '--disable-sync', '--mute-audio',
             '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1', '--remote-debugging-port=0',
             f'--user-data-dir={profile}', 'about:blank'], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        port_file = Path(profile)/'DevToolsActivePort'
        for _ in range(300):
            if port_file.exists() and port_file.read_text().count('\n') >= 1: break
            if self.proc.poll() is not None: sys.exit(f'FAIL: chromium could not start: {self.proc.stderr.read()[-600:]}')
            time.sleep(0.1)
        else: sys.exit('FAIL: chromium did not open its DevTools port within 30 s')
        port = port_file.read_text().split()[0]
        target = json.load(urlopen(Request(f'http://127.0.0.1:{port}/json/new?about:blank', method='PUT'), timeout=10))
        self.ws = websocket.create_connection(target['webSocketDebuggerUrl'], suppress_origin=True, timeout=120)
        self.n, self.events = 0, []
        self.send('Page.enable'); self.send('Network.enable'); self.send('Runtime.enable')

    def send(self, method, **params):
        "Send one command and return its result; events that arrive meanwhile are kept in `events`."
        self.n += 1; self.ws.send(json.dumps({'id': self.n, 'method': method, 'params': params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get('id') == self.n:
                if 'error' in msg: raise RuntimeError(f'{method}: {msg["error"]}')
                return msg['result']
            self.events.append(msg)

    def wait_for(self, event, timeout=60):
        t0 = time.time()
        while time.time() - t0 < timeout:
            if any(e.get('method') == event for e in self.events): return
            self.events.append(json.loads(self.ws.recv()))
        raise TimeoutError(f'no {event} within {timeout} s')

    def open(self, url, width, height, mobile=False):
        "Load `url` in a window of this size; return the URLs it requested and the failed requests."
        self.send('Emulation.setDeviceMetricsOverride', width=width, height=height, deviceScaleFactor=1, mobile=mobile)
        self.events = []
        self.send('Page.navigate', url=url)
        self.wait_for('Page.loadEventFired')
        self.js('document.fonts.ready.then(() => new Promise(r => setTimeout(r, 300)))', wait=True)
        requested = [e['params']['request']['url'] for e in self.events if e.get('method') == 'Network.requestWillBeSent']
        urls = {e['params']['requestId']: e['params']['request']['url'] for e in self.events if e.get('method') == 'Network.requestWillBeSent'}
        failed = [f"{e['params'].get('errorText')} for {urls.get(e['params']['requestId'])}" for e in self.events
                  if e.get('method') == 'Network.loadingFailed' and not e['params'].get('canceled')]
        errors = [e['params']['exceptionDetails'].get('exception', {}).get('description', e['params']['exceptionDetails'].get('text'))
                  for e in self.events if e.get('method') == 'Runtime.exceptionThrown']
        return requested, failed, errors

    def js(self, expr, wait=False):
        res = self.send('Runtime.evaluate', expression=expr, returnByValue=True, awaitPromise=wait)
        if 'exceptionDetails' in res: raise RuntimeError(f'page script failed: {res["exceptionDetails"]}')
        return res['result'].get('value')

    def screenshot(self, path, full=True, tile=16000):
        "Save a PNG of the whole page (tiles stitched together), or of the first screen."
        width, height = self.js('[document.documentElement.clientWidth, document.documentElement.scrollHeight]')
        if not full: height = self.js('window.innerHeight')
        img = Image.new('RGB', (width, height), 'white')
        for y in range(0, height, tile):
            h = min(tile, height - y)
            shot = self.send('Page.captureScreenshot', format='png', captureBeyondViewport=full,
                             clip={'x': 0, 'y': y, 'width': width, 'height': h, 'scale': 1})
            img.paste(Image.open(io.BytesIO(base64.b64decode(shot['data']))), (0, y))
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path, compress_level=6)
        return width, height

    def close(self):
        self.ws.close(); self.proc.terminate(); self.proc.wait(timeout=30)

# What the page shows, measured in the page itself.
MEASURE = r"""(() => {
  const main = document.querySelector('main.content') || document.body, mr = main.getBoundingClientRect();
  const shown = el => { const r = el.getBoundingClientRect(); return r.width > 0 && r.height > 0; };
  const label = el => (el.innerText || el.getAttribute('alt') || el.tagName).trim().replace(/\s+/g, ' ').slice(0, 90);
  const clipped = [];
  for (const el of main.querySelectorAll('pre, table, img, svg, math, .cell-output, .cell-output-display, .sourceCode, p, li, h1, h2, h3, dl')) {
    if (!shown(el) || el.closest('svg') && el.tagName !== 'svg' || getComputedStyle(el).display === 'inline') continue;
    const r = el.getBoundingClientRect(), ox = getComputedStyle(el).overflowX;
    const hides = el.scrollWidth > el.clientWidth + 1 && ox !== 'visible';
    const beyond = r.right > mr.right + 1 || r.left < mr.left - 1;
    if (hides || beyond) clipped.push(`${el.tagName.toLowerCase()} ${hides ? 'hides ' + (el.scrollWidth - el.clientWidth) + ' px behind a scroll bar' : 'runs ' + Math.round(r.right - mr.right) + ' px past the column'}: ${label(el)}`);
  }
  const shrunk = [...main.querySelectorAll('img')].filter(i => shown(i) && i.naturalWidth && i.width < 0.6 * i.naturalWidth)
    .map(i => `an image of ${i.naturalWidth} px shown ${i.width} px wide (${Math.round(100 * i.width / i.naturalWidth)}%)`);
  const refs = [];
  for (const el of document.querySelectorAll('[href], [src]')) {
    const raw = el.getAttribute('href') || el.getAttribute('src');
    refs.push({raw, url: el.href || el.src || '', tag: el.tagName.toLowerCase(), rel: el.getAttribute('rel') || ''});
  }
  const text = els => [...els].filter(shown).map(e => e.innerText).join('\n');
  const outputs = text(main.querySelectorAll('.cell-output, .cell-output-stdout, .cell-output-stderr, .cell-output-display'));
  const prose = [...main.querySelectorAll('p, li, td, th, h1, h2, h3, h4, dd, dt, blockquote')]
    .filter(e => shown(e) && !e.closest('pre')).map(e => { const c = e.cloneNode(true); c.querySelectorAll('code, math').forEach(x => x.remove()); return c.textContent; }).join('\n');
  return {
    title: document.title, h1: !!document.querySelector('h1'),
    sidebar: [...document.querySelectorAll('#quarto-sidebar a[href]')].map(a => a.getAttribute('href')),
    ids: [...document.querySelectorAll('[id]')].map(e => e.id), refs, clipped, shrunk,
    sideways: document.documentElement.scrollWidth - document.documentElement.clientWidth,
    folds: [...main.querySelectorAll('details.code-fold > summary')].map(s => s.innerText.trim()),
    doc: text(main.querySelectorAll('.doc-signature, .sourceCode, h3, h4')) + '\n' + text(main.querySelectorAll('p, td')),
    signatures: text(main.querySelectorAll('.cell-output-markdown pre')),
    outputs, prose, height: document.documentElement.scrollHeight, screen: window.innerHeight,
  };
})()"""

MACHINE_PATH = re.compile(r'(/work/|/home/\w|/root/|/tmp/|/var/folders/|/Users/\w|site-packages|\.venv/|/usr/lib/python|[A-Z]:\\\\)')
PARTIAL_BAR = re.compile(r'\b(\d{1,2})%\|')   # a tqdm bar short of 100%
RAW_LINK = re.compile(r'\[[^\]\n]{1,80}\]\((?:https?://|[\w./-]+\.(?:html|ipynb|md))')
RAW_TEX = re.compile(r'\\[(\[]|\$\$|\\(?:sqrt|frac|cdot|sum)\b')
MAX_SCREENS = 25
BAD_DOC = [(re.compile(r'NoneType=None'), 'a signature shows NoneType=None'),
           (re.compile(r'\b\w+(?:Error|Exception|Warning)\s*\(\*args, \*\*kwargs\)'), 'an exception class shows as (*args, **kwargs)'),
           (re.compile(r'Call self as a function'), 'a docstring reads "Call self as a function."')]

def sidebar_pages():
    cfg = yaml.safe_load((root/'nbs'/'sidebar.yml').read_text())
    return [(nb, _nbpath2html(Path(nb)).name) for nb in cfg['website']['sidebar']['contents']]

def debris(m):
    "What a page shows that it should not."
    found = [f'{what}: {p.search(m["doc"]).group(0)!r}' for p, what in BAD_DOC if p.search(m['doc'])]
    for name, pat, text in [('a machine path', MACHINE_PATH, m['outputs'] + m['prose']),
                            ('an unfinished progress bar', PARTIAL_BAR, m['outputs']),
                            ('a raw markdown link', RAW_LINK, m['prose'] + '\n' + m['signatures']), ('raw TeX', RAW_TEX, m['prose'])]:
        found += [f'{name}: {line.strip()[:120]!r}' for line in text.splitlines() if pat.search(line)][:3]
    return found

def links(m, base, ids, status, doc_host):
    "Broken links and assets of one page, links to private names, and links to the doc host."
    problems = []
    for r in m['refs']:
        raw, parts = r['raw'], urlsplit(r['url'])
        if raw.startswith(('mailto:', 'javascript:', 'data:')): continue
        if doc_host and r['url'].startswith(doc_host): problems.append(f'{raw} points to the doc host, not the site'); continue
        if not r['url'].startswith(base):
            if r['tag'] != 'a': problems.append(f'{raw} is fetched from another host')
            continue
        path = parts.path[len(urlsplit(base).path):] or 'index.html'
        if status(base + path) != 200: problems.append(f'{raw} is broken ({status(base + path)})'); continue
        if parts.fragment:
            if parts.fragment.startswith('_'): problems.append(f'{raw} links to a private name')
            elif path in ids and parts.fragment not in ids[path]: problems.append(f'{raw}: no #{parts.fragment} on {path}')
    return problems

def check_pages(site, pages, doc_host, shots):
    "Measure each `(expected Exported-source folds, page)` of the site in Chromium; return `{page: {check: problems}}`."
    server = _QuietServer(('127.0.0.1', 0), functools.partial(_QuietHandler, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f'http://127.0.0.1:{server.server_address[1]}/'
    shutil.rmtree(shots, ignore_errors=True)
    status_cache = {}
    def status(url):
        if url not in status_cache:
            try: status_cache[url] = urlopen(url, timeout=10).status
            except Exception as e: status_cache[url] = getattr(e, 'code', str(e))
        return status_cache[url]
    measured = {}
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        browser = Browser(profile)
        for folds, page in pages:
            if not (site/page).exists(): continue
            t0 = time.time()
            requested, failed, errors = browser.open(base + page, 1280, 900)
            m = measured[page] = browser.js(MEASURE)
            m['requested'], m['failed'], m['errors'] = requested, failed, errors
            m['shot'] = browser.screenshot(shots/page.replace('.html', '.png'))
            browser.open(base + page, 390, 844, mobile=True)
            phone = browser.js(MEASURE)
            m['phone'] = [c for c in phone['clipped'] if not c.startswith('table hides')][:3] + ([f'the page scrolls {phone["sideways"]} px sideways'] if phone['sideways'] > 1 else [])
            browser.screenshot(shots/'phone'/page.replace('.html', '.png'), full=False)
            m['seconds'] = time.time() - t0
        browser.close()
    ids = {page: set(m['ids']) for page, m in measured.items()}
    out = {}
    for folds, page in pages:
        if page not in measured: out[page] = {'page': [f'{page} is missing from {site.name}']}; continue
        m, found = measured[page], debris(measured[page])
        shown = m['folds'].count('Exported source')
        out[page] = {
            'links': links(m, base, ids, status, doc_host) + m['failed']
                     + [f'sidebar lacks {q}' for _, q in pages if q not in {Path(urlsplit(h).path).name for h in m['sidebar']}],
            'widths': m['clipped'] + m['shrunk'] + ([f'the page scrolls {m["sideways"]} px sideways'] if m['sideways'] > 1 else [])
                      + [f'phone: {p}' for p in m['phone']],
            'code': ([] if shown == folds else [f'{shown} "Exported source" folds where {folds} were expected (-1: the folds miss an exported cell)'])
                    + [d for d in found if d.startswith(('a signature', 'an exception', 'a docstring'))],
            'offline': [f'requested {u}' for u in m['requested'] if not u.startswith((base, 'data:'))]
                       + [d for d in found if d.startswith('raw TeX')],
            'debris': [d for d in found if d.startswith(('a machine', 'an unfinished', 'a raw markdown'))]
                      + [f'javascript error: {e}' for e in m['errors']] + ([] if m['title'].strip() and m['h1'] else ['no title or no h1']),
            'length': [] if m['height'] <= MAX_SCREENS * m['screen'] else [f'{m["height"] / m["screen"]:.1f} screens, over {MAX_SCREENS}'],
        }
        w, h = m['shot']
        out[page]['_info'] = (f'{m["height"] / m["screen"]:.1f} screens, {len(m["refs"])} links and assets, {shown} exported-source folds, screenshot {w}x{h} px, '
                              f'{m["seconds"]:.1f}s')
    server.shutdown()
    return out

BAD_PAGE = """<!doctype html><html><head><title>bad</title><script src="https://cdn.example.org/x.js"></script></head><body>
<nav id="quarto-sidebar"><a href="index.html">index</a><a href="bad.html">bad</a></nav>
<main class="content" style="width:600px"><h1 id="bad">Bad</h1>
<p>A <a href="index.html#nowhere">missing anchor</a>, <a href="gone.html">a missing page</a>,
<a href="index.html#_private">a private name</a>, <a href="https://minivecdb.github.io/minivecdb/index.html">the doc host</a>,
a raw [markdown link](index.html) and raw TeX \\(4\\sqrt{n}\\).</p>
<pre style="white-space:pre;overflow-x:auto">%s</pre><div style="height:24000px"></div>
<div class="cell-output"><pre>loaded from /work/main/.venv/lib/python3.11/site-packages/model
embedding:  13%%|█▎        | 64/491</pre></div>
<div class="cell-output cell-output-markdown"><div class="sourceCode"><pre>def StoreLockedError(*args, **kwargs):
def f(x, # from [`search_store`](text.html#search_store)
):</pre></div></div>
</main></body></html>""" % ('x' * 400)
GOOD_PAGE = """<!doctype html><html><head><title>index</title></head><body>
<nav id="quarto-sidebar"><a href="index.html">index</a><a href="bad.html">bad</a></nav>
<main class="content"><h1 id="index">Index</h1><p>See <a href="bad.html#bad">the bad page</a>.</p>
<details class="code-fold"><summary>Exported source</summary><pre>def f(): return 1</pre></details></main></body></html>"""

def self_test():
    "The checks can fail: a page with one defect of each kind fails each check, and a clean page passes."
    with tempfile.TemporaryDirectory() as d:
        site = Path(d)
        (site/'index.html').write_text(GOOD_PAGE); (site/'bad.html').write_text(BAD_PAGE)
        res = check_pages(site, [(1, 'index.html'), (1, 'bad.html')], 'https://minivecdb.github.io/minivecdb/', site/'shots')
    good, bad = res['index.html'], res['bad.html']
    want = {'links': ['no #nowhere', 'gone.html is broken', 'private name', 'doc host'],
            'widths': ['hides'], 'code': ['0 "Exported source" folds', 'exception class'],
            'offline': ['requested https://cdn.example.org', 'raw TeX'],
            'debris': ['machine path', 'unfinished progress bar', "a raw markdown link: 'def f(x, # from [`search_store`]"],
            'length': ['screens, over 25']}
    missed = [f'{k}: {w}' for k, ws in want.items() for w in ws if not any(w in p for p in bad[k])]
    clean = [f'{k}: {p}' for k, ps in good.items() if k != '_info' for p in ps]
    report(not missed and not clean, 'the site checks catch each kind of defect on a test page and pass a clean one'
           + (f'; missed: {missed}' if missed else '') + (f'; a clean page failed: {clean}' if clean else ''))

def expected_folds(nb) -> int:
    """The Exported source folds page `nb` must show: one per run of exported cells build_site.py put in one fold, provided
    those folds hold every exported cell of the notebook (else -1, which no page matches)."""
    proc = root/'_proc'/nb
    if not proc.exists(): return len(exported_sizes(root/'nbs'/nb))
    held = [c.get('metadata', {}).get('exported_cells', 0) for c in json.loads(proc.read_text())['cells']
            if c['cell_type'] == 'code' and 'code-summary: "Exported source"' in ''.join(c['source'])]
    return len(held) if sum(held) == len(exported_sizes(root/'nbs'/nb)) else -1

def main():
    if not (docs/'index.html').exists(): sys.exit('FAIL: no _docs/index.html: build the site first (tools/build_site.py)')
    self_test()
    cfg = get_config()
    doc_host = cfg.doc_host.rstrip('/') + '/' + cfg.doc_baseurl.strip('/') + '/'  # the prefix build_site.py makes relative
    pages, shots = sidebar_pages(), docs/'screenshots'
    res = check_pages(docs, [(expected_folds(nb), page) for nb, page in pages], doc_host, shots)
    for _, page in pages:
        for name, problems in res[page].items():
            if name != '_info': report(not problems, f'{page} {name}' + (f': {len(problems)} problems: {problems[:8]}' if problems else ''))
        if '_info' in res[page]: print(f'      {page}: {res[page]["_info"]}', flush=True)
    search = docs/'search.json'
    try:
        entries = json.loads(search.read_text())
        hrefs = {Path(urlsplit(e.get('href', '')).path).name for e in entries}
        missing = [q for _, q in pages if q not in hrefs]
        report(not missing and len(entries) > 0, f'search index {search.name}: {len(entries)} entries' + (f', pages missing: {missing}' if missing else ''))
    except Exception as e: report(False, f'search index {search}: {e}')
    print(f'{sum(results)} site checks passed, {len(results) - sum(results)} failed; screenshots in {shots.relative_to(root)}/')
    sys.exit(0 if all(results) else 1)

if __name__ == '__main__': main()
