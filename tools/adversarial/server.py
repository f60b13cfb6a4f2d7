"""`minivecdb serve`: the HTTP API run as a user runs it (the real program, port 0), probed over HTTP. A bad request is a
4xx with `{"error": one sentence}`; a 5xx never shows a traceback; an acknowledged write survives kill -9; SIGTERM finishes
the requests in flight, saves and exits 0; the search page shows stored text as text. Every case starts its own server
processes (torch and the model load in each: ~7 s), so only two are fast."""
import html.parser, http.client, json, os, random, re, shutil, signal, subprocess, threading, time, zlib
from pathlib import Path
import numpy as np
from .core import (case, lib, ok, wrong, unclear, loss, crash, worst, judge_message, make_data, quiet, check_knn,
                   HarnessError, OK, cli_command, cli_env, short)

D = 384  # the default model's dimension: the server checks that its model makes vectors of the store's


# ---------------------------------------------------------------- helpers
def _store(t, name="s.mvdb", n=200, n_clusters=4, seed=81, meta=None):
    "A built store of `n` random unit vectors of the model's dimension (made without the model), probing every list by default."
    L = lib()
    X = make_data(n, D, seed=seed); X /= np.linalg.norm(X, axis=1, keepdims=True)
    s = L.VectorStorage(D)
    s.add_bulk(X, [meta(i) if meta else dict(text=f"stored item {i}", i=i, g=f"g{i % 3}") for i in range(n)])
    ix = L.IVFIndex(s, n_clusters=n_clusters, nprobe=n_clusters)
    with quiet(): ix.build()
    p = t.tmp / name
    ix.save(p); s.close()
    return p, X


class Server:
    "`minivecdb serve STORE --port 0` in a process of its own (in the worker's process group, so a timeout kills it too)."
    _n = 0

    def __init__(self, t, store, args=(), wait=90):
        Server._n += 1
        self.errpath = t.tmp / f"server{Server._n}.stderr"
        self.errf = open(self.errpath, "wb")
        self.p = subprocess.Popen(cli_command() + ["serve", str(store), "--port", "0", *map(str, args)], stdout=subprocess.PIPE,
                                  stderr=self.errf, env=cli_env(), text=True)
        self.first, got = None, threading.Event()
        def read():
            self.first = self.p.stdout.readline(); got.set()
            self.rest = self.p.stdout.read()
        self.rest = ""
        self.reader = threading.Thread(target=read, daemon=True); self.reader.start()
        got.wait(wait)
        m = re.search(r"http://127\.0\.0\.1:(\d+)/", self.first or "")
        self.port = int(m.group(1)) if m else None

    @property
    def up(self): return self.port is not None and self.p.poll() is None

    def stderr(self):
        self.errf.flush()
        return self.errpath.read_text(errors="replace")

    def call(self, method, path, body=None, raw=None, headers=None, timeout=120):
        "(status, decoded JSON or None, raw bytes) of one request on a new connection."
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        h = dict(headers or {})
        if body is not None: raw = json.dumps(body).encode()
        if raw is not None and isinstance(raw, str): raw = raw.encode("utf-8", "surrogatepass")
        if raw is not None: h.setdefault("Content-Type", "application/json")
        try:
            c.request(method, path, body=raw, headers=h)
            r = c.getresponse(); data = r.read()
        finally: c.close()
        try: js = json.loads(data)
        except ValueError: js = None
        return r.status, js, data

    def wait(self, timeout=60):
        "Exit status, or None if still running after `timeout` s."
        try: return self.p.wait(timeout)
        except subprocess.TimeoutExpired: return None

    def stop(self, sig=signal.SIGTERM, timeout=60):
        if self.p.poll() is None: self.p.send_signal(sig)
        rc = self.wait(timeout)
        if rc is None: self.p.kill(); self.p.wait()
        self.reader.join(5)
        return rc

    def kill(self):
        if self.p.poll() is None: self.p.kill()
        self.p.wait(); self.reader.join(5)
        self.errf.close()

    def __enter__(self): return self
    def __exit__(self, *a): self.kill()


def _started(srv, what="the server"):
    "Raise HarnessError if `srv` did not start (the case cannot go on)."
    if not srv.up:
        rc = srv.wait(1)
        raise HarnessError(f"{what} did not start (exit {rc}; stdout {srv.first!r}; stderr {' / '.join(srv.stderr().splitlines()[-3:])[:300]!r})")


def judge_http(r, words=(), forbid=(), statuses=range(400, 500)):
    "A bad request: a 4xx (in `statuses`) whose body is exactly {'error': one sentence naming the problem}."
    status, js, raw = r
    if b"Traceback" in raw or b'File "' in raw: return unclear(f"status {status} with a traceback in the body: {raw[:160]!r}")
    if status >= 500: return unclear(f"status {status} for a bad request: {raw[:200]!r}")
    if status < 400: return wrong(f"status {status}, no error: {raw[:160]!r}")
    if status not in statuses: return unclear(f"status {status} (expected {statuses.start}-{statuses.stop - 1}): {raw[:160]!r}")
    if not isinstance(js, dict) or set(js) != {"error"} or not isinstance(js["error"], str):
        return unclear(f"status {status}, body is not {{\"error\": sentence}}: {raw[:160]!r}")
    o = judge_message(js["error"], words, forbid)
    o.detail = f"{status}: {o.detail}"
    return o


MAX_K = 1000  # the server's bound on k (results per query)


def _all_items(srv):
    "{id: metadata} of every live item, by a full-probe vector search with the largest k the server takes; and the /stats count."
    st = srv.call("GET", "/stats")
    if st[0] != 200: raise HarnessError(f"/stats answered {st[0]}: {st[2][:160]!r}")
    if st[1]["n_vectors"] > MAX_K: raise HarnessError(f"{st[1]['n_vectors']} items: more than one search (k <= {MAX_K}) can list")
    v = [1.0] + [0.0] * (D - 1)
    r = srv.call("POST", "/search", dict(vector=v, k=MAX_K, nprobe=10000))
    if r[0] != 200: raise HarnessError(f"a full search answered {r[0]}: {r[2][:160]!r}")
    return {h["id"]: h["metadata"] for h in r[1]["results"]}, st[1]


def _vector(srv, i):
    s, js, raw = srv.call("GET", f"/items/{i}")
    if s != 200: raise HarnessError(f"GET /items/{i} answered {s}: {raw[:120]!r}")
    return np.asarray(js["vector"], np.float32)


