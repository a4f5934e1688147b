#!/usr/bin/env python3
"""Paho MQTT (2.x) clients for crates/cli/tests/cluster_flows.rs: single-node flows with the
clients on different nodes of a midge cluster. Built on paho_scenarios.py's Client.

Usage:
  cluster_flows_paho.py session PORT CLIENT_ID FILTER QOS
      MQTT 3.1.1, clean session 0: connect, subscribe, disconnect; prints {"present", "suback"}
  cluster_flows_paho.py resume PORT CLIENT_ID COUNT
      MQTT 3.1.1, clean session 0: connect, take COUNT messages (bounded), then anything
      extra within 0.5 s; prints {"present", "messages"}
  cluster_flows_paho.py retain-handling PORT TOPIC
      MQTT 5: a fresh client per retain handling (0 and 1 subscribe twice, 2 once) to a
      topic that holds a retained message; prints what each received
  cluster_flows_paho.py will-abort PORT TOPIC
      MQTT 5 with a will on TOPIC (QoS 1), then the socket dropped without DISCONNECT

Each prints exactly one JSON object on its last stdout line; the Rust test asserts on it.
Every wait is bounded.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from paho_scenarios import Client, done  # noqa: E402


def describe(m):
    d = {
        "topic": m.topic,
        "payload": m.payload.hex(),
        "qos": m.qos,
        "retain": bool(m.retain),
    }
    return d


def session(port, cid, flt, qos):
    c = Client(port, v5=False, client_id=cid, clean=False)
    present = bool(c.flags.session_present)
    rc = c.sub(flt, int(qos))
    c.close()
    done({"present": present, "suback": rc})


def resume(port, cid, count):
    c = Client(port, v5=False, client_id=cid, clean=False)
    present = bool(c.flags.session_present)
    got = []
    deadline = time.monotonic() + 15
    while len(got) < int(count):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        m = c.get(left)
        if m is None:
            break
        got.append(describe(m))
    got += [describe(m) for m in c.drain(0.5)]
    c.close()
    done({"present": present, "messages": got})


def retain_handling(port, topic):
    res = {}
    c = Client(port)
    c.sub(topic, 1, retainHandling=2)
    res["rh2"] = [describe(m) for m in c.drain(0.5)]
    c = Client(port)
    c.sub(topic, 1, retainHandling=1)
    first = c.drain(0.5)
    c.sub(topic, 1, retainHandling=1)  # the subscription exists now: not sent again
    again = c.drain(0.5)
    res["rh1_new"] = [describe(m) for m in first]
    res["rh1_existing"] = [describe(m) for m in again]
    c = Client(port)
    c.sub(topic, 1, retainHandling=0)
    c.sub(topic, 1, retainHandling=0)  # sent on every subscribe
    res["rh0"] = [describe(m) for m in c.drain(0.5)]
    done(res)


def will_abort(port, topic):
    c = Client(port, will=(topic, b"paho dropped", None))
    c.abort()
    done({"aborted": True})


MODES = {
    "session": session,
    "resume": resume,
    "retain-handling": retain_handling,
    "will-abort": will_abort,
}

if __name__ == "__main__":
    mode, port, *rest = sys.argv[1:]
    MODES[mode](int(port), *rest)
    os._exit(0)  # do not wait for paho's network threads
