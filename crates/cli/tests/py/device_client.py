#!/usr/bin/env python3
"""A device as a paho-mqtt (2.x) MQTT 5 client, for crates/cli/tests/devices_page.rs.

Usage: device_client.py PORT CLIENT_ID USERNAME PASSWORD SUBSCRIBE PUBLISH PAYLOAD EXPIRY

Connects (clean start; session expiry EXPIRY seconds), subscribes to SUBSCRIBE (filters
separated by commas; "-" for none), waits for the line "publish" on stdin to publish PAYLOAD to PUBLISH (QoS 1), and
reports every event as one JSON object a line on stdout: connack, suback, message,
published, disconnect (with the reason code the server sent). After a disconnect it tries
to connect once more and reports that CONNACK ("reconnect"), then exits. Every wait is
bounded.
"""

import json
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

HOST = "127.0.0.1"


def say(**event):
    print(json.dumps(event), flush=True)


def code(rc):
    return rc.value if hasattr(rc, "value") else int(rc)


def client(cid, user, password, expiry):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
    c.username_pw_set(user, password)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = expiry
    return c, props


def main():
    port, cid, user, password, sub, pub, payload, expiry = sys.argv[1:9]
    port, expiry = int(port), int(expiry)
    done = threading.Event()
    c, props = client(cid, user, password, expiry)
    c.on_connect = lambda c_, u, flags, rc, p: say(event="connack", rc=code(rc))
    c.on_subscribe = lambda c_, u, mid, rcs, p: say(event="suback", rcs=[code(r) for r in rcs])
    c.on_message = lambda c_, u, m: say(event="message", topic=m.topic,
                                        payload=m.payload.decode("utf-8", "replace"))
    c.on_publish = lambda c_, u, mid, rc, p: say(event="published", rc=code(rc))

    def on_disconnect(c_, u, flags, rc, p):
        say(event="disconnect", rc=code(rc))
        done.set()

    c.on_disconnect = on_disconnect
    c.connect(HOST, port, keepalive=30, clean_start=True, properties=props)
    c.loop_start()
    if sub != "-":
        c.subscribe([(f, 1) for f in sub.split(",")])

    def commands():
        for line in sys.stdin:
            if line.strip() == "publish":
                c.publish(pub, payload, qos=1)

    threading.Thread(target=commands, daemon=True).start()
    if not done.wait(120):
        say(event="timeout")
        return
    c.loop_stop()
    # the server cut us: may we come back?
    again, props = client(cid, user, password, expiry)
    got = threading.Event()

    def on_connect(c_, u, flags, rc, p):
        say(event="reconnect", rc=code(rc))
        got.set()

    again.on_connect = on_connect
    try:
        again.connect(HOST, port, keepalive=30, clean_start=True, properties=props)
        again.loop_start()
        if not got.wait(15):
            say(event="reconnect", rc=-1)
        again.loop_stop()
    except OSError as e:
        say(event="reconnect", rc=-2, error=str(e))
    time.sleep(0.1)


if __name__ == "__main__":
    main()
