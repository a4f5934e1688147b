// midge page: the MQTT web client (client.html). Connects to midge's MQTT over WebSocket
// listener with window.MqttClient (mqtt.js), subscribes, publishes, and shows every message
// and every packet the broker answers with.
'use strict';
(function () {
  const $ = (id) => document.getElementById(id);
  const MAX_ROWS = 500;
  const COLORS = ['#0f9488', '#2563eb', '#c026d3', '#d97706', '#16a34a', '#dc2626', '#7c3aed', '#0891b2'];

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }

  function clock(d) {
    const p = (n, w) => String(n).padStart(w || 2, '0');
    return p(d.getHours()) + ':' + p(d.getMinutes()) + ':' + p(d.getSeconds()) + '.' + p(d.getMilliseconds(), 3);
  }

  function randomId() {
    const a = new Uint8Array(4);
    crypto.getRandomValues(a);
    return 'midge-web-' + Array.from(a, (b) => b.toString(16).padStart(2, '0')).join('');
  }

  function hex(bytes) {
    return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join(' ');
  }

  /** The payload as text, or null when it is not printable UTF-8. */
  function asText(bytes) {
    let s;
    try { s = new TextDecoder('utf-8', { fatal: true }).decode(bytes); } catch (e) { return null; }
    // eslint-disable-next-line no-control-regex
    return /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/.test(s) ? null : s;
  }

  function parseHex(s) {
    const clean = s.replace(/0x/gi, '').replace(/[\s,:]/g, '');
    if (!/^([0-9a-f]{2})*$/i.test(clean)) throw new Error('the payload is not hex bytes (like "01 a0 ff")');
    const out = new Uint8Array(clean.length / 2);
    for (let i = 0; i < out.length; i++) out[i] = parseInt(clean.substr(i * 2, 2), 16);
    return out;
  }

  function topicMatches(filter, topic) {
    const f = filter.split('/'), t = topic.split('/');
    if (f[0] === '$share' && f.length > 2) f.splice(0, 2);
    if (topic.startsWith('$') && (f[0] === '#' || f[0] === '+')) return false;
    for (let i = 0; i < f.length; i++) {
      if (f[i] === '#') return true;
      if (i >= t.length) return false;
      if (f[i] !== '+' && f[i] !== t[i]) return false;
    }
    return f.length === t.length;
  }

  // ---- state ----

  const client = new window.MqttClient();
  const subs = new Map(); // filter -> {qos, color, count, li}
  let colorNext = 0;
  let messageCount = 0;
  const messages = []; // {m, li} for re-rendering payloads

  // ---- status and events ----

  function setState(state, text) {
    document.body.dataset.state = state;
    $('c-status').dataset.state = state;
    $('c-status-text').textContent = text;
    const connected = state === 'connected';
    const busy = state === 'connecting' || connected;
    for (const f of $('c-connect-form').querySelectorAll('input, select, textarea, #c-new-id')) f.disabled = busy;
    $('c-connect').disabled = busy;
    $('c-disconnect').disabled = !busy;
    $('c-drop').disabled = !connected;
    $('c-subscribe').disabled = !connected;
    $('c-publish').disabled = !connected;
    $('c-ping').disabled = !connected;
    for (const b of $('c-subs').querySelectorAll('button')) b.disabled = !connected;
    $('c-subs').classList.toggle('inactive', !connected);
  }

  const KIND_LABEL = {
    connecting: 'connecting', open: 'socket', connack: 'CONNACK', subscribe: 'SUBSCRIBE',
    suback: 'SUBACK', unsubscribe: 'UNSUBSCRIBE', unsuback: 'UNSUBACK', publish: 'PUBLISH',
    puback: 'PUBACK', pubrec: 'PUBREC', pubrel: 'PUBREL', pubcomp: 'PUBCOMP', ping: 'ping',
    pong: 'pong', disconnect: 'DISCONNECT', error: 'error', close: 'closed', info: 'info',
  };

  function addEvent(kind, text, time, bad) {
    const list = $('c-events');
    const li = el('li', { class: 'c-event' + (bad ? ' bad' : ''), 'data-kind': kind },
      el('time', { text: clock(time || new Date()) }),
      el('span', { class: 'c-kind', text: KIND_LABEL[kind] || kind }),
      el('span', { class: 'c-text', text }));
    list.prepend(li);
    while (list.children.length > MAX_ROWS) list.lastChild.remove();
    $('c-events-empty').hidden = true;
  }

  client.on('event', (e) => {
    const bad = e.kind === 'error' || / — refused/.test(e.text) ||
      (e.packet && e.packet.reasonCode >= 0x80) ||
      (e.kind === 'disconnect' && e.packet && e.packet.reasonCode > 0x04);
    addEvent(e.kind, e.text, e.time, bad);
  });

  client.on('close', (info) => {
    let text = 'Disconnected';
    if (info.disconnect) text = 'Disconnected by the server (' + info.disconnect.reason + ')';
    else if (info.error) text = 'Disconnected: ' + info.error;
    setState(info.error || info.disconnect ? 'error' : 'disconnected', text);
  });

  // ---- messages ----

  function renderPayload(pre, bytes) {
    const mode = $('c-format').value;
    const text = mode === 'hex' ? null : asText(bytes);
    let json = null;
    if (mode === 'json' && text !== null) {
      try { json = JSON.stringify(JSON.parse(text), null, 2); } catch (e) { /* not JSON: as text */ }
    }
    if (json !== null) {
      pre.textContent = json;
      pre.dataset.format = 'json';
    } else if (mode === 'text') {
      pre.textContent = new TextDecoder('utf-8').decode(bytes);
      pre.dataset.format = 'text';
    } else if (text === null) {
      pre.textContent = hex(bytes);
      pre.dataset.format = 'hex';
    } else {
      pre.textContent = text;
      pre.dataset.format = 'text';
    }
    pre.classList.toggle('empty', bytes.length === 0);
    if (!bytes.length) pre.textContent = '(empty payload)';
  }

  /** The MQTT 5 properties a message came with (content type, user properties...), or null. */
  function propsLine(p) {
    if (!p) return null;
    const parts = [];
    if (p.payloadFormatIndicator !== undefined) parts.push('payload format: ' + (p.payloadFormatIndicator ? 'UTF-8' : 'bytes'));
    if (p.contentType !== undefined) parts.push('content type: ' + p.contentType);
    if (p.messageExpiryInterval !== undefined) parts.push('expires in: ' + p.messageExpiryInterval + ' s');
    if (p.responseTopic !== undefined) parts.push('response topic: ' + p.responseTopic);
    if (p.correlationData !== undefined) parts.push('correlation data: ' + hex(p.correlationData));
    if (p.subscriptionIdentifier) parts.push('subscription id: ' + p.subscriptionIdentifier.join(', '));
    for (const [k, v] of p.userProperties || []) parts.push(k + ' = ' + v);
    if (!parts.length) return null;
    return el('div', { class: 'c-props', title: 'MQTT 5 properties', text: parts.join(' · ') });
  }

  client.on('message', (m) => {
    const sub = Array.from(subs.entries()).find(([f]) => topicMatches(f, m.topic));
    const color = sub ? sub[1].color : 'var(--muted)';
    if (sub) {
      sub[1].count++;
      sub[1].li.querySelector('.c-sub-count').textContent = sub[1].count + ' msg';
    }
    const pre = el('pre', { class: 'c-payload' });
    renderPayload(pre, m.payload);
    const li = el('li', {
      class: 'c-msg', 'data-topic': m.topic, 'data-qos': m.qos, 'data-retain': m.retain ? 'true' : 'false',
      style: '--sub-color: ' + color,
    },
    el('div', { class: 'c-msg-head' },
      el('span', { class: 'c-topic', text: m.topic }),
      el('span', { class: 'badge', title: 'Quality of service', text: 'QoS ' + m.qos }),
      m.retain ? el('span', { class: 'badge retained', title: 'A retained message (sent on subscribing)', text: 'retained' }) : null,
      m.dup ? el('span', { class: 'badge', text: 'dup' }) : null,
      el('span', { class: 'spacer' }),
      el('span', { class: 'note', text: m.payload.length + (m.payload.length === 1 ? ' byte' : ' bytes') }),
      el('time', { text: clock(m.time) })),
    pre, propsLine(m.properties));
    const list = $('c-messages');
    list.prepend(li);
    messages.unshift({ m, pre });
    while (list.children.length > MAX_ROWS) { list.lastChild.remove(); messages.pop(); }
    messageCount++;
    $('c-msg-count').textContent = String(messageCount);
    $('c-messages-empty').hidden = true;
  });

  $('c-format').addEventListener('change', () => {
    for (const { m, pre } of messages) renderPayload(pre, m.payload);
  });

  $('c-clear-messages').addEventListener('click', () => {
    $('c-messages').replaceChildren();
    messages.length = 0;
    messageCount = 0;
    $('c-msg-count').textContent = '0';
    $('c-messages-empty').hidden = false;
  });
  $('c-clear-events').addEventListener('click', () => {
    $('c-events').replaceChildren();
    $('c-events-empty').hidden = false;
  });
  $('c-ping').addEventListener('click', () => client.ping());

  // ---- subscriptions ----

  function showSub(filter, qos, opts) {
    let s = subs.get(filter);
    if (!s) {
      s = { qos, color: COLORS[colorNext++ % COLORS.length], count: 0 };
      s.li = el('li', { class: 'c-sub', style: '--sub-color: ' + s.color },
        el('span', { class: 'c-swatch' }),
        el('span', { class: 'c-filter', text: filter }),
        el('span', { class: 'badge c-sub-qos' }),
        el('span', { class: 'note c-sub-count', text: '0 msg' }),
        el('button', {
          type: 'button', class: 'c-unsub', 'data-unsub': filter, title: 'Unsubscribe from ' + filter,
          text: 'Unsubscribe', onclick: () => unsubscribe(filter),
        }));
      subs.set(filter, s);
      $('c-subs').append(s.li);
    }
    s.qos = qos;
    s.li.dataset.filter = filter;
    s.li.dataset.qos = String(qos);
    s.li.querySelector('.c-sub-qos').textContent = 'QoS ' + qos;
    const flags = [];
    if (opts && opts.noLocal) flags.push('no local');
    if (opts && opts.retainAsPublished) flags.push('retain as published');
    if (opts && opts.retainHandling) flags.push(opts.retainHandling === 1 ? 'retained if new' : 'no retained');
    s.li.dataset.options = flags.join(', ');
    s.li.querySelector('.c-filter').title = flags.length ? 'Options: ' + flags.join(', ') : '';
    s.li.querySelector('.c-filter').textContent = filter + (flags.length ? ' (' + flags.join(', ') + ')' : '');
    $('c-subs-empty').hidden = true;
  }

  function dropSub(filter) {
    const s = subs.get(filter);
    if (s) s.li.remove();
    subs.delete(filter);
    $('c-subs-empty').hidden = subs.size > 0;
  }

  function unsubscribe(filter) {
    client.unsubscribe([filter]).then((res) => {
      if (res[0] && (res[0].ok || res[0].reasonCode === 0x11)) dropSub(filter);
    }).catch((e) => addEvent('error', 'unsubscribe ' + filter + ': ' + e.message, null, true));
  }

  $('c-sub-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    saveSettings();
    const filter = $('c-sub-filter').value.trim();
    const qos = Number($('c-sub-qos').value);
    try {
      window.MqttClient.checkFilter(filter);
    } catch (e) {
      addEvent('error', e.message, null, true);
      return;
    }
    const sub = { filter, qos };
    if (client.version === 5) {
      sub.noLocal = $('c-sub-nl').checked;
      sub.retainAsPublished = $('c-sub-rap').checked;
      sub.retainHandling = Number($('c-sub-rh').value);
    }
    client.subscribe([sub]).then((res) => {
      const r = res[0];
      if (r.ok) showSub(filter, r.granted, sub);
    }).catch((e) => addEvent('error', 'subscribe ' + filter + ': ' + e.message, null, true));
  });

  // ---- publish ----

  /** The MQTT 5 properties of the publish form (undefined when none is set). */
  function pubProperties() {
    const p = {};
    const ct = $('c-pub-content-type').value.trim();
    if (ct) p.contentType = ct;
    const rt = $('c-pub-response-topic').value.trim();
    if (rt) {
      window.MqttClient.checkTopic(rt);
      p.responseTopic = rt;
    }
    const ex = $('c-pub-expiry').value.trim();
    if (ex !== '') {
      const n = Number(ex);
      if (!(Number.isInteger(n) && n >= 0 && n <= 4294967295)) throw new Error('message expiry must be 0 to 4294967295 seconds');
      p.messageExpiryInterval = n;
    }
    const ups = [];
    for (const line of $('c-pub-user-props').value.split('\n')) {
      if (!line.trim()) continue;
      const at = line.indexOf('=');
      if (at <= 0) throw new Error('a user property is key=value: ' + JSON.stringify(line));
      ups.push([line.slice(0, at).trim(), line.slice(at + 1).trim()]);
    }
    if (ups.length) p.userProperties = ups;
    return Object.keys(p).length ? p : undefined;
  }

  $('c-pub-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    saveSettings();
    const topic = $('c-pub-topic').value;
    const qos = Number($('c-pub-qos').value);
    const retain = $('c-pub-retain').checked;
    let payload = $('c-pub-payload').value;
    try {
      if ($('c-pub-format').value === 'hex') payload = parseHex(payload);
    } catch (e) {
      addEvent('error', e.message, null, true);
      return;
    }
    let properties;
    if (client.version === 5) {
      try {
        properties = pubProperties();
      } catch (e) {
        addEvent('error', e.message, null, true);
        return;
      }
    }
    client.publish(topic, payload, { qos, retain, properties })
      .catch((e) => addEvent('error', 'publish to ' + topic + ': ' + e.message, null, true));
  });

  // ---- connection ----

  function syncVersion() {
    const v5 = $('c-version').value === '5';
    $('c-clean-label').textContent = v5 ? 'Clean start' : 'Clean session';
    $('c-expiry-field').hidden = !v5;
    $('c-sub-v5').hidden = !v5;
    $('c-pub-v5').hidden = !v5;
  }
  $('c-version').addEventListener('change', syncVersion);
  $('c-new-id').addEventListener('click', () => { $('c-client-id').value = randomId(); });

  function showError(text) {
    const e = $('c-connect-error');
    e.textContent = text || '';
    e.hidden = !text;
  }

  $('c-connect-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    showError('');
    const url = $('c-url').value.trim();
    if (!/^wss?:\/\/[^/]+/i.test(url)) {
      showError('The URL must start with ws:// or wss:// and name a host, like ws://' + location.hostname + ':8083/mqtt');
      return;
    }
    const version = Number($('c-version').value);
    const willTopic = $('c-will-topic').value.trim();
    const opts = {
      version,
      clientId: $('c-client-id').value,
      username: $('c-username').value,
      password: $('c-password').value,
      keepAlive: Number($('c-keepalive').value || 0),
      clean: $('c-clean').checked,
      sessionExpiry: version === 5 ? Number($('c-session-expiry').value || 0) : 0,
      will: willTopic ? {
        topic: willTopic,
        payload: $('c-will-message').value,
        qos: Number($('c-will-qos').value),
        retain: $('c-will-retain').checked,
      } : null,
    };
    saveSettings();
    setState('connecting', 'Connecting…');
    client.connect(url, opts).then((connack) => {
      const id = client.assignedClientId || opts.clientId;
      setState('connected', 'Connected as ' + id + (version === 5 ? ' (MQTT 5.0)' : ' (MQTT 3.1.1)'));
      if (!connack.sessionPresent) {
        for (const f of Array.from(subs.keys())) dropSub(f);
      }
      setState('connected', $('c-status-text').textContent);
    }).catch((e) => {
      showError(e.message);
      setState('error', 'Not connected: ' + e.message);
    });
  });

  $('c-disconnect').addEventListener('click', () => {
    if (client.state === 'connecting') client.drop();
    else client.disconnect(0);
  });
  $('c-drop').addEventListener('click', () => client.drop());
  // closing the tab closes the socket without DISCONNECT, like a device losing power: the
  // broker publishes the will (Disconnect is the clean way out)

  // ---- the listener ----

  function listenerUrl(l) {
    const host = location.hostname.includes(':') ? '[' + location.hostname + ']' : location.hostname;
    return l.kind + '://' + host + ':' + l.port + (l.path || '/mqtt');
  }

  const CONFIG_HINT = '[[listener]]\nbind = "0.0.0.0"\nport = 8083\nprotocol = "websockets"\n# certfile = "..." and keyfile = "..." make it wss://';

  async function loadListeners() {
    const sel = $('c-listener');
    let list = null;
    try {
      const r = await fetch('/api/v1/listeners', { headers: { Accept: 'application/json' } });
      if (r.ok) list = (await r.json()).listeners;
    } catch (e) { /* below */ }
    sel.replaceChildren();
    const fallback = location.protocol === 'https:' ? 'wss' : 'ws';
    if (!list) {
      $('c-url').value = fallback + '://' + location.hostname + ':8083/mqtt';
      $('c-url-note').textContent = 'Could not ask midge for its listeners: check the URL.';
      sel.append(el('option', { value: '', text: 'unknown' }));
      sel.disabled = true;
      return;
    }
    const ws = list.filter((l) => l.kind === 'ws' || l.kind === 'wss');
    if (!ws.length) {
      const box = $('c-no-listener');
      box.replaceChildren(
        el('strong', { text: 'midge has no WebSocket listener, so the browser cannot connect. ' }),
        document.createTextNode('Add one to the configuration file and restart midge (midge serve -c FILE):'),
        el('pre', { class: 'c-config', id: 'c-config-hint', text: CONFIG_HINT }));
      box.hidden = false;
      $('c-url').value = fallback + '://' + location.hostname + ':8083/mqtt';
      sel.append(el('option', { value: '', text: 'none (see above)' }));
      sel.disabled = true;
      return;
    }
    // on an https page browsers refuse ws://: prefer wss there
    ws.sort((a, b) => (location.protocol === 'https:' ? (a.kind === 'wss' ? -1 : b.kind === 'wss' ? 1 : 0) : 0));
    for (const l of ws) {
      sel.append(el('option', { value: listenerUrl(l), text: l.kind + ' :' + l.port + (l.allow_anonymous ? '' : ' (password)') }));
    }
    const describe = (l) => {
      const parts = ['midge\'s ' + l.kind + ' listener on port ' + l.port + ' (bound to ' + l.address + ')'];
      parts.push(l.allow_anonymous ? 'anonymous clients allowed' : 'needs a username and password');
      if (location.protocol === 'https:' && l.kind === 'ws') parts.push('this https page cannot open ws://; use a wss listener');
      if (['127.0.0.1', '::1'].includes(l.address) && !['localhost', '127.0.0.1', '[::1]'].includes(location.hostname)) {
        parts.push('it only accepts connections from the server itself');
      }
      return parts.join(' · ');
    };
    const pick = () => {
      const l = ws[sel.selectedIndex] || ws[0];
      $('c-url').value = listenerUrl(l);
      $('c-url-note').textContent = describe(l);
    };
    sel.addEventListener('change', pick);
    pick();
  }

  // the form's settings (never the password) survive a reload, as a desktop client keeps
  // its connections; the URL always comes from the server's listeners, and the client id is
  // new on every load (two tabs with one id would take over each other's session)
  const SAVED = ['c-version', 'c-username', 'c-keepalive', 'c-clean',
    'c-session-expiry', 'c-will-topic', 'c-will-qos', 'c-will-retain', 'c-will-message',
    'c-sub-filter', 'c-sub-qos', 'c-pub-topic', 'c-pub-qos', 'c-pub-retain', 'c-pub-payload', 'c-pub-format',
    'c-sub-nl', 'c-sub-rap', 'c-sub-rh', 'c-pub-content-type', 'c-pub-response-topic', 'c-pub-expiry',
    'c-pub-user-props'];
  const STORE_KEY = 'midge.client.settings';

  function saveSettings() {
    const v = {};
    for (const id of SAVED) { const e = $(id); v[id] = e.type === 'checkbox' ? e.checked : e.value; }
    try { localStorage.setItem(STORE_KEY, JSON.stringify(v)); } catch (e) { /* private mode: not kept */ }
  }

  function loadSettings() {
    let v = null;
    try { v = JSON.parse(localStorage.getItem(STORE_KEY) || 'null'); } catch (e) { v = null; }
    if (!v || typeof v !== 'object') return false;
    for (const id of SAVED) {
      const e = $(id);
      if (!(id in v)) continue;
      if (e.type === 'checkbox') e.checked = !!v[id]; else e.value = String(v[id]);
    }
    if ($('c-will-topic').value) $('c-will').open = true;
    return true;
  }

  $('c-client-id').value = randomId();
  loadSettings();
  syncVersion();
  setState('disconnected', 'Disconnected');
  loadListeners().finally(() => { document.body.dataset.ready = '1'; });
})();
