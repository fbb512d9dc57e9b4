#!/usr/bin/env python3
"""Regenerates the derived seed files of tests/fuzz/corpus/ from the unit test tables and the
sample configuration (files named seed-*). Captured traffic (postfix-*, exim-*) and regression
inputs (regress-*) are kept as committed. Usage: tests/fuzz/make-seeds.py (from anywhere)."""
import hashlib
import os
import re
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORPUS = os.path.join(ROOT, "tests", "fuzz", "corpus")


def c_unescape(body):
    out = bytearray()
    i = 0
    simple = {"n": 10, "r": 13, "t": 9, "0": 0, '"': 34, "\\": 92, "'": 39, "a": 7, "v": 11, "f": 12}
    raw = body.encode("utf-8")
    while i < len(raw):
        c = raw[i]
        if c != 0x5C:
            out.append(c)
            i += 1
            continue
        n = chr(raw[i + 1])
        if n == "x":
            j = i + 2
            while j < len(raw) and chr(raw[j]) in "0123456789abcdefABCDEF":
                j += 1
            out.append(int(raw[i + 2:j], 16) & 0xFF)
            i = j
        elif n in simple:
            out.append(simple[n])
            i += 2
        else:
            out.append(raw[i + 1])
            i += 2
    return bytes(out)


LITERALS = r'((?:\s*"(?:[^"\\]|\\.)*")+)'


def literal_args(text, func):
    """Byte strings passed as the first argument of func("..." "...")."""
    found = []
    for m in re.finditer(re.escape(func) + r"\(" + LITERALS, text):
        parts = re.findall(r'"((?:[^"\\]|\\.)*)"', m.group(1))
        found.append(b"".join(c_unescape(p) for p in parts))
    return found


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def short(data):
    return hashlib.sha1(data).hexdigest()[:10]


def clear_seeds(target):
    d = os.path.join(CORPUS, target)
    if os.path.isdir(d):
        for f in os.listdir(d):
            if f.startswith("seed-"):
                os.remove(os.path.join(d, f))


def read(rel):
    with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
        return f.read()


def wire(reply):
    return b"".join(line + b"\r\n" for line in reply.split(b"\n"))


def smtp_and_classifier():
    replies = literal_args(read("tests/unit/classifier_test.cpp"), "R")
    replies += [b"220 mx.example.org ESMTP Postfix", b"250-mx.example.org\n250-PIPELINING\n"
                b"250-SIZE 10240000\n250-STARTTLS\n250-ENHANCEDSTATUSCODES\n250 8BITMIME",
                b"221 2.0.0 Bye", b"421 4.7.0 mx.example.org Too many connections"]
    clear_seeds("smtp_reply")
    clear_seeds("classifier")
    ok = wire(b"250 2.1.0 Ok")
    unknown = wire(b"550 5.1.1 <calloutd-check-x7k2@example.org>: Recipient address rejected: "
                   b"User unknown in local recipient table")
    for r in replies:
        w = wire(r)
        write("smtp_reply", "seed-" + short(w), w)
        # One attempt that ended with this reply at RCPT after MAIL FROM ok and the random
        # local part refused: stage rcpt (8), event reply (0), all four replies recorded.
        write("classifier", "seed-rcpt-" + short(w), bytes([0, 8, 0, 15]) + ok + unknown + w + w)
        # The same reply to MAIL FROM:<> (stage 4), and to the random local part (stage 5).
        write("classifier", "seed-mail-" + short(w), bytes([0, 4, 0, 9]) + w + w)
        write("classifier", "seed-random-" + short(w), bytes([0, 5, 0, 11]) + ok + w + w)


def addresses():
    clear_seeds("address")
    text = read("tests/unit/address_test.cpp")
    for m in re.finditer(r'\{\s*"((?:[^"\\]|\\.)*)"\s*,', text):
        a = c_unescape(m.group(1))
        if b"@" in a or len(a) < 40:
            write("address", "seed-" + short(a), a)


def redis_urls():
    clear_seeds("redis_url")
    text = read("tests/unit/redis_url_test.cpp")
    for m in re.finditer(r'"((?:redis://|unix:|\[|[0-9])(?:[^"\\]|\\.)*)"', text):
        u = c_unescape(m.group(1))
        write("redis_url", "seed-" + short(u), u)


def configs():
    clear_seeds("config")
    write("config", "seed-sample-calloutd.toml", read("etc/calloutd.toml").encode())
    text = read("tests/unit/config_test.cpp")
    for m in re.finditer(r'ErrorCase\{"\w+",' + LITERALS, text):
        parts = re.findall(r'"((?:[^"\\]|\\.)*)"', m.group(1))
        t = b"".join(c_unescape(p) for p in parts)
        write("config", "seed-" + short(t), t)


def resp(x):
    if x is None:
        return b"$-1\r\n"
    if isinstance(x, int):
        return b":%d\r\n" % x
    if isinstance(x, bytes):
        return b"$%d\r\n%s\r\n" % (len(x), x)
    if isinstance(x, tuple):  # status or error
        return (b"+" if x[0] == "+" else b"-") + x[1] + b"\r\n"
    return b"*%d\r\n" % len(x) + b"".join(resp(e) for e in x)


