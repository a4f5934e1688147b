// midge page: the Clients tab, the operations console: connected clients, offline
// persistent sessions, subscriptions and retained messages, with the operator's actions
// (disconnect a client, discard a session, delete retained messages).
'use strict';
(function () {
  const { $, el, api, toast, fmtDateTime, ago } = window.midge;

  const VIEWS = [['clients', 'Clients'], ['sessions', 'Sessions'], ['subscriptions', 'Subscriptions'], ['retained', 'Retained']];
  let view = 'clients';
  let showInternal = false;
  const expanded = new Set();   // client ids whose subscriptions are shown
  let listeners = null;
  let retainedFilter = '#';
  let shownPayload = null;      // the retained message whose payload is open
  let payloadAs = 'text';

  const enc = encodeURIComponent;

  function show() {
    const root = $('view-console');
    root.replaceChildren(
      el('div', { class: 'toolbar' },
        el('h1', { text: 'Clients' }),
        el('nav', { class: 'subtabs', 'aria-label': 'Console views' },
          ...VIEWS.map(([k, label]) => el('button', { type: 'button', class: 'subtab' + (k === view ? ' active' : ''), id: 'console-tab-' + k, 'data-view': k, onclick: () => switchView(k) }, label))),
        el('span', { class: 'note', id: 'console-note' }),
        el('span', { class: 'spacer' }),
        el('span', { class: 'muted small', id: 'console-updated' })),
      el('div', { class: 'message error', id: 'console-error', hidden: true }),
      el('div', { id: 'console-body' }));
    render();
  }

  function switchView(k) {
    view = k;
    for (const b of document.querySelectorAll('#view-console .subtab')) b.classList.toggle('active', b.dataset.view === k);
    render();
  }

  function render() {
    const body = $('console-body');
    if (!body) return;
    body.dataset.view = view;
    if (view === 'clients') body.replaceChildren(clientsSkeleton());
    else if (view === 'sessions') body.replaceChildren(sessionsSkeleton());
    else if (view === 'subscriptions') body.replaceChildren(subscriptionsSkeleton());
    else body.replaceChildren(retainedSkeleton());
    poll();
  }

  function poll() {
    if (!$('console-body')) return;
    if (view === 'clients') refreshClients();
    else if (view === 'sessions') refreshSessions();
    else if (view === 'subscriptions') refreshSubscriptions();
    else refreshRetained();
  }

  function failed(e) {
    const m = $('console-error');
    if (!m) return;
    m.textContent = e ? 'Could not load: ' + e.message : '';
    m.hidden = !e;
  }

  function stamp() {
    const u = $('console-updated');
    if (u) u.textContent = 'updated ' + new Date().toLocaleTimeString();
  }

  function table(id, heads) {
    return el('table', { class: 'table', id }, el('thead', null, el('tr', null, ...heads.map((h) => el('th', { class: h.endsWith('#') ? 'num' : null, text: h.replace(/#$/, '') })))), el('tbody'));
  }

  function expiry(s) {
    if (s == null) return '–';
    if (s >= 4294967295) return 'never';
    if (s === 0) return 'at disconnect';
    if (s < 120) return s + ' s';
    if (s < 7200) return Math.round(s / 60) + ' min';
    if (s < 172800) return Math.round(s / 3600) + ' h';
    return Math.round(s / 86400) + ' d';
  }

  async function listenerName(i) {
    if (listeners == null) {
      try { listeners = (await api('/api/v1/listeners')).listeners || []; } catch (_) { listeners = []; }
    }
    const l = listeners[i];
    return l ? `${l.kind} :${l.port}` : `#${i}`;
  }

  function who(username) {
    if (username == null) return el('span', { class: 'muted', text: 'anonymous' });
    if (username === '') return el('span', { class: 'muted', text: '(empty username)' });
    return el('code', { text: username });
  }

  // ---------- clients ----------

  function clientsSkeleton() {
    const box = el('input', { type: 'checkbox', id: 'console-internal', onchange: (e) => { showInternal = e.target.checked; refreshClients(); } });
    box.checked = showInternal;
    return el('div', null,
      el('div', { class: 'toolbar small' },
        el('p', { class: 'muted small', text: 'Connected MQTT clients. Click a row for its subscriptions. Offline persistent sessions are under Sessions.' }),
        el('span', { class: 'spacer' }),
        el('label', { class: 'check', title: 'The dashboard\'s live streams, the HTTP publisher and the rules engine connect in-process; the header\'s counts leave them out' }, box, ' show midge\'s own clients')),
      el('div', { class: 'card table-wrap' },
        table('console-clients', ['Client id', 'Username / device', 'Address', 'Listener', 'MQTT', 'Keep alive', 'Connected', 'In#', 'Out#', 'In-flight#', 'Queued#', 'Subs#', '']),
        el('div', { class: 'empty', id: 'console-clients-empty', hidden: true }, el('p', { text: 'No client is connected.' }))),
      el('div', { id: 'console-internal-box', hidden: true },
        el('h2', { class: 'section-title', text: 'midge\'s own clients' }),
        el('div', { class: 'card table-wrap' }, table('console-internal-clients', ['Client id', 'MQTT', 'Connected', 'In#', 'Out#', 'Subscriptions']),
          el('div', { class: 'empty', id: 'console-internal-empty', hidden: true }, el('p', { text: 'None connected now: the page\'s live streams, the API\'s publisher and the rules connect when they are used.' })))));
  }

  async function refreshClients() {
    let r;
    try { r = await api('/api/v1/clients'); } catch (e) { failed(e); return; }
    if (view !== 'clients' || !$('console-clients')) return;
    failed(null);
    const connected = (r.clients || []).filter((c) => c.connected);
    const names = await Promise.all(connected.map((c) => listenerName(c.listener)));
    const rows = [];
    connected.forEach((c, i) => {
      const open = expanded.has(c.client_id);
      rows.push(el('tr', { class: 'clickable' + (open ? ' open' : ''), 'data-client': c.client_id, onclick: () => { if (open) expanded.delete(c.client_id); else expanded.add(c.client_id); refreshClients(); } },
        el('td', null, el('span', { class: 'caret', text: open ? '▾ ' : '▸ ' }), el('code', { text: c.client_id })),
        el('td', null, who(c.username),
          c.device ? ' ' : null, c.device ? el('a', { href: '#devices/' + enc(c.device), class: 'chip', text: 'device ' + c.device, onclick: (e) => e.stopPropagation() }) : null),
        el('td', { text: c.address || '–' }),
        el('td', { text: names[i] }),
        el('td', { text: c.protocol }),
        el('td', { text: c.keep_alive == null ? '–' : c.keep_alive === 0 ? 'off' : c.keep_alive + ' s' }),
        el('td', { title: c.connected_since ? new Date(c.connected_since).toLocaleString() : '', text: c.connected_since ? ago(c.connected_since) : '–' }),
        el('td', { class: 'num', text: String(c.messages_in ?? '–') }),
        el('td', { class: 'num', text: String(c.messages_out ?? '–') }),
        el('td', { class: 'num', text: String(c.inflight) }),
        el('td', { class: 'num', text: String(c.queued) }),
        el('td', { class: 'num', text: String(c.subscriptions.length) }),
        el('td', { class: 'actions', onclick: (e) => e.stopPropagation() },
          el('button', { type: 'button', class: 'small danger', 'data-action': 'disconnect', onclick: () => disconnect(c) }, 'Disconnect'))));
      if (open) {
        rows.push(el('tr', { class: 'detail', 'data-client-detail': c.client_id },
          el('td', { colspan: 13 }, c.subscriptions.length
            ? el('ul', { class: 'plain inline' }, ...c.subscriptions.map((s) => el('li', null, el('code', { text: s.filter }), el('span', { class: 'muted', text: ` QoS ${s.qos}` }))))
            : el('span', { class: 'muted', text: 'no subscriptions' }))));
      }
    });
    $('console-clients').tBodies[0].replaceChildren(...rows);
    $('console-clients-empty').hidden = connected.length > 0;
    const internal = r.internal || [];
    $('console-note').textContent = `${connected.length} connected` + (internal.length ? `, plus ${internal.length} of midge's own` : '');
    $('console-internal-box').hidden = !showInternal;
    if (showInternal) {
      $('console-internal-clients').tBodies[0].replaceChildren(...internal.map((c) => el('tr', { 'data-client': c.client_id },
        el('td', null, el('code', { text: c.client_id })),
        el('td', { text: c.protocol }),
        el('td', { text: c.connected_since ? ago(c.connected_since) : '–' }),
        el('td', { class: 'num', text: String(c.messages_in ?? '–') }),
        el('td', { class: 'num', text: String(c.messages_out ?? '–') }),
        el('td', null, ...c.subscriptions.map((s) => el('code', { class: 'chip', text: s.filter }))))));
      $('console-internal-empty').hidden = internal.length > 0;
    }
    stamp();
  }

  async function disconnect(c) {
    if (!confirm(`Disconnect ${c.client_id}? An MQTT 5 client is told "Administrative action" (0x98); it may connect again unless its device is disabled.`)) return;
    try {
      await api('/api/v1/clients/' + enc(c.client_id), { method: 'DELETE' });
      toast(`${c.client_id} disconnected`);
    } catch (e) { toast('Could not disconnect: ' + e.message); }
    refreshClients();
  }

  // ---------- sessions ----------

  function sessionsSkeleton() {
    return el('div', null,
      el('p', { class: 'muted small', text: 'Persistent sessions of clients that are offline: the broker keeps their subscriptions and queues their QoS 1 and 2 messages until they return or the session expires.' }),
      el('div', { class: 'card table-wrap' },
        table('console-sessions', ['Client id', 'Username', 'MQTT', 'Queued#', 'In-flight#', 'Expires', 'Subscriptions', '']),
        el('div', { class: 'empty', id: 'console-sessions-empty', hidden: true }, el('p', { text: 'No offline sessions.' }))));
  }

  async function refreshSessions() {
    let r;
    try { r = await api('/api/v1/sessions'); } catch (e) { failed(e); return; }
    if (view !== 'sessions' || !$('console-sessions')) return;
    failed(null);
    const list = r.sessions || [];
    $('console-sessions').tBodies[0].replaceChildren(...list.map((s) => el('tr', { 'data-session': s.client_id },
      el('td', null, el('code', { text: s.client_id })),
      el('td', null, who(s.username)),
      el('td', { text: s.protocol }),
      el('td', { class: 'num', text: String(s.queued) }),
      el('td', { class: 'num', text: String(s.inflight) }),
      el('td', { title: 'Session expiry interval, counted from the disconnection', text: expiry(s.session_expiry) + (s.session_expiry < 4294967295 && s.session_expiry > 0 ? ' after disconnecting' : '') }),
      el('td', null, ...s.subscriptions.map((x) => el('code', { class: 'chip', text: `${x.filter} (QoS ${x.qos})` }))),
      el('td', { class: 'actions' }, el('button', { type: 'button', class: 'small danger', 'data-action': 'discard', onclick: () => discard(s) }, 'Discard')))));
    $('console-sessions-empty').hidden = list.length > 0;
    $('console-note').textContent = `${list.length} offline session${list.length === 1 ? '' : 's'}`;
    stamp();
  }

  async function discard(s) {
    if (!confirm(`Discard the session of ${s.client_id}? Its subscriptions and ${s.queued} queued message${s.queued === 1 ? '' : 's'} are dropped.`)) return;
    try {
      await api('/api/v1/sessions/' + enc(s.client_id), { method: 'DELETE' });
      toast(`Session ${s.client_id} discarded`);
    } catch (e) { toast('Could not discard: ' + e.message); }
    refreshSessions();
  }

  // ---------- subscriptions ----------

  function subscriptionsSkeleton() {
    const again = () => refreshSubscriptions();
    return el('div', null,
      el('div', { class: 'toolbar small' },
        el('label', { class: 'inline' }, 'Filter contains ', el('input', { id: 'subs-filter', type: 'search', placeholder: 'sensors', oninput: again })),
        el('label', { class: 'inline' }, 'Client id contains ', el('input', { id: 'subs-client', type: 'search', placeholder: 'boiler', oninput: again })),
        el('span', { class: 'spacer' })),
      el('div', { class: 'card table-wrap' },
        table('console-subscriptions', ['Filter', 'QoS', 'Client id', 'Client']),
        el('div', { class: 'empty', id: 'console-subscriptions-empty', hidden: true }, el('p', { id: 'console-subscriptions-empty-text', text: 'No subscriptions.' }))));
  }

  async function refreshSubscriptions() {
    const f = ($('subs-filter') || {}).value || '';
    const c = ($('subs-client') || {}).value || '';
    const q = [f ? 'filter=' + enc(f) : '', c ? 'client=' + enc(c) : ''].filter(Boolean).join('&');
    let r;
    try { r = await api('/api/v1/subscriptions' + (q ? '?' + q : '')); } catch (e) { failed(e); return; }
    if (view !== 'subscriptions' || !$('console-subscriptions')) return;
    failed(null);
    const list = r.subscriptions || [];
    $('console-subscriptions').tBodies[0].replaceChildren(...list.map((s) => el('tr', { 'data-filter': s.filter, 'data-client': s.client_id },
      el('td', null, el('code', { text: s.filter })),
      el('td', { text: String(s.qos) }),
      el('td', null, el('code', { text: s.client_id })),
      el('td', null, s.connected ? el('span', { class: 'badge on', text: 'connected' }) : el('span', { class: 'badge', text: 'offline session' })))));
    $('console-subscriptions-empty').hidden = list.length > 0;
    $('console-subscriptions-empty-text').textContent = q ? 'No subscription matches the search.' : 'No subscriptions.';
    $('console-note').textContent = `${list.length} subscription${list.length === 1 ? '' : 's'}` + (q ? ' found' : '');
    stamp();
  }

  // ---------- retained ----------

  function retainedSkeleton() {
    const browse = (e) => { e.preventDefault(); retainedFilter = $('retained-filter').value.trim() || '#'; shownPayload = null; refreshRetained(); };
    return el('div', null,
      el('form', { class: 'toolbar small', id: 'retained-form', onsubmit: browse },
        el('label', { class: 'inline' }, 'Topic filter ', el('input', { id: 'retained-filter', value: retainedFilter, spellcheck: 'false', placeholder: '# or sensors/#', title: '# shows every topic but $SYS; $SYS/# shows the broker\'s own' })),
        el('button', { type: 'submit', id: 'retained-browse' }, 'Browse'),
        el('span', { class: 'spacer' }),
        el('button', { type: 'button', class: 'danger', id: 'retained-clear', onclick: clearMatching }, 'Delete all matching')),
      el('div', { class: 'card payload-view', id: 'retained-payload', hidden: true }),
      el('div', { class: 'card table-wrap' },
        table('console-retained', ['Topic', 'Size#', 'QoS', 'Payload', '']),
        el('div', { class: 'empty', id: 'console-retained-empty', hidden: true }, el('p', { text: 'No retained message matches.' })),
        el('p', { class: 'muted small', id: 'console-retained-more', hidden: true, text: 'Only the first 100 are shown: narrow the filter.' })));
  }

  async function refreshRetained() {
    let r;
    try { r = await api('/api/v1/retained?limit=100&payload_limit=120&filter=' + enc(retainedFilter)); } catch (e) { failed(e); return; }
    if (view !== 'retained' || !$('console-retained')) return;
    failed(null);
    const list = r.retained || [];
    $('console-retained').tBodies[0].replaceChildren(...list.map((m) => el('tr', { 'data-topic': m.topic },
      el('td', null, el('code', { text: m.topic })),
      el('td', { class: 'num', text: bytes(m.size) }),
      el('td', { text: String(m.qos) }),
      el('td', { class: 'payload' }, m.payload_encoding === 'base64' ? el('span', { class: 'muted', text: 'binary ' }) : null,
        el('code', { text: m.payload_encoding === 'base64' ? hex(m.payload).slice(0, 48) : m.payload }), m.payload_truncated ? el('span', { class: 'muted', text: ' …' }) : null),
      el('td', { class: 'actions' },
        el('button', { type: 'button', class: 'small', 'data-action': 'view', onclick: () => viewPayload(m.topic) }, 'View'),
        el('button', { type: 'button', class: 'small danger', 'data-action': 'delete', onclick: () => removeRetained(m.topic, false) }, 'Delete'),
        el('button', { type: 'button', class: 'small danger', 'data-action': 'delete-subtree', title: `Delete ${m.topic} and every retained message under it`, onclick: () => removeRetained(m.topic, true) }, 'Delete subtree')))));
    $('console-retained-empty').hidden = list.length > 0;
    $('console-retained-more').hidden = !r.truncated;
    $('console-note').textContent = `${list.length}${r.truncated ? '+' : ''} retained on ${retainedFilter}`;
    stamp();
  }

  function bytes(n) { return n < 1024 ? n + ' B' : n < 1048576 ? (n / 1024).toFixed(1) + ' KiB' : (n / 1048576).toFixed(1) + ' MiB'; }

  function toBytes(payload, encoding) {
    if (encoding === 'base64') return Uint8Array.from(atob(payload), (c) => c.charCodeAt(0));
    return new TextEncoder().encode(payload);
  }
  function hex(b64) { return Array.from(toBytes(b64, 'base64'), (b) => b.toString(16).padStart(2, '0')).join(' '); }

  async function viewPayload(topic) {
    let r;
    try { r = await api('/api/v1/retained?limit=1&payload_limit=262144&filter=' + enc(topic)); } catch (e) { toast('Could not load the payload: ' + e.message); return; }
    const m = (r.retained || [])[0];
    if (!m) { toast(`${topic} has no retained message any more`); return; }
    shownPayload = m;
    payloadAs = m.payload_encoding === 'base64' ? 'hex' : 'text';
    renderPayload();
  }

  function renderPayload() {
    const box = $('retained-payload');
    if (!box) return;
    const m = shownPayload;
    if (!m) { box.hidden = true; return; }
    const raw = toBytes(m.payload, m.payload_encoding);
    let text;
    if (payloadAs === 'hex') text = Array.from(raw, (b) => b.toString(16).padStart(2, '0')).join(' ');
    else if (payloadAs === 'base64') text = m.payload_encoding === 'base64' ? m.payload : btoa(String.fromCharCode(...raw));
    else if (m.payload_encoding === 'base64') text = '(binary: not UTF-8 text; see hex or base64)';
    else { try { text = JSON.stringify(JSON.parse(m.payload), null, 2); } catch (_) { text = m.payload; } }
    box.replaceChildren(
      el('div', { class: 'toolbar small' },
        el('h2', null, 'Retained on ', el('code', { text: m.topic })),
        el('span', { class: 'muted small', text: `${bytes(m.size)}, QoS ${m.qos}` + (m.payload_truncated ? ', first 256 KiB shown' : '') }),
        el('span', { class: 'spacer' }),
        ...['text', 'hex', 'base64'].map((k) => el('button', { type: 'button', class: 'small' + (payloadAs === k ? ' active' : ''), 'data-as': k, onclick: () => { payloadAs = k; renderPayload(); } }, k)),
        el('button', { type: 'button', class: 'small', id: 'retained-payload-close', onclick: () => { shownPayload = null; renderPayload(); } }, 'Close')),
      el('pre', { class: 'payload-text', id: 'retained-payload-text', text }));
    box.hidden = false;
  }

  async function removeRetained(topic, subtree) {
    const filter = subtree ? topic + '/#' : topic;
    const what = subtree ? `the retained message of ${topic} and every one under ${topic}/` : `the retained message of ${topic}`;
    if (!confirm(`Delete ${what}? Subscribers that arrive later will no longer get it.`)) return;
    await clear(filter);
  }

  async function clearMatching() {
    const f = retainedFilter;
    if (!confirm(`Delete every retained message matching ${f}? This cannot be undone.`)) return;
    await clear(f);
  }

  async function clear(filter) {
    try {
      const r = await api('/api/v1/retained?filter=' + enc(filter), { method: 'DELETE' });
      toast(`${r.deleted} retained message${r.deleted === 1 ? '' : 's'} deleted`);
      if (shownPayload && (shownPayload.topic === filter || midge.topicMatches(filter, shownPayload.topic))) { shownPayload = null; renderPayload(); }
    } catch (e) { toast('Could not delete: ' + e.message); }
    refreshRetained();
  }

  midge.tab('console', { show, poll });
})();
