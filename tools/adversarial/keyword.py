"""Keyword (BM25) and hybrid search (minivecdb.keyword, nbs/01f_keyword.ipynb; `Collection.query(mode=...)`, nbs/02a_collection.ipynb).

What must hold: a keyword query for one word with a large k returns exactly the live rows whose document holds that word (read
here independently: maximal runs of Unicode letters and digits, lower-cased, over a made-up vocabulary the stemmer leaves alone),
through add, upsert, update (documents or metadata only), delete by id, by `where` and by `where_document`, a checkpoint, a
re-layout and a reopen, with filters that allow few rows (the term-set path, <= 256) or many (the deep read); a filtered top k is
the unfiltered ranking with the refused rows dropped (same scores); a hybrid query is the relative score fusion (the default) or the reciprocal rank fusion (c = 60) of the
vector and keyword rankings; odd documents (punctuation, NUL and controls, lone surrogates, emoji, RTL, combining marks, CJK, 1 MB)
are refused before anything is written or stored and searchable, never half-written; odd queries (tantivy syntax, 2,000 terms,
1 MB, huge k, wrong types, mode or keyword_weight typos) are words or one clear sentence, never a dead process; acknowledged
writes are in the keyword index after SIGKILL of the writer, and a damaged keyword directory is rebuilt or refused clearly;
read-only processes see the writer's changes after `refresh()`; threads querying while another writes never see an id twice or a
row without the word; deleting, recreating, closing and reopening collections leaves no stale index, thread or timer error.

Every collection here is a vector collection (embedding=None, 4 dimensions): no model is loaded.
The category "keyword" is added to `core.CATEGORIES` when this module is imported.
"""
import contextlib, glob, json, math, os, random, re, shutil, signal, subprocess, sys, threading, time, unicodedata
from pathlib import Path
import numpy as np
from . import core
from .core import case, ok, wrong, unclear, crash, loss, worst, expect_error, judge_error, unexpected, short, LIB, OK, Outcome

CAT = "keyword"
if CAT not in core.CATEGORIES: core.CATEGORIES = core.CATEGORIES + (CAT,)

D = 4
BIG = 100_000                      # "every hit": larger than any collection here
VOC = [f"kw{i}" for i in range(12)]  # made-up words: one token each, no stem to strip
SEPS = [" ", ", ", " - ", "/", "\n", ". ", "; ", "! ", " (", ") ", "\t", ":"]
RRF_C = 60                         # reciprocal rank fusion's constant, as documented


# ---------------------------------------------------------------- helpers
def mc():
    "The collection module under test."
    import minivecdb.collection as m
    return m


@contextlib.contextmanager
def _db(path, read_only=False):
    "A database at `path`, closed at the end."
    db = mc().connect(path, read_only=read_only)
    try: yield db
    finally:
        with contextlib.suppress(Exception): db.close()


def _words(doc) -> set:
    "The words of a document as this suite reads them: maximal runs of Unicode letters and digits, lower-cased."
    return set(re.findall(r"[^\W_]+", doc.lower())) if isinstance(doc, str) else set()


def _doc(rng, n=None) -> str:
    "A random document: 'zz' (in every document) and 1-6 words of VOC (some upper-cased) between random punctuation."
    out = "zz"
    for _ in range(n or rng.randint(1, 6)):
        w = rng.choice(VOC)
        out += rng.choice(SEPS) + (w.upper() if rng.random() < 0.1 else w)
    return out + rng.choice(["", ".", "!", "?", "..."])


def _vecs(rng, n):
    return np.array([[rng.uniform(-1, 1) for _ in range(D)] for _ in range(n)], np.float32)


def _logsize(c):
    p = c.path / "store.ivf.log"
    return p.stat().st_size if p.exists() else 0


def _verdict(outs, labels, keep=5) -> Outcome:
    "`worst` of the trials, its detail cut to the `keep` most severe failures."
    bad = [(l, o) for l, o in zip(labels, outs) if o.kind != OK]
    if len(bad) <= keep: return worst(outs, labels)
    sev = {k: i for i, k in enumerate(core.OUTCOMES)}
    bad.sort(key=lambda lo: -sev[lo[1].kind])
    top = bad[0][1].kind
    parts = [f"[{l}] {o.kind}: {o.detail}" for l, o in bad[:keep]]
    return Outcome(top, f"{len(bad)}/{len(outs)} trials: " + " | ".join(parts) + f" | ... and {len(bad) - keep} more")


def _diff_sets(got, want, what=""):
    "'' when the id lists are the same set without repeats, else what differs."
    got = list(got)
    parts = []
    twice = sorted({u for u in got if got.count(u) > 1}) if len(got) != len(set(got)) else []
    if twice: parts.append(f"returned twice {short(twice[:4], 80)}")
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    if missing: parts.append(f"{len(missing)} missing, e.g. {short(missing[:3], 80)}")
    if extra: parts.append(f"{len(extra)} unexpected, e.g. {short(extra[:3], 80)}")
    return f"{what}{'; '.join(parts)}" if parts else ""


def _term_trial(c, docs_of, term, allow=None, where=None, where_document=None, what="") -> Outcome:
    """A keyword query for `term` with a large k against `docs_of` ({id: document or None}, every live row): exactly the rows
    whose document holds the word (and that `allow(id)` admits), each once, with its own document, scores non-increasing."""
    want = {u for u, d in docs_of.items() if term.lower() in _words(d) and (allow is None or allow(u))}
    try: r = c.query(term, mode="keyword", k=BIG, where=where, where_document=where_document, include=["documents"])
    except Exception as e: return unexpected(e, what)
    d = _diff_sets(r.ids, want, what)
    if d: return wrong(d)
    if r.distances is not None: return wrong(f"{what}keyword results carry distances {short(r.distances, 60)}; expected None")
    if r.scores is None or len(r.scores) != len(r.ids): return wrong(f"{what}{len(r.ids)} ids but scores {short(r.scores, 60)}")
    if any(b > a * (1 + 1e-6) + 1e-9 for a, b in zip(r.scores, r.scores[1:])): return wrong(f"{what}scores not best first: {short(r.scores[:6], 80)}")
    if any(not (s > 0 and math.isfinite(s)) for s in r.scores): return wrong(f"{what}a BM25 score is not positive and finite: {short(r.scores[:6], 80)}")
    badoc = [u for u, dd in zip(r.ids, r.documents) if dd != docs_of.get(u)]
    if badoc: return wrong(f"{what}row {badoc[0]!r} comes back with document {short(r.documents[r.ids.index(badoc[0])], 60)}, stored {short(docs_of.get(badoc[0]), 60)}")
    return ok()


def _docs_from_get(c):
    "{id: document} of every row of `c`, read with get() (the oracle for a reopened collection's keyword index)."
    g = c.get(include=["documents"])
    return dict(zip(g.ids, g.documents))


