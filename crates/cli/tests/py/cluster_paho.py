#!/usr/bin/env python3
"""Paho MQTT (2.x, MQTT 5) clients for crates/cli/tests/cluster.rs: one subscriber and one
publisher, each run against a different midge node of a cluster.

Usage:
  cluster_paho.py sub PORT FILTER COUNT      subscribe (QoS 1), print "subscribed", then wait
                                              for COUNT messages (15 s at most)
  cluster_paho.py pub PORT TOPIC PAYLOAD_HEX publish once at QoS 1 with every MQTT 5 property
                                              a message can carry

Each prints exactly one JSON object on its last stdout line with what it observed; the Rust
test asserts on it. Every wait is bounded.
"""

import json
import os
import queue
import sys
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

HOST = "127.0.0.1"
WAIT = 15.0


def client(port):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                    client_id=f"paho-{os.getpid()}-{uuid.uuid4().hex[:8]}",
                    protocol=mqtt.MQTTv5)
    connack = queue.Queue()
    c.on_connect = lambda c, u, flags, rc, p: connack.put(rc)
    c.connect(HOST, port, keepalive=30, clean_start=True)
    c.loop_start()
    rc = connack.get(timeout=5)
    if rc.is_failure:
        raise RuntimeError(f"CONNACK {rc}")
    return c


def describe(m):
    p = m.properties
    out = {
        "topic": m.topic,
        "payload": m.payload.hex(),
        "qos": m.qos,
        "retain": bool(m.retain),
    }
    if p is not None:
        out["user_properties"] = [list(kv) for kv in getattr(p, "UserProperty", [])]
        out["content_type"] = getattr(p, "ContentType", None)
        out["response_topic"] = getattr(p, "ResponseTopic", None)
        cd = getattr(p, "CorrelationData", None)
        out["correlation_data"] = cd.hex() if cd is not None else None
        out["message_expiry"] = getattr(p, "MessageExpiryInterval", None)
        out["payload_format"] = getattr(p, "PayloadFormatIndicator", None)
    return out


def sub(port, flt, count):
    msgs = queue.Queue()
    subacks = queue.Queue()
    c = client(port)
    c.on_message = lambda c, u, m: msgs.put(m)
    c.on_subscribe = lambda c, u, mid, rcs, p: subacks.put(rcs)
    c.subscribe(flt, qos=1)
    rcs = subacks.get(timeout=5)
    print("subscribed", [int(r.value) for r in rcs], flush=True)
    got = []
    deadline = time.monotonic() + WAIT
    while len(got) < count:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            got.append(describe(msgs.get(timeout=left)))
        except queue.Empty:
            break
    # anything extra (a duplicate) within a short while
    time.sleep(0.5)
    while not msgs.empty():
        got.append(describe(msgs.get()))
    c.disconnect()
    c.loop_stop()
    print(json.dumps({"messages": got}))


def pub(port, topic, payload_hex):
    acks = queue.Queue()
    c = client(port)
    c.on_publish = lambda c, u, mid, rc, p: acks.put(rc)
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [("k1", "v1"), ("k1", "v2"), ("ключ", "значение")]
    props.ContentType = "application/x-midge; charset=utf-8"
    props.ResponseTopic = "reply/to/me"
    props.CorrelationData = bytes([0, 1, 2, 255])
    props.MessageExpiryInterval = 3600
    props.PayloadFormatIndicator = 0
    info = c.publish(topic, bytes.fromhex(payload_hex), qos=1, properties=props)
    rc = acks.get(timeout=10)
    c.disconnect()
    c.loop_stop()
    print(json.dumps({"mid": info.mid, "rc": int(rc.value) if hasattr(rc, "value") else int(rc)}))


def main():
    mode, port = sys.argv[1], int(sys.argv[2])
    if mode == "sub":
        sub(port, sys.argv[3], int(sys.argv[4]))
    elif mode == "pub":
        pub(port, sys.argv[3], sys.argv[4])
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