def redis_replies():
    clear_seeds("redis_reply")
    v = b"v1|valid|1764547200000||rcpt-accepted 250 2.1.5 at RCPT|250 2.1.5 Ok"
    d = b"v1|accept_all|1764547200000||random-local-part-accepted|250 ok"
    b = b"v1|policy_blocked|1764547200000|b|pushback 421|421 4.7.0 Too many connections"
    cases = {
        "admitted": [b"admitted", b"node-1:42"],
        "cached-address": [b"cached", v, b"a"],
        "cached-domain": [b"cached", d, b"d"],
        "cached-backoff": [b"cached", b, b"d"],
        "in-flight": [b"in_flight"],
        "denied-domain": [b"denied", b"domain"],
        "denied-client": [b"denied", b"client"],
        "denied-global": [b"denied", b"global"],
        "mx-admitted": [b"admitted", b"node-2:7"],
        "mx-denied": [b"denied", b"concurrency"],
        "mget": [None, v],
        "mget-both": [d, v],
        "store": 1,
        "noscript": ("-", b"NOSCRIPT No matching script. Please use EVAL."),
        "pong": ("+", b"PONG"),
        "pipeline": None,
    }
    for name, value in cases.items():
        data = resp(value)
        if name == "pipeline":
            data = resp(("+", b"OK")) + resp([b"admitted", b"n:1"]) + resp([None, None]) + resp(0)
        write("redis_reply", "seed-" + name, data)


def dns_answers():
    """Answers for the dns_answer target: per query [flags][ancount][nscount][len][records]."""
    clear_seeds("dns_answer")

    def rr(rtype, rdata, name=b"\xc0\x0c"):
        return name + struct.pack(">HHIH", rtype, 1, 300, len(rdata)) + rdata

    def name(*labels):
        return b"".join(bytes([len(l)]) + l for l in labels) + b"\x00"

    def answer(rcode, records, aa=True):
        body = b"".join(records)
        return bytes([rcode | (0x10 if aa else 0), len(records), 0, len(body)]) + body

    mx = lambda pref, host: rr(15, struct.pack(">H", pref) + host)
    a = lambda ip: rr(1, bytes(ip))
    aaaa = lambda last: rr(28, b"\x20\x01\x0d\xb8" + b"\x00" * 11 + bytes([last]))
    seeds = {
        "two-mx": answer(0, [mx(10, name(b"mx1", b"fuzz", b"example")),
                             mx(20, name(b"mx2", b"fuzz", b"example"))])
                  + answer(0, [a([192, 0, 2, 1])]) + answer(0, [aaaa(1)])
                  + answer(0, [a([192, 0, 2, 2]), a([192, 0, 2, 3])]) + answer(0, []),
        "equal-preference": answer(0, [mx(10, name(b"a", b"example")),
                                       mx(10, name(b"b", b"example"))])
                            + answer(0, [a([198, 51, 100, 1])]) + answer(0, [])
                            + answer(0, [a([198, 51, 100, 2])]) + answer(0, []),
        "null-mx": answer(0, [mx(0, b"\x00")]),
        "nxdomain": answer(3, []),
        "servfail": answer(2, []),
        "refused": answer(5, []),
        "nodata-implicit-mx": answer(0, []) + answer(0, [a([203, 0, 113, 9])]) + answer(0, [aaaa(9)]),
        "no-mx-no-address": answer(0, []) + answer(0, []) + answer(0, []),
        "mx-without-address": answer(0, [mx(10, name(b"mx", b"example"))]) + answer(3, [])
                              + answer(3, []),
        "cname-only": answer(0, [rr(5, name(b"alias", b"example"))]),
        "mx-to-self-compressed": answer(0, [mx(5, b"\x03mx1\xc0\x0c")]) + answer(0, [a([192, 0, 2, 7])])
                                 + answer(0, []),
    }
    for n, data in seeds.items():
        write("dns_answer", "seed-" + n, data)


def http_requests():
    clear_seeds("http_request")
    seeds = {
        "get": b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9500\r\nUser-Agent: Prometheus/2.42.0\r\n"
               b"Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n"
               b"Accept-Encoding: gzip\r\nX-Prometheus-Scrape-Timeout-Seconds: 10\r\n\r\n",
        "head": b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
        "http10": b"GET /metrics HTTP/1.0\r\n\r\n",
        "close": b"GET /metrics?x=1 HTTP/1.1\r\nConnection: close\r\n\r\n",
        "post": b"POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
        "chunked": b"POST /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "not-found": b"GET / HTTP/1.1\r\n\r\n",
        "pipelined": b"GET /metrics HTTP/1.1\r\n\r\n" * 6,
        "upgrade": b"GET /metrics HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        "garbage": b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
        "long-url": b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n",
    }
    for n, data in seeds.items():
        write("http_request", "seed-" + n, data)


if __name__ == "__main__":
    smtp_and_classifier()
    addresses()
    redis_urls()
    configs()
    redis_replies()
    dns_answers()
    http_requests()
