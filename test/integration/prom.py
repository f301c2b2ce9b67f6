"""Members' metrics listeners, for tests: a cluster whose members each serve
--listen-metrics-urls on a loopback port, GET on those ports, and a strict
parser of the Prometheus text format (0.0.4) that /metrics must follow."""
import http.client
import math
import re

import cluster


# ---------------------------------------------------------------- HTTP

def serve_metrics(m):
    """Before m starts: it will serve metrics on a loopback port of its own (m.metrics_port)."""
    m.metrics_port = cluster.free_port()
    m.extra.append("--listen-metrics-urls=tcp://127.0.0.1:%d" % m.metrics_port)


def start_with_metrics(env, n, extra=()):
    """A cluster of n members, each serving metrics on a loopback port of its own (m.metrics_port)."""
    c = env.cluster(n, start=False, extra=extra)
    for m in c:
        serve_metrics(m)
    c.start()
    return c


def get(m, path, timeout=5.0):
    """(status, body) of GET path on m's metrics listener."""
    conn = http.client.HTTPConnection("127.0.0.1", m.metrics_port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read().decode()
    finally:
        conn.close()


def get_or_none(m, path):
    try:
        return get(m, path)
    except OSError:
        return None


# ---------------------------------------------------------------- a strict Prometheus text parser

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"'
VALUE = r"[-+]?(?:[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?|Inf|NaN)"
SAMPLE = re.compile(r"^(%s)(?:\{((?:%s)(?:,%s)*,?)?\})? (%s)(?: -?[0-9]+)?$" % (NAME, LABEL, LABEL, VALUE))
HELP = re.compile(r"^# HELP (%s) (.*)$" % NAME)
TYPE = re.compile(r"^# TYPE (%s) (counter|gauge|histogram|summary|untyped)$" % NAME)
TYPES_SUFFIXES = {"counter": [""], "gauge": [""], "untyped": [""],
                  "histogram": ["_bucket", "_sum", "_count"], "summary": ["", "_sum", "_count"]}


class Scrape:
    """A parsed exposition: types[family], samples[(name, labels)] = value, with
    every rule of the text format checked (or AssertionError naming the line)."""

    def __init__(self, text):
        assert text.endswith("\n"), "the exposition ends with a newline"
        self.types, self.samples = {}, {}
        helps, done, fam = set(), set(), None
        for ln, line in enumerate(text[:-1].split("\n"), 1):
            where = "line %d: %r" % (ln, line)
            assert line, "no empty lines (%s)" % where
            m = HELP.match(line)
            if m:
                assert m.group(1) not in helps, "one HELP per family (%s)" % where
                helps.add(m.group(1))
                continue
            m = TYPE.match(line)
            if m:
                name = m.group(1)
                assert name not in self.types, "one TYPE per family (%s)" % where
                assert name not in {s[0] for s in self.samples}, "TYPE before the family's samples (%s)" % where
                if fam:
                    done.add(fam)
                fam = name
                self.types[name] = m.group(2)
                continue
            assert not line.startswith("#"), "only HELP and TYPE comments here (%s)" % where
            m = SAMPLE.match(line)
            assert m, "sample grammar (%s)" % where
            name = m.group(1)
            assert fam and any(name == fam + suf for suf in TYPES_SUFFIXES[self.types[fam]]), \
                "sample of the family its TYPE announced last (%s)" % where
            labels = dict(re.findall(LABEL, m.group(2) or ""))
            assert len(labels) == len(re.findall(LABEL, m.group(2) or "")), "no repeated label (%s)" % where
            key = (name, frozenset(labels.items()))
            assert key not in self.samples, "no duplicate series (%s)" % where
            v = float(m.group(m.lastindex))
            if self.types[fam] == "counter" or name.endswith(("_bucket", "_count")):
                assert v >= 0 and not math.isnan(v), "counters are not negative (%s)" % where
            self.samples[key] = v
        for f, t in self.types.items():
            if t == "histogram":
                self._check_histogram(f)

    def _check_histogram(self, f):
        series = {}
        for (name, labels), v in self.samples.items():
            if name == f + "_bucket":
                d = dict(labels)
                le = d.pop("le")
                series.setdefault(frozenset(d.items()), []).append((float(le), le, v))
        for (name, labels) in self.samples:
            if name in (f + "_sum", f + "_count"):
                assert labels in series, "%s%s has buckets" % (name, dict(labels))
        for labels, buckets in series.items():
            buckets.sort()
            assert buckets[-1][1] == "+Inf", "%s%s ends with le=\"+Inf\"" % (f, dict(labels))
            counts = [b[2] for b in buckets]
            assert counts == sorted(counts), "%s%s buckets are cumulative: %s" % (f, dict(labels), counts)
            assert self.samples[(f + "_count", labels)] == counts[-1], "%s _count equals the +Inf bucket" % f
            assert (f + "_sum", labels) in self.samples

    def value(self, name, **labels):
        """The sample's value, or None when the series is absent."""
        return self.samples.get((name, frozenset(labels.items())))

    def series(self, name):
        """{labels dict as a sorted tuple: value} for every series of name."""
        return {tuple(sorted(lab)): v for (n, lab), v in self.samples.items() if n == name}


def scrape(m):
    st, body = get(m, "/metrics")
    assert st == 200, body
    return Scrape(body)