# ---------------------------------------------------------------- 1. term sets through writes
@case(CAT, cost=6, timeout=90)
def kw_term_sets_through_writes(t):
    """800 rows (100 without a document) then upserts (some replacing documents with none), updates of documents only and of
    metadata only, deletes by id, by where and by where_document, a checkpoint, optimize() and a reopen: after each, a keyword
    query per word (12 made-up words, 'zz' in every document, some upper-cased) with k=100,000 returns exactly the live rows whose
    document holds it, without a filter, with where allowing ~70 rows (term-set path), ~560 rows (deep read), exactly 256 and 257
    rows (the switch), and with where + where_document."""
    rng = random.Random(101)
    model, seq = {}, [0]   # id -> [document or None, metadata]
    outs, labels = [], []
    def metas(n):
        out = []
        for _ in range(n): out.append({"g": rng.randint(0, 9), "seq": seq[0]}); seq[0] += 1
        return out
    def check(c, stage):
        docs_of = {u: v[0] for u, v in model.items()}
        seqs = sorted(v[1]["seq"] for v in model.values())
        s256, s257 = set(seqs[:256]), set(seqs[-257:])
        m = {u: v[1] for u, v in model.items()}
        filters = [("no filter", None, None, None),
                   ("g=0 (few rows)", {"g": 0}, None, lambda u: m[u]["g"] == 0),
                   ("g>=2 (many rows)", {"g": {"$gte": 2}}, None, lambda u: m[u]["g"] >= 2),
                   ("256 rows", {"seq": {"$in": sorted(s256)}}, None, lambda u: m[u]["seq"] in s256),
                   ("257 rows", {"seq": {"$in": sorted(s257)}}, None, lambda u: m[u]["seq"] in s257),
                   ("g<5 and document contains 'kw1'", {"g": {"$lt": 5}}, {"$contains": "kw1"},
                    lambda u: m[u]["g"] < 5 and docs_of[u] is not None and "kw1" in docs_of[u])]
        for fname, where, wd, allow in filters:
            for term in VOC + ["zz"]:
                outs.append(_term_trial(c, docs_of, term, allow, where, wd, what=f"{term!r}: "))
                labels.append(f"{stage}, {fname}")
    with _db(t.tmp / "db") as db:
        c = db.create_collection("k", embedding=None, dimension=D)
        try:
            for b in range(8):
                ids = [f"r{b * 100 + i}" for i in range(100)]
                ms, docs = metas(100), None if b == 3 else [_doc(rng) for _ in ids]
                c.add(ids=ids, vectors=_vecs(rng, 100), metadatas=ms, documents=docs)
                for i, u in enumerate(ids): model[u] = [docs[i] if docs else None, ms[i]]
            check(c, "added")
            ids = rng.sample(sorted(model), 120) + [f"n{i}" for i in range(40)]
            ms, docs = metas(len(ids)), [_doc(rng) for _ in ids]
            c.upsert(ids=ids, vectors=_vecs(rng, len(ids)), metadatas=ms, documents=docs)
            for i, u in enumerate(ids): model[u] = [docs[i], ms[i]]
            ids = rng.sample(sorted(model), 30); ms = metas(30)
            c.upsert(ids=ids, vectors=_vecs(rng, 30), metadatas=ms)  # the new rows have no document
            for i, u in enumerate(ids): model[u] = [None, ms[i]]
            ids = rng.sample(sorted(model), 60); docs = [_doc(rng) for _ in ids]
            c.update(ids=ids, documents=docs)
            for u, d in zip(ids, docs): model[u][0] = d
            ids = rng.sample(sorted(model), 60); ms = metas(60)
            c.update(ids=ids, metadatas=ms)
            for u, mm in zip(ids, ms): model[u][1] = mm
            check(c, "upserted and updated")
            ids = rng.sample(sorted(model), 70)
            c.delete(ids=ids + ["no-such-id"])
            for u in ids: model.pop(u)
            n = c.delete(where={"g": 9})
            gone = [u for u, v in model.items() if v[1]["g"] == 9]
            for u in gone: model.pop(u)
            if n != len(gone): outs.append(wrong(f"delete(where=) deleted {n}, expected {len(gone)}")); labels.append("delete where count")
            n = c.delete(where_document={"$contains": "kw11"})
            gone = [u for u, v in model.items() if v[0] is not None and "kw11" in v[0]]
            for u in gone: model.pop(u)
            if n != len(gone): outs.append(wrong(f"delete(where_document=) deleted {n}, expected {len(gone)}")); labels.append("delete where_document count")
            check(c, "deleted")
            c.checkpoint(); check(c, "checkpointed")
            c.optimize(); check(c, "re-laid out")
        except Exception as e:
            outs.append(unexpected(e, "writes: ")); labels.append("writes")
            return _verdict(outs, labels)
    with _db(t.tmp / "db") as db:
        try: check(db.get_collection("k"), "reopened")
        except Exception as e: outs.append(unexpected(e, "reopen: ")); labels.append("reopen")
    o = _verdict(outs, labels)
    if o.kind == OK: o.detail += f"; {len(model)} live rows at the end"
    return o


# ---------------------------------------------------------------- 2. filtered top k and hybrid against their definitions
def _close(a, b, rel=1e-5): return abs(a - b) <= rel * max(abs(a), abs(b)) + 1e-9


def _topk_trial(r, k, expected, score_of, allowed, what) -> Outcome:
    "A filtered top-k result against `expected` [(id, score)] (the unfiltered ranking with refused rows dropped)."
    want = expected[:k]
    if len(r.ids) != len(want): return wrong(f"{what}{len(r.ids)} rows, expected {len(want)} (of {len(expected)} allowed hits)")
    if len(set(r.ids)) != len(r.ids): return wrong(f"{what}an id twice: {short(r.ids, 80)}")
    for u, s in zip(r.ids, r.scores):
        if u not in allowed: return wrong(f"{what}{u!r} is refused by the filter")
        if u not in score_of: return wrong(f"{what}{u!r} is not a hit of the unfiltered query")
        if not _close(s, score_of[u]): return wrong(f"{what}{u!r} scores {s:.6g} filtered, {score_of[u]:.6g} unfiltered")
    ws = [s for _, s in want]
    if not all(_close(a, b) for a, b in zip(r.scores, ws)):
        return wrong(f"{what}scores {short([round(s, 5) for s in r.scores[:5]], 80)}, the best allowed are {short([round(s, 5) for s in ws[:5]], 80)}")
    return ok()


