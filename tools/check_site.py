"""Check the built site in headless Chromium, served on 127.0.0.1.

For every page of the sidebar: it loads, has a title and the sidebar, every internal link and asset it references
answers 200 (and every #anchor exists), and a screenshot is saved under _docs/screenshots/. The search index must
exist and list every page. Prints one `PASS: ...` or `FAIL: ...` line per check; exits 1 if any check failed.
If Chromium cannot start, that is a failure with Chromium's own words, never a skip."""
import functools, http.server, json, shutil, subprocess, sys, tempfile, threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit
from urllib.request import urlopen
import yaml

root = Path(__file__).resolve().parent.parent
docs = root/'_docs'
results = []

def report(ok, what):
    results.append(ok)
    print(('PASS: ' if ok else 'FAIL: ') + what, flush=True)

class _Links(HTMLParser):
    "Collects the title, ids, link targets and sidebar entries of one page."
    def __init__(self):
        super().__init__(); self.refs, self.ids, self.title, self.h1, self.sidebar_links = [], set(), '', False, []
        self._in_title = False; self._sidebar_depth = 0
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if 'id' in a: self.ids.add(a['id'])
        if tag == 'title': self._in_title = True
        if tag == 'h1': self.h1 = True
        if tag == 'nav' and a.get('id') == 'quarto-sidebar': self._sidebar_depth = 1
        elif tag == 'nav' and self._sidebar_depth: self._sidebar_depth += 1
        for k in ('href', 'src'):
            if a.get(k): self.refs.append(a[k])
        if self._sidebar_depth and tag == 'a' and a.get('href'): self.sidebar_links.append(a['href'])
    def handle_endtag(self, tag):
        if tag == 'title': self._in_title = False
        if tag == 'nav' and self._sidebar_depth: self._sidebar_depth -= 1
    def handle_data(self, data):
        if self._in_title: self.title += data

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args): pass

class _QuietServer(http.server.ThreadingHTTPServer):
    "Chromium drops connections it no longer needs; that is not an error of the site."
    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)): super().handle_error(request, client_address)

def chromium():
    exe = shutil.which('chromium') or shutil.which('chromium-browser')
    if not exe: sys.exit('FAIL: chromium is not installed (apt-get install chromium)')
    return exe

def run_chromium(exe, profile, *args, timeout=90):
    cmd = [exe, '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic',
           '--disable-component-update', '--disable-sync', '--no-first-run', '--hide-scrollbars',
           f'--user-data-dir={profile}', '--enable-logging=stderr', '--v=0', *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)

def sidebar_pages():
    cfg = yaml.safe_load((root/'nbs'/'sidebar.yml').read_text())
    return [Path(p).with_suffix('.html').name for p in cfg['website']['sidebar']['contents']]

def main():
    if not (docs/'index.html').exists(): sys.exit('FAIL: no _docs/index.html: build the site first (tools/build_site.py)')
    server = _QuietServer(('127.0.0.1', 0), functools.partial(_QuietHandler, directory=str(docs)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f'http://127.0.0.1:{server.server_address[1]}/'
    exe, pages = chromium(), sidebar_pages()
    shots = docs/'screenshots'; shots.mkdir(exist_ok=True)
    status_cache = {}
    def status(url):
        if url not in status_cache:
            try: status_cache[url] = urlopen(url, timeout=10).status
            except Exception as e: status_cache[url] = getattr(e, 'code', str(e))
        return status_cache[url]
    with tempfile.TemporaryDirectory() as profile:
        for page in pages:
            url = base + page
            if not (docs/page).exists(): report(False, f'{page}: page missing from _docs'); continue
            try: dom = run_chromium(exe, profile, '--dump-dom', url)
            except subprocess.TimeoutExpired: report(False, f'{page}: chromium timed out'); continue
            if dom.returncode or '<html' not in dom.stdout:
                report(False, f'{page}: chromium could not load it (exit {dom.returncode}): {dom.stderr.strip()[-600:]}'); continue
            js_errors = [l for l in dom.stderr.splitlines() if 'Uncaught' in l]
            p = _Links(); p.feed(dom.stdout)
            problems = []
            if not p.title.strip(): problems.append('no <title>')
            if not p.h1: problems.append('no <h1>')
            side = {Path(urlsplit(h).path).name for h in p.sidebar_links}
            if missing := [q for q in pages if q not in side]: problems.append(f'sidebar lacks {missing}')
            for ref in p.refs:
                parts = urlsplit(ref)
                if parts.scheme or parts.netloc or ref.startswith(('mailto:', 'javascript:', 'data:')): continue
                target = urljoin(url, ref)
                if parts.path and status(target.split('#')[0]) != 200: problems.append(f'broken {ref} ({status(target.split("#")[0])})')
                elif parts.fragment and not parts.path and parts.fragment not in p.ids: problems.append(f'missing anchor #{parts.fragment}')
            if js_errors: problems.append('javascript errors: ' + ' | '.join(js_errors[:3]))
            shot = shots/(Path(page).stem + '.png')
            try:
                res = run_chromium(exe, profile, f'--screenshot={shot}', '--window-size=1280,1600', url)
                if res.returncode or not shot.exists(): problems.append(f'no screenshot: {res.stderr.strip()[-300:]}')
            except subprocess.TimeoutExpired: problems.append('screenshot timed out')
            report(not problems, f'{page}: title {p.title.strip()!r}, {len(p.refs)} links/assets checked'
                   + (f'; problems: {problems}' if problems else f', screenshot {shot.relative_to(root)}'))
    server.shutdown()
    search = docs/'search.json'
    try:
        entries = json.loads(search.read_text())
        hrefs = {Path(urlsplit(e.get('href', '')).path).name for e in entries}
        missing = [q for q in pages if q not in hrefs]
        report(not missing and len(entries) > 0, f'search index {search.name}: {len(entries)} entries' + (f', pages missing: {missing}' if missing else ''))
    except Exception as e: report(False, f'search index {search}: {e}')
    sys.exit(0 if all(results) else 1)

if __name__ == '__main__': main()
