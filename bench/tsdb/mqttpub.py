"""A minimal MQTT 3.1.1 QoS 1 publisher for the benchmark: the packets are built before the
clock starts, then written to one socket with up to WINDOW unacknowledged (PUBACKs are
counted by a reader thread). Python's cost is the kernel's write of pre-built bytes, so the
rate is the broker's, not the client's (see `ceiling` in run.py: the same publisher against
midge without the tsdb rule)."""

import socket
import struct
import threading
import time


def _remaining(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        if n:
            b |= 0x80
        out.append(b)
        if not n:
            return bytes(out)


def _utf8(s):
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def build_publishes(messages, chunk=2000):
    """messages: iterable of (topic, payload bytes). Returns a list of byte chunks, each
    holding up to `chunk` QoS 1 PUBLISH packets, and the number of messages."""
    chunks, cur, n = [], [], 0
    for topic, payload in messages:
        pid = n % 65535 + 1
        var = _utf8(topic) + struct.pack("!H", pid) + payload
        cur.append(b"\x32" + _remaining(len(var)) + var)
        n += 1
        if len(cur) == chunk:
            chunks.append(b"".join(cur))
            cur = []
    if cur:
        chunks.append(b"".join(cur))
    return chunks, n


def _read_exact(s, n):
    buf = b""
    while len(buf) < n:
        d = s.recv(n - len(buf))
        if not d:
            raise ConnectionError("broker closed the connection")
        buf += d
    return buf


def publish(port, chunks, n, client_id="tsdb-bench", window=20000, chunk=2000, timeout=600):
    """Connect (clean session), write the pre-built chunks with at most `window` messages
    unacknowledged, return (seconds from the first byte to the last PUBACK, acks)."""
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    var = _utf8("MQTT") + b"\x04\x02" + struct.pack("!H", 600) + _utf8(client_id)
    s.sendall(b"\x10" + _remaining(len(var)) + var)
    ack = _read_exact(s, 4)
    if ack[0] != 0x20 or ack[3] != 0:
        raise ConnectionError(f"CONNACK refused: {ack!r}")
    state = {"acked": 0, "err": None}
    cond = threading.Condition()

    def reader():
        pending = b""
        try:
            while state["acked"] < n:
                d = s.recv(1 << 16)
                if not d:
                    raise ConnectionError("broker closed the connection")
                pending += d
                k = len(pending) // 4
                # PUBACKs are 4 bytes (0x40 0x02 id id); nothing else is sent to us.
                if k:
                    if any(pending[i * 4] != 0x40 for i in range(min(k, 4))):
                        raise ConnectionError(f"unexpected packet {pending[:8]!r}")
                    pending = pending[k * 4 :]
                    with cond:
                        state["acked"] += k
                        cond.notify_all()
        except Exception as e:  # noqa: BLE001
            with cond:
                state["err"] = e
                cond.notify_all()

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    start = time.perf_counter()
    sent = 0
    deadline = time.monotonic() + timeout
    for c in chunks:
        with cond:
            while sent - state["acked"] > window - chunk and state["err"] is None:
                if not cond.wait(timeout=max(0.0, deadline - time.monotonic())):
                    break
            if state["err"] is not None:
                raise state["err"]
        s.sendall(c)
        sent += min(chunk, n - sent)
    with cond:
        while state["acked"] < n and state["err"] is None:
            if not cond.wait(timeout=max(0.0, deadline - time.monotonic())):
                break
    elapsed = time.perf_counter() - start
    try:
        s.sendall(b"\xe0\x00")
        s.close()
    except OSError:
        pass
    if state["err"] is not None:
        raise state["err"]
    return elapsed, state["acked"]