# ---------------------------------------------------------------- cases
@case("input validation", cost=9, timeout=180)
def server_bad_requests(t):
    """Malformed JSON, wrong content type, a non-object body, k/nprobe 0 or negative, where without '=', vectors of the wrong
    dimension, ragged or NaN/Infinity, empty or non-string texts, 1001 texts, metadatas that are not objects or of the wrong
    count, non-integer ids, unknown fields, paths and methods; past the bounds (k over 1,000, k x queries over 100,000, a text
    over 10,000 characters, a where of more than 1,000 values), malformed where operators (POST and GET), JSON nested
    10,000 deep, a Host header naming another site (DNS rebinding): each a 4xx {"error": one sentence naming the problem};
    unknown ids, /docs and /redoc 404; HEAD answered where GET is, without a body. The server keeps answering afterwards and
    its stderr has no traceback."""
    p, X = _store(t)
    vec = X[0].tolist()
    J = {"Content-Type": "application/json"}
    probes = [
        ("malformed JSON", ("POST", "/search"), dict(raw='{"q": "x",', headers=J), ["JSON"]),
        ("text/plain body", ("POST", "/search"), dict(raw='{"q": "x"}', headers={"Content-Type": "text/plain"}), [("JSON", "content-type")]),
        ("no content type", ("POST", "/items"), dict(raw='{"texts": ["x"]}', headers={"Content-Type": ""}), [("JSON", "content-type")]),
        ("array body", ("POST", "/search"), dict(raw="[1, 2]"), [("object", "JSON")]),
        ("empty body", ("POST", "/search"), dict(raw=""), [("body", "JSON")]),
        ("invalid UTF-8 body", ("POST", "/search"), dict(raw=b'{"q": "caf\xe9"}'), [("body", "JSON", "UTF")]),
        ("GET k=0", ("GET", "/search?q=hello&k=0"), {}, ["k"]),
        ("GET k=-1", ("GET", "/search?q=hello&k=-1"), {}, ["k"]),
        ("GET k=1.5", ("GET", "/search?q=hello&k=1.5"), {}, ["k"]),
        ("GET nprobe=0", ("GET", "/search?q=hello&nprobe=0"), {}, ["nprobe"]),
        ("GET nprobe=-2", ("GET", "/search?q=hello&nprobe=-2"), {}, ["nprobe"]),
        ("GET no q", ("GET", "/search"), {}, ["q"]),
        ("GET blank q", ("GET", "/search?q=%20%20"), {}, [("empty", "blank")]),
        ("GET where without =", ("GET", "/search?q=hello&where=genre"), {}, ["where"]),
        ("GET where =x", ("GET", "/search?q=hello&where==x"), {}, ["where"]),
        ("POST k=0", ("POST", "/search"), dict(body=dict(q="hello", k=0)), ["k"]),
        ("POST k=5.5", ("POST", "/search"), dict(body=dict(q="hello", k=5.5)), ["k"]),
        ("POST nprobe=0", ("POST", "/search"), dict(body=dict(vector=vec, nprobe=0)), ["nprobe"]),
        ("POST where a list", ("POST", "/search"), dict(body=dict(q="hello", where=["g=g1"])), ["where"]),
        ("q and vector", ("POST", "/search"), dict(body=dict(q="hello", vector=vec)), [("exactly one", "not both", "only one")]),
        ("none of q/vector", ("POST", "/search"), dict(body=dict(k=3)), [("q", "vector")]),
        ("unknown field", ("POST", "/search"), dict(body=dict(q="hello", limit=3)), ["limit"]),
        ("q a number", ("POST", "/search"), dict(body=dict(q=5)), ["q"]),
        ("vector dim 10", ("POST", "/search"), dict(body=dict(vector=[0.1] * 10)), ["10", "384"]),
        ("vector empty", ("POST", "/search"), dict(body=dict(vector=[])), [("dimension", "empty")]),
        ("vector NaN", ("POST", "/search"), dict(raw='{"vector": [NaN' + ", 0.1" * (D - 1) + "]}"), [("NaN", "finite")]),
        ("vector Infinity", ("POST", "/search"), dict(raw='{"vector": [Infinity' + ", 0.1" * (D - 1) + "]}"), [("infinity", "finite")]),
        ("vector 1e39", ("POST", "/search"), dict(body=dict(vector=[1e39] * D)), [("infinity", "finite", "beyond", "large")]),
        ("vector of strings", ("POST", "/search"), dict(body=dict(vector=["a"] * D)), ["vector"]),
        ("ragged vectors", ("POST", "/search"), dict(body=dict(vectors=[vec, vec[:-1]])), [("383", "dimension")]),
        ("1001 vectors", ("POST", "/search"), dict(body=dict(vectors=[vec] * 1001)), [("1001", "1,001"), "256"]),
        ("queries with a blank", ("POST", "/search"), dict(body=dict(queries=["a", " "])), [("empty", "blank")]),
        ("texts empty list", ("POST", "/items"), dict(body=dict(texts=[])), [("empty", "at least")]),
        ("texts a string", ("POST", "/items"), dict(body=dict(texts="abc")), ["texts"]),
        ("texts [5]", ("POST", "/items"), dict(body=dict(texts=[5])), ["texts"]),
        ("texts ['']", ("POST", "/items"), dict(body=dict(texts=["ok", ""])), [("texts[1]", "texts.1"), ("empty", "blank")]),
        ("texts [null]", ("POST", "/items"), dict(body=dict(texts=[None])), ["texts"]),
        ("1001 texts", ("POST", "/items"), dict(body=dict(texts=["a"] * 1001)), [("1001", "1,001"), "256"]),
        ("GET k=1001", ("GET", "/search?q=hello&k=1001"), {}, ["k", "1,000"]),
        ("POST k=10**9", ("POST", "/search"), dict(body=dict(vector=vec, k=10**9)), ["k", "1,000"]),
        ("k x 200 queries", ("POST", "/search"), dict(body=dict(vectors=[vec] * 200, k=1000)), ["k", "100,000"]),
        ("text of 10,001", ("POST", "/items"), dict(body=dict(texts=["a", "b" * 10_001])), ["texts[1]", "10,000"]),
        ("query of 10,001", ("POST", "/search"), dict(body=dict(q="b" * 10_001)), ["10,000"]),
        ("where $gt of a list", ("POST", "/search"), dict(body=dict(vector=vec, where={"i": {"$gt": [5]}})), ["$gt", "i"]),
        ("where $regex", ("POST", "/search"), dict(body=dict(vector=vec, where={"g": {"$regex": "g"}})), ["$regex"]),
        ("where $or of an object", ("POST", "/search"), dict(body=dict(vector=vec, where={"$or": {"g": "g1"}})), ["$or"]),
        ("GET where g={$ne}", ("GET", "/search?q=hello&where=g%3D%7B%22%24ne%22%3A%22g1%22%7D"), {}, ["where", "JSON"]),  # where=g={"$ne":"g1"}
        ("GET where JSON $gt of null", ("GET", "/search?q=hello&where=%7B%22i%22%3A%7B%22%24gt%22%3Anull%7D%7D"), {}, ["$gt"]),  # where={"i":{"$gt":null}}
        ("where 1001 values", ("POST", "/search"), dict(body=dict(vector=vec, where={"i": list(range(1001))})), ["1,001", "1,000"]),
        ("JSON 10,000 deep", ("POST", "/search"), dict(raw='{"q": "x", "where": ' + "[" * 10_000 + "]" * 10_000 + "}"), [("nested", "deep")]),
        ("Host rebind.example", ("GET", "/stats"), dict(headers={"Host": "rebind.example"}), ["Host", "rebind.example"]),
        ("no texts", ("POST", "/items"), dict(body=dict(metadatas=[{}])), ["texts"]),
        ("metadatas [5]", ("POST", "/items"), dict(body=dict(texts=["a"], metadatas=[5])), ["metadatas"]),
        ("metadatas ['x']", ("POST", "/items"), dict(body=dict(texts=["a"], metadatas=["x"])), ["metadatas"]),
        ("metadatas an object", ("POST", "/items"), dict(body=dict(texts=["a"], metadatas={})), ["metadatas"]),
        ("1 metadata for 2 texts", ("POST", "/items"), dict(body=dict(texts=["a", "b"], metadatas=[{}])), ["1", "2"]),
        ("metadata NaN", ("POST", "/items"), dict(raw='{"texts": ["a"], "metadatas": [{"x": NaN}]}'), [("NaN", "finite")]),
        ("metadata 1e400", ("POST", "/items"), dict(raw='{"texts": ["a"], "metadatas": [{"x": 1e400}]}'), [("infinity", "finite")]),
        ("GET /items/abc", ("GET", "/items/abc"), {}, ["id"]),
        ("GET /items/1.5", ("GET", "/items/1.5"), {}, ["id"]),
        ("DELETE /items/abc", ("DELETE", "/items/abc"), {}, ["id"]),
        ("PUT /items/1", ("PUT", "/items/1"), {}, ["PUT"]),
        ("unknown path", ("GET", "/nope"), {}, ["/nope"]),
    ]
    not_found = [("GET /items/-1", "GET", "/items/-1"), ("GET /items/200", "GET", "/items/200"),
                 ("GET /items/2**64", "GET", f"/items/{2**64}"), ("DELETE /items/-1", "DELETE", "/items/-1"),
                 ("DELETE /items/10**20", "DELETE", f"/items/{10**20}"), ("GET /docs", "GET", "/docs"), ("GET /redoc", "GET", "/redoc")]
    outs, labels = [], []
    with Server(t, p) as srv:
        _started(srv)
        before = _all_items(srv)[1]["n_vectors"]
        for label, (m, path), kw, words in probes:
            try: outs.append(judge_http(srv.call(m, path, **kw), words=words))
            except (OSError, http.client.HTTPException) as e: outs.append(crash(f"no answer: {type(e).__name__}: {e}"))
            labels.append(label)
        for label, m, path in not_found:
            outs.append(judge_http(srv.call(m, path), words=["id"] if "items" in path else [path], statuses=range(404, 405))); labels.append(label)
        for path in ("/search?q=hello&k=2", "/stats", "/"):
            g, h = srv.call("GET", path), srv.call("HEAD", path)
            outs.append(ok() if h[0] == 200 and h[2] == b"" and g[0] == 200 else wrong(f"HEAD {path}: {h[0]} {h[2][:80]!r} (GET: {g[0]})"))
            labels.append(f"HEAD {path}")
        after = _all_items(srv)[1]["n_vectors"]
        if after != before: outs.append(wrong(f"the refused requests changed the store: {before} items, then {after}")); labels.append("count")
        r = srv.call("GET", "/search?q=hello&k=3")
        if r[0] != 200 or len(r[1]["results"]) != 3: outs.append(wrong(f"a good search afterwards: {r[0]} {r[2][:120]!r}")); labels.append("afterwards")
        tb = "Traceback" in srv.stderr()
        if tb: outs.append(unclear("the server's stderr holds a traceback after bad requests")); labels.append("stderr")
    return worst(outs, labels)