@case(CAT, cost=4, timeout=60)
def kw_filtered_topk_and_fusion(t):
    """Over 600 rows (documents of 1-12 words; some upserted and deleted first), for 5 queries (one word, two words, a repeated
    word, 'zz kw9', 'KW4!'), 6 filters (~60 rows, ~500 rows, exactly 256 and 257 rows, a where_document, a callable where with a where_document) and k in 1, 3, 10, 40:
    the filtered keyword top k is the unfiltered ranking (k=100,000) with the refused rows dropped, each row at its unfiltered
    score. A hybrid query (fusion rrf, scores and default; keyword_weight default, 0, 0.3, 1) is that fusion (RRF with c=60, or min-max scaled scores) of the vector ranking and the
    keyword ranking each HYBRID_DEPTH deep (with the same filter), weights 1-w and w: the same scores; distances None."""
    rng = random.Random(202)
    outs, labels = [], []
    with _db(t.tmp / "db") as db:
        c = db.create_collection("k", embedding=None, dimension=D)
        ids = [f"r{i}" for i in range(600)]
        c.add(ids=ids, vectors=_vecs(rng, 600), metadatas=[{"g": rng.randint(0, 9), "seq": i} for i in range(600)],
              documents=[_doc(rng, rng.randint(1, 12)) for _ in ids])
        up = rng.sample(ids, 80)
        c.upsert(ids=up, vectors=_vecs(rng, 80), metadatas=[{"g": rng.randint(0, 9), "seq": 1000 + i} for i in range(80)],
                 documents=[_doc(rng, rng.randint(1, 12)) for _ in up])
        c.delete(ids=rng.sample(ids, 50))
        live = c.get(include=["metadatas"])
        seqs = sorted(m["seq"] for m in live.metadatas)
        filters = [("g=0 (few)", {"g": 0}, None), ("g>=1 (many)", {"g": {"$gte": 1}}, None),
                   ("256 rows", {"seq": {"$in": seqs[:256]}}, None), ("257 rows", {"seq": {"$in": seqs[-257:]}}, None),
                   ("where_document kw2", None, {"$contains": "kw2"}),
                   ("a callable where", lambda m: m.get("g") in (1, 2), {"$not_contains": "kw7"})]
        for q in ["kw3", "kw0 kw7", "kw5 kw5 kw2", "zz kw9", "KW4!"]:
            try:
                full = c.query(q, mode="keyword", k=BIG)
                score_of = dict(zip(full.ids, full.scores))
            except Exception as e: outs.append(unexpected(e, f"{q!r} unfiltered: ")); labels.append(q); continue
            for fname, where, wd in filters:
                allowed = set(c.get(where=where, where_document=wd).ids)
                expected = [(u, s) for u, s in zip(full.ids, full.scores) if u in allowed]
                for k in (1, 3, 10, 40):
                    try: r = c.query(q, mode="keyword", k=k, where=where, where_document=wd)
                    except Exception as e: outs.append(unexpected(e)); labels.append(f"{q!r} {fname} k={k}"); continue
                    outs.append(_topk_trial(r, k, expected, score_of, allowed, "")); labels.append(f"{q!r} {fname} k={k}")
        depth = max(10, getattr(mc(), "HYBRID_DEPTH", 50))
        qv = _vecs(rng, 1)[0]
        for fusion in ("rrf", "scores", None):
          for w in (None, 0.0, 0.3, 1.0):
            for fname, where, wd in [("no filter", None, None)] + filters[:2]:
                label = f"hybrid fusion={fusion} w={w} {fname}"
                try:
                    vec = c.query(vectors=qv, k=depth, where=where, where_document=wd)
                    kw = c.query("kw3 kw8", mode="keyword", k=depth, where=where, where_document=wd)
                    how = fusion or getattr(mc(), "FUSION", "scores")
                    ww = (getattr(mc(), "KEYWORD_WEIGHT", 0.7) if how == "scores" else 0.5) if w is None else w
                    total = {}
                    if how == "rrf":
                        for ranking, weight in ((vec.ids, 1 - ww), (kw.ids, ww)):
                            for rank, u in enumerate(ranking, 1): total[u] = total.get(u, 0.0) + weight / (RRF_C + rank)
                    else:  # relative score fusion: each ranking's scores (higher better) scaled to [0, 1] by its min and max
                        for ranking, scores, weight in ((vec.ids, [-d for d in vec.distances], 1 - ww), (kw.ids, kw.scores, ww)):
                            lo, hi = (min(scores), max(scores)) if scores else (0.0, 0.0)
                            for u, x in zip(ranking, scores): total[u] = total.get(u, 0.0) + weight * ((x - lo) / (hi - lo) if hi > lo else 1.0)
                    want = sorted(total.values(), reverse=True)[:10]
                    r = c.query("kw3 kw8", vectors=qv, mode="hybrid", k=10, where=where, where_document=wd, keyword_weight=w, fusion=fusion)
                except Exception as e: outs.append(unexpected(e)); labels.append(label); continue
                if r.distances is not None: outs.append(wrong(f"distances {short(r.distances, 60)} in a hybrid result")); labels.append(label); continue
                if len(r.ids) != len(want) or len(set(r.ids)) != len(r.ids):
                    outs.append(wrong(f"{len(r.ids)} rows ({len(set(r.ids))} distinct), expected {len(want)}")); labels.append(label); continue
                badrow = next((u for u, s in zip(r.ids, r.scores) if u not in total or not _close(s, total[u], 1e-4)), None)
                if badrow is not None:
                    outs.append(wrong(f"{badrow!r} fused score {r.scores[r.ids.index(badrow)]:.6g}, {how} fusion gives {total.get(badrow)}")); labels.append(label); continue
                outs.append(ok() if all(_close(a, b, 1e-4) for a, b in zip(r.scores, want)) else
                            wrong(f"fused scores {short([round(s, 6) for s in r.scores[:4]])}, {how} fusion's best {short([round(s, 6) for s in want[:4]])}"))
                labels.append(label)
    return _verdict(outs, labels)


# ---------------------------------------------------------------- 3. odd documents
ODD_DOCS = [  # label, document, words a stored copy must be found by (None: refusing or storing are both fine, no word to find)
    ("only punctuation", "!!! ... ??? ;-) ¿¡", []),
    ("only symbols", "@#$%^&*+=<>|~`€£¥©®™", []),
    ("only a NUL", "\x00", []),
    ("only a zero-width space", "\u200b", []),
    ("whitespace only (Unicode)", " \t\n\r\u3000\u00a0 ", None),
    ("NUL and control characters", "al\x00pha be\x01ta gam\x1bma del\x7f", ["al", "be", "gam", "del"]),
    ("a lone surrogate", "\ud800 lonely", ["lonely"]),
    ("surrogate halves of an emoji", "\ud83d\ude00 paired", ["paired"]),
    ("emoji", "😀🚀 rocketship 👍🏽 👨‍👩‍👧", ["rocketship"]),
    ("RTL with override marks", "שלום עולם \u202eevil\u202c مرحبا", ["שלום", "עולם", "evil", "مرحبا"]),
    ("combining characters", "Zalgo h\u0337e\u0337l\u0337l\u0337o\u0337 cafe\u0301", ["zalgo"]),
    ("CJK without spaces (short)", "東京都庁 漢字", ["東京都庁", "漢字"]),
    ("mixed-case Unicode", "Straße ÅNGSTRÖM", ["straße", "STRAßE", "ångström", "ÅngStröm"]),
    ("1 MB of words", "zork " + "kw1 " * 262_144, ["zork", "kw1"]),
    ("1 MB in one token", "q" * (1 << 20) + " tail", ["tail"]),
]


def _row_state(c):
    "(count, {id: document} of get(), log size) of a collection."
    return c.count(), _docs_from_get(c), _logsize(c)


def _odd_trial(c, op, doc, probes, rng) -> Outcome:
    "One odd document written by `op` in a collection holding 'anchor' ('anchor zz'): refused before any write, or stored and found."
    before = _row_state(c)
    ids = ["anchor"] if op in ("upsert over", "update") else ["odd"]
    try:
        if op == "update": c.update(ids=ids, documents=[doc])
        else: (c.upsert if op == "upsert over" else c.add)(ids=ids, documents=[doc], vectors=_vecs(rng, 1))
    except Exception as e:
        j = judge_error(e, words=[("document", "text")])
        try: after = _row_state(c)
        except Exception as e2: return unexpected(e2, f"refused ({j.detail}), then count/get failed: ")
        if after != before:
            return wrong(f"refused ({type(e).__name__}: {str(e)[:60]!r}), but written all the same: count() {before[0]} -> {after[0]}, "
                         f"get() {short(before[1], 70)} -> {short(after[1], 70)}, log {before[2]} -> {after[2]} bytes")
        if probes is None: return j if j.kind != OK else ok()
        if j.kind == OK:  # refused cleanly; the old row must still be searchable
            try: r = c.query("anchor", mode="keyword", k=10)
            except Exception as e2: return unexpected(e2, "refused, then the query for 'anchor' failed: ")
            return ok(j.detail) if r.ids == ["anchor"] else wrong(f"refused, but 'anchor' then finds {short(r.ids)}")
        return j
    try:
        g = c.get(ids=ids)
        if g.documents != [doc]: return wrong(f"stored, but get() returns {short(g.documents, 60)}")
        for p in probes or []:
            r = c.query(p, mode="keyword", k=10)
            if r.ids.count(ids[0]) != 1: return wrong(f"stored, but the word {p!r} finds {short(r.ids)}")
        r = c.query("anchor", mode="keyword", k=10)
        if op == "add" and r.ids != ["anchor"]: return wrong(f"after storing it, 'anchor' finds {short(r.ids)}")
        if op != "add" and r.ids: return wrong(f"'anchor' was replaced by the odd document, yet the word 'anchor' still finds {short(r.ids)}")
    except Exception as e: return unexpected(e, "stored, then: ")
    return ok()


