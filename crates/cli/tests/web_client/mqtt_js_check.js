// Checks of the page's MQTT codec (crates/http/assets/mqtt.js) without a browser: exact
// bytes of what it encodes, packets split across and packed into WebSocket messages, and a
// clear error for every malformed packet a server could send. Run by tests/web_client.rs
// as `node mqtt_js_check.js PATH/TO/mqtt.js`; prints "ok" or throws.
'use strict';
const assert = require('assert');
const M = require(process.argv[2]);
const c = M.codec;
const hex = (b) => Buffer.from(b).toString('hex');
const bytes = (h) => Uint8Array.from(Buffer.from(h.replace(/\s/g, ''), 'hex'));

// remaining length: the spec's boundaries
for (const [n, h] of [[0, '00'], [127, '7f'], [128, '8001'], [16383, 'ff7f'], [16384, '808001'],
  [2097151, 'ffff7f'], [2097152, '80808001'], [268435455, 'ffffff7f']]) {
  assert.strictEqual(hex(c.encodeVarint(n)), h, 'varint ' + n);
  assert.strictEqual(new c.Reader(bytes(h), 't').varint(), n, 'read varint ' + n);
}
assert.throws(() => c.encodeVarint(268435456), /out of range/);

// CONNECT 3.1.1: client id "a", keep alive 30, clean session
assert.strictEqual(hex(c.encodeConnect({ version: 4, clientId: 'a', keepAlive: 30, clean: true })),
  '100d00044d5154540402001e000161');
// CONNECT 5.0 with session expiry, will (QoS 1, retained), username and password
assert.strictEqual(hex(c.encodeConnect({
  version: 5, clientId: 'a', keepAlive: 30, clean: true, username: 'u', password: 'p',
  will: { topic: 'w', payload: 'x', qos: 1, retain: true }, properties: { sessionExpiryInterval: 10 },
})), '102000044d5154540' + '5ee001e05110000000a00016100000177000178000175000170');
assert.throws(() => c.encodeConnect({ version: 4, clientId: 'a', password: 'p' }), /needs a username/);
// a UTF-8 client id is counted in bytes
assert.strictEqual(hex(c.encodeConnect({ version: 4, clientId: 'é', keepAlive: 0 })), '100e00044d515454040000000002c3a9');