@case("api behaviour", cost=9, timeout=180)
def server_vector_search_brute_force(t):
    """POST /search by vector and by a batch of vectors, with where filters (POST dict and GET field=value, a repeated
    field meaning any), k above the item count and huge nprobe: the results equal brute force over the stored vectors (every list
    probed; k = 1,000, the largest k taken); GET /items/{id} gives back the stored vector and metadata; a text added with POST /items is then found
    first by its own text, and after DELETE it is gone (404 and absent from searches)."""
    p, X = _store(t)
    ids = np.arange(len(X))
    rng = np.random.default_rng(5)
    Q = make_data(8, D, seed=82)
    outs, labels = [], []
    with Server(t, p) as srv:
        _started(srv)
        metric = srv.call("GET", "/stats")[1]["distance_fn"]
        r = srv.call("POST", "/search", dict(vectors=Q.tolist(), k=10, nprobe=10**6))
        if r[0] != 200: return wrong(f"batch search: {r[0]} {r[2][:160]!r}")
        got = [[h["id"] for h in e["results"]] for e in r[1]["results"]]
        dist = [[h["distance"] for h in e["results"]] for e in r[1]["results"]]
        outs.append(check_knn(np.array(got), np.array(dist), Q, ids, X, metric, 10, what="batch: ")); labels.append("batch")
        r = srv.call("POST", "/search", dict(vector=Q[0].tolist(), k=MAX_K))
        res = r[1]["results"] if r[0] == 200 else None
        if res is None or len(res) != len(X): outs.append(wrong(f"k={MAX_K}, more than the items (every list probed by default): {r[0]}, {len(res or [])} results of {len(X)}"))
        else: outs.append(check_knn(np.array([[h["id"] for h in res]]), np.array([[h["distance"] for h in res]]), Q[:1], ids, X, metric, len(X), what="k huge: "))
        labels.append("k huge")
        g = np.array([i % 3 for i in range(len(X))])
        for label, req, allowed in (("POST where g", ("POST", "/search", dict(body=dict(vector=Q[1].tolist(), k=7, where=dict(g="g1")))), g == 1),
                                    ("POST where any", ("POST", "/search", dict(body=dict(vector=Q[1].tolist(), k=7, where=dict(g=["g0", "g2"])))), g != 1),
                                    ("GET where x2", None, None)):
            if req is None: continue
            r = srv.call(req[0], req[1], **req[2])
            if r[0] != 200: outs.append(wrong(f"{r[0]} {r[2][:120]!r}")); labels.append(label); continue
            res = r[1]["results"]
            outs.append(check_knn(np.array([[h["id"] for h in res]]), np.array([[h["distance"] for h in res]]), Q[1:2], ids[allowed], X[allowed], metric, 7, what=f"{label}: "))
            labels.append(label)
        for i in rng.choice(len(X), 3, replace=False).tolist():
            s, js, raw = srv.call("GET", f"/items/{i}")
            if s != 200: outs.append(wrong(f"GET /items/{i}: {s} {raw[:100]!r}"))
            elif not np.allclose(js["vector"], X[i], atol=1e-6) or js["metadata"] != dict(text=f"stored item {i}", i=i, g=f"g{i % 3}"):
                outs.append(wrong(f"GET /items/{i} differs from what was stored: {short(js['metadata'])}"))
            else: outs.append(ok())
            labels.append(f"get {i}")
        # a text search restricted by GET where (repeated field = any of its values), checked against the model
        r = srv.call("GET", "/search?q=anything&k=500&where=g=g0&where=g=g2")
        bad = [h for h in r[1]["results"] if h["metadata"]["g"] not in ("g0", "g2")] if r[0] == 200 else None
        n_want = int((g != 1).sum())
        if r[0] != 200: outs.append(wrong(f"GET where twice: {r[0]} {r[2][:120]!r}"))
        elif bad or len(r[1]["results"]) != n_want: outs.append(wrong(f"GET where=g=g0&where=g=g2 gave {len(r[1]['results'])} results (want {n_want}), {len(bad)} outside the filter"))
        else: outs.append(ok())
        labels.append("GET where twice")
        text = "a unique sentence about purple giraffes learning the cello"
        r = srv.call("POST", "/items", dict(texts=[text], metadatas=[dict(text=text, tag="new")]))
        if r[0] != 200 or r[1].get("ids") != [len(X)]: outs.append(wrong(f"POST /items: {r[0]} {r[2][:120]!r} (expected ids [{len(X)}])")); labels.append("add")
        else:
            new = r[1]["ids"][0]
            r = srv.call("POST", "/search", dict(q=text, k=1))
            top = r[1]["results"][0] if r[0] == 200 and r[1]["results"] else None
            if not top or top["id"] != new or top["distance"] > 1e-3: outs.append(wrong(f"its own text finds {short(top)} (expected id {new} at ~0)"))
            else: outs.append(ok())
            labels.append("find added")
            d = srv.call("DELETE", f"/items/{new}")
            g2 = srv.call("GET", f"/items/{new}")
            r = srv.call("POST", "/search", dict(q=text, k=500))
            still = [h["id"] for h in r[1]["results"] if h["id"] == new] if r[0] == 200 else ["?"]
            if d[0] != 200 or g2[0] != 404 or still: outs.append(wrong(f"after DELETE ({d[0]}): GET {g2[0]}, in searches: {bool(still)}"))
            else: outs.append(ok())
            labels.append("delete")
            d2 = srv.call("DELETE", f"/items/{new}")
            outs.append(judge_http(d2, words=[str(new)], statuses=range(404, 405))); labels.append("delete twice")
    return worst(outs, labels)


@case("input validation", "slow", cost=10, timeout=240)
def server_unicode_text(t):
    """Texts and queries that are odd Unicode: a lone surrogate (valid JSON "\\ud800") as q or as a text is refused with a 4xx
    naming the problem (not the tokenizer's "TextEncodeInput must be Union[...]"); emoji, CJK, right-to-left, combining marks,
    NUL and a 10,000-character text (the most one text may hold) are stored, read back exactly and found first by their own
    text; a 200,000-character query is refused with a 4xx naming the bound, and a 10,000-character GET query is answered."""
    p, X = _store(t)
    outs, labels = [], []
    words = [("surrogate", "unicode", "utf-8", "utf8", "encod", "character")]
    forbid = ["TextEncodeInput", "Union["]
    with Server(t, p) as srv:
        _started(srv)
        for label, path, raw in (("q lone surrogate", "/search", '{"q": "caf\\ud800"}'),
                                 ("queries lone surrogate", "/search", '{"queries": ["fine", "\\udfff"]}'),
                                 ("texts lone surrogate", "/items", '{"texts": ["fine", "bad \\ud800 text"]}')):
            outs.append(judge_http(srv.call("POST", path, raw=raw), words=words, forbid=forbid)); labels.append(label)
        texts = ["emoji 🦒🎻 giraffe cello 👩‍👩‍👧", "中文标题：长颈鹿学习大提琴", "عنوان باللغة العربية عن الزرافة",
                 "combining e\u0301 a\u0308 o\u0302 zalgo z\u0336\u0321", "nul inside \u0000 the text", "long " + "word " * 1999]
        r = srv.call("POST", "/items", dict(texts=texts))
        if r[0] != 200: outs.append(wrong(f"adding odd Unicode texts: {r[0]} {r[2][:160]!r}")); labels.append("add")
        else:
            for text, i in zip(texts, r[1]["ids"]):
                g = srv.call("GET", f"/items/{i}")
                s = srv.call("POST", "/search", dict(q=text, k=1))
                top = s[1]["results"][0] if s[0] == 200 and s[1]["results"] else None
                if g[0] != 200 or g[1]["metadata"] != dict(text=text): outs.append(wrong(f"GET /items/{i}: {g[0]} {g[2][:100]!r}"))
                elif not top or top["id"] != i: outs.append(wrong(f"its own text finds {short(top, 100)} ({s[0]}), expected id {i}"))
                else: outs.append(ok())
                labels.append(f"roundtrip {text[:12]!r}")
        r = srv.call("POST", "/search", dict(q="x" * 200_000, k=2))
        outs.append(judge_http(r, words=["200,000", "10,000"])); labels.append("q 200k")
        r = srv.call("GET", "/search?q=" + "word%20" * 2000 + "&k=2")
        outs.append(ok() if r[0] == 200 else wrong(f"10,000-character GET query: {r[0]} {r[2][:120]!r}")); labels.append("GET q 10k")
        if "Traceback" in srv.stderr() and not any(o.kind != OK for o in outs):
            outs.append(unclear("a traceback on the server's stderr")); labels.append("stderr")
    return worst(outs, labels)