@case(CAT, cost=5, timeout=90)
def kw_odd_documents(t):
    """Each odd document (only punctuation or symbols, a NUL, a zero-width space, Unicode whitespace, NUL and control characters,
    a lone surrogate, surrogate halves, emoji, RTL and override marks, combining marks, CJK, mixed-case Unicode, 1 MB of words,
    1 MB in one token) is added to a collection of its own holding 'anchor zz', and a lone surrogate is also upserted over and
    updated into 'anchor': refused with a clear sentence with count(), get() and the log unchanged, or stored (get() gives it back)
    and found by its words; then close and reopen: every collection opens, holds the same rows, 'anchor' is found once."""
    rng = random.Random(303)
    outs, labels, expect = [], [], {}
    trials = [("add", *x) for x in ODD_DOCS] + [("upsert over", "upsert of a lone surrogate over a row", "\udfff x", ["x"]),
                                                ("update", "update to a lone surrogate", "\ud800 y", ["y"])]
    with _db(t.tmp / "db") as db:
        for i, (op, label, doc, probes) in enumerate(trials):
            c = db.create_collection(f"c{i}", embedding=None, dimension=D)
            c.add(ids=["anchor"], documents=["anchor zz"], vectors=_vecs(rng, 1))
            t0 = time.time()
            o = _odd_trial(c, op, doc, probes, rng)
            outs.append(o); labels.append(label)
            if time.time() - t0 > 20: outs.append(wrong(f"{time.time() - t0:.0f} s for one document")); labels.append(f"{label} time")
            try: expect[f"c{i}"] = (label, _docs_from_get(c))
            except Exception as e: outs.append(unexpected(e, "get: ")); labels.append(label)
        try: db.close()
        except Exception as e: outs.append(unexpected(e, "closing the database: ")); labels.append("close")
    with _db(t.tmp / "db") as db:
        for name, (label, docs) in expect.items():
            try:
                c = db.get_collection(name)
                got = _docs_from_get(c)
                probe = "anchor" if got.get("anchor") == "anchor zz" else "zz"
                kt = _term_trial(c, got, probe, what=f"after reopening, keyword {probe!r}: ")
                if got != docs:
                    outs.append(wrong(f"after reopening, get() gives {short(got, 70)}, before closing {short(docs, 70)}" +
                                      (f"; {kt.detail}" if kt.kind != OK else "")))
                else: outs.append(kt)
                labels.append(f"{label} reopened")
            except Exception as e: outs.append(unexpected(e, "after reopening: ")); labels.append(f"{label} reopened")
    return _verdict(outs, labels, keep=6)


UNICODE_PAIRS = [  # label, document, query that means the same word
    ("ß upper-cased (STRASSE)", "die Straße", "STRASSE"),
    ("Greek final sigma, upper-case document", "ΣΊΣΥΦΟΣ", "σίσυφος"),
    ("Greek final sigma, upper-case query", "σίσυφος", "ΣΊΣΥΦΟΣ"),
    ("NFD document, NFC query", unicodedata.normalize("NFD", "café crème"), "café"),
    ("NFC document, NFD query", "café crème", unicodedata.normalize("NFD", "café")),
    ("a Chinese sentence without spaces", "我们今天去公园散步然后吃午饭", "我们今天去公园散步然后吃午饭"),
    ("a Japanese sentence without spaces", "東京タワーに行きましたがとても混んでいました", "東京タワーに行きましたがとても混んでいました"),
    ("a 42-letter German word", "Donaudampfschifffahrtsgesellschaftskapitän", "Donaudampfschifffahrtsgesellschaftskapitän"),
    ("title-case digraph ǅ", "ǅemal", "ǆemal"),
]


@case(CAT, cost=1.5)
def kw_unicode_same_word(t):
    """A document is found by a query that is the same word in another case or normal form: 'STRASSE' for 'Straße', 'σίσυφος' for
    'ΣΊΣΥΦΟΣ' and back (final sigma), NFC 'café' for NFD and back, 'ǆemal' for 'ǅemal'; and by its own exact text when that is a
    Chinese or Japanese sentence without spaces or a 42-letter German compound (each text longer than 40 UTF-8 bytes)."""
    rng = random.Random(404)
    outs, labels = [], []
    with _db(t.tmp / "db") as db:
        c = db.create_collection("u", embedding=None, dimension=D)
        ids = [f"u{i}" for i in range(len(UNICODE_PAIRS))]
        c.add(ids=ids + ["other"], documents=[d for _, d, _ in UNICODE_PAIRS] + ["something else entirely"], vectors=_vecs(rng, len(ids) + 1))
        for u, (label, doc, q) in zip(ids, UNICODE_PAIRS):
            try:
                r = c.query(q, mode="keyword", k=20)
                outs.append(ok() if u in r.ids else wrong(f"{q!r} does not find {doc!r} (got {short(r.ids, 60)})"))
            except Exception as e: outs.append(unexpected(e))
            labels.append(label)
    return _verdict(outs, labels, keep=10)


# ---------------------------------------------------------------- 4. odd queries and arguments
Q_VOC = ["title", "foo", "bar", "x", "y", "a", "b", "and", "unclosed", "hello", "2", "p", "not"]

HUGE_K_CHILD = r'''
import json, resource, sys
sys.path.insert(0, sys.argv[1])
try: resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))  # as the suite's workers: an impossible allocation fails
except (ValueError, OSError): pass
import numpy as np
import minivecdb
db = minivecdb.connect(sys.argv[2], read_only=True)
c = db.get_collection("q")
mode, k, filt = sys.argv[3], int(sys.argv[4]), sys.argv[5] == "1"
print(json.dumps(dict(started=True)), flush=True)
try:
    r = c.query("hello", vectors=np.ones(4, np.float32) if mode == "hybrid" else None, mode=mode, k=k, where={"g": {"$gte": 0}} if filt else None)
    print(json.dumps(dict(ids=r.ids)), flush=True)
except Exception as e:
    print(json.dumps(dict(error=type(e).__name__, msg=str(e))), flush=True)
'''


