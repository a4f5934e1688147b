// midge page: a small MQTT client over WebSocket for the browser (the MQTT web client page
// and the device test panel). MQTT 3.1.1 and 5.0, QoS 0/1/2 both ways, keep alive, will,
// every read bounds-checked: a malformed packet from the server is an 'error' event and the
// connection is closed. No dependencies, no build step.
//
//   const c = new MqttClient();
//   c.on('event', e => ...)      // {kind, text, time, packet?}: connecting, connack, suback,
//                                // unsuback, puback, pubrec, pubrel, pubcomp, publish,
//                                // ping, pong, disconnect, error, close
//   c.on('message', m => ...)    // {topic, payload: Uint8Array, qos, retain, dup, properties, time}
//   c.on('close', info => ...)   // {code, reason, wasClean, disconnect?: {reasonCode, reason}}
//   await c.connect('ws://host:8083/mqtt', {clientId, username, password, keepAlive: 60,
//                   clean: true, version: 5, sessionExpiry: 0,
//                   will: {topic, payload, qos, retain}})   // resolves with the CONNACK
//   await c.subscribe([{filter: 'a/#', qos: 1}])             // resolves with the SUBACK
//   await c.publish('a/b', 'hello', {qos: 2, retain: false}) // resolves when acknowledged
//   await c.unsubscribe(['a/#']);  c.disconnect();
//
// Also loadable in node (module.exports) for checking the codec without a browser.
(function (root) {
  'use strict';

  const T = {
    CONNECT: 1, CONNACK: 2, PUBLISH: 3, PUBACK: 4, PUBREC: 5, PUBREL: 6, PUBCOMP: 7,
    SUBSCRIBE: 8, SUBACK: 9, UNSUBSCRIBE: 10, UNSUBACK: 11, PINGREQ: 12, PINGRESP: 13,
    DISCONNECT: 14, AUTH: 15,
  };
  const TYPE_NAMES = ['', 'CONNECT', 'CONNACK', 'PUBLISH', 'PUBACK', 'PUBREC', 'PUBREL',
    'PUBCOMP', 'SUBSCRIBE', 'SUBACK', 'UNSUBSCRIBE', 'UNSUBACK', 'PINGREQ', 'PINGRESP',
    'DISCONNECT', 'AUTH'];

  /** A packet that breaks the protocol (from the server, or one we refuse to send). */
  class MqttError extends Error {
    constructor(message, reasonCode) {
      super(message);
      this.name = 'MqttError';
      if (reasonCode !== undefined) this.reasonCode = reasonCode;
    }
  }

  // ---- reason codes ----

  const REASONS = {
    0x00: 'Success', 0x01: 'Granted QoS 1', 0x02: 'Granted QoS 2',
    0x04: 'Disconnect with Will Message', 0x10: 'No matching subscribers',
    0x11: 'No subscription existed', 0x18: 'Continue authentication', 0x19: 'Re-authenticate',
    0x80: 'Unspecified error', 0x81: 'Malformed Packet', 0x82: 'Protocol Error',
    0x83: 'Implementation specific error', 0x84: 'Unsupported Protocol Version',
    0x85: 'Client Identifier not valid', 0x86: 'Bad User Name or Password',
    0x87: 'Not authorized', 0x88: 'Server unavailable', 0x89: 'Server busy', 0x8A: 'Banned',
    0x8B: 'Server shutting down', 0x8C: 'Bad authentication method',
    0x8D: 'Keep Alive timeout', 0x8E: 'Session taken over', 0x8F: 'Topic Filter invalid',
    0x90: 'Topic Name invalid', 0x91: 'Packet Identifier in use',
    0x92: 'Packet Identifier not found', 0x93: 'Receive Maximum exceeded',
    0x94: 'Topic Alias invalid', 0x95: 'Packet too large', 0x96: 'Message rate too high',
    0x97: 'Quota exceeded', 0x98: 'Administrative action', 0x99: 'Payload format invalid',
    0x9A: 'Retain not supported', 0x9B: 'QoS not supported', 0x9C: 'Use another server',
    0x9D: 'Server moved', 0x9E: 'Shared Subscriptions not supported',
    0x9F: 'Connection rate exceeded', 0xA0: 'Maximum connect time',
    0xA1: 'Subscription Identifiers not supported',
    0xA2: 'Wildcard Subscriptions not supported',
  };
  const CONNACK_V3 = ['Connection Accepted', 'Unacceptable protocol version',
    'Identifier rejected', 'Server unavailable', 'Bad user name or password', 'Not authorized'];

  function hex2(n) { return '0x' + n.toString(16).toUpperCase().padStart(2, '0'); }

  /** "0x86 Bad User Name or Password" for a reason code of `type` ('connack', 'suback'...). */
  function reasonText(code, version, type) {
    if (version !== 5) {
      if (type === 'connack') return hex2(code) + ' ' + (CONNACK_V3[code] || 'unknown return code');
      if (type === 'suback') return code === 0x80 ? '0x80 Failure' : hex2(code) + ' Granted QoS ' + code;
    }
    let name = REASONS[code];
    if (code === 0 && type === 'suback') name = 'Granted QoS 0';
    if (code === 0 && type === 'disconnect') name = 'Normal disconnection';
    return hex2(code) + ' ' + (name || 'unknown reason code');
  }

  // ---- bytes ----

  const utf8enc = new TextEncoder();

  function utf8Decode(bytes, what) {
    let s;
    try { s = new TextDecoder('utf-8', { fatal: true }).decode(bytes); } catch (e) {
      throw new MqttError(what + ' is not valid UTF-8');
    }
    if (s.indexOf('\u0000') >= 0) throw new MqttError(what + ' contains U+0000');
    return s;
  }

  function toBytes(payload) {
    if (payload === undefined || payload === null) return new Uint8Array(0);
    if (payload instanceof Uint8Array) return payload;
    if (payload instanceof ArrayBuffer) return new Uint8Array(payload);
    if (ArrayBuffer.isView(payload)) return new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength);
    return utf8enc.encode(String(payload));
  }

  /** Builds a packet body. */
  class Writer {
    constructor() { this.parts = []; this.length = 0; }
    raw(bytes) { this.parts.push(bytes); this.length += bytes.length; return this; }
    u8(n) { return this.raw(Uint8Array.of(n & 0xff)); }
    u16(n) {
      if (!(Number.isInteger(n) && n >= 0 && n <= 0xffff)) throw new MqttError('not a 16-bit number: ' + n);
      return this.raw(Uint8Array.of(n >> 8, n & 0xff));
    }
    u32(n) {
      if (!(Number.isInteger(n) && n >= 0 && n <= 0xffffffff)) throw new MqttError('not a 32-bit number: ' + n);
      return this.raw(Uint8Array.of(n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff));
    }
    varint(n) { return this.raw(encodeVarint(n)); }
    bin(bytes, what) {
      bytes = toBytes(bytes);
      if (bytes.length > 0xffff) throw new MqttError((what || 'binary data') + ' is longer than 65535 bytes');
      return this.u16(bytes.length).raw(bytes);
    }
    str(s, what) {
      s = String(s);
      if (s.indexOf('\u0000') >= 0) throw new MqttError((what || 'a string') + ' must not contain U+0000');
      return this.bin(utf8enc.encode(s), what);
    }
    bytes() {
      const out = new Uint8Array(this.length);
      let at = 0;
      for (const p of this.parts) { out.set(p, at); at += p.length; }
      return out;
    }
  }

  const MAX_VARINT = 268435455;

  function encodeVarint(n) {
    if (!(Number.isInteger(n) && n >= 0 && n <= MAX_VARINT)) throw new MqttError('variable byte integer out of range: ' + n);
    const out = [];
    do {
      let b = n % 128;
      n = Math.floor(n / 128);
      if (n > 0) b |= 0x80;
      out.push(b);
    } while (n > 0);
    return Uint8Array.from(out);
  }

  /** Reads a packet body; every read checks the bounds (a short packet is malformed). */
  class Reader {
    constructor(bytes, what) { this.b = bytes; this.at = 0; this.what = what; }
    get left() { return this.b.length - this.at; }
    need(n, field) {
      if (this.left < n) throw new MqttError('malformed ' + this.what + ': ' + field + ' runs past the end of the packet');
    }
    u8(field) { this.need(1, field || 'a byte'); return this.b[this.at++]; }
    u16(field) { this.need(2, field || 'a 16-bit number'); const v = (this.b[this.at] << 8) | this.b[this.at + 1]; this.at += 2; return v; }
    u32(field) {
      this.need(4, field || 'a 32-bit number');
      const b = this.b, i = this.at;
      this.at += 4;
      return ((b[i] << 24) >>> 0) + (b[i + 1] << 16) + (b[i + 2] << 8) + b[i + 3];
    }
    varint(field) {
      let n = 0, mult = 1;
      for (let i = 0; i < 4; i++) {
        const b = this.u8(field || 'a variable byte integer');
        n += (b & 0x7f) * mult;
        if (!(b & 0x80)) return n;
        mult *= 128;
      }
      throw new MqttError('malformed ' + this.what + ': ' + (field || 'variable byte integer') + ' longer than 4 bytes');
    }
    bin(field) { const n = this.u16(field); this.need(n, field); const v = this.b.subarray(this.at, this.at + n); this.at += n; return v; }
    str(field) { return utf8Decode(this.bin(field), this.what + ' ' + (field || 'string')); }
    rest() { const v = this.b.subarray(this.at); this.at = this.b.length; return v; }
    end() { if (this.left) throw new MqttError('malformed ' + this.what + ': ' + this.left + ' unexpected bytes at the end'); }
  }

  // ---- MQTT 5 properties ----

  // id: [name, type]; types: byte, u16, u32, varint, str, bin, pair
  const PROPS = {
    0x01: ['payloadFormatIndicator', 'byte'], 0x02: ['messageExpiryInterval', 'u32'],
    0x03: ['contentType', 'str'], 0x08: ['responseTopic', 'str'], 0x09: ['correlationData', 'bin'],
    0x0B: ['subscriptionIdentifier', 'varint'], 0x11: ['sessionExpiryInterval', 'u32'],
    0x12: ['assignedClientIdentifier', 'str'], 0x13: ['serverKeepAlive', 'u16'],
    0x15: ['authenticationMethod', 'str'], 0x16: ['authenticationData', 'bin'],
    0x17: ['requestProblemInformation', 'byte'], 0x18: ['willDelayInterval', 'u32'],
    0x19: ['requestResponseInformation', 'byte'], 0x1A: ['responseInformation', 'str'],
    0x1C: ['serverReference', 'str'], 0x1F: ['reasonString', 'str'],
    0x21: ['receiveMaximum', 'u16'], 0x22: ['topicAliasMaximum', 'u16'], 0x23: ['topicAlias', 'u16'],
    0x24: ['maximumQoS', 'byte'], 0x25: ['retainAvailable', 'byte'], 0x26: ['userProperties', 'pair'],
    0x27: ['maximumPacketSize', 'u32'], 0x28: ['wildcardSubscriptionAvailable', 'byte'],
    0x29: ['subscriptionIdentifierAvailable', 'byte'], 0x2A: ['sharedSubscriptionAvailable', 'byte'],
  };
  const PROP_IDS = {};
  for (const id of Object.keys(PROPS)) PROP_IDS[PROPS[id][0]] = [Number(id), PROPS[id][1]];

  function encodeProps(props) {
    const w = new Writer();
    for (const name of Object.keys(props || {})) {
      const v = props[name];
      if (v === undefined || v === null) continue;
      const def = PROP_IDS[name];
      if (!def) throw new MqttError('unknown MQTT 5 property ' + name);
      const [id, type] = def;
      if (type === 'pair') {
        for (const [k, val] of v) w.u8(id).str(k, 'user property').str(val, 'user property');
        continue;
      }
      w.u8(id);
      if (type === 'byte') w.u8(v);
      else if (type === 'u16') w.u16(v);
      else if (type === 'u32') w.u32(v);
      else if (type === 'varint') w.varint(v);
      else if (type === 'str') w.str(v, name);
      else w.bin(v, name);
    }
    const body = w.bytes();
    return new Writer().varint(body.length).raw(body).bytes();
  }

  function decodeProps(r) {
    const len = r.varint('property length');
    r.need(len, 'properties');
    const sub = new Reader(r.b.subarray(r.at, r.at + len), r.what + ' properties');
    r.at += len;
    const props = {};
    while (sub.left) {
      const id = sub.varint('property id');
      const def = PROPS[id];
      if (!def) throw new MqttError('malformed ' + r.what + ': unknown property ' + hex2(id));
      const [name, type] = def;
      let v;
      if (type === 'pair') {
        v = [sub.str('user property name'), sub.str('user property value')];
        (props.userProperties = props.userProperties || []).push(v);
        continue;
      }
      if (type === 'byte') v = sub.u8(name);
      else if (type === 'u16') v = sub.u16(name);
      else if (type === 'u32') v = sub.u32(name);
      else if (type === 'varint') v = sub.varint(name);
      else if (type === 'str') v = sub.str(name);
      else v = sub.bin(name);
      if (name === 'subscriptionIdentifier') {
        (props.subscriptionIdentifier = props.subscriptionIdentifier || []).push(v);
      } else if (name in props) {
        throw new MqttError('malformed ' + r.what + ': property ' + name + ' appears twice');
      } else {
        props[name] = v;
      }
    }
    return props;
  }

  // ---- encoders (client to server) ----

  function packet(first, body) {
    return new Writer().u8(first).varint(body.length).raw(body).bytes();
  }

  /** Checks a topic name we publish to: UTF-8, no wildcards, not empty. */
  function checkTopic(topic) {
    if (typeof topic !== 'string' || topic === '') throw new MqttError('the topic is empty');
    if (/[+#]/.test(topic)) throw new MqttError('a topic to publish to cannot contain + or #');
    if (utf8enc.encode(topic).length > 0xffff) throw new MqttError('the topic is longer than 65535 bytes');
  }

  /** Checks a topic filter: + and # fill a whole level, # only last. */
  function checkFilter(filter) {
    if (typeof filter !== 'string' || filter === '') throw new MqttError('the topic filter is empty');
    const levels = filter.split('/');
    levels.forEach((l, i) => {
      if (l.includes('#') && (l !== '#' || i !== levels.length - 1)) {
        throw new MqttError('invalid filter ' + JSON.stringify(filter) + ': # must be the last level, alone');
      }
      if (l.includes('+') && l !== '+') {
        throw new MqttError('invalid filter ' + JSON.stringify(filter) + ': + must fill a whole level');
      }
    });
  }

  function encodeConnect(o) {
    const v5 = o.version === 5;
    const w = new Writer().str('MQTT').u8(v5 ? 5 : 4);
    let flags = 0;
    const hasUser = o.username !== undefined && o.username !== null && o.username !== '';
    const hasPass = o.password !== undefined && o.password !== null && o.password !== '';
    if (hasPass && !hasUser && !v5) throw new MqttError('MQTT 3.1.1 needs a username to send a password');
    if (hasUser) flags |= 0x80;
    if (hasPass) flags |= 0x40;
    const will = o.will && o.will.topic ? o.will : null;
    if (will) {
      checkTopic(will.topic);
      const q = will.qos || 0;
      if (![0, 1, 2].includes(q)) throw new MqttError('will QoS must be 0, 1 or 2');
      flags |= 0x04 | (q << 3) | (will.retain ? 0x20 : 0);
    }
    if (o.clean) flags |= 0x02;
    w.u8(flags).u16(o.keepAlive || 0);
    if (v5) w.raw(encodeProps(o.properties || {}));
    w.str(o.clientId || '', 'client id');
    if (will) {
      if (v5) w.raw(encodeProps(will.properties || {}));
      w.str(will.topic, 'will topic').bin(toBytes(will.payload), 'will message');
    }
    if (hasUser) w.str(o.username, 'username');
    if (hasPass) w.bin(toBytes(o.password), 'password');
    return packet(T.CONNECT << 4, w.bytes());
  }

  function encodePublish(p, version) {
    checkTopic(p.topic);
    const qos = p.qos || 0;
    if (![0, 1, 2].includes(qos)) throw new MqttError('QoS must be 0, 1 or 2');
    const w = new Writer().str(p.topic, 'topic');
    if (qos) w.u16(p.packetId);
    if (version === 5) w.raw(encodeProps(p.properties || {}));
    w.raw(toBytes(p.payload));
    const first = (T.PUBLISH << 4) | (p.dup ? 8 : 0) | (qos << 1) | (p.retain ? 1 : 0);
    return packet(first, w.bytes());
  }

  /** PUBACK, PUBREC, PUBREL or PUBCOMP (reason code 0 is left out, as the spec allows). */
  function encodeAck(type, packetId, reasonCode, version) {
    const w = new Writer().u16(packetId);
    if (version === 5 && reasonCode) w.u8(reasonCode);
    return packet((type << 4) | (type === T.PUBREL ? 2 : 0), w.bytes());
  }

  function encodeSubscribe(packetId, subs, version) {
    const w = new Writer().u16(packetId);
    if (version === 5) w.raw(encodeProps({}));
    if (!subs.length) throw new MqttError('nothing to subscribe to');
    for (const s of subs) {
      checkFilter(s.filter);
      const q = s.qos || 0;
      if (![0, 1, 2].includes(q)) throw new MqttError('QoS must be 0, 1 or 2');
      let opts = q;
      if (version === 5) opts |= (s.noLocal ? 4 : 0) | (s.retainAsPublished ? 8 : 0) | ((s.retainHandling || 0) << 4);
      w.str(s.filter, 'topic filter').u8(opts);
    }
    return packet((T.SUBSCRIBE << 4) | 2, w.bytes());
  }

  function encodeUnsubscribe(packetId, filters, version) {
    const w = new Writer().u16(packetId);
    if (version === 5) w.raw(encodeProps({}));
    if (!filters.length) throw new MqttError('nothing to unsubscribe from');
    for (const f of filters) w.str(f, 'topic filter');
    return packet((T.UNSUBSCRIBE << 4) | 2, w.bytes());
  }

  function encodeDisconnect(reasonCode, props, version) {
    if (version !== 5) return Uint8Array.of(0xE0, 0);
    const w = new Writer();
    if (reasonCode || (props && Object.keys(props).length)) {
      w.u8(reasonCode || 0);
      if (props && Object.keys(props).length) w.raw(encodeProps(props));
    }
    return packet(T.DISCONNECT << 4, w.bytes());
  }

  // ---- decoder (server to client) ----

  /** One packet from its first byte and body: {type, name, ...fields}. */
  function decode(first, body, version) {
    const type = first >> 4, flags = first & 0x0f;
    const name = TYPE_NAMES[type] || 'packet type 0';
    const v5 = version === 5;
    const r = new Reader(body, name);
    const p = { type, name };
    if (type !== T.PUBLISH && flags !== (type === T.PUBREL ? 2 : 0)) {
      throw new MqttError('malformed ' + name + ': reserved flags ' + flags);
    }
    switch (type) {
      case T.CONNACK: {
        const ack = r.u8('acknowledge flags');
        if (ack & 0xfe) throw new MqttError('malformed CONNACK: reserved acknowledge flags');
        p.sessionPresent = !!(ack & 1);
        p.reasonCode = r.u8('reason code');
        p.properties = v5 ? decodeProps(r) : {};
        r.end();
        break;
      }
      case T.PUBLISH: {
        p.qos = (flags >> 1) & 3;
        if (p.qos === 3) throw new MqttError('malformed PUBLISH: QoS 3');
        p.dup = !!(flags & 8);
        p.retain = !!(flags & 1);
        p.topic = r.str('topic');
        if (p.qos) {
          p.packetId = r.u16('packet identifier');
          if (!p.packetId) throw new MqttError('malformed PUBLISH: packet identifier 0');
        }
        p.properties = v5 ? decodeProps(r) : {};
        if (p.properties.topicAlias !== undefined) {
          throw new MqttError('PUBLISH with a topic alias, which this client did not allow (Topic Alias Maximum 0)', 0x94);
        }
        if (p.topic === '') throw new MqttError('malformed PUBLISH: empty topic');
        if (/[+#]/.test(p.topic)) throw new MqttError('malformed PUBLISH: wildcard in the topic ' + JSON.stringify(p.topic));
        p.payload = r.rest().slice();
        break;
      }
      case T.PUBACK: case T.PUBREC: case T.PUBREL: case T.PUBCOMP: {
        p.packetId = r.u16('packet identifier');
        p.reasonCode = 0;
        p.properties = {};
        if (v5 && r.left) {
          p.reasonCode = r.u8('reason code');
          if (r.left) p.properties = decodeProps(r);
        }
        r.end();
        break;
      }
      case T.SUBACK: case T.UNSUBACK: {
        p.packetId = r.u16('packet identifier');
        p.properties = v5 ? decodeProps(r) : {};
        p.reasonCodes = Array.from(r.rest());
        if (type === T.SUBACK && !p.reasonCodes.length) throw new MqttError('malformed SUBACK: no return codes');
        if (type === T.UNSUBACK && !v5 && p.reasonCodes.length) throw new MqttError('malformed UNSUBACK: unexpected bytes');
        break;
      }
      case T.PINGRESP:
        r.end();
        break;
      case T.DISCONNECT:
        if (!v5) throw new MqttError('protocol error: an MQTT 3.1.1 server sent DISCONNECT');
        p.reasonCode = r.left ? r.u8('reason code') : 0;
        p.properties = r.left ? decodeProps(r) : {};
        r.end();
        break;
      case T.AUTH:
        if (!v5) throw new MqttError('protocol error: AUTH in MQTT 3.1.1');
        p.reasonCode = r.left ? r.u8('reason code') : 0;
        p.properties = r.left ? decodeProps(r) : {};
        r.end();
        break;
      default:
        throw new MqttError('protocol error: the server sent ' + name);
    }
    return p;
  }

  /** Splits a byte stream into packets (WebSocket messages need not align with packets). */
  class Parser {
    constructor(maxPacket) { this.buf = new Uint8Array(0); this.max = maxPacket || MAX_VARINT; }
    /** Adds bytes; returns the [first byte, body] of every whole packet now buffered. */
    push(bytes) {
      if (this.buf.length) {
        const b = new Uint8Array(this.buf.length + bytes.length);
        b.set(this.buf);
        b.set(bytes, this.buf.length);
        this.buf = b;
      } else {
        this.buf = bytes;
      }
      const out = [];
      for (;;) {
        const b = this.buf;
        if (b.length < 2) break;
        let len = 0, mult = 1, i = 1, complete = false;
        for (; i < 5 && i < b.length; i++) {
          len += (b[i] & 0x7f) * mult;
          mult *= 128;
          if (!(b[i] & 0x80)) { complete = true; i++; break; }
        }
        if (!complete) {
          if (i >= 5) throw new MqttError('malformed packet: remaining length longer than 4 bytes');
          break;
        }
        if (i + len > this.max) throw new MqttError('packet of ' + (i + len) + ' bytes is larger than the ' + this.max + ' this client accepts', 0x95);
        if (b.length < i + len) break;
        out.push([b[0], b.subarray(i, i + len)]);
        this.buf = b.subarray(i + len);
      }
      if (!this.buf.length) this.buf = new Uint8Array(0);
      return out;
    }
  }

  // ---- the client ----

  /** Largest packet we accept (announced to MQTT 5 servers). */
  const MAX_PACKET = 16 * 1024 * 1024;

  class MqttClient {
    constructor() {
      this.handlers = {};
      this.state = 'disconnected';
      this.ws = null;
      this.version = 5;
    }

    /** Adds a listener: 'event', 'message', 'close', 'connect'. */
    on(name, fn) { (this.handlers[name] = this.handlers[name] || []).push(fn); return this; }
    off(name, fn) { this.handlers[name] = (this.handlers[name] || []).filter((f) => f !== fn); return this; }
    emit(name, arg) {
      for (const fn of this.handlers[name] || []) {
        try { fn(arg); } catch (e) { if (typeof console !== 'undefined') console.error(e); }
      }
    }
    event(kind, text, packet) { this.emit('event', { kind, text, time: new Date(), packet }); }

    get connected() { return this.state === 'connected'; }

    /** Opens the WebSocket and sends CONNECT; resolves with the CONNACK when accepted. */
    connect(url, opts) {
      if (this.ws) return Promise.reject(new MqttError('already connected or connecting'));
      opts = Object.assign({ keepAlive: 60, clean: true, version: 5 }, opts || {});
      const version = opts.version === 4 || opts.version === '3.1.1' || opts.version === '4' ? 4 : 5;
      this.version = version;
      const keepAlive = Number(opts.keepAlive) || 0;
      if (!(Number.isInteger(keepAlive) && keepAlive >= 0 && keepAlive <= 65535)) {
        return Promise.reject(new MqttError('keep alive must be 0 to 65535 seconds'));
      }
      const properties = {};
      if (version === 5) {
        if (opts.sessionExpiry) properties.sessionExpiryInterval = Number(opts.sessionExpiry);
        properties.maximumPacketSize = MAX_PACKET;
        properties.receiveMaximum = 65535;
        Object.assign(properties, opts.properties || {});
      }
      let connectBytes;
      try {
        connectBytes = encodeConnect({
          version, clientId: opts.clientId, username: opts.username, password: opts.password,
          keepAlive, clean: !!opts.clean, will: opts.will, properties,
        });
      } catch (e) {
        return Promise.reject(e);
      }
      this.keepAlive = keepAlive;
      this.parser = new Parser(MAX_PACKET);
      this.nextId = 1;
      this.pending = new Map(); // packet id -> {kind, resolve, reject, ...}
      this.inboundQos2 = new Set(); // packet ids received (PUBREC sent), PUBREL awaited
      this.queue = []; // QoS > 0 publishes waiting for the server's Receive Maximum
      this.inflight = 0;
      this.server = { receiveMaximum: 65535, maximumQoS: 2, retainAvailable: true, maximumPacketSize: MAX_VARINT };
      this.serverDisconnect = null;
      this.closeError = null;
      this.dropped = false;
      this.state = 'connecting';
      const what = (version === 5 ? 'MQTT 5.0' : 'MQTT 3.1.1');
      this.event('connecting', 'connecting to ' + url + ' (' + what + ', client id ' +
        (opts.clientId ? JSON.stringify(opts.clientId) : '"" (the server assigns one)') + ')');
      return new Promise((resolve, reject) => {
        this.connectWaiter = { resolve, reject };
        let ws;
        try {
          ws = new WebSocket(url, 'mqtt');
        } catch (e) {
          this.state = 'disconnected';
          this.connectWaiter = null;
          this.event('error', 'cannot open ' + url + ': ' + e.message);
          reject(e);
          return;
        }
        this.ws = ws;
        this.url = url;
        ws.binaryType = 'arraybuffer';
        const timeout = opts.connectTimeout || 10000;
        this.connectTimer = setTimeout(() => {
          this.fail(new MqttError('no CONNACK within ' + timeout / 1000 + ' s'));
        }, timeout);
        ws.onopen = () => {
          if (this.ws !== ws) return;
          this.event('open', 'WebSocket open (subprotocol ' + (ws.protocol || 'none') + '); CONNECT sent');
          this.send(connectBytes);
        };
        ws.onmessage = (m) => {
          if (this.ws !== ws) return;
          if (typeof m.data === 'string') {
            this.fail(new MqttError('the server sent a text WebSocket message (MQTT uses binary ones)'));
            return;
          }
          let packets;
          try {
            packets = this.parser.push(new Uint8Array(m.data));
            for (const [first, body] of packets) {
              this.handle(decode(first, body, this.version));
              if (this.ws !== ws) return;
            }
          } catch (e) {
            this.fail(e instanceof MqttError ? e : new MqttError(String(e && e.message || e)));
          }
        };
        ws.onerror = () => {
          if (this.ws !== ws) return;
          if (this.state === 'connecting' && !this.closeError) {
            this.closeError = new MqttError('WebSocket error: cannot reach ' + url +
              ' (is a WebSocket listener running there? for wss://, does this browser trust its certificate?)');
          }
        };
        ws.onclose = (ev) => {
          if (this.ws !== ws) return;
          this.closed(ev.code, ev.reason, ev.wasClean);
        };
      });
    }

    send(bytes) {
      if (!this.ws || this.ws.readyState !== 1) throw new MqttError('not connected');
      if (bytes.length > this.server.maximumPacketSize) {
        throw new MqttError('packet of ' + bytes.length + ' bytes is larger than the server accepts (' + this.server.maximumPacketSize + ')');
      }
      this.ws.send(bytes);
      this.armKeepAlive();
    }

    /** PINGREQ after keepAlive seconds without sending; the connection is dead if no PINGRESP follows. */
    armKeepAlive() {
      clearTimeout(this.kaTimer);
      if (!this.keepAlive || this.state === 'disconnected') return;
      this.kaTimer = setTimeout(() => this.ping(), this.keepAlive * 1000);
    }

    /** Sends PINGREQ now (also runs on the keep-alive timer). */
    ping() {
      if (this.state !== 'connected') return;
      try { this.send(Uint8Array.of(0xC0, 0)); } catch (e) { return; }
      this.event('ping', 'PINGREQ sent');
      if (!this.pongTimer) {
        const wait = Math.max(5, this.keepAlive || 10) * 1000;
        this.pongTimer = setTimeout(() => {
          this.pongTimer = null;
          this.fail(new MqttError('no PINGRESP within ' + wait / 1000 + ' s: the connection is lost'));
        }, wait);
      }
    }

    id() {
      for (let i = 0; i < 65535; i++) {
        const id = this.nextId;
        this.nextId = this.nextId === 65535 ? 1 : this.nextId + 1;
        if (!this.pending.has(id)) return id;
      }
      throw new MqttError('65535 packets in flight: no packet identifier free');
    }

    handle(p) {
      const v = this.version;
      switch (p.type) {
        case T.CONNACK: {
          if (this.state !== 'connecting') throw new MqttError('protocol error: a second CONNACK');
          clearTimeout(this.connectTimer);
          const text = 'CONNACK ' + reasonText(p.reasonCode, v, 'connack') +
            (p.reasonCode === 0 ? (p.sessionPresent ? ' (session present)' : ' (new session)') : '') +
            (p.properties.reasonString ? ': ' + p.properties.reasonString : '');
          const w = this.connectWaiter;
          this.connectWaiter = null;
          if (p.reasonCode !== 0) {
            this.event('connack', text + ' — refused', p);
            const err = new MqttError('connection refused: ' + reasonText(p.reasonCode, v, 'connack'), p.reasonCode);
            this.closeError = err;
            if (w) w.reject(err);
            this.ws.close();
            return;
          }
          const pr = p.properties;
          if (pr.receiveMaximum) this.server.receiveMaximum = pr.receiveMaximum;
          if (pr.maximumQoS !== undefined) this.server.maximumQoS = pr.maximumQoS;
          if (pr.retainAvailable !== undefined) this.server.retainAvailable = !!pr.retainAvailable;
          if (pr.maximumPacketSize) this.server.maximumPacketSize = pr.maximumPacketSize;
          if (pr.serverKeepAlive !== undefined) this.keepAlive = pr.serverKeepAlive;
          this.assignedClientId = pr.assignedClientIdentifier;
          this.state = 'connected';
          const extra = [];
          if (pr.assignedClientIdentifier) extra.push('assigned client id ' + pr.assignedClientIdentifier);
          if (pr.serverKeepAlive !== undefined) extra.push('server keep alive ' + pr.serverKeepAlive + ' s');
          if (pr.maximumQoS !== undefined) extra.push('maximum QoS ' + pr.maximumQoS);
          if (pr.retainAvailable === 0) extra.push('retain not available');
          this.event('connack', text + (extra.length ? '; ' + extra.join(', ') : ''), p);
          this.armKeepAlive();
          this.emit('connect', p);
          if (w) w.resolve(p);
          return;
        }
        case T.PUBLISH: {
          if (this.state !== 'connected') throw new MqttError('protocol error: PUBLISH before CONNACK');
          const m = {
            topic: p.topic, payload: p.payload, qos: p.qos, retain: p.retain, dup: p.dup,
            properties: p.properties, packetId: p.packetId, time: new Date(),
          };
          if (p.qos === 2) {
            // deliver once: a resent PUBLISH (same id, PUBREL not yet seen) is not a new message
            const seen = this.inboundQos2.has(p.packetId);
            this.inboundQos2.add(p.packetId);
            if (!seen) this.emit('message', m);
            this.send(encodeAck(T.PUBREC, p.packetId, 0, v));
          } else {
            this.emit('message', m);
            if (p.qos === 1) this.send(encodeAck(T.PUBACK, p.packetId, 0, v));
          }
          return;
        }
        case T.PUBACK: case T.PUBREC: case T.PUBCOMP: {
          const w = this.pending.get(p.packetId);
          const expect = p.type === T.PUBACK ? 'puback' : p.type === T.PUBREC ? 'pubrec' : 'pubcomp';
          if (!w || w.kind !== expect) {
            if (p.type === T.PUBREC) {
              // not ours (any more): answer so the server can finish (0x92 in MQTT 5)
              this.send(encodeAck(T.PUBREL, p.packetId, v === 5 ? 0x92 : 0, v));
            }
            this.event('error', p.name + ' for packet ' + p.packetId + ', which is not in flight (ignored)', p);
            return;
          }
          const rs = p.properties.reasonString ? ': ' + p.properties.reasonString : '';
          const text = p.name + ' ' + p.packetId + ' ' + reasonText(p.reasonCode, v, 'puback') + rs + ' (' + w.topic + ')';
          this.event(expect, text, p);
          if (p.type === T.PUBREC && p.reasonCode < 0x80) {
            w.kind = 'pubcomp';
            this.send(encodeAck(T.PUBREL, p.packetId, 0, v));
            this.event('pubrel', 'PUBREL ' + p.packetId + ' sent', p);
            return;
          }
          this.pending.delete(p.packetId);
          this.inflight--;
          if (p.reasonCode >= 0x80) {
            w.reject(new MqttError('publish to ' + w.topic + ' refused: ' + reasonText(p.reasonCode, v, 'puback') + rs, p.reasonCode));
          } else {
            w.resolve({ packetId: p.packetId, reasonCode: p.reasonCode });
          }
          this.drain();
          return;
        }
        case T.PUBREL: {
          this.inboundQos2.delete(p.packetId);
          this.send(encodeAck(T.PUBCOMP, p.packetId, 0, v));
          return;
        }
        case T.SUBACK: case T.UNSUBACK: {
          const w = this.pending.get(p.packetId);
          const kind = p.type === T.SUBACK ? 'suback' : 'unsuback';
          if (!w || w.kind !== kind) throw new MqttError('protocol error: ' + p.name + ' for packet ' + p.packetId + ', which is not in flight');
          this.pending.delete(p.packetId);
          if (p.type === T.SUBACK && p.reasonCodes.length !== w.filters.length) {
            throw new MqttError('malformed SUBACK: ' + p.reasonCodes.length + ' return codes for ' + w.filters.length + ' filters');
          }
          const rs = p.properties.reasonString ? ' (' + p.properties.reasonString + ')' : '';
          const results = w.filters.map((f, i) => {
            const code = p.reasonCodes[i] === undefined ? 0 : p.reasonCodes[i];
            return { filter: f, reasonCode: code, granted: kind === 'suback' && code < 0x80 ? code : null, ok: code < 0x80 };
          });
          const text = p.name + ' ' + results.map((x) => x.filter + ': ' + reasonText(x.reasonCode, v, kind === 'suback' ? 'suback' : 'unsuback') + (x.ok ? '' : ' — refused')).join('; ') + rs;
          this.event(kind, text, p);
          w.resolve(results);
          return;
        }
        case T.PINGRESP:
          clearTimeout(this.pongTimer);
          this.pongTimer = null;
          this.event('pong', 'PINGRESP received');
          return;
        case T.DISCONNECT: {
          const rs = p.properties.reasonString ? ': ' + p.properties.reasonString : '';
          this.serverDisconnect = { reasonCode: p.reasonCode, reason: reasonText(p.reasonCode, v, 'disconnect') + rs };
          this.event('disconnect', 'DISCONNECT from the server ' + this.serverDisconnect.reason +
            (p.properties.serverReference ? ' (use ' + p.properties.serverReference + ')' : ''), p);
          this.ws.close();
          return;
        }
        case T.AUTH:
          throw new MqttError('AUTH from the server: this client does not do enhanced authentication');
        default:
          throw new MqttError('protocol error: unexpected ' + p.name);
      }
    }

    /** Subscribes; resolves with [{filter, reasonCode, granted, ok}] from the SUBACK. */
    subscribe(subs, opts) {
      if (typeof subs === 'string') subs = [Object.assign({ filter: subs }, opts || {})];
      if (!this.connected) return Promise.reject(new MqttError('not connected'));
      return new Promise((resolve, reject) => {
        const id = this.id();
        const bytes = encodeSubscribe(id, subs, this.version);
        this.pending.set(id, { kind: 'suback', filters: subs.map((s) => s.filter), resolve, reject });
        this.send(bytes);
        this.event('subscribe', 'SUBSCRIBE ' + subs.map((s) => s.filter + ' (QoS ' + (s.qos || 0) + ')').join(', '));
      });
    }

    /** Unsubscribes; resolves with [{filter, reasonCode, ok}] from the UNSUBACK. */
    unsubscribe(filters) {
      if (typeof filters === 'string') filters = [filters];
      if (!this.connected) return Promise.reject(new MqttError('not connected'));
      return new Promise((resolve, reject) => {
        const id = this.id();
        const bytes = encodeUnsubscribe(id, filters, this.version);
        this.pending.set(id, { kind: 'unsuback', filters, resolve, reject });
        this.send(bytes);
        this.event('unsubscribe', 'UNSUBSCRIBE ' + filters.join(', '));
      });
    }

    /** Publishes; resolves when sent (QoS 0), at PUBACK (QoS 1) or PUBCOMP (QoS 2). */
    publish(topic, payload, opts) {
      opts = opts || {};
      const qos = Number(opts.qos) || 0;
      if (!this.connected) return Promise.reject(new MqttError('not connected'));
      try {
        checkTopic(topic);
        if (qos > this.server.maximumQoS) throw new MqttError('the server accepts QoS ' + this.server.maximumQoS + ' at most', 0x9B);
        if (opts.retain && !this.server.retainAvailable) throw new MqttError('the server does not keep retained messages', 0x9A);
      } catch (e) {
        return Promise.reject(e);
      }
      const msg = { topic, payload: toBytes(payload), qos, retain: !!opts.retain, properties: opts.properties };
      if (qos === 0) {
        try {
          this.send(encodePublish(msg, this.version));
        } catch (e) {
          return Promise.reject(e);
        }
        this.event('publish', 'PUBLISH ' + topic + ' (QoS 0' + (msg.retain ? ', retained' : '') + ', ' + msg.payload.length + ' bytes) sent');
        return Promise.resolve({});
      }
      return new Promise((resolve, reject) => {
        this.queue.push({ msg, resolve, reject });
        this.drain();
      });
    }

    /** Sends queued QoS 1/2 publishes while the server's Receive Maximum allows. */
    drain() {
      while (this.queue.length && this.inflight < this.server.receiveMaximum && this.connected) {
        const { msg, resolve, reject } = this.queue.shift();
        let id;
        try {
          id = this.id();
          msg.packetId = id;
          const bytes = encodePublish(msg, this.version);
          this.pending.set(id, { kind: msg.qos === 1 ? 'puback' : 'pubrec', topic: msg.topic, resolve, reject });
          this.inflight++;
          this.send(bytes);
        } catch (e) {
          if (this.pending.get(id)) { this.pending.delete(id); this.inflight--; }
          reject(e);
          continue;
        }
        this.event('publish', 'PUBLISH ' + msg.topic + ' (QoS ' + msg.qos + (msg.retain ? ', retained' : '') + ', packet ' + id + ', ' + msg.payload.length + ' bytes) sent');
      }
    }

    /** Sends DISCONNECT (MQTT 5: with `reasonCode`, 0x04 asks for the will) and closes. */
    disconnect(reasonCode, props) {
      if (!this.ws) return;
      if (this.connected) {
        try {
          this.send(encodeDisconnect(reasonCode || 0, props, this.version));
          this.event('disconnect', 'DISCONNECT sent' + (this.version === 5 ? ' ' + reasonText(reasonCode || 0, 5, 'disconnect') : ''));
        } catch (e) { /* closing anyway */ }
      }
      this.state = 'disconnecting';
      this.ws.close(1000);
    }

    /** Drops the connection without DISCONNECT (the server publishes the will). */
    drop() {
      if (!this.ws) return;
      this.dropped = true;
      this.ws.close(4000, 'dropped');
    }

    /** A fatal problem: report it, close the socket. */
    fail(err) {
      if (!this.ws) return;
      this.closeError = err;
      this.event('error', err.message);
      if (this.connected && this.version === 5 && err.reasonCode === undefined) {
        // tell the server why, when we still can
        try { this.ws.send(encodeDisconnect(0x81, {}, 5)); } catch (e) { /* closing anyway */ }
      } else if (this.connected && this.version === 5 && err.reasonCode >= 0x80) {
        try { this.ws.send(encodeDisconnect(err.reasonCode, {}, 5)); } catch (e) { /* closing anyway */ }
      }
      const ws = this.ws;
      try { ws.close(); } catch (e) { /* ignore */ }
      this.closed(1006, err.message, false);
    }

    closed(code, reason, wasClean) {
      if (!this.ws) return;
      this.ws = null;
      const was = this.state;
      this.state = 'disconnected';
      clearTimeout(this.kaTimer);
      clearTimeout(this.pongTimer);
      clearTimeout(this.connectTimer);
      this.pongTimer = null;
      const err = this.closeError || new MqttError(
        this.serverDisconnect ? 'closed by the server: ' + this.serverDisconnect.reason
          : was === 'connecting' ? 'connection closed before CONNACK (WebSocket code ' + code + ')'
            : 'connection closed');
      if (this.connectWaiter) {
        this.connectWaiter.reject(err);
        this.connectWaiter = null;
      }
      for (const w of this.pending.values()) w.reject(new MqttError('connection closed before the answer came'));
      for (const q of this.queue) q.reject(new MqttError('connection closed before it was sent'));
      this.pending.clear();
      this.queue = [];
      this.inflight = 0;
      const info = { code, reason, wasClean, disconnect: this.serverDisconnect, error: this.closeError ? this.closeError.message : null };
      let text = 'connection closed (WebSocket code ' + code + (reason ? ', ' + reason : '') + ')';
      if (was === 'disconnecting') text = 'disconnected';
      else if (this.dropped && was === 'connected') text = 'connection dropped without DISCONNECT: the broker publishes the will, if one was set';
      else if (this.serverDisconnect) text = 'closed by the server: ' + this.serverDisconnect.reason;
      else if (this.closeError) text = 'closed: ' + this.closeError.message;
      this.event('close', text);
      this.emit('close', info);
    }
  }

  MqttClient.MqttError = MqttError;
  MqttClient.reasonText = reasonText;
  MqttClient.checkTopic = checkTopic;
  MqttClient.checkFilter = checkFilter;
  MqttClient.codec = {
    T, encodeVarint, encodeConnect, encodePublish, encodeAck, encodeSubscribe,
    encodeUnsubscribe, encodeDisconnect, encodeProps, decode, decodeProps, Parser, Reader,
  };

  if (typeof module === 'object' && module.exports) module.exports = MqttClient;
  else root.MqttClient = MqttClient;
})(typeof window !== 'undefined' ? window : this);