@case("metadata & filters", "slow", cost=12, timeout=240)
def server_unreadable_metadata(t):
    """POST /items with metadata the server cannot send back: a lone surrogate in a string ("\\ud800" is valid JSON) and a
    list nested 900 deep. Each must be refused with a 4xx, or stored and then readable: GET /items/{id} answers 200, and a
    search whose results include the item answers 200 (also after a restart). An acknowledged item that makes every search
    near it fail is a wrong result."""
    p, X = _store(t)
    outs, labels = [], []
    trials = (("lone surrogate", '{"texts": ["surrogate metadata item about rivers"], "metadatas": [{"note": "x\\ud800y"}]}',
               "surrogate metadata item about rivers"),
              ("nested 900 deep", '{"texts": ["deeply nested metadata item about mountains"], "metadatas": [{"a": ' + "[" * 900 + "]" * 900 + "}]}",
               "deeply nested metadata item about mountains"))
    stored = []
    with Server(t, p) as srv:
        _started(srv)
        for label, raw, text in trials:
            r = srv.call("POST", "/items", raw=raw)
            if r[0] != 200:
                outs.append(judge_http(r, words=[("metadata", "metadatas")])); labels.append(label); continue
            i = r[1]["ids"][0]; stored.append((label, i, text))
            g = srv.call("GET", f"/items/{i}")
            s = srv.call("POST", "/search", dict(q=text, k=3))
            probs = []
            if g[0] != 200: probs.append(f"GET /items/{i} answers {g[0]} {g[2][:110]!r}")
            if s[0] != 200: probs.append(f"searching its own text answers {s[0]} {s[2][:110]!r}")
            outs.append(wrong(f"accepted (id {i}), then " + "; ".join(probs)) if probs else ok()); labels.append(label)
        rc = srv.stop(signal.SIGTERM)
        if rc != 0: outs.append(wrong(f"SIGTERM: exit {rc}; stderr {srv.stderr()[-200:]!r}")); labels.append("stop")
    if stored:
        with Server(t, p) as srv:
            if not srv.up: outs.append(loss(f"the store no longer opens: {srv.stderr()[-200:]!r}")); labels.append("restart")
            else:
                for label, i, text in stored:
                    g = srv.call("GET", f"/items/{i}")
                    outs.append(ok() if g[0] == 200 else wrong(f"after a restart, GET /items/{i} answers {g[0]} {g[2][:80]!r}"))
                    labels.append(f"{label} after restart")
    return worst(outs, labels)


@case("metadata & filters", "slow", cost=9, timeout=180)
def server_where_odd_types(t):
    """`where` with odd types, against a model of the stored metadata: POST {"n": 5} matches the number 5 only (not "5"),
    {"b": true} matches true only (not 1), {"d": {"x": 1}} is refused with a 4xx (an object is read as an operator, which the
    filter does not have yet), {"tags": [["a", "b"]]} matches that list, a list value
    means any of them, a missing field matches nothing; GET where=n=5 matches 5 and "5" (the CLI's rule), where=b=true true
    and "true". Every filter is compared with the model over all items (k = 1,000 > 130 items, nprobe huge)."""
    vals = [5, "5", 5.0, True, 1, False, 0, None, "true", [1], {"x": 1}, ["a", "b"], {"x": 1, "y": 2}]
    def meta(i):
        v = vals[i % len(vals)]
        return dict(n=v, b=v, d=v, tags=v, i=i)
    p, X = _store(t, n=130, meta=meta)
    metas = [meta(i) for i in range(130)]
    def is_bool(a): return isinstance(a, bool)
    def model(where):
        keep = []
        for i, m in enumerate(metas):
            good = True
            for f, want in where.items():
                allowed = want if isinstance(want, list) else [want]
                if f not in m: good = False; break
                v = m[f]
                hit = any((is_bool(v) == is_bool(a)) and v == a for a in allowed)
                good &= hit
            if good: keep.append(i)
        return sorted(keep)
    posts = [dict(n=5), dict(n="5"), dict(b=True), dict(b=1), dict(b=False), dict(b=None),
             dict(tags=[["a", "b"]]), dict(n=[5, "true"]), dict(missing=1), dict(n=5, b=5)]
    gets = [("n=5", {"n": ["5", 5]}), ("b=true", {"b": ["true", True]}), ("b=null", {"b": ["null", None]}),
            ("n=5&where=n=true", {"n": ["5", 5, "true", True]})]
    outs, labels = [], []
    with Server(t, p) as srv:
        _started(srv)
        q = X[0].tolist()
        for w in posts:
            r = srv.call("POST", "/search", dict(vector=q, k=MAX_K, nprobe=10**6, where=w))
            got = sorted(h["id"] for h in r[1]["results"]) if r[0] == 200 else None
            want = model(w)
            outs.append(ok() if got == want else wrong(f"{r[0]}: {len(got or [])} results, model {len(want)}; e.g. extra {sorted(set(got or []) - set(want))[:3]}, missing {sorted(set(want) - set(got or []))[:3]}"))
            labels.append(f"POST {json.dumps(w)}")
        outs.append(judge_http(srv.call("POST", "/search", dict(vector=q, k=10, where=dict(d={"x": 1}))), words=["operators", "field: value"]))
        labels.append('POST {"d": {"x": 1}} refused')
        for qs, w in gets:
            r = srv.call("GET", f"/search?q=anything&k={MAX_K}&nprobe=1000000&where={qs}")
            got = sorted(h["id"] for h in r[1]["results"]) if r[0] == 200 else None
            want = model(w)
            outs.append(ok() if got == want else wrong(f"{r[0]}: {len(got or [])} results, model {len(want)}; extra {sorted(set(got or []) - set(want))[:3]}"))
            labels.append(f"GET where={qs}")
    return worst(outs, labels)


@case("input validation", "slow", cost=9, timeout=180)
def server_lax_json_types(t):
    """JSON of the wrong type is refused, not coerced into something else: POST /search with "k": true or "nprobe": true is a
    4xx (a boolean is not a count; pydantic's lax mode reads true as 1), "k": "5" may be read as 5; an empty batch is treated
    the same way for "queries": [] and "vectors": [] (both refused or both answered with no results)."""
    p, X = _store(t)
    outs, labels = [], []
    with Server(t, p) as srv:
        _started(srv)
        for label, body, words in (("k true", dict(vector=X[0].tolist(), k=True), ["k"]),
                                   ("nprobe true", dict(vector=X[0].tolist(), nprobe=True, k=3), ["nprobe"]),
                                   ("k false", dict(vector=X[0].tolist(), k=False), ["k"])):
            r = srv.call("POST", "/search", body)
            if r[0] == 200: outs.append(wrong(f"accepted: {len(r[1]['results'])} results for {label}"))
            else: outs.append(judge_http(r, words=words))
            labels.append(label)
        r = srv.call("POST", "/search", dict(vector=X[0].tolist(), k="5"))
        outs.append(ok() if r[0] == 200 and len(r[1]["results"]) == 5 else judge_http(r, words=["k"])); labels.append('k "5"')
        rq = srv.call("POST", "/search", dict(queries=[]))
        rv = srv.call("POST", "/search", dict(vectors=[]))
        if (rq[0] == 200) != (rv[0] == 200):
            outs.append(wrong(f'an empty batch: "queries": [] answers {rq[0]} {rq[2][:80]!r}, "vectors": [] answers {rv[0]} {rv[2][:80]!r}'))
        else: outs.append(ok())
        labels.append("empty batches")
    return worst(outs, labels)


