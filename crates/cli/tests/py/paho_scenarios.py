#!/usr/bin/env python3
"""Paho MQTT (2.x) scenarios against a running broker, for crates/cli/tests/broker_paho.rs.

Usage: paho_scenarios.py SCENARIO PORT [ARGS...]

Each scenario prints exactly one JSON object on its last stdout line with what it observed;
the Rust test asserts on it. Every wait is bounded, so a broken broker fails instead of
hanging.
"""

import json
import os
import queue
import socket
import subprocess
import sys
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

HOST = "127.0.0.1"
WAIT = 5.0


def uid(prefix):
    return f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class Client:
    """A paho client with its events turned into queues."""

    def __init__(self, port, v5=True, client_id=None, clean=True, props=None, will=None,
                 keepalive=60):
        proto = mqtt.MQTTv5 if v5 else mqtt.MQTTv311
        cid = uid("paho") if client_id is None else client_id
        kwargs = {"client_id": cid, "protocol": proto}
        if not v5:
            kwargs["clean_session"] = clean
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, **kwargs)
        self.v5 = v5
        self.msgs = queue.Queue()
        self.connack = queue.Queue()
        self.subacks = queue.Queue()
        self.disconnects = queue.Queue()
        self.c.on_message = lambda c, u, m: self.msgs.put(m)
        self.c.on_connect = lambda c, u, flags, rc, p: self.connack.put((flags, rc, p))
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.put(rcs)
        self.c.on_disconnect = lambda c, u, flags, rc, p: self.disconnects.put(rc)
        if will is not None:
            topic, payload, wprops = will
            self.c.will_set(topic, payload, qos=1, properties=wprops)
        if v5:
            self.c.connect(HOST, port, keepalive=keepalive, clean_start=clean, properties=props)
        else:
            self.c.connect(HOST, port, keepalive=keepalive)
        self.c.loop_start()
        flags, rc, p = self.connack.get(timeout=WAIT)
        self.flags, self.rc, self.connack_props = flags, rc, p
        if rc.is_failure:
            raise RuntimeError(f"CONNACK {rc}")

    def sub(self, topic, qos=1, **opts):
        if self.v5:
            props = None
            if "sub_id" in opts:
                props = Properties(PacketTypes.SUBSCRIBE)
                props.SubscriptionIdentifier = opts.pop("sub_id")
            o = SubscribeOptions(qos=qos, **opts)
            self.c.subscribe(topic, options=o, properties=props)
        else:
            self.c.subscribe(topic, qos)
        rcs = self.subacks.get(timeout=WAIT)
        return [int(r.value) if hasattr(r, "value") else int(r) for r in rcs]

    def pub(self, topic, payload, qos=1, retain=False, props=None):
        info = self.c.publish(topic, payload, qos=qos, retain=retain, properties=props)
        if qos > 0:
            info.wait_for_publish(timeout=WAIT)
            if not info.is_published():
                raise RuntimeError("publish not acknowledged")

    def get(self, timeout=WAIT):
        try:
            return self.msgs.get(timeout=timeout)
        except queue.Empty:
            return None

    def drain(self, quiet=0.5):
        out = []
        while True:
            m = self.get(quiet)
            if m is None:
                return out
            out.append(m)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()

    def abort(self):
        """Drop the TCP connection without DISCONNECT (an abnormal end)."""
        sock = self.c.socket()
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        self.c.loop_stop()


def msg_json(m):
    d = {
        "topic": m.topic,
        "payload": m.payload.decode("utf-8", "replace"),
        "qos": m.qos,
        "retain": bool(m.retain),
    }
    p = getattr(m, "properties", None)
    if p is not None:
        for name in ["UserProperty", "ContentType", "ResponseTopic", "CorrelationData",
                     "MessageExpiryInterval", "PayloadFormatIndicator",
                     "SubscriptionIdentifier", "TopicAlias"]:
            if hasattr(p, name):
                v = getattr(p, name)
                if isinstance(v, bytes):
                    v = v.hex()
                d[name] = v
    return d


def done(result):
    print(json.dumps(result), flush=True)


# --- scenarios ---------------------------------------------------------------------------

def classic(port, version):
    v5 = version == "5"
    sub = Client(port, v5=v5)
    sub.sub("baisong", 1)
    pub = Client(port, v5=v5)
    pub.pub("baisong", json.dumps({"pin": 17, "value": 10}), qos=1)
    m = sub.get()
    extra = sub.drain(0.3)
    done({"msg": msg_json(m) if m else None, "extra": len(extra)})


def properties(port):
    sub = Client(port)
    sub.sub("baisong/props", 1)
    pub = Client(port)
    p = Properties(PacketTypes.PUBLISH)
    p.UserProperty = [("pin", "17"), ("unit", "mA"), ("pin", "18")]
    p.ContentType = "application/json"
    p.ResponseTopic = "baisong/reply"
    p.CorrelationData = b"\x01\x02\xff"
    p.MessageExpiryInterval = 60
    p.PayloadFormatIndicator = 1
    pub.pub("baisong/props", json.dumps({"pin": 17, "value": 10}), qos=1, props=p)
    m = sub.get()
    done({"msg": msg_json(m) if m else None})