@case(CAT, cost=6, timeout=90)
def kw_query_inputs(t):
    """Keyword queries that look like tantivy syntax ('title:foo', '"unclosed', 'a AND b', '*', 'foo~2', '+x -y', '(hello)',
    'NOT foo', 'hello*') are plain words: the rows holding any of them; only punctuation gives no rows; '' is refused clearly or
    gives no rows; 1,024 distinct terms are answered, 2,000 are refused naming the limit; a 1 MB query is answered; a batch of two
    texts gives two results. k=0, -1, 2.5, True, '3' are refused naming k; k=10**9 (keyword, filtered, hybrid), 2**31 and 2**64 (each in a
    child process limited to 8 GB, as the suite's workers) give every hit or a clear error, never a dead process; texts None, b'hello', 5, ['hello', 3], []
    are refused naming texts (no advice about get_embedding); mode 'Keyword', 'kw', None, ' keyword' and keyword_weight -0.1, 1.5,
    True, NaN, inf, '0.5' are refused naming mode / keyword_weight; hybrid with 2 texts and 1 vector is refused."""
    rng = random.Random(505)
    outs, labels = [], []
    with _db(t.tmp / "db") as db:
        c = db.create_collection("q", embedding=None, dimension=D)
        docs = [" ".join(rng.choice(Q_VOC) for _ in range(rng.randint(1, 5))) for _ in range(40)]
        ids = [f"d{i}" for i in range(40)]
        c.add(ids=ids, documents=docs, vectors=_vecs(rng, 40), metadatas=[{"g": i % 3} for i in range(40)])
        docs_of = dict(zip(ids, docs))
        def words_trial(q, what=""):
            want = {u for u, d in docs_of.items() if _words(d) & _words(q)}
            try: r = c.query(q, mode="keyword", k=BIG)
            except Exception as e: return unexpected(e, what)
            d = _diff_sets(r.ids, want, what)
            return wrong(d) if d else ok()
        for q in ["title:foo", '"unclosed', "a AND b", "*", "foo~2", "+x -y", "(hello)", "NOT foo", "hello*", "!!! ???", "🚀"]:
            outs.append(words_trial(q)); labels.append(f"query {q!r}")
        outs.append(expect_error(lambda: c.query("", mode="keyword"), words=[("empty", "blank")],
                                 accept=lambda r: ok() if r.ids == [] else wrong(f"'' finds {short(r.ids)}"))); labels.append("query ''")
        q1024 = " ".join(["hello"] + [f"zq{i}" for i in range(1023)])
        outs.append(words_trial(q1024)); labels.append("1,024 distinct terms")
        q2000 = " ".join(f"zq{i}" for i in range(2000))
        outs.append(expect_error(lambda: c.query(q2000, mode="keyword"), words=[("1,024", "1024"), "term"])); labels.append("2,000 distinct terms")
        outs.append(expect_error(lambda: c.query(q2000, vectors=np.ones(D), mode="hybrid"), words=[("1,024", "1024"), "term"])); labels.append("2,000 terms, hybrid")
        t0 = time.time()
        outs.append(words_trial("hello " * 174_763, "1 MB query: ")); labels.append("1 MB query")
        if time.time() - t0 > 10: outs.append(wrong(f"a 1 MB query took {time.time() - t0:.0f} s")); labels.append("1 MB query time")
        try:
            rs = c.query(["foo", "bar"], mode="keyword", k=BIG)
            good = isinstance(rs, list) and len(rs) == 2 and all(set(r.ids) == {u for u, d in docs_of.items() if w in _words(d)} for r, w in zip(rs, ["foo", "bar"]))
            outs.append(ok() if good else wrong(f"a batch of two texts -> {short(rs)}"))
        except Exception as e: outs.append(unexpected(e))
        labels.append("batch")
        for k in (0, -1, 2.5, True, "3"):
            outs.append(expect_error(lambda: c.query("hello", mode="keyword", k=k), words=[("k must", "k=", "k ", "'k'")])); labels.append(f"k={k!r}")
        for q, words, forbid in ((None, [("texts", "text")], ()), (b"hello", [("str", "text")], ("get_embedding",)), (5, [("str", "text")], ()),
                                 (["hello", 3], [("texts[1]", "str")], ()), ([], [("empty", "text")], ())):
            outs.append(expect_error(lambda: c.query(q, mode="keyword"), words=words, forbid=forbid)); labels.append(f"texts={q!r}")
        for m in ("Keyword", "kw", None, " keyword", "KEYWORD"):
            outs.append(expect_error(lambda: c.query("hello", mode=m), words=["mode"])); labels.append(f"mode={m!r}")
        for w in (-0.1, 1.5, True, float("nan"), float("inf"), "0.5"):
            outs.append(expect_error(lambda: c.query("hello", vectors=np.ones(D), mode="hybrid", keyword_weight=w), words=["keyword_weight"])); labels.append(f"keyword_weight={w!r}")
        outs.append(expect_error(lambda: c.query(["hello", "foo"], vectors=np.ones(D), mode="hybrid"), words=[("vector",)])); labels.append("hybrid 2 texts 1 vector")
        e = db.create_collection("empty", embedding=None, dimension=D)
        for mode in ("keyword", "hybrid"):
            try:
                r = e.query("hello", vectors=np.ones(D) if mode == "hybrid" else None, mode=mode)
                outs.append(ok() if r.ids == [] else wrong(f"an empty collection gives {short(r.ids)}"))
            except Exception as ex: outs.append(unexpected(ex))
            labels.append(f"{mode} on an empty collection")
        e.add(ids=["gone"], documents=["hello"], vectors=np.ones((1, D))); e.delete(ids=["gone"])
        try:
            r = e.query("hello", mode="keyword")
            outs.append(ok() if r.ids == [] else wrong(f"a collection whose only row was deleted gives {short(r.ids)}"))
        except Exception as ex: outs.append(unexpected(ex))
        labels.append("keyword after deleting every row")
    hello = sorted(u for u, d in docs_of.items() if "hello" in _words(d))
    for mode, k, filt in (("keyword", 10 ** 9, "0"), ("keyword", 10 ** 9, "1"), ("hybrid", 10 ** 9, "0"), ("keyword", 2 ** 31, "0"),
                          ("keyword", 2 ** 64, "0")):
        label = f"{mode} k={k:,}{' filtered' if filt == '1' else ''}"
        try:
            r = subprocess.run([sys.executable, "-c", HUGE_K_CHILD, str(LIB), str(t.tmp / "db"), mode, str(k), filt],
                               capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired: outs.append(crash("no answer within 60 s")); labels.append(label); continue
        lines = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
        res = lines[-1] if lines else {}
        tail = (r.stderr.strip().splitlines() or [""])[0][:160]
        if r.returncode != 0 or "started" in res or not res:
            how = f"killed by signal {-r.returncode}" if r.returncode < 0 else f"exit status {r.returncode}"
            outs.append(crash(f"the process died ({how}): {tail!r}"))
        elif "error" in res: outs.append(judge_error(ValueError(res["msg"]), words=[("k must", "k=", "k ", "'k'")]) if res["error"] in ("ValueError", "CollectionError") else unclear(f"{res['error']}: {res['msg'][:150]!r}"))
        elif mode == "keyword": outs.append(ok() if sorted(res["ids"]) == hello else wrong(f"{len(res['ids'])} rows, expected the {len(hello)} holding 'hello'"))
        else: outs.append(ok() if len(res["ids"]) == 40 else wrong(f"{len(res['ids'])} rows of 40"))
        labels.append(label)
    return _verdict(outs, labels, keep=8)


# ---------------------------------------------------------------- 5. durability: SIGKILL of the writer, damaged keyword directories
KILL_CHILD = r'''
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np
import minivecdb, minivecdb.collection as mc
plan = json.load(open(sys.argv[3]))
if plan.get("checkpoint_bytes"): mc.CHECKPOINT_BYTES = plan["checkpoint_bytes"]
db = minivecdb.connect(sys.argv[2])
c = db.get_or_create_collection("k", embedding=None, dimension=4)
print("READY", flush=True)
for i, op in enumerate(plan["ops"]):
    kind = op[0]
    if kind == "sleep": time.sleep(op[1])
    elif kind in ("add", "upsert"): getattr(c, kind)(ids=op[1], vectors=np.array(op[2], np.float32), documents=op[3], metadatas=op[4])
    elif kind == "update_docs": c.update(ids=op[1], documents=op[2])
    elif kind == "update_meta": c.update(ids=op[1], metadatas=op[2])
    elif kind == "delete": c.delete(ids=op[1])
    elif kind == "delete_where": c.delete(where=op[1])
    print(i, flush=True)
print("DONE", flush=True)
if plan.get("exit"): os._exit(0)
time.sleep(120)
'''


def _kill_plan(rng, n, sleep_after=None):
    "n calls (add, upsert, update of documents or metadata, delete by id or where) and the {id: document} after each: states[i] after i calls."
    model, states, ops, fresh = {}, [{}], [], 0   # model: id -> (document, g)
    pool = [f"p{j}" for j in range(60)]
    for i in range(n):
        kind = "add" if i < 2 else rng.choice(["add", "upsert", "upsert", "update_docs", "update_meta", "delete", "delete_where"])
        if kind in ("update_docs", "update_meta", "delete") and not model: kind = "upsert"
        if kind == "add":
            ids = [f"n{fresh + j}" for j in range(rng.randint(3, 12))]; fresh += len(ids)
        elif kind == "upsert": ids = rng.sample(pool, rng.randint(1, 8))
        else: ids = rng.sample(sorted(model), min(len(model), rng.randint(1, 4)))
        if kind in ("add", "upsert"):
            docs = None if rng.random() < 0.15 else [_doc(rng) for _ in ids]
            gs = [rng.randint(0, 5) for _ in ids]
            ops.append([kind, ids, _vecs(rng, len(ids)).tolist(), docs, [{"g": g} for g in gs]])
            for j, u in enumerate(ids): model[u] = (docs[j] if docs else None, gs[j])
        elif kind == "update_docs":
            docs = [_doc(rng) for _ in ids]
            ops.append([kind, ids, docs])
            for u, d in zip(ids, docs): model[u] = (d, model[u][1])
        elif kind == "update_meta":
            gs = [rng.randint(0, 5) for _ in ids]
            ops.append([kind, ids, [{"g": g} for g in gs]])
            for u, g in zip(ids, gs): model[u] = (model[u][0], g)
        elif kind == "delete":
            ops.append([kind, ids])
            for u in ids: model.pop(u, None)
        else:
            g = rng.randint(0, 5)
            ops.append([kind, {"g": g}])
            model = {u: v for u, v in model.items() if v[1] != g}
        states.append({u: v[0] for u, v in model.items()})
        if sleep_after is not None and i == sleep_after:
            ops.append(["sleep", 1.4]); states.append(states[-1])
    return ops, states


def _keyword_vs_get(c, what="") -> Outcome:
    "Every word's keyword hits against the collection's own get() (the rows it serves), as one outcome."
    docs_of = _docs_from_get(c)
    words = VOC + ["zz"]
    outs = [_term_trial(c, docs_of, w, what=f"{w!r}: ") for w in words]
    bad = [o for o in outs if o.kind != OK]
    if not bad: return ok()
    top = worst(bad).kind
    return Outcome(top, f"{what}{len(bad)}/{len(words)} words' hits differ from get() ({len(docs_of)} rows), e.g. {bad[0].detail}")


@case(CAT, fresh=True, cost=10, timeout=120)
def kw_sigkill_writer(t):
    """A child process writes (adds, upserts, updates, deletes by id and where; ~30 calls) and dies right after its last
    acknowledged call, before the keyword index's 1 s commit: (a) os._exit after the last call, (b) SIGKILL after call ~20 with a
    1.4 s pause at call 10 (so a commit with a mark happened between), (c) SIGKILL after call ~18 with a checkpoint every 3 kB.
    Then a read-only open, a writer open, and a writer open again: get() holds the acknowledged calls (or the one in flight
    whole), and every word's keyword hits are exactly the rows whose documents hold it."""
    rng = random.Random(606)
    outs, labels = [], []
    scenarios = [("exit after the last call", dict(exit=True), None, None), ("SIGKILL after a timed commit", {}, 10, 20),
                 ("SIGKILL with checkpoints", dict(checkpoint_bytes=3000), None, 18)]
    for si, (name, extra, sleep_after, kill_at) in enumerate(scenarios):
        ops, states = _kill_plan(rng, 30, sleep_after)
        plan = dict(ops=ops, **extra)
        (t.tmp / f"plan{si}.json").write_text(json.dumps(plan))
        path = t.tmp / f"db{si}"
        p = subprocess.Popen([sys.executable, "-c", KILL_CHILD, str(LIB), str(path), str(t.tmp / f"plan{si}.json")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        acked, done = 0, False
        try:
            line = p.stdout.readline().strip()
            if line != "READY":
                outs.append(unclear(f"the writing child did not start: {line!r} {p.stderr.read()[-300:]!r}")); labels.append(name); continue
            deadline = time.time() + 60
            while time.time() < deadline:
                line = p.stdout.readline().strip()
                if not line: break
                if line == "DONE": done = True; break
                acked = int(line) + 1
                if kill_at is not None and acked >= kill_at: break
            if kill_at is not None:
                time.sleep(rng.uniform(0, 0.003))
                p.send_signal(signal.SIGKILL)
            p.wait(timeout=30)
            rest, err = p.stdout.read(), p.stderr.read()
        finally:
            if p.poll() is None: p.kill(); p.wait()
        for line in rest.split():
            if line == "DONE": done = True
            elif line.isdigit(): acked = max(acked, int(line) + 1)
        if kill_at is None and (p.returncode != 0 or not done):
            outs.append(unclear(f"the child ended with {p.returncode} before its last call: {err[-200:]!r}")); labels.append(name); continue
        label = f"{name} ({acked} acked)"
        want, inflight = states[acked], states[min(acked + 1, len(states) - 1)]
        for when, ro in (("read-only open", True), ("writer open", False), ("writer reopened", False)):
            try:
                with _db(path, read_only=ro) as db:
                    c = db.get_collection("k")
                    got = _docs_from_get(c)
                    if got != want and got != inflight:
                        lost = [u for u in want if u not in got and u not in inflight]
                        outs.append((loss if lost else wrong)(f"{when}: get() is neither the acknowledged state nor with the call in flight: {_diff_sets(list(got), want)}"))
                    else: outs.append(_keyword_vs_get(c))
            except Exception as e: outs.append(unexpected(e, f"{when}: "))
            labels.append(f"{label}, {when}")
    return _verdict(outs, labels)


def _damage(kind, kw: Path):
    "Damage the keyword directory `kw` in one way."
    def files(ext): return sorted(glob.glob(str(kw / f"*.{ext}")))
    if kind == "meta.json garbage": (kw / "meta.json").write_bytes(b"\x00garbage{{")
    elif kind == "meta.json {}": (kw / "meta.json").write_text("{}")
    elif kind == "meta.json deleted": (kw / "meta.json").unlink()
    elif kind == ".managed.json garbage": (kw / ".managed.json").write_text("zz")
    elif kind == "directory deleted": shutil.rmtree(kw)
    elif kind == "directory is a file": shutil.rmtree(kw); kw.write_text("x")
    elif kind.startswith("truncate ") or kind.startswith("zero ") or kind.startswith("delete one "):
        ext = kind.split()[-1].lstrip(".")
        fs = files(ext)
        if not fs: raise core.HarnessError(f"no *.{ext} file in {kw}: the index layout changed")
        for f in fs[:1] if kind.startswith("delete one") else fs:
            if kind.startswith("truncate"): os.truncate(f, os.path.getsize(f) // 2)
            elif kind.startswith("zero"):
                n = os.path.getsize(f)
                with open(f, "r+b") as fh: fh.write(b"\0" * n)
            else: os.unlink(f)
    elif kind == "flip bytes in .term":
        f = files("term")[0]
        b = bytearray(Path(f).read_bytes())
        for i in range(len(b) // 3, min(len(b), len(b) // 3 + 24)): b[i] ^= 0xFF
        Path(f).write_bytes(bytes(b))
    else: raise core.HarnessError(kind)


DAMAGES = ["meta.json garbage", "meta.json {}", "meta.json deleted", ".managed.json garbage", "directory deleted",
           "directory is a file", "truncate .term", "truncate .idx", "truncate .fast", "truncate .store", "zero .fast",
           "zero .fieldnorm", "delete one .idx", "delete one .del", "flip bytes in .term", "an older copy of the index"]


@case(CAT, cost=6, timeout=90)
def kw_damaged_keyword_dir(t):
    """A closed collection (three checkpoints, upserts and deletes, so several segments and deletion files) has its keywords/
    directory damaged: meta.json garbage, {} or deleted; .managed.json garbage; the directory deleted or replaced by a file; .term,
    .idx, .fast, .store files truncated to half; .fast or .fieldnorm files zeroed; a segment's .idx or .del file deleted; bytes of a
    .term file flipped; a copy of the directory from before the last writes put back. A read-only open, then a writer open, then a
    writer reopen each either answer every word's keyword query exactly (against get()) or fail with a clear sentence."""
    rng = random.Random(707)
    src = t.tmp / "src"
    with _db(src) as db:
        c = db.create_collection("k", embedding=None, dimension=D)
        for b in range(3):
            ids = [f"r{b}_{i}" for i in range(60)]
            c.add(ids=ids, documents=[_doc(rng) for _ in ids], vectors=_vecs(rng, 60))
            c.upsert(ids=rng.sample(ids, 10), documents=[_doc(rng) for _ in range(10)], vectors=_vecs(rng, 10))
            c.delete(ids=rng.sample(ids, 5))
            c.checkpoint()
            if b == 1: shutil.copytree(c.path / "keywords", t.tmp / "old-keywords", ignore=shutil.ignore_patterns("*.lock"))
    outs, labels = [], []
    for i, kind in enumerate(DAMAGES):
        path = t.tmp / "cases" / f"d{i}"
        shutil.copytree(src, path)
        if kind == "an older copy of the index":
            shutil.rmtree(path / "k" / "keywords"); shutil.copytree(t.tmp / "old-keywords", path / "k" / "keywords")
        else: _damage(kind, path / "k" / "keywords")
        for when, ro in (("read-only", True), ("writer", False), ("writer again", False)):
            try:
                with _db(path, read_only=ro) as db: outs.append(_keyword_vs_get(db.get_collection("k"), ""))
            except Exception as e: outs.append(judge_error(e, words=[("keyword", "index")]))
            labels.append(f"{kind}, {when}")
    return _verdict(outs, labels, keep=8)


# ---------------------------------------------------------------- 6. read-only processes
READER_CHILD = r'''
import json, sys
sys.path.insert(0, sys.argv[1])
import minivecdb
db = minivecdb.connect(sys.argv[2], read_only=True)
c = db.get_collection("k")
terms = json.loads(sys.argv[3])
def report(step):
    hits = {w: c.query(w, mode="keyword", k=100000).ids for w in terms}
    g = c.get(include=["documents"])
    print(json.dumps(dict(step=step, hits=hits, docs=dict(zip(g.ids, g.documents)))), flush=True)
report("open")
for line in sys.stdin:
    try: c.refresh(); report(line.strip())
    except Exception as e: print(json.dumps(dict(step=line.strip(), error=f"{type(e).__name__}: {e}")), flush=True)
'''


class _Reader:
    "A read-only child process: `ask(step)` makes it refresh() and report every word's keyword hits and its get()."
    def __init__(self, path, terms):
        self.p = subprocess.Popen([sys.executable, "-c", READER_CHILD, str(LIB), str(path), json.dumps(terms)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    def read(self):
        line = self.p.stdout.readline()
        if not line: raise core.HarnessError(f"the reader process died: {self.p.stderr.read()[-300:]!r}")
        return json.loads(line)
    def ask(self, step):
        self.p.stdin.write(step + "\n"); self.p.stdin.flush()
        return self.read()
    def close(self):
        with contextlib.suppress(Exception): self.p.stdin.close()
        with contextlib.suppress(Exception): self.p.wait(20)
        if self.p.poll() is None: self.p.kill(); self.p.wait()


def _judge_report(rep, model, what) -> Outcome:
    "A reader's report against the writer's rows `model` ({id: document}): its get() and its keyword hits for every word."
    if "error" in rep: return unexpected(RuntimeError(rep["error"]), f"{what}: ")
    if rep["docs"] != model: return wrong(f"{what}: the reader's get() differs from the writer's: {_diff_sets(list(rep['docs']), model)}")
    bad = []
    for w, ids in rep["hits"].items():
        d = _diff_sets(ids, {u for u, doc in model.items() if w in _words(doc)})
        if d: bad.append(f"{w!r}: {d}")
    return wrong(f"{what}: keyword hits differ from get() for {len(bad)} words, e.g. {bad[0]}") if bad else ok()


@case(CAT, fresh=True, cost=8, timeout=90)
def kw_read_only_processes(t):
    """A read-only process opened before the writes: after refresh() its keyword hits for every word equal the writer's rows
    (a) after the writer checkpoints, (b) 1.5 s after writes (the keyword commit's timer) without a checkpoint, (c) right after an
    acknowledged upsert and delete (refresh() must not show the rows in get() but not in keyword hits). With keywords/ deleted, a
    new reader builds an index in memory that answers right, and keeps answering right (refresh) after the writer reopens
    (rebuilding keywords/) and writes more."""
    rng = random.Random(808)
    terms = VOC + ["zz"]
    outs, labels = [], []
    path = t.tmp / "db"
    model = {}
    db = mc().connect(path)
    readers = []
    try:
        c = db.create_collection("k", embedding=None, dimension=D)
        def put(ids, op="upsert"):
            docs = [_doc(rng) for _ in ids]
            getattr(c, op)(ids=ids, documents=docs, vectors=_vecs(rng, len(ids)))
            model.update(zip(ids, docs))
        def delete(ids):
            c.delete(ids=ids)
            for u in ids: model.pop(u, None)
        put([f"a{i}" for i in range(60)], "add"); c.checkpoint()
        r1 = _Reader(path, terms); readers.append(r1)
        outs.append(_judge_report(r1.read(), model, "open")); labels.append("open")
        put(rng.sample(sorted(model), 10) + [f"b{i}" for i in range(10)]); delete(rng.sample(sorted(model), 8)); c.checkpoint()
        outs.append(_judge_report(r1.ask("after checkpoint"), model, "after checkpoint")); labels.append("(a) after checkpoint")
        put(rng.sample(sorted(model), 10) + [f"c{i}" for i in range(5)]); delete(rng.sample(sorted(model), 5))
        time.sleep(1.5)
        outs.append(_judge_report(r1.ask("after the timer"), model, "1.5 s after writes")); labels.append("(b) after the 1 s commit")
        put(rng.sample(sorted(model), 10)); delete(rng.sample(sorted(model), 3))
        outs.append(_judge_report(r1.ask("right after"), model, "right after writes")); labels.append("(c) right after acknowledged writes")
        time.sleep(1.5)
        outs.append(_judge_report(r1.ask("later"), model, "1.5 s later")); labels.append("(c') 1.5 s later")
        db.close()
        shutil.rmtree(path / "k" / "keywords")
        r2 = _Reader(path, terms); readers.append(r2)
        outs.append(_judge_report(r2.read(), model, "keywords/ missing")); labels.append("keywords/ missing: in memory")
        db = mc().connect(path); c = db.get_collection("k")
        put(rng.sample(sorted(model), 6) + [f"d{i}" for i in range(6)]); delete(rng.sample(sorted(model), 4)); c.checkpoint()
        outs.append(_judge_report(r2.ask("in memory, after the writer rebuilt"), model, "in-memory reader after the writer's checkpoint")); labels.append("in-memory reader, refresh")
        outs.append(_judge_report(r1.ask("first reader, after the rebuild"), model, "first reader after the rebuild")); labels.append("first reader after the rebuild")
    except core.HarnessError as e: outs.append(unclear(str(e))); labels.append("reader")
    finally:
        for r in readers: r.close()
        with contextlib.suppress(Exception): db.close()
    return _verdict(outs, labels)


# ---------------------------------------------------------------- 7. threads
@case(CAT, fresh=True, cost=4, timeout=60)
def kw_concurrent_queries(t):
    """While one thread upserts, updates and deletes rows (a pool of 200 ids) for ~2 s, three threads query: keyword (a random
    word, k=10, sometimes with a filter), keyword for 'stable' (200 rows never written again, k=300) and hybrid (k=10). No
    exception; no id twice in a result; every keyword row's document holds the word; 'zz' (in every document, 300+ live rows) gives
    10 rows; 'stable' gives all 200 stable rows every time; afterwards every word's hits are exact."""
    sys.setswitchinterval(1e-5)
    rng = random.Random(909)
    model, lock, stop, errors = {}, threading.Lock(), threading.Event(), []
    bad, counts = [], dict(writes=0, keyword=0, hybrid=0, stable=0, short=0)
    with _db(t.tmp / "db") as db:
        c = db.create_collection("k", embedding=None, dimension=D)
        stable = [f"s{i}" for i in range(200)]
        sdocs = [_doc(rng) + " stable" for _ in stable]
        c.add(ids=stable, documents=sdocs, vectors=_vecs(rng, 200), metadatas=[{"g": i % 4} for i in range(200)])
        pool = [f"p{i}" for i in range(200)]
        pdocs = [_doc(rng) for _ in pool]
        c.add(ids=pool, documents=pdocs, vectors=_vecs(rng, 200), metadatas=[{"g": i % 4} for i in range(200)])
        model.update(zip(stable, sdocs)); model.update(zip(pool, pdocs))
        def note(msg):
            with lock:
                if len(bad) < 4: bad.append(msg)
        def writer():
            w = random.Random(1)
            while not stop.is_set():
                kind = w.random()
                ids = w.sample(pool, w.randint(1, 6))
                if kind < 0.5:
                    docs = [_doc(w) for _ in ids]
                    c.upsert(ids=ids, documents=docs, vectors=_vecs(w, len(ids)), metadatas=[{"g": w.randint(0, 3)} for _ in ids])
                    with lock: model.update(zip(ids, docs))
                elif kind < 0.75:
                    live = [u for u in ids if u in model]
                    if not live: continue
                    docs = [_doc(w) for _ in live]
                    c.update(ids=live, documents=docs)
                    with lock: model.update(zip(live, docs))
                else:
                    c.delete(ids=ids)
                    with lock:
                        for u in ids: model.pop(u, None)
                counts["writes"] += 1
        def keyword_reader():
            w = random.Random(2)
            while not stop.is_set():
                term = w.choice(VOC + ["zz"])
                where = {"g": w.randint(0, 3)} if w.random() < 0.3 else None
                r = c.query(term, mode="keyword", k=10, where=where)
                counts["keyword"] += 1
                if len(set(r.ids)) != len(r.ids): note(f"keyword {term!r}: an id twice {short(r.ids, 80)}")
                nod = [u for u, d in zip(r.ids, r.documents) if term not in _words(d)]
                if nod: note(f"keyword {term!r}: {nod[0]!r} has document {short(r.documents[r.ids.index(nod[0])], 60)}")
                if term == "zz" and where is None and len(r.ids) != 10:
                    counts["short"] += 1; note(f"keyword 'zz' k=10 gave {len(r.ids)} rows with 300+ rows holding it")
        def stable_reader():
            while not stop.is_set():
                r = c.query("stable", mode="keyword", k=300)
                counts["stable"] += 1
                if sorted(r.ids) != sorted(stable): note(f"'stable' (rows never rewritten): {_diff_sets(r.ids, stable)}")
        def hybrid_reader():
            w = random.Random(3)
            while not stop.is_set():
                term = w.choice(VOC)
                r = c.query(term, vectors=_vecs(w, 1)[0], mode="hybrid", k=10)
                counts["hybrid"] += 1
                if len(set(r.ids)) != len(r.ids): note(f"hybrid {term!r}: an id twice {short(r.ids, 80)}")
                if len(r.ids) != 10: note(f"hybrid k=10 gave {len(r.ids)} rows")
                if any(b > a + 1e-9 for a, b in zip(r.scores, r.scores[1:])): note(f"hybrid scores not best first {short(r.scores, 80)}")
        def run(f):
            def g():
                try: f()
                except BaseException as e: errors.append(e); stop.set()
            th = threading.Thread(target=g, daemon=True); th.start(); return th
        ths = [run(writer), run(keyword_reader), run(stable_reader), run(hybrid_reader)]
        t0 = time.time()
        while time.time() - t0 < 2.0 and not stop.is_set(): time.sleep(0.05)
        stop.set()
        for th in ths: th.join(20)
        sys.setswitchinterval(0.005)
        if any(th.is_alive() for th in ths): return crash("a thread did not finish within 20 s of being told to stop")
        outs, labels = [], []
        if errors: outs.append(unexpected(errors[0], f"{len(errors)} exception(s) in threads: ")); labels.append("exceptions")
        outs.append(wrong(f"{len(bad)}+ bad answers: " + "; ".join(bad)) if bad else ok()); labels.append("answers")
        if counts["writes"] < 5 or min(counts["keyword"], counts["hybrid"], counts["stable"]) < 5:
            outs.append(unclear(f"too little overlap to judge: {counts}")); labels.append("overlap")
        try:
            docs_of = _docs_from_get(c)
            outs.append(ok() if docs_of == model else wrong(f"after the threads, get() differs from the writes: {_diff_sets(list(docs_of), model)}")); labels.append("final rows")
            outs.append(worst([_term_trial(c, docs_of, w) for w in VOC + ["zz", "stable"]])); labels.append("final keyword hits")
        except Exception as e: outs.append(unexpected(e, "final: ")); labels.append("final")
    o = _verdict(outs, labels)
    o.detail += f"; {counts}"
    return o


# ---------------------------------------------------------------- 8. lifecycle
@case(CAT, fresh=True, cost=8, timeout=90)
def kw_collection_lifecycle(t):
    """delete_collection right after writes (the 1 s keyword commit pending), at once and ~1 s after (as the timer fires), then a
    collection of the same name: empty for keyword queries, then finding only its own rows; the deleted collection's handle, asked
    after the new one has committed, refuses clearly or answers from its own rows (never a row without the word); close right after
    writes and reopen, six times: hits exact each time; no exception in a thread (timers), and no threads left over."""
    rng = random.Random(1010)
    outs, labels, thread_errors = [], [], []
    old_hook = threading.excepthook
    threading.excepthook = lambda a: thread_errors.append(f"{a.exc_type.__name__}: {a.exc_value}")
    def tasks(): return len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else 0
    try:
        path = t.tmp / "db"
        db = mc().connect(path)
        py0, after_close = threading.active_count(), []
        for i, pause in enumerate((0.0, 0.95, 1.0, 1.05)):
            c = db.create_collection("L", embedding=None, dimension=D)
            ids = [f"o{j}" for j in range(30)]
            c.add(ids=ids, documents=[f"stale {_doc(rng)}" for _ in ids], vectors=_vecs(rng, 30))
            time.sleep(pause)
            db.delete_collection("L")
            n = db.create_collection("L", embedding=None, dimension=D)
            try:
                hits = {w: n.query(w, mode="keyword", k=BIG).ids for w in ["stale", "zz", "kw1"]}
                outs.append(ok() if not any(hits.values()) and n.count() == 0 else wrong(f"a new collection of a deleted one's name: {short(hits)}, count {n.count()}"))
            except Exception as e: outs.append(unexpected(e))
            labels.append(f"recreated after {pause} s")
            if i == 0:
                fresh_ids = [f"n{j}" for j in range(8)]
                fdocs = [f"fresh {_doc(rng)}" for _ in fresh_ids]
                n.add(ids=fresh_ids, documents=fdocs, vectors=_vecs(rng, 8))
                outs.append(worst([_term_trial(n, dict(zip(fresh_ids, fdocs)), w) for w in ["fresh", "stale", "zz"]])); labels.append("new collection's own rows")
                time.sleep(1.3)  # the new collection's keyword commit is on disk
                for w in ("fresh", "zz"):
                    try:
                        r = c.query(w, mode="keyword", k=BIG)
                        nod = [(u, d) for u, d in zip(r.ids, r.documents) if w not in _words(d)]
                        outs.append(wrong(f"the deleted collection's handle: {w!r} finds {nod[0][0]!r} whose document is {nod[0][1]!r}") if nod else ok())
                    except Exception as e: outs.append(judge_error(e, words=[("deleted", "closed")]))
                    labels.append(f"deleted handle, {w!r}")
            db.delete_collection("L")
        model = {}
        c = db.create_collection("R", embedding=None, dimension=D)
        for i in range(6):
            ids = [f"x{i}_{j}" for j in range(5)] + rng.sample(sorted(model), min(3, len(model)))
            docs = [_doc(rng) for _ in ids]
            c.upsert(ids=ids, documents=docs, vectors=_vecs(rng, len(ids))); model.update(zip(ids, docs))
            gone = rng.sample(sorted(model), 2); c.delete(ids=gone)
            for u in gone: model.pop(u)
            db.close()
            after_close.append(tasks())
            db = mc().connect(path); c = db.get_collection("R")
            try: outs.append(worst([_term_trial(c, model, w) for w in VOC + ["zz"]]))
            except Exception as e: outs.append(unexpected(e))
            labels.append(f"close right after writes, reopen {i + 1}")
        db.close()
        time.sleep(1.3)
        py1 = threading.active_count()
        after_close.append(tasks())
        if py1 > py0: outs.append(wrong(f"{py1 - py0} Python thread(s) left after closing: {[th.name for th in threading.enumerate()][:6]}")); labels.append("threads")
        if after_close[-1] > after_close[0] + 2: outs.append(wrong(f"OS threads grow over close/reopen cycles: {after_close}")); labels.append("OS threads")
    finally:
        threading.excepthook = old_hook
    if thread_errors: outs.append(wrong(f"{len(thread_errors)} exception(s) in threads: {thread_errors[0][:200]}")); labels.append("thread errors")
    return _verdict(outs, labels)