@case("concurrency", "slow", cost=20, timeout=300)
def server_concurrent_model(t):
    """Two writers (adding texts, deleting half of their own adds) and three searchers at once for ~6 s. Every request is
    answered 200 (a 404 only for nothing); ids are unique; a search by a stored vector that is never deleted finds it first;
    an acknowledged delete is 404 afterwards. At the end every acknowledged change is there, nothing else is, and a batch of
    full-probe searches equals brute force over the stored vectors."""
    p, X = _store(t)
    errors, lock = [], threading.Lock()
    acked_add, acked_del = {}, set()     # id -> metadata, ids
    def err(msg):
        with lock:
            if len(errors) < 5: errors.append(msg)
    with Server(t, p) as srv:
        _started(srv)
        stop = time.time() + 6
        def writer(w):
            rng = random.Random(w); j = 0
            mine = []
            while time.time() < stop:
                texts = [f"writer {w} note {j + a} about {rng.choice(['rain', 'trains', 'jazz', 'tea', 'maps'])}" for a in range(rng.randint(1, 4))]
                metas = [dict(text=x, w=w, j=j + a) for a, x in enumerate(texts)]
                j += len(texts)
                r = srv.call("POST", "/items", dict(texts=texts, metadatas=metas))
                if r[0] != 200: err(f"add: {r[0]} {r[2][:100]!r}"); continue
                with lock:
                    for i, m in zip(r[1]["ids"], metas):
                        if i in acked_add or i < len(X): err(f"id {i} given twice")
                        acked_add[i] = m
                mine += r[1]["ids"][::2]
                if mine and rng.random() < 0.6:
                    i = mine.pop(rng.randrange(len(mine)))
                    r = srv.call("DELETE", f"/items/{i}")
                    if r[0] != 200: err(f"delete {i}: {r[0]} {r[2][:100]!r}"); continue
                    with lock: acked_del.add(i)
                    g = srv.call("GET", f"/items/{i}")
                    if g[0] != 404: err(f"GET /items/{i} after its acknowledged delete: {g[0]}")
        def searcher(s):
            rng = random.Random(100 + s)
            while time.time() < stop:
                i = rng.randrange(len(X))
                if rng.random() < 0.5:
                    r = srv.call("POST", "/search", dict(vector=X[i].tolist(), k=3, nprobe=1000))
                    if r[0] != 200: err(f"search: {r[0]} {r[2][:100]!r}"); continue
                    top = r[1]["results"][0]
                    if top["id"] != i or top["distance"] > 1e-4: err(f"vector of id {i} found {top['id']} at {top['distance']:.3g}")
                else:
                    r = srv.call("GET", f"/search?q=writer+{s % 2}+note+about+tea&k=5&where=w={s % 2}")
                    if r[0] != 200: err(f"text search: {r[0]} {r[2][:100]!r}"); continue
                    if any(h["metadata"].get("w") != s % 2 for h in r[1]["results"]): err("a text search broke its where filter")
        threads = [threading.Thread(target=writer, args=(w,), daemon=True) for w in range(2)]
        threads += [threading.Thread(target=searcher, args=(s,), daemon=True) for s in range(3)]
        for th in threads: th.start()
        for th in threads: th.join(60)
        if any(th.is_alive() for th in threads): return crash("client threads still waiting 54 s after the load ended")
        if errors: return wrong(f"{len(errors)}+ problems under load: " + "; ".join(errors))
        items, st = _all_items(srv)
        want = {i: dict(text=f"stored item {i}", i=i, g=f"g{i % 3}") for i in range(len(X))}
        want.update({i: m for i, m in acked_add.items() if i not in acked_del})
        if items != want:
            miss = sorted(set(want) - set(items)); extra = sorted(set(items) - set(want))
            diff = [i for i in set(want) & set(items) if want[i] != items[i]]
            return wrong(f"after the load: missing {miss[:5]}, extra {extra[:5]}, metadata differs for {diff[:5]} ({len(acked_add)} adds, {len(acked_del)} deletes)")
        if st["n_vectors"] != len(want): return wrong(f"/stats says {st['n_vectors']} items, there are {len(want)}")
        ids = np.array(sorted(want))
        V = np.stack([X[i] if i < len(X) else _vector(srv, i) for i in ids])
        Q = make_data(6, D, seed=83)
        r = srv.call("POST", "/search", dict(vectors=Q.tolist(), k=10, nprobe=1000))
        got = np.array([[h["id"] for h in e["results"]] for e in r[1]["results"]])
        dist = np.array([[h["distance"] for h in e["results"]] for e in r[1]["results"]])
        o = check_knn(got, dist, Q, ids, V, st["distance_fn"], 10)
        o.detail = f"{len(acked_add)} adds, {len(acked_del)} deletes; {o.detail}"
        return o


def _writer_stream(srv, model, tag, stop_evt, rng):
    """Acknowledged adds and deletes until the connection fails; `model` records acks and the requests in flight."""
    j = 0
    while not stop_evt.is_set():
        if model["live"] and rng.random() < 0.35:
            i = rng.choice(sorted(model["live"]))
            model["inflight"] = ("delete", i)
            try: r = srv.call("DELETE", f"/items/{i}", timeout=30)
            except (OSError, http.client.HTTPException): return
            if r[0] == 200: model["live"].discard(i); model["deleted"].add(i)
            elif r[0] != 404: model["errors"].append(f"delete {i}: {r[0]} {r[2][:80]!r}")
        else:
            texts = [f"{tag} item {j + a} on {rng.choice(['coffee', 'boats', 'chess', 'bees'])}" for a in range(rng.randint(1, 3))]
            metas = [dict(text=x, tag=f"{tag}-{j + a}") for a, x in enumerate(texts)]
            j += len(texts)
            model["inflight"] = ("add", metas)
            try: r = srv.call("POST", "/items", dict(texts=texts, metadatas=metas), timeout=30)
            except (OSError, http.client.HTTPException): return
            if r[0] == 200:
                for i, m in zip(r[1]["ids"], metas):
                    if i <= model["max_id"]: model["errors"].append(f"id {i} given again (max id so far {model['max_id']})")
                    model["max_id"] = max(model["max_id"], i)
                    model["meta"][i] = m; model["live"].add(i)
            else: model["errors"].append(f"add: {r[0]} {r[2][:80]!r}")
        model["inflight"] = None


@case("persistence & corruption", "slow", cost=45, timeout=420)
def server_kill9_acknowledged_writes(t):
    """A stream of adds and deletes, each recorded once acknowledged; the server is killed with SIGKILL at a random moment
    (and in one round SIGTERM then SIGKILL 0-300 ms later, i.e. possibly during the shutdown save), then restarted over the
    same store. Every acknowledged add is there with its metadata, every acknowledged delete is gone, the only other
    difference allowed is the one request in flight, new ids never reuse old ones; 2 rounds (4 with --all)."""
    p, X = _store(t)
    model = dict(meta={i: dict(text=f"stored item {i}", i=i, g=f"g{i % 3}") for i in range(len(X))},
                 live=set(range(len(X))), deleted=set(), max_id=len(X) - 1, errors=[], inflight=None)
    rng = random.Random(7)
    rounds = 4 if t.full else 2
    outs, labels = [], []
    for rnd in range(rounds + 1):
        with Server(t, p) as srv:
            if not srv.up: return loss(f"round {rnd}: the server does not start again: {' / '.join(srv.stderr().splitlines()[-2:])[:300]!r}")
            items, st = _all_items(srv)
            inflight = model["inflight"]; model["inflight"] = None
            want = {i: model["meta"][i] for i in model["live"]}
            missing = sorted(set(want) - set(items))
            extra = sorted(set(items) - set(want))
            changed = [i for i in set(want) & set(items) if items[i] != want[i]]
            allowed_missing = [inflight[1]] if inflight and inflight[0] == "delete" else []
            allowed_extra_tags = {m["tag"] for m in inflight[1]} if inflight and inflight[0] == "add" else set()
            lost = [i for i in missing if i not in allowed_missing]
            phantom = [i for i in extra if items[i].get("tag") not in allowed_extra_tags]
            if lost or changed: outs.append(loss(f"acknowledged items missing {lost[:5]} or changed {changed[:5]} (in flight: {short(inflight, 80)})"))
            elif phantom: outs.append(wrong(f"items that were never acknowledged nor in flight: {[(i, items[i]) for i in phantom[:3]]}"))
            elif set(items) & model["deleted"]: outs.append(loss(f"acknowledged deletes came back: {sorted(set(items) & model['deleted'])[:5]}"))
            else: outs.append(ok(f"{len(items)} items"))
            labels.append(f"after round {rnd}" if rnd else "start")
            # the unacknowledged request in flight may or may not have happened: take what the server now has
            for i in extra:
                if i not in phantom: model["meta"][i] = items[i]; model["live"].add(i); model["max_id"] = max(model["max_id"], i)
            for i in allowed_missing:
                if i in missing: model["live"].discard(i); model["deleted"].add(i)
            if outs[-1].kind != OK or rnd == rounds: break
            model["max_id"] = max([model["max_id"]] + list(items))
            stop_evt = threading.Event()
            th = threading.Thread(target=_writer_stream, args=(srv, model, f"r{rnd}", stop_evt, random.Random(rnd)), daemon=True)
            th.start()
            time.sleep(rng.uniform(0.8, 2.5))
            if rnd == 1:
                srv.p.send_signal(signal.SIGTERM); time.sleep(rng.uniform(0.0, 0.3))
            srv.p.kill(); srv.p.wait()
            stop_evt.set(); th.join(40)
            if th.is_alive(): return crash("the client thread hangs after the server was killed")
            if model["errors"]: outs.append(wrong("; ".join(model["errors"][:3]))); labels.append(f"round {rnd + 1} requests"); break
    return worst(outs, labels)


