"""Baidu's own Python SDK (bce-python-sdk, `baidubce.services.tsdb.tsdb_client.TsdbClient`)
against midge's TSDB API, its endpoint pointed at midge.

    python3 tsdb_sdk.py PORT AK SK

Prints one JSON object with what each call got; the assertions are in
crates/cli/tests/hub_tsdb_api.rs.
"""

import json
import sys
import time
import urllib.request

from baidubce.auth.bce_credentials import BceCredentials
from baidubce.bce_client_configuration import BceClientConfiguration
from baidubce.exception import BceHttpClientError
from baidubce.services.tsdb.tsdb_client import TsdbClient

PORT, AK, SK = int(sys.argv[1]), sys.argv[2], sys.argv[3]


def plain(o):
    """The SDK's answers (Expando objects) as JSON-able values."""
    if isinstance(o, list):
        return [plain(x) for x in o]
    if hasattr(o, "__dict__"):
        return {k: plain(v) for k, v in vars(o).items() if k != "metadata"}
    if isinstance(o, dict):
        return {k: plain(v) for k, v in o.items()}
    return o


def client(sk=SK, database=None):
    config = BceClientConfiguration(
        credentials=BceCredentials(AK, sk), endpoint=b"127.0.0.1:%d" % PORT)
    return TsdbClient(config, database)


out = {}
c = client()
now = int(time.time())
datapoints = [
    {"metric": "sdk_cpu", "field": "idle", "tags": {"host": "h1"}, "timestamp": now - 120,
     "value": 90, "type": "Long"},
    {"metric": "sdk_cpu", "field": "idle", "tags": {"host": "h1"}, "timestamp": now - 60,
     "value": 80, "type": "Long"},
    {"metric": "sdk_cpu", "field": "idle", "tags": {"host": "h2"}, "timestamp": now - 60,
     "value": 70.5, "type": "Double"},
    {"metric": "sdk_cpu", "field": "state", "tags": {"host": "h2"}, "timestamp": now - 60,
     "value": "busy", "type": "String"},
]
# gzipped, the SDK's default
r = c.write_datapoints(datapoints)
out["write_status"] = r.metadata.bce_request_id is not None
# with a database name (ignored by midge) and without gzip
client(database="db1").write_datapoints(
    [{"metric": "sdk_mem", "tags": {"host": "h1"}, "timestamp": now, "value": 1}], use_gzip=False)

out["metrics"] = plain(c.get_metrics().metrics)
out["fields"] = plain(c.get_fields("sdk_cpu").fields)
out["tags"] = plain(c.get_tags("sdk_cpu").tags)

queries = [{
    "metric": "sdk_cpu", "field": "idle",
    "filters": {"start": "1 hour ago", "tags": {"host": ["h1", "h2"]}},
    "groupBy": [{"name": "Tag", "tags": ["host"]}],
    "aggregators": [{"name": "Avg"}],
}, {
    "metric": "sdk_cpu", "field": "idle", "filters": {"start": now - 3600, "end": "now"},
    "limit": 1,
}]
out["query"] = plain(c.get_datapoints(queries).results)

# a pre-signed URL fetched with urllib. The SDK builds the URL's host with
# `b':' + str(port)` when the port is not 80, which fails in Python 3; so the URL is made for
# the endpoint without a port (signed for Host 127.0.0.1) and fetched from midge's port
# with that Host.
presigner = TsdbClient(BceClientConfiguration(
    credentials=BceCredentials(AK, SK), endpoint=b"127.0.0.1"))
url = presigner.generate_pre_signed_url(queries[:1])
out["presigned_url_has_authorization"] = "authorization=bce-auth-v1" in url
fetched = url.replace("http://127.0.0.1/", "http://127.0.0.1:%d/" % PORT, 1)
req = urllib.request.Request(fetched, headers={"Host": "127.0.0.1"})
with urllib.request.urlopen(req, timeout=20) as resp:
    out["presigned"] = {"status": resp.status, "body": json.loads(resp.read())}

# the SDK reports midge's errors (parsed by its handler.parse_error: requestId, code,
# message) as BceHttpClientError with Baidu's code and the request id
try:
    client(sk="not-the-secret-at-all").get_metrics()
    out["wrong_secret"] = "accepted"
except BceHttpClientError as e:
    out["wrong_secret"] = {"status": e.status_code, "code": e.code,
                           "request_id": bool(e.request_id)}
try:
    c.get_fields("no_such_metric")
    out["unknown_metric"] = "found"
except BceHttpClientError as e:
    out["unknown_metric"] = {"status": e.status_code, "code": e.code}
try:
    c.write_datapoints([{"metric": "sdk_bad", "value": "x", "type": "Long"}])
    out["bad_point"] = "accepted"
except BceHttpClientError as e:
    out["bad_point"] = {"status": e.status_code, "code": e.code,
                        "message": str(e.last_error)}

print(json.dumps(out))
