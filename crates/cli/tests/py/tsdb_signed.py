"""Signed requests to midge's TSDB API, signed by the bce-auth-v1 rules written out here
(not by Baidu's SDK): hmac + hashlib + http.client only.

    python3 tsdb_signed.py PORT AK SK

Prints one JSON object with what each request got; the assertions are in
crates/cli/tests/hub_tsdb_api.rs.
"""

import datetime
import gzip
import hashlib
import hmac
import http.client
import json
import sys
import time
import urllib.parse

PORT, AK, SK = int(sys.argv[1]), sys.argv[2], sys.argv[3]
HOST = "127.0.0.1:%d" % PORT


def enc(s, keep_slash=False):
    """RFC 3986: only A-Z a-z 0-9 - . _ ~ stay (and / in a path)."""
    safe = "-._~/" if keep_slash else "-._~"
    return urllib.parse.quote(s, safe=safe)


def utc(ts):
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


def sign(method, path, params, headers, ts, expiration=1800, signed=None, sk=SK, ak=AK):
    info = "bce-auth-v1/%s/%s/%d" % (ak, utc(ts), expiration)
    key = hmac.new(sk.encode(), info.encode(), hashlib.sha256).hexdigest()
    query = "&".join(
        sorted(
            "%s=%s" % (enc(k), enc(v))
            for k, v in params
            if k.lower() != "authorization"
        )
    )
    names = [h.lower() for h in signed] if signed else [
        "host", "content-md5", "content-length", "content-type"]
    canon = sorted(
        "%s:%s" % (enc(k.lower()), enc(str(v).strip()))
        for k, v in headers.items()
        if str(v).strip() and (k.lower().startswith("x-bce-") or k.lower() in names)
    )
    canonical = "\n".join([method, enc(path, True), query, "\n".join(canon)])
    sig = hmac.new(key.encode(), canonical.encode(), hashlib.sha256).hexdigest()
    return "%s/%s/%s" % (info, ";".join(signed or []), sig)


def send(method, path, params=(), body=None, gz=False, host=HOST, **how):
    """One signed request; (status, parsed body or text)."""
    ts = how.pop("ts", int(time.time()))
    headers = {"Host": host, "x-bce-date": utc(ts)}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        if gz:
            data = gzip.compress(data)
            headers["Content-Encoding"] = "gzip"
        headers["Content-Type"] = "application/json"
        headers["Content-Length"] = str(len(data))
    headers["Authorization"] = sign(method, path, params, headers, ts, **how)
    return raw(method, path, params, headers, data)


def raw(method, path, params, headers, data=None):
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=20)
    target = path + ("?" + "&".join(
        "%s=%s" % (enc(k), enc(v)) if v != "" else enc(k) for k, v in params) if params else "")
    conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
    for k, v in headers.items():
        conn.putheader(k, v)
    conn.endheaders(data)
    r = conn.getresponse()
    text = r.read().decode()
    conn.close()
    try:
        return r.status, json.loads(text)
    except ValueError:
        return r.status, text


out = {}
now = int(time.time())
out["write"] = send("POST", "/v1/datapoint", [("database", "db1")], gz=True, body={
    "datapoints": [
        {"metric": "py_temp", "tags": {"room": "a"}, "timestamp": now, "value": 21},
        {"metric": "py_temp", "tags": {"room": "b"}, "values": [[now - 60, 19.5], [now, 20.5]]},
    ]})
out["metrics"] = send("GET", "/v1/metric", signed=["host", "x-bce-date"])
q = {"queries": [{"metric": "py_temp", "filters": {"start": "1 hour ago", "tags": {"room": ["b"]}},
                  "aggregators": [{"name": "Max"}]}]}
out["query"] = send("PUT", "/v1/datapoint", [("query", "")], body=q)

# pre-signed: the signature as the authorization parameter of a GET
params = [("query", json.dumps(q)), ("disablePresampling", "False")]
auth = sign("GET", "/v1/datapoint", params, {"Host": HOST}, now, signed=["host"])
out["presigned"] = raw("GET", "/v1/datapoint", params + [("authorization", auth)], {"Host": HOST})

# refused: wrong secret, expired, unknown key, a changed body length
out["wrong_secret"] = send("GET", "/v1/metric", sk="x" * 20)
out["expired"] = send("GET", "/v1/metric", ts=now - 7200)
out["unknown_key"] = send("GET", "/v1/metric", ak="nobody")

# a signed request under a host name passes the anonymous listener's Host check; an
# unsigned one is refused (421)
out["named_host_signed"] = send("GET", "/v1/metric", host="tsdb.example.com")
out["named_host_unsigned"] = raw("GET", "/v1/metric", [], {"Host": "tsdb.example.com"})

print(json.dumps(out))