def _log_lines(entries):
    out = b""
    for e in entries:
        body = json.dumps(e, separators=(",", ":")).encode()
        out += b"%08x %s\n" % (zlib.crc32(body), body)
    return out


@case("persistence & corruption", "slow", cost=35, timeout=360)
def server_write_log_damage(t):
    """The write-ahead log STORE.log at startup, made by a real server killed with SIGKILL after 3 adds and a delete:
    a torn last line is dropped and the rest replayed; a damaged line followed by intact ones is refused in one line (store
    and log untouched); checksummed entries of the wrong shape (no "ids", not an object, bad base64) are refused in one line
    without a traceback; and a stale log left from an older store at the same path (rebuilt with more items) must not
    be replayed into the new store: its delete of id 5 would remove an unrelated item."""
    p, X = _store(t)
    log = p.with_name(p.name + ".log")
    with Server(t, p) as srv:
        _started(srv)
        ids = []
        for a in range(3):
            r = srv.call("POST", "/items", dict(texts=[f"logged text {a}"]))
            if r[0] != 200: raise HarnessError(f"add: {r[0]}")
            ids += r[1]["ids"]
        if srv.call("DELETE", "/items/5")[0] != 200: raise HarnessError("delete 5 refused")
        srv.p.kill()
    pristine_store, pristine_log = p.read_bytes(), log.read_bytes()
    lines = pristine_log.split(b"\n")
    if len(lines) != 6: raise HarnessError(f"the log has {len(lines) - 1} lines, expected 5 (the store it continues, then 4 changes): the format changed?")
    head = lines[0] + b"\n"  # the line naming the saved store the log continues
    outs, labels = [], []
    def reset(logbytes, store=None):
        p.write_bytes(store or pristine_store); log.write_bytes(logbytes)

    # torn tail: a server must start, replay the 4 intact entries
    reset(pristine_log + lines[1][: len(lines[1]) // 2])
    with Server(t, p) as srv:
        if not srv.up: outs.append(loss(f"does not start with a torn last line: {srv.stderr()[-200:]!r}"))
        else:
            items, st = _all_items(srv)
            want_ok = all(i in items for i in ids) and 5 not in items and len(items) == len(X) + 2
            outs.append(ok() if want_ok else loss(f"after a torn tail: {len(items)} items (want {len(X) + 2}), added ids present {[i in items for i in ids]}, 5 present {5 in items}"))
        labels.append("torn tail")
    # refusals: each must exit != 0 with one line on stderr, no traceback, store and log untouched
    body1 = lines[1].partition(b" ")[2]
    bad_entries = {"damaged middle line": head + lines[1][:20] + (b"X" if lines[1][20:21] != b"X" else b"Y") + lines[1][21:] + b"\n" + b"\n".join(lines[2:]),
                   'entry without "ids"': head + _log_lines([{"op": "add", "vectors": "", "metadatas": []}]),
                   "entry not an object": head + _log_lines([[1, 2, 3]]),
                   "unknown op": head + _log_lines([{"op": "frobnicate", "id": 3}]),
                   "bad base64 vectors": head + _log_lines([{"op": "add", "ids": [len(X)], "vectors": "@@not base64@@", "metadatas": [{}]}]),
                   "vectors of the wrong size": head + _log_lines([{"op": "add", "ids": [len(X)], "vectors": "AAAAAA==", "metadatas": [{}]}]),
                   "no line naming the store": b"\n".join(lines[1:])}
    for label, content in bad_entries.items():
        reset(content)
        srv = Server(t, p, wait=90)
        try:
            if srv.up:
                items, st = _all_items(srv)
                o = wrong(f"the server started ({len(items)} items) over a log it cannot have replayed faithfully")
            else:
                rc = srv.wait(60)
                err = srv.stderr()
                lines_err = [l for l in err.splitlines() if l.strip()]
                if "Traceback" in err: o = unclear(f"exit {rc} with a traceback: {lines_err[-1][:160]!r}")
                elif rc == 0 or len(lines_err) != 1: o = unclear(f"exit {rc}, stderr {' / '.join(lines_err)[:200]!r}")
                else:
                    o = judge_message(lines_err[0], words=[("log", "write-ahead")], forbid=["list indices", "Incorrect padding", "buffer size", "cannot reshape"])
                    if o.kind == OK and (p.read_bytes() != pristine_store or log.read_bytes() != content):
                        o = loss(f"refused ({lines_err[0][:80]!r}) but the store or the log was changed")
        finally: srv.kill()
        outs.append(o); labels.append(label)
    # a stale log from an older store at the same path
    L = lib()
    Y = make_data(300, D, seed=84); Y /= np.linalg.norm(Y, axis=1, keepdims=True)
    s = L.VectorStorage(D); s.add_bulk(Y, [dict(text=f"new store item {i}") for i in range(300)])
    ix = L.IVFIndex(s, n_clusters=4, nprobe=4)
    with quiet(): ix.build()
    p.unlink(); ix.save(p); s.close()
    new_store = p.read_bytes()
    log.write_bytes(pristine_log)
    with Server(t, p) as srv:
        if not srv.up:
            err = [l for l in srv.stderr().splitlines() if l.strip()]
            o = judge_message(err[-1] if err else "", words=[("log", "write-ahead")]) if len(err) == 1 and "Traceback" not in srv.stderr() else unclear(f"stderr {' / '.join(err)[-200:]!r}")
            if o.kind == OK and p.read_bytes() != new_store: o = loss("refused, but the new store was changed")
        else:
            items, st = _all_items(srv)
            o = ok(f"started with {len(items)} items") if 5 in items and len(items) == 300 else loss(
                f"the stale log of the old store was replayed into the new one: item 5 present {5 in items}, {len(items)} items (new store has 300)")
        outs.append(o); labels.append("stale log of an older store")
    return worst(outs, labels)


@case("locking & paths", "slow", cost=25, timeout=300)
def server_second_server_and_port(t):
    """A second `serve` of a store being served is refused in one line naming the lock (the first keeps serving and writing);
    `serve` on a port in use, of a missing store, of garbage, with no store and no --demo: one line each, exit != 0, no traceback."""
    p, X = _store(t)
    p2, _ = _store(t, name="other.mvdb")
    (t.tmp / "garbage.mvdb").write_bytes(b"not a store at all" * 20)
    outs, labels = [], []
    def refused(args, words, label, wait=90):
        r = subprocess.run(cli_command() + ["serve", *map(str, args)], capture_output=True, text=True, timeout=wait, env=cli_env())
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        if "Traceback" in r.stderr: o = unclear(f"exit {r.returncode} with a traceback: {lines[-1][:160]!r}")
        elif r.returncode == 0: o = wrong(f"exit 0; stdout {r.stdout[:120]!r}")
        elif len(lines) != 1: o = unclear(f"exit {r.returncode}, {len(lines)} lines on stderr: {' / '.join(lines)[:200]!r}")
        else: o = judge_message(lines[0], words)
        outs.append(o); labels.append(label)
    with Server(t, p) as srv:
        _started(srv)
        try: refused([p, "--port", "0"], [("lock", "another process", "being written", "served", "in use")], "second server", wait=120)
        except subprocess.TimeoutExpired: outs.append(crash("a second server over the same store is still running after 120 s")); labels.append("second server")
        r = srv.call("POST", "/items", dict(texts=["written after the second server was refused"]))
        outs.append(ok() if r[0] == 200 else wrong(f"the first server's add afterwards: {r[0]} {r[2][:100]!r}")); labels.append("first still writes")
        try: refused([p2, "--port", srv.port], [("in use", "port")], "port in use", wait=120)
        except subprocess.TimeoutExpired: outs.append(crash("`serve --port <in use>` still running after 120 s")); labels.append("port in use")
        rc = srv.stop(signal.SIGTERM)
        if rc != 0: outs.append(wrong(f"SIGTERM: exit {rc}")); labels.append("stop")
    try:
        ix = lib().IVFIndex.load(p)
        n = len(ix.storage)
        outs.append(ok() if n == len(X) + 1 else loss(f"the store holds {n} items after the run, expected {len(X) + 1}")); labels.append("store after")
    except Exception as e: outs.append(loss(f"the served store does not load: {type(e).__name__}: {e}")); labels.append("store after")
    refused([t.tmp / "missing.mvdb", "--port", "0"], [("no such", "not found", "does not exist")], "missing store")
    refused([t.tmp / "garbage.mvdb", "--port", "0"], [("not a minivecdb", "corrupt", "cannot open")], "garbage store")
    refused(["--port", "0"], [("store", "--demo")], "no store")
    refused([p, "--port", "99999"], ["port"], "port 99999")
    return worst(outs, labels)


@case("api behaviour", "slow", cost=50, timeout=400)
def server_sigterm_in_flight(t):
    """SIGTERM 0.3 s into an add that takes ~3 s (sized by timing a first add): the add is still answered, the server exits 0
    with no traceback, and the saved store holds it with no change left in the log. SIGTERM while adds of 256 texts queue up
    (~40 s of embedding, more than the 30 s grace): each add is answered 200 or with a JSON {"error"} (never a plain-text 500), no traceback, exit 0,
    and every answered add is in the store. SIGINT twice during a long add: no traceback, and an answered add is stored."""
    p, X = _store(t)
    log = p.with_name(p.name + ".log")
    outs, labels = [], []
    def count(): return len(lib().IVFIndex.load(p).storage)
    for label in ("SIGTERM", "beyond the grace", "SIGINT twice"):
        n_before = count()
        with Server(t, p) as srv:
            _started(srv)
            t0 = time.time()
            r = srv.call("POST", "/items", dict(texts=[f"calibration text {i} about herons" for i in range(100)]))
            if r[0] != 200: raise HarnessError(f"calibration add: {r[0]}")
            n_before += 100
            rate = 100 / max(time.time() - t0, 1e-3)  # texts embedded per second
            n = max(100, min(256, int(rate * 3.0)))
            beyond = min(60, max(2, int(np.ceil(rate * 40 / 256))))  # adds of 256 texts: ~40 s of embedding, past the 30 s grace
            sizes = {"SIGTERM": [n], "beyond the grace": [256] * beyond, "SIGINT twice": [256]}[label]
            sigs = {"SIGTERM": [signal.SIGTERM], "beyond the grace": [signal.SIGTERM], "SIGINT twice": [signal.SIGINT, signal.SIGINT]}[label]
            res = [None] * len(sizes)
            def add(j, m):
                try: res[j] = srv.call("POST", "/items", dict(texts=[f"{label} add {j} text {i} about owls" for i in range(m)]), timeout=180)
                except Exception as e: res[j] = e
            ths = [threading.Thread(target=add, args=(j, m), daemon=True) for j, m in enumerate(sizes)]
            for th in ths: th.start()
            time.sleep(0.3)
            for sg in sigs: srv.p.send_signal(sg); time.sleep(0.1)
            for th in ths: th.join(180)
            rc = srv.wait(60)
            if rc is None: outs.append(crash(f"{label}: still running 60 s after the signal")); labels.append(label); continue
            err = srv.stderr()
            answered = [isinstance(x, tuple) and x[0] == 200 for x in res]
            probs = []
            if "Traceback" in err: probs.append(f"traceback on stderr ending {[l for l in err.splitlines() if l.strip()][-1][:110]!r}")
            for x in res:
                if isinstance(x, tuple) and x[0] != 200 and not (isinstance(x[1], dict) and set(x[1]) == {"error"}):
                    probs.append(f"an add in flight was answered {x[0]} {x[2][:60]!r}, not JSON {{\"error\"}}")
            if label == "SIGTERM" and not answered[0]: probs.append(f"the add in flight ({n} texts) was not answered: {short(res[0], 100)}")
            if label != "SIGINT twice" and rc != 0: probs.append(f"exit {rc}")
            try: n_after = count()
            except Exception as e: outs.append(loss(f"{label}: the store does not load: {e}")); labels.append(label); continue
            want_min = n_before + sum(m for m, a in zip(sizes, answered) if a)
            if n_after < want_min: outs.append(loss(f"{label}: {sum(answered)} adds acknowledged, but the store holds {n_after} items (expected at least {want_min})"))
            elif label == "SIGTERM" and (left := [l for l in log.read_bytes().split(b"\n") if l and b'"op":"base"' not in l]):
                outs.append(wrong(f"{label}: the log still holds {len(left)} changes after a clean stop"))
            elif probs: outs.append(wrong(f"{label}: " + "; ".join(probs)))
            else: outs.append(ok(f"{label}: exit {rc}, {sum(answered)}/{len(sizes)} answered"))
            labels.append(label)
    return worst(outs, labels)


# The page's own script, run in node against the live server with a minimal DOM that serializes text as a browser does
# and records every HTML sink (innerHTML, outerHTML, insertAdjacentHTML, document.write). Used when Chromium cannot run:
# the worker's address-space limit (8 GiB) is far below what Chromium reserves, and it dies with SIGTRAP under it.
NODE_DOM = r"""
const [script, base, search] = [require('fs').readFileSync(process.argv[2], 'utf8'), process.argv[3], process.argv[4]];
const sinks = [], esc = s => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
class El {
  constructor(tag, id) { this.tag = tag; this.id = id; this.kids = []; this.attrs = {}; this._text = null; this.value = ''; }
  set textContent(v) { this.kids = []; this._text = String(v); } get textContent() { return this._text ?? this.kids.map(k => k.textContent).join(''); }
  set innerHTML(v) { sinks.push(String(v)); } set outerHTML(v) { sinks.push(String(v)); }
  insertAdjacentHTML(p, v) { sinks.push(String(v)); }
  append(...n) { this._text = null; this.kids.push(...n); } replaceChildren(...n) { this._text = null; this.kids = n; }
  setAttribute(k, v) { this.attrs[k] = String(v); } addEventListener() {}
  html() { const a = Object.entries({id: this.id, class: this.className, title: this.title, ...this.attrs}).filter(([, v]) => v)
             .map(([k, v]) => ` ${k}="${esc(v)}"`).join('');
           return `<${this.tag}${a}>` + (this._text !== null ? esc(this._text) : this.kids.map(k => k.html()).join('')) + `</${this.tag}>`; }
}
const els = {q: new El('input', 'q'), k: new El('input', 'k'), status: new El('p', 'status'), results: new El('ol', 'results'), search: new El('form', 'search')};
globalThis.document = {getElementById: id => els[id], createElement: t => new El(t), write: v => sinks.push(String(v)), body: new El('body')};
globalThis.location = {search}; globalThis.history = {pushState() {}}; globalThis.window = {addEventListener() {}};
globalThis.fetch = u => new Promise((ok, fail) => require('http').get(new URL(u, base), res => {  // not node's fetch: its wasm needs more address space
  let b = ''; res.setEncoding('utf8'); res.on('data', c => b += c);
  res.on('end', () => ok({ok: res.statusCode >= 200 && res.statusCode < 300, status: res.statusCode, json: async () => JSON.parse(b)}));
}).on('error', fail));
eval(script);
const t0 = Date.now();
(function wait() {
  const s = els.status.textContent;
  if ((s && !s.startsWith('searching')) || Date.now() - t0 > 20000)
    console.log(JSON.stringify({dom: Object.values(els).map(e => e.html()).join('\n') + document.body.html(), sinks}));
  else setTimeout(wait, 50);
})();
"""


def _render(t, srv, query):
    "(DOM text, HTML sinks or None, how) of the page at /?q=query after its script ran: Chromium, or node with a minimal DOM."
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    url = f"http://127.0.0.1:{srv.port}/?q={query}"
    if chromium:
        c = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                            f"--user-data-dir={t.tmp / 'chrome'}", "--virtual-time-budget=8000", "--dump-dom", url],
                           capture_output=True, text=True, timeout=90)
        if "<ol" in c.stdout: return c.stdout, None, "chromium"
    node = shutil.which("node")
    if not node: raise HarnessError("neither chromium (it cannot run under the worker's memory limit) nor node can open the page")
    page = srv.call("GET", "/")[2].decode()
    m = re.search(r"<script>(.*?)</script>", page, re.S)
    if not m: raise HarnessError("the page has no inline <script> to run")
    js = t.tmp / "page.js"; js.write_text(m.group(1))
    runner = t.tmp / "dom.js"; runner.write_text(NODE_DOM)
    c = subprocess.run([node, str(runner), str(js), f"http://127.0.0.1:{srv.port}/", "?q=" + query], capture_output=True, text=True, timeout=60)
    try: out = json.loads(c.stdout)
    except ValueError: raise HarnessError(f"node could not run the page's script (exit {c.returncode}): {c.stderr[-300:]!r}")
    return out["dom"], out["sinks"], "node"