def expiry(port):
    """A message that expires while queued for an offline session is not delivered."""
    cid = uid("exp")
    cp = Properties(PacketTypes.CONNECT)
    cp.SessionExpiryInterval = 60
    s = Client(port, client_id=cid, props=cp)
    s.sub("exp/t", 1)
    s.close()
    pub = Client(port)
    short = Properties(PacketTypes.PUBLISH)
    short.MessageExpiryInterval = 1
    pub.pub("exp/t", "short-lived", qos=1, props=short)
    long_ = Properties(PacketTypes.PUBLISH)
    long_.MessageExpiryInterval = 100
    pub.pub("exp/t", "long-lived", qos=1, props=long_)
    time.sleep(2.2)
    s = Client(port, client_id=cid, clean=False, props=cp)
    got = [msg_json(m) for m in s.drain(0.8)]
    done({"session_present": bool(s.flags.session_present), "msgs": got})


def sub_ids(port):
    c = Client(port)
    c.sub("ids/+/temp", 1, sub_id=7)
    c.sub("ids/#", 0, sub_id=9)
    c.sub("ids/a/temp", 1)  # no identifier
    pub = Client(port)
    pub.pub("ids/a/temp", "21", qos=1)
    pub.pub("ids/b/hum", "40", qos=1)
    got = [msg_json(m) for m in c.drain(0.6)]
    done({"msgs": got})


def shared(port, version, n):
    v5 = version == "5"
    n = int(n)
    a = Client(port, v5=v5)
    b = Client(port, v5=v5)
    other = Client(port, v5=v5)
    a.sub("$share/g/jobs", 1)
    b.sub("$share/g/jobs", 1)
    other.sub("jobs", 1)  # a normal subscriber gets every message as well
    pub = Client(port, v5=v5)
    for i in range(n):
        pub.pub("jobs", f"job-{i}", qos=1)
    deadline = time.time() + 10
    got_a, got_b, got_o = [], [], []
    while time.time() < deadline and len(got_a) + len(got_b) < n:
        got_a += [m.payload.decode() for m in a.drain(0.05)]
        got_b += [m.payload.decode() for m in b.drain(0.05)]
    got_a += [m.payload.decode() for m in a.drain(0.3)]
    got_b += [m.payload.decode() for m in b.drain(0.3)]
    got_o = [m.payload.decode() for m in other.drain(0.3)]
    done({"a": got_a, "b": got_b, "other": got_o})


def will_child(port, topic, mode):
    """Runs in a subprocess: connects with a will, then waits to be killed or disconnects."""
    c = Client(port, v5=(mode != "clean311"), will=(topic, b"child died", None))
    print("ready", flush=True)
    if mode.startswith("clean"):
        c.close()
        return
    time.sleep(60)


def will(port):
    res = {}
    watcher = Client(port)
    for mode in ["kill", "socket", "clean5", "clean311"]:
        topic = uid("will")
        watcher.sub(topic, 1)
        if mode == "socket":
            c = Client(port, will=(topic, b"child died", None))
            c.abort()
        else:
            child = subprocess.Popen([sys.executable, __file__, "will-child", str(port), topic,
                                      mode], stdout=subprocess.PIPE, text=True)
            line = child.stdout.readline()
            assert line.strip() == "ready", line
            if mode == "kill":
                child.kill()
            child.wait(timeout=WAIT)
        m = watcher.get(2.0)
        res[mode] = msg_json(m) if m else None
    done(res)


def will_delay(port):
    res = {}
    watcher = Client(port)
    # delay 2 s, session lives 10 s: the will is published 2 s after the abnormal close
    topic = uid("wd")
    watcher.sub(topic, 1)
    cp = Properties(PacketTypes.CONNECT)
    cp.SessionExpiryInterval = 10
    wp = Properties(PacketTypes.WILLMESSAGE)
    wp.WillDelayInterval = 2
    t0 = time.time()
    c = Client(port, props=cp, will=(topic, b"delayed", wp))
    c.abort()
    early = watcher.get(1.0)
    late = watcher.get(4.0)
    res["early"] = msg_json(early) if early else None
    res["late"] = msg_json(late) if late else None
    res["after"] = round(time.time() - t0, 2)
    # reconnecting within the delay cancels the will
    topic2 = uid("wd2")
    watcher.sub(topic2, 1)
    cid = uid("wdc")
    c = Client(port, client_id=cid, props=cp, will=(topic2, b"cancelled", wp))
    c.abort()
    time.sleep(0.5)
    c2 = Client(port, client_id=cid, clean=False, props=cp)
    m = watcher.get(3.0)
    res["cancelled"] = msg_json(m) if m else None
    c2.close()
    # the session ending before the delay sends the will then [MQTT-3.1.3-9]
    topic3 = uid("wd3")
    watcher.sub(topic3, 1)
    cp1 = Properties(PacketTypes.CONNECT)
    cp1.SessionExpiryInterval = 1
    wp3 = Properties(PacketTypes.WILLMESSAGE)
    wp3.WillDelayInterval = 30
    c = Client(port, props=cp1, will=(topic3, b"session ended", wp3))
    c.abort()
    m = watcher.get(4.0)
    res["session_end"] = msg_json(m) if m else None
    done(res)