// PUBLISH, SUBSCRIBE, UNSUBSCRIBE, acks, DISCONNECT
assert.strictEqual(hex(c.encodePublish({ topic: 'a/b', payload: 'hi', qos: 1, packetId: 7, retain: true }, 5)), '330a0003612f620007006869');
assert.strictEqual(hex(c.encodePublish({ topic: 'a', payload: new Uint8Array([0, 255]), qos: 0 }, 4)), '30050001610' + '0ff');
assert.throws(() => c.encodePublish({ topic: 'a/+', payload: '' }, 4), /cannot contain/);
assert.strictEqual(hex(c.encodeSubscribe(1, [{ filter: 'a/#', qos: 2 }], 4)), '820800010003612f2302');
assert.strictEqual(hex(c.encodeSubscribe(1, [{ filter: 'a/#', qos: 1 }], 5)), '82090001000003612f2301');
assert.throws(() => c.encodeSubscribe(1, [{ filter: 'a/#/b' }], 4), /# must be the last level/);
assert.throws(() => c.encodeSubscribe(1, [{ filter: 'a+' }], 4), /\+ must fill a whole level/);
assert.strictEqual(hex(c.encodeUnsubscribe(2, ['a'], 4)), 'a205000200' + '0161');
assert.strictEqual(hex(c.encodeAck(c.T.PUBREL, 9, 0, 5)), '62020009');
assert.strictEqual(hex(c.encodeAck(c.T.PUBACK, 9, 0x10, 5)), '4003000910');
assert.strictEqual(hex(c.encodeDisconnect(0, null, 5)), 'e000');
assert.strictEqual(hex(c.encodeDisconnect(4, null, 5)), 'e00104');
assert.strictEqual(hex(c.encodeDisconnect(4, null, 4)), 'e000');

// the stream parser: one packet over three messages, then three packets in one
const pub = c.encodePublish({ topic: 'x', payload: 'y'.repeat(200), qos: 2, packetId: 5 }, 5);
const p = new c.Parser();
assert.strictEqual(p.push(pub.subarray(0, 1)).length, 0);
assert.strictEqual(p.push(pub.subarray(1, 2)).length, 0); // half the remaining length
const got = p.push(pub.subarray(2));
assert.strictEqual(got.length, 1);
const d = c.decode(got[0][0], got[0][1], 5);
assert.deepStrictEqual([d.topic, d.qos, d.packetId, d.payload.length], ['x', 2, 5, 200]);
const three = p.push(bytes('d000' + '20020000' + '9003000101'));
assert.deepStrictEqual(three.map(([f]) => f >> 4), [13, 2, 9]);
assert.deepStrictEqual(c.decode(three[2][0], three[2][1], 4).reasonCodes, [1]);
// CONNACK 5 with properties
const ack = c.decode(0x20, bytes('0000' + '08' + '2401' + '2100 0a' + '1300 05'), 5);
assert.deepStrictEqual([ack.reasonCode, ack.properties.maximumQoS, ack.properties.receiveMaximum, ack.properties.serverKeepAlive], [0, 1, 10, 5]);
assert.strictEqual(M.reasonText(0x86, 5, 'connack'), '0x86 Bad User Name or Password');
assert.strictEqual(M.reasonText(4, 4, 'connack'), '0x04 Bad user name or password');
assert.strictEqual(M.reasonText(0x80, 4, 'suback'), '0x80 Failure');

// malformed packets from a server: each a clear error naming what is wrong
const bad = [
  [() => new c.Parser().push(bytes('30ffffffff01')), /remaining length longer than 4 bytes/],
  [() => c.decode(0x20, bytes('00'), 5), /malformed CONNACK: reason code runs past the end/],
  [() => c.decode(0x20, bytes('0200'), 4), /reserved acknowledge flags/],
  [() => c.decode(0x20, bytes('000000'), 4), /unexpected bytes at the end/],
  [() => c.decode(0x36, bytes('0001610001'), 4), /QoS 3/],
  [() => c.decode(0x32, bytes('0001610000'), 4), /packet identifier 0/],
  [() => c.decode(0x30, bytes('000561'), 4), /malformed PUBLISH: topic runs past the end/],
  [() => c.decode(0x30, bytes('0002c328'), 4), /not valid UTF-8/],
  [() => c.decode(0x30, bytes('00016100'), 4).topic === 'a' && c.decode(0x30, bytes('0001 00'), 4), /U\+0000/],
  [() => c.decode(0x30, bytes('0001610300'), 5), /property length runs past|properties/],
  [() => c.decode(0x30, bytes('000161 03 230001'), 5), /topic alias/],
  [() => c.decode(0x20, bytes('0000 04 1f0000 7f'), 5), /unknown property 0x7F/],
  [() => c.decode(0x20, bytes('0000 04 24012401'), 5), /appears twice/],
  [() => c.decode(0x42, bytes('0001'), 4), /reserved flags/],
  [() => c.decode(0x60, bytes('0001'), 4), /reserved flags/],
  [() => c.decode(0x90, bytes('0001'), 4), /no return codes/],
  [() => c.decode(0xb0, bytes('000100'), 4), /UNSUBACK: unexpected bytes/],
  [() => c.decode(0xd0, bytes('00'), 4), /unexpected bytes/],
  [() => c.decode(0xe0, bytes(''), 4), /3.1.1 server sent DISCONNECT/],
  [() => c.decode(0x10, bytes(''), 4), /the server sent CONNECT/],
  [() => c.decode(0x00, bytes(''), 4), /protocol error/],
];
for (const [f, re] of bad) {
  assert.throws(f, (e) => e instanceof M.MqttError && re.test(e.message), 'expected ' + re);
}
console.log('ok');