@case("api behaviour", "slow", cost=25, timeout=300)
def server_page_escapes_metadata(t):
    """The search page (GET /?q=..., its script run by headless Chromium --dump-dom, or where Chromium cannot run under the
    worker's memory limit, by node with a minimal DOM that records every HTML sink) shows metadata holding HTML and script as
    text: no injected element or attribute appears in the DOM, nothing reaches innerHTML and the like, and the text is there,
    escaped; also for a query and an error message (a bad k) that hold markup."""
    p, X = _store(t, n=40, n_clusters=2)
    inj = {"headline": '<img src=x id=pwned1 onerror="document.body.setAttribute(\'data-pwned\',\'1\')">an owl headline',
           "note": "<script id=pwned2>document.title='PWNED'</script>", "html": "<b id=pwned3>bold</b>",
           "nested": {"k": "<i id=pwned4>x</i>"}}
    outs, labels = [], []
    from urllib.parse import quote
    with Server(t, p) as srv:
        _started(srv)
        r = srv.call("POST", "/items", dict(texts=["an owl headline"], metadatas=[inj]))
        if r[0] != 200: raise HarnessError(f"adding the item: {r[0]} {r[2][:100]!r}")
        for label, query, need in (("results", "an+owl+headline&k=100", "&lt;img src=x id=pwned1"),
                                   ("query", quote("<img src=x id=pwned5 onerror=\"document.title='PWNED'\">") + "&k=3", "&lt;img src=x id=pwned5"),
                                   ("error", "owls&k=" + quote("<b id=pwned6>9</b>"), "&lt;b id=pwned6")):
            try: dom, sinks, how = _render(t, srv, query)
            except subprocess.TimeoutExpired: outs.append(crash(f"the page did not finish in 90 s for {label}")); labels.append(label); continue
            injected = re.findall(r"<(?:img|script|b|i)\b[^>]*\bid=\"?pwned\d", dom)
            bad_sinks = [x for x in sinks or [] if "pwned" in x]
            if injected or bad_sinks or re.search(r"\sdata-pwned=", dom) or "<title>PWNED" in dom:
                outs.append(wrong(f"{label} ({how}): markup from stored data reached the page: {(injected or bad_sinks)[:2]}"))
            elif need not in dom:
                outs.append(wrong(f"{label} ({how}): the page does not show the text {need!r}; status {re.findall(r'<p id=.status.>(.*?)</p>', dom)[:1]!r}"))
            else: outs.append(ok(how))
            labels.append(label)
    o = worst(outs, labels)
    if o.kind == OK: o.detail += f" ({', '.join(sorted({x.detail for x in outs}))})"
    return o