def session_expiry(port):
    cid = uid("se")
    cp = Properties(PacketTypes.CONNECT)
    cp.SessionExpiryInterval = 2
    c = Client(port, client_id=cid, props=cp)
    first_present = bool(c.flags.session_present)
    c.sub("se/t", 1)
    c.close()
    pub = Client(port)
    pub.pub("se/t", "queued", qos=1)
    c = Client(port, client_id=cid, clean=False, props=cp)
    resumed = bool(c.flags.session_present)
    m = c.get(2.0)
    c.close()
    time.sleep(3.5)
    pub.pub("se/t", "after-expiry", qos=1)
    c = Client(port, client_id=cid, clean=False, props=cp)
    expired_present = bool(c.flags.session_present)
    late = c.drain(0.5)
    done({"first_present": first_present, "resumed_present": resumed,
          "queued": msg_json(m) if m else None, "expired_present": expired_present,
          "after_expiry": [msg_json(x) for x in late]})


def no_local(port):
    c = Client(port)
    c.sub("nl/t", 1, noLocal=True)
    c.pub("nl/t", "own", qos=1)
    other = Client(port)
    other.pub("nl/t", "other", qos=1)
    done({"msgs": [msg_json(m) for m in c.drain(0.6)]})


def rap(port):
    keep = Client(port)
    keep.sub("rap/t", 1, retainAsPublished=True)
    plain = Client(port)
    plain.sub("rap/t", 1, retainAsPublished=False)
    pub = Client(port)
    pub.pub("rap/t", "r1", qos=1, retain=True)
    pub.pub("rap/t", "n1", qos=1, retain=False)
    res = {"rap": [msg_json(m) for m in keep.drain(0.5)],
           "plain": [msg_json(m) for m in plain.drain(0.5)]}
    pub.pub("rap/t", b"", qos=1, retain=True)
    done(res)


def retain_handling(port):
    topic = uid("rh")
    pub = Client(port)
    pub.pub(topic, "stored", qos=1, retain=True)
    res = {}
    c = Client(port)
    c.sub(topic, 1, retainHandling=2)
    res["rh2"] = [msg_json(m) for m in c.drain(0.5)]
    c = Client(port)
    c.sub(topic, 1, retainHandling=1)
    first = c.drain(0.5)
    c.sub(topic, 1, retainHandling=1)  # the subscription exists now: not sent again
    again = c.drain(0.5)
    res["rh1_new"] = [msg_json(m) for m in first]
    res["rh1_existing"] = [msg_json(m) for m in again]
    c = Client(port)
    c.sub(topic, 1, retainHandling=0)
    c.sub(topic, 1, retainHandling=0)  # sent on every subscribe
    res["rh0"] = [msg_json(m) for m in c.drain(0.5)]
    pub.pub(topic, b"", qos=1, retain=True)
    done(res)


def topic_alias(port):
    sub = Client(port)
    sub.sub("alias/#", 1)
    pub = Client(port)
    p = Properties(PacketTypes.PUBLISH)
    p.TopicAlias = 3
    pub.pub("alias/long/topic/name", "first", qos=1, props=p)
    pub.pub("", "second", qos=1, props=p)  # the alias alone
    pub.pub("alias/other", "third", qos=1, props=p)  # alias 3 re-mapped
    pub.pub("", "fourth", qos=1, props=p)
    done({"msgs": [msg_json(m) for m in sub.drain(0.6)]})


def connack(port):
    c = Client(port, client_id="")
    p = c.connack_props
    res = {}
    for name in ["AssignedClientIdentifier", "TopicAliasMaximum", "MaximumPacketSize",
                 "ReceiveMaximum", "MaximumQoS", "RetainAvailable", "SessionExpiryInterval",
                 "ServerKeepAlive"]:
        if hasattr(p, name):
            res[name] = getattr(p, name)
    res["client_id"] = c.c._client_id.decode()
    # the assigned id works: a second client gets a different one
    c2 = Client(port, client_id="")
    res["second"] = getattr(c2.connack_props, "AssignedClientIdentifier", None)
    done(res)


SCENARIOS = {
    "classic": classic,
    "properties": properties,
    "expiry": expiry,
    "sub-ids": sub_ids,
    "shared": shared,
    "will": will,
    "will-child": will_child,
    "will-delay": will_delay,
    "session-expiry": session_expiry,
    "no-local": no_local,
    "rap": rap,
    "retain-handling": retain_handling,
    "topic-alias": topic_alias,
    "connack": connack,
}

if __name__ == "__main__":
    name, port, *rest = sys.argv[1:]
    SCENARIOS[name](int(port), *rest)
    os._exit(0)  # do not wait for paho's network threads