def _first_line(t, store, args, wait=120):
    "Start `minivecdb serve store --port 0 *args`; (process, its first stdout line, stderr path), the line read with a generous limit."
    Server._n += 1
    errpath = t.tmp / f"server{Server._n}.stderr"
    p = subprocess.Popen(cli_command() + ["serve", str(store), "--port", "0", *args], stdout=subprocess.PIPE,
                         stderr=open(errpath, "wb"), env=cli_env(), text=True)
    got, box = threading.Event(), {}
    threading.Thread(target=lambda: (box.update(line=p.stdout.readline()), got.set()), daemon=True).start()
    got.wait(wait)
    return p, box.get("line", ""), errpath


@case("api behaviour", "slow", cost=25, timeout=300)
def server_host_and_startup_line(t):
    """`serve --host ::1` prints http://[::1]:PORT/, which answers; `--host 0.0.0.0` prints a URL that reaches it
    (http://127.0.0.1:PORT/, saying it listens on every address), warns on stderr that it serves writes without
    authentication to the network, answers a Host that is an IP address and refuses one naming another site (DNS
    rebinding) with a 400 sentence; bound to 127.0.0.1 it does not warn."""
    p, X = _store(t)
    outs, labels = [], []
    for host in ("::1", "0.0.0.0", "127.0.0.1"):
        proc, line, errpath = _first_line(t, p, ["--host", host])
        try:
            m = re.search(r" at (http://(\[::1\]|127\.0\.0\.1):(\d+)/)", line)
            if proc.poll() is not None and not line: raise HarnessError(f"--host {host}: the server did not start: {errpath.read_text()[-300:]!r}")
            if not m: outs.append(wrong(f"--host {host}: the start-up line gives no URL that reaches it: {line.strip()!r}")); labels.append(host); continue
            want = "[::1]" if host == "::1" else "127.0.0.1"
            if m.group(2) != want: outs.append(wrong(f"--host {host}: the line names {m.group(2)}, expected {want}: {line.strip()!r}")); labels.append(host); continue
            port, addr = int(m.group(3)), want.strip("[]")
            def get(path, hdr=None):
                c = http.client.HTTPConnection(addr, port, timeout=120)
                try: c.request("GET", path, headers=hdr or {}); r = c.getresponse(); return r.status, r.read()
                finally: c.close()
            status, _ = get("/stats")
            probs = [] if status == 200 else [f"GET {m.group(1)}stats answered {status}"]
            status, raw = get("/stats", {"Host": "rebind.example:%d" % port})
            if status != 400 or b"Host" not in raw: probs.append(f"Host rebind.example answered {status} {raw[:100]!r}, expected a 400 sentence")
            if host == "0.0.0.0":
                status, _ = get("/stats", {"Host": "10.11.12.13:%d" % port})
                if status != 200: probs.append(f"Host 10.11.12.13 (an IP address) answered {status} on all interfaces")
            proc.send_signal(signal.SIGTERM)
            try: proc.wait(120)
            except subprocess.TimeoutExpired: proc.kill(); probs.append("still running 120 s after SIGTERM")
            err = errpath.read_text(errors="replace")
            warned = "serving writes without authentication to the network" in err
            if host == "0.0.0.0" and not warned: probs.append(f"no warning on stderr for 0.0.0.0: {err[-200:]!r}")
            if host != "0.0.0.0" and warned: probs.append(f"a network warning for {host}, which is loopback")
            if host == "0.0.0.0" and "every address" not in line: probs.append(f"the line does not say it listens on every address: {line.strip()!r}")
            outs.append(wrong(f"--host {host}: " + "; ".join(probs)) if probs else ok()); labels.append(host)
        finally:
            if proc.poll() is None: proc.kill(); proc.wait()
    return worst(outs, labels)


@case("persistence & corruption", "slow", cost=20, timeout=300)
def server_store_replaced_while_serving(t):
    """The store file is replaced (another store moved over it) while the server holds an acknowledged add in its log;
    SIGTERM: the new file is not saved over (same bytes after), the server's items (the add included) are saved in a new
    file beside it that stderr names, and the log is kept, so the next server over the new file refuses it in one sentence."""
    p, X = _store(t)
    other, _ = _store(t, name="other.mvdb", n=50, seed=3)
    with Server(t, p) as srv:
        _started(srv)
        r = srv.call("POST", "/items", dict(texts=["an acknowledged add about herons"]))
        if r[0] != 200: raise HarnessError(f"the add: {r[0]} {r[2][:100]!r}")
        os.replace(other, p)
        replacement = p.read_bytes()
        rc = srv.stop()
        err = srv.stderr()
    if rc is None: return crash("still running 60 s after SIGTERM")
    if p.read_bytes() != replacement:
        return loss(f"the replaced store file was saved over at shutdown (now {len(lib().IVFIndex.load(p).storage)} items)")
    aside = sorted(t.tmp.glob("s.unsaved*.mvdb"))
    if not aside: return loss(f"the server's items were saved nowhere; stderr: {err[-300:]!r}")
    n = len(lib().IVFIndex.load(aside[0]).storage)
    if n != len(X) + 1: return loss(f"{aside[0].name} holds {n} items, expected {len(X) + 1}")
    if aside[0].name not in err: return unclear(f"stderr does not say where the items went: {err[-300:]!r}")
    with Server(t, p) as srv2:
        if srv2.up: return wrong("a server over the new file started with the old store's log beside it")
        return judge_message(srv2.stderr().strip().splitlines()[-1] if srv2.stderr().strip() else "", words=["log", ("earlier", "replaced")])
