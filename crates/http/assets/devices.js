// midge page: the Devices tab. The list of devices and policies (#devices), and one
// device's page (#devices/NAME): its status, its topics, its messages live, and a test
// panel that publishes as the device (judged by its policies as its own PUBLISH would be).
'use strict';
(function () {
  const { $, el, api, toast, fmtDateTime, ago, topicMatches } = window.midge;

  let current = null;     // the device whose page is open, or null for the list
  let pending = null;     // a device asked for by the address (#devices/NAME)
  let stream = null;      // the device page's live EventSource
  let policies = [];      // the last policies fetched
  let devices = [];       // the last devices fetched
  let listeners = null;   // the broker's listeners, for the "connect with" hint
  let messages = [];      // the device page's messages, newest first
  const MAX_MESSAGES = 100;

  // #devices/NAME at load: app.js knows only tab names, so open the tab and keep the name
  const initial = /^#devices\/(.+)$/.exec(location.hash);
  if (initial) {
    pending = decodeURIComponent(initial[1]);
    history.replaceState(null, '', '#devices');
  }

  const enc = encodeURIComponent;
  const lines = (text) => String(text || '').split(/[\n,]/).map((s) => s.trim()).filter(Boolean);

  // ---------- routing ----------

  function show() {
    const name = pending;
    pending = null;
    if (name != null) openDevice(name);
    else openList();
  }

  window.addEventListener('hashchange', () => {
    const m = /^#devices(?:\/(.+))?$/.exec(location.hash);
    if (!m) return;
    pending = m[1] ? decodeURIComponent(m[1]) : null;
    if (document.body.dataset.tab !== 'devices') midge.showTab('devices');
    else show();
  });

  // the live stream lives only while its page is shown
  setInterval(() => {
    if (stream && (document.body.dataset.tab !== 'devices' || current == null)) closeStream();
  }, 1000);

  function closeStream() {
    if (stream) stream.close();
    stream = null;
  }

  function poll() {
    if (current == null) refreshList();
    else refreshDevice();
  }

  // ---------- shared pieces ----------

  function copyButton(id, source) {
    return el('button', {
      type: 'button', id, class: 'small', title: 'Copy to the clipboard',
      onclick: async (e) => {
        const text = source();
        try {
          await navigator.clipboard.writeText(text);
          e.target.textContent = 'Copied';
        } catch (_) {
          // no clipboard (plain http from another host): select the text instead
          const range = document.createRange();
          const node = e.target.previousElementSibling;
          if (node) { range.selectNodeContents(node); getSelection().removeAllRanges(); getSelection().addRange(range); }
          e.target.textContent = 'Press Ctrl+C';
        }
        setTimeout(() => { e.target.textContent = 'Copy'; }, 2000);
      },
    }, 'Copy');
  }

  async function brokerAddress() {
    if (listeners == null) {
      try { listeners = (await api('/api/v1/listeners')).listeners || []; } catch (_) { listeners = []; }
    }
    const tcp = listeners.find((l) => l.kind === 'tcp') || listeners.find((l) => l.kind === 'tls');
    return { host: location.hostname || 'localhost', port: tcp ? tcp.port : null, tls: tcp && tcp.kind === 'tls' };
  }

  // The box that shows a secret once: username, secret, and how to connect with them.
  async function secretBox(d, rotated) {
    const box = $('device-secret');
    if (!box) return;
    const { host, port, tls } = await brokerAddress();
    const p = port == null ? '<port>' : String(port);
    const topic = examplePublishTopic(d);
    const cmd = `mosquitto_pub -h ${host} -p ${p}${tls ? ' --cafile ca.pem' : ''} -V 5 -i ${shellWord(d.name)} -u ${shellWord(d.username)} -P ${shellWord(d.secret)} -t ${shellWord(topic)} -m hello`;
    box.replaceChildren(
      el('h2', { text: rotated ? `New secret for ${d.name}` : `Device ${d.name} created` }),
      el('p', { class: 'warn' }, el('b', { text: 'Copy the secret now: ' }),
        'it is shown only this once (midge keeps only its hash). ',
        rotated ? 'The old secret no longer works and its connections were cut.' : 'Lost it? Rotate the secret to get a new one.',
        d.enabled === false ? el('b', { text: ' The device is disabled: enable it before it can connect.' }) : null),
      el('div', { class: 'secret-grid' },
        el('span', { class: 'k', text: 'Username' }), el('code', { id: 'secret-username', text: d.username }), copyButton('copy-username', () => d.username),
        el('span', { class: 'k', text: 'Secret (password)' }), el('code', { id: 'secret-value', text: d.secret }), copyButton('copy-secret', () => d.secret),
        el('span', { class: 'k', text: 'Broker' }), el('code', { id: 'secret-broker', text: `${tls ? 'mqtts' : 'mqtt'}://${host}:${p}` }), copyButton('copy-broker', () => `${host}:${p}`),
        el('span', { class: 'k', text: 'Try it' }), el('code', { id: 'secret-command', class: 'wrap', text: cmd }), copyButton('copy-command', () => cmd)),
      el('p', { class: 'muted' }, 'Any MQTT client works: host ', el('code', { text: host }), ', port ', el('code', { text: p }),
        ', the username and secret above as username and password',
        ...((d.publish || []).length ? ['; it may publish to ', el('code', { text: d.publish.join(', ') })] : ['; it has no policy letting it publish yet']), '.'),
      el('div', { class: 'form-actions' },
        el('button', { type: 'button', id: 'secret-done', class: 'primary', onclick: () => { box.hidden = true; box.replaceChildren(); } }, 'I have copied it')));
    box.hidden = false;
    box.scrollIntoView({ block: 'nearest' });
  }

  function shellWord(s) {
    return /^[A-Za-z0-9_./:@=+-]+$/.test(s) ? s : "'" + String(s).replace(/'/g, "'\\''") + "'";
  }

  // A topic a device may publish to, from its first publish filter (wildcards filled in).
  function examplePublishTopic(d) {
    const f = (d.publish || [])[0];
    if (!f) return 'test';
    return f.split('/').map((l) => (l === '#' ? 'test' : l === '+' ? 'x' : l.replace('%c', d.name))).join('/');
  }

  function badge(d) {
    if (!d.enabled) return el('span', { class: 'badge off', 'data-status': 'disabled', text: 'disabled' });
    if (d.connections > 0) return el('span', { class: 'badge on', 'data-status': 'online', text: d.connections > 1 ? `online ×${d.connections}` : 'online' });
    return el('span', { class: 'badge', 'data-status': 'offline', text: 'offline' });
  }

  function chips(list, cls) {
    if (!list || !list.length) return el('span', { class: 'muted', text: '–' });
    return el('span', { class: 'chips' }, ...list.map((t) => el('span', { class: 'chip ' + (cls || ''), text: t })));
  }

  function failed(what, e) {
    if (e.status === 503) return `${what}: ${e.message}`;
    return `${what}: ${e.message}`;
  }

  // ---------- actions shared by the list and the device page ----------

  async function setEnabled(d, enabled) {
    if (!enabled && !confirm(`Disable ${d.name}? Its live connections are cut now and it cannot connect until it is enabled again.`)) return false;
    try {
      const r = await api('/api/v1/devices/' + enc(d.name), { method: 'PATCH', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ enabled }) });
      toast(enabled ? `${d.name} enabled` : `${d.name} disabled` + (r.disconnected ? `: ${r.disconnected} connection${r.disconnected > 1 ? 's' : ''} cut` : ''));
      return true;
    } catch (e) { toast(failed('Could not change ' + d.name, e)); return false; }
  }

  async function rotate(d) {
    if (!confirm(`Make a new secret for ${d.name}? The old one stops working at once and its live connections are cut.`)) return;
    try {
      const r = await api('/api/v1/devices/' + enc(d.name) + '/rotate', { method: 'POST' });
      const topics = await api('/api/v1/devices/' + enc(d.name) + '/topics').catch(() => ({}));
      await secretBox({ name: d.name, username: r.username, secret: r.secret, publish: topics.publish, enabled: topics.enabled }, true);
    } catch (e) { toast(failed('Could not rotate the secret', e)); }
  }

  async function remove(d) {
    if (!confirm(`Delete ${d.name}? Its live connections are cut and its username and secret stop working. This cannot be undone.`)) return false;
    try {
      await api('/api/v1/devices/' + enc(d.name), { method: 'DELETE' });
      toast(`${d.name} deleted`);
      return true;
    } catch (e) { toast(failed('Could not delete ' + d.name, e)); return false; }
  }

  // ---------- the list ----------

  function openList() {
    current = null;
    closeStream();
    const view = $('view-devices');
    view.replaceChildren(
      el('div', { class: 'toolbar' },
        el('h1', { text: 'Devices' }),
        el('span', { class: 'note', id: 'devices-note' }),
        el('span', { class: 'spacer' }),
        el('button', { type: 'button', id: 'policy-new', onclick: () => policyForm(null) }, 'New policy'),
        el('button', { type: 'button', id: 'device-new', class: 'primary', onclick: deviceForm }, 'New device')),
      el('div', { class: 'message error', id: 'devices-error', hidden: true }),
      el('div', { class: 'card secret-box', id: 'device-secret', role: 'alert', hidden: true }),
      el('form', { class: 'card widget-form', id: 'device-form', hidden: true, autocomplete: 'off' }),
      el('form', { class: 'card widget-form', id: 'policy-form', hidden: true, autocomplete: 'off' }),
      el('div', { class: 'card table-wrap' },
        el('table', { class: 'table', id: 'devices-table' },
          el('thead', null, el('tr', null, ...['Device', 'Username', 'Status', 'Last seen', 'Policies', 'Tags', 'Enabled', ''].map((h) => el('th', { text: h })))),
          el('tbody')),
        el('div', { class: 'empty', id: 'devices-empty', hidden: true },
          el('p', { text: 'No devices yet.' }),
          el('p', null, 'A device gets its own MQTT username and secret, and may publish and subscribe only where its policies allow. ',
            'Make a ', el('b', { text: 'policy' }), ' first (which topics), then a ', el('b', { text: 'device' }), '.'))),
      el('h2', { class: 'section-title', text: 'Policies' }),
      el('p', { class: 'muted hint' }, 'A policy names the topic filters its devices may publish and subscribe to. In a filter ',
        el('code', { text: '%u' }), ' is the device\'s username, ', el('code', { text: '%c' }), ' its client id and ',
        el('code', { text: '${device}' }), ' its name, so one policy serves every device.'),
      el('div', { class: 'card table-wrap' },
        el('table', { class: 'table', id: 'policies-table' },
          el('thead', null, el('tr', null, ...['Policy', 'May publish to', 'May subscribe to', 'Devices', ''].map((h) => el('th', { text: h })))),
          el('tbody')),
        el('div', { class: 'empty', id: 'policies-empty', hidden: true },
          el('p', null, 'No policies yet. A device without a policy may connect but neither publish nor subscribe. Click ', el('b', { text: 'New policy' }), '.'))));
    refreshList();
  }

  async function refreshList() {
    let d, p;
    try {
      [d, p] = await Promise.all([api('/api/v1/devices'), api('/api/v1/policies')]);
    } catch (e) {
      const m = $('devices-error');
      if (m) { m.textContent = failed('Could not load the devices', e); m.hidden = false; }
      return;
    }
    if (current != null || !$('devices-table')) return;
    $('devices-error').hidden = true;
    devices = d.devices || [];
    policies = p.policies || [];
    const online = devices.filter((x) => x.connections > 0).length;
    $('devices-note').textContent = devices.length ? `${devices.length} device${devices.length > 1 ? 's' : ''}, ${online} online` : '';
    const body = $('devices-table').tBodies[0];
    body.replaceChildren(...devices.map(deviceRow));
    $('devices-empty').hidden = devices.length > 0;
    const used = (name) => devices.filter((x) => (x.policies || []).includes(name)).length;
    $('policies-table').tBodies[0].replaceChildren(...policies.map((pol) => el('tr', { 'data-policy': pol.name },
      el('td', null, el('b', { text: pol.name }), pol.description ? el('div', { class: 'muted small', text: pol.description }) : null),
      el('td', null, chips(pol.publish, 'topic')),
      el('td', null, chips(pol.subscribe, 'topic')),
      el('td', { class: 'num', text: String(used(pol.name)) }),
      el('td', { class: 'actions' },
        el('button', { type: 'button', class: 'small', 'data-action': 'edit-policy', onclick: () => policyForm(pol) }, 'Edit'),
        el('button', { type: 'button', class: 'small danger', 'data-action': 'delete-policy', onclick: () => removePolicy(pol) }, 'Delete')))));
    $('policies-empty').hidden = policies.length > 0;
  }

  function deviceRow(d) {
    const open = () => { location.hash = '#devices/' + enc(d.name); };
    const toggle = el('input', {
      type: 'checkbox', class: 'switch', 'data-action': 'enable', title: d.enabled ? 'Enabled: click to disable (cuts its connections)' : 'Disabled: click to enable',
      'aria-label': (d.enabled ? 'Disable ' : 'Enable ') + d.name,
      onclick: (e) => e.stopPropagation(),
      onchange: async (e) => { const ok = await setEnabled(d, e.target.checked); if (!ok) e.target.checked = d.enabled; refreshList(); },
    });
    toggle.checked = d.enabled;
    return el('tr', { class: 'clickable', 'data-device': d.name, 'data-connections': d.connections, onclick: open },
      el('td', null, el('a', { href: '#devices/' + enc(d.name), class: 'device-link', text: d.name, onclick: (e) => e.stopPropagation() }),
        d.description ? el('div', { class: 'muted small', text: d.description }) : null),
      el('td', null, el('code', { text: d.username })),
      el('td', null, badge(d)),
      // last_seen is stamped at login: a device connected for hours is seen now
      el('td', { title: d.last_seen ? 'last login ' + new Date(d.last_seen).toLocaleString() : '', text: d.connections > 0 ? 'now' : d.last_seen ? ago(d.last_seen) : 'never' }),
      el('td', null, chips(d.policies)),
      el('td', null, chips(d.tags, 'tag')),
      el('td', null, toggle),
      el('td', { class: 'actions', onclick: (e) => e.stopPropagation() },
        d.cert_cn && !d.has_secret ? null : el('button', { type: 'button', class: 'small', 'data-action': 'rotate', onclick: () => rotate(d) }, 'Rotate secret'),
        el('button', { type: 'button', class: 'small danger', 'data-action': 'delete', onclick: async () => { if (await remove(d)) refreshList(); } }, 'Delete')));
  }

  function formMessage(form, text) {
    let m = form.querySelector('.message.error');
    if (!m) { m = el('div', { class: 'message error', role: 'alert' }); form.querySelector('.form-actions').before(m); }
    m.textContent = text;
    m.hidden = !text;
  }

  function deviceForm() {
    const form = $('device-form');
    $('policy-form').hidden = true;
    const boxes = policies.map((p) => el('label', { class: 'check' },
      el('input', { type: 'checkbox', name: 'policy', value: p.name, 'data-policy': p.name, checked: policies.length === 1 }), ' ', p.name));
    form.replaceChildren(
      el('h2', { text: 'New device' }),
      el('div', { class: 'form-grid' },
        el('label', null, 'Name', el('input', { name: 'name', id: 'device-name', required: true, placeholder: 'boiler-1', spellcheck: 'false', title: 'Letters, digits and _ - . @ ~; the username is made from it' })),
        el('label', { class: 'span-2' }, 'Description', el('input', { name: 'description', id: 'device-description', placeholder: 'Boiler room sensor' })),
        el('label', null, 'Tags', el('input', { name: 'tags', id: 'device-tags', placeholder: 'basement, heating', title: 'Separated by commas' })),
        el('label', { class: 'span-2', title: 'The CN of a client certificate signed by a CA of a TLS listener: the device then logs in with that certificate instead of a secret' }, 'Certificate CN (optional)',
          el('input', { name: 'cert_cn', id: 'device-cert-cn', placeholder: '(log in with a secret)', spellcheck: 'false' }))),
      el('fieldset', { class: 'policy-picks', id: 'device-policies' },
        el('legend', { text: 'Policies' }),
        ...(boxes.length ? boxes : [el('span', { class: 'muted', text: 'No policies yet: the device could connect but neither publish nor subscribe. Make a policy first (New policy).' })])),
      el('div', { class: 'form-actions' },
        el('button', { type: 'button', onclick: () => { form.hidden = true; } }, 'Close'),
        el('button', { type: 'submit', class: 'primary', id: 'device-create' }, 'Create device')));
    form.onsubmit = async (e) => {
      e.preventDefault();
      const f = new FormData(form);
      const body = {
        name: String(f.get('name') || '').trim(),
        description: String(f.get('description') || '').trim() || undefined,
        tags: lines(f.get('tags')),
        policies: f.getAll('policy').map(String),
      };
      const cn = String(f.get('cert_cn') || '').trim();
      if (cn) body.cert_cn = cn;
      if (!body.name) { formMessage(form, 'Give the device a name.'); return; }
      try {
        const d = await api('/api/v1/devices', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
        form.hidden = true;
        if (d.secret) {
          const topics = await api('/api/v1/devices/' + enc(d.name) + '/topics').catch(() => ({}));
          await secretBox({ name: d.name, username: d.username, secret: d.secret, publish: topics.publish }, false);
        } else {
          toast(`${d.name} created: it logs in with the client certificate ${d.cert_cn}`);
        }
        refreshList();
      } catch (err) { formMessage(form, 'The device was not created: ' + err.message); }
    };
    form.hidden = false;
    $('device-name').focus();
  }

  function policyForm(p) {
    const form = $('policy-form');
    $('device-form').hidden = true;
    const editing = p != null;
    form.replaceChildren(
      el('h2', { text: editing ? `Edit policy ${p.name}` : 'New policy' }),
      el('div', { class: 'form-grid two' },
        el('label', null, 'Name', el('input', { name: 'name', id: 'policy-name', required: true, placeholder: 'own-topics', spellcheck: 'false', value: editing ? p.name : null, readonly: editing })),
        el('label', null, 'Description', el('input', { name: 'description', id: 'policy-description', value: editing ? p.description : null, placeholder: 'Each device its own subtree' })),
        el('label', null, 'May publish to (one filter a line)',
          el('textarea', { name: 'publish', id: 'policy-publish', rows: 3, spellcheck: 'false', placeholder: 'devices/%u/#' }, editing ? p.publish.join('\n') : null)),
        el('label', null, 'May subscribe to (one filter a line)',
          el('textarea', { name: 'subscribe', id: 'policy-subscribe', rows: 3, spellcheck: 'false', placeholder: 'devices/%u/#\ncommands/${device}' }, editing ? p.subscribe.join('\n') : null))),
      el('p', { class: 'muted hint' }, el('code', { text: '%u' }), ' = the device\'s username, ', el('code', { text: '%c' }), ' = its client id, ',
        el('code', { text: '${device}' }), ' = its name; ', el('code', { text: '+' }), ' and ', el('code', { text: '#' }), ' are MQTT wildcards. ',
        editing ? 'Saving applies at once: subscriptions the policy no longer allows are dropped.' : ''),
      el('div', { class: 'form-actions' },
        el('button', { type: 'button', onclick: () => { form.hidden = true; } }, 'Close'),
        el('button', { type: 'submit', class: 'primary', id: 'policy-save' }, editing ? 'Save policy' : 'Create policy')));
    form.onsubmit = async (e) => {
      e.preventDefault();
      const f = new FormData(form);
      const name = String(f.get('name') || '').trim();
      if (!name) { formMessage(form, 'Give the policy a name.'); return; }
      const body = { name, description: String(f.get('description') || '').trim(), publish: lines(f.get('publish')), subscribe: lines(f.get('subscribe')) };
      try {
        const r = editing
          ? await api('/api/v1/policies/' + enc(name), { method: 'PUT', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) })
          : await api('/api/v1/policies', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
        form.hidden = true;
        toast(`Policy ${name} ${editing ? 'saved' : 'created'}` + (r.subscriptions_dropped ? `: ${r.subscriptions_dropped} subscriptions dropped` : ''));
        refreshList();
      } catch (err) { formMessage(form, `The policy was not ${editing ? 'saved' : 'created'}: ` + err.message); }
    };
    form.hidden = false;
    (editing ? $('policy-publish') : $('policy-name')).focus();
  }

  async function removePolicy(p) {
    if (!confirm(`Delete policy ${p.name}?`)) return;
    try {
      await api('/api/v1/policies/' + enc(p.name), { method: 'DELETE' });
      toast(`Policy ${p.name} deleted`);
      refreshList();
    } catch (e) { toast(failed('Could not delete policy ' + p.name, e)); }
  }

  // ---------- one device's page ----------

  let device = null;  // the device's record
  let topics = null;  // its resolved filters

  function openDevice(name) {
    closeStream();
    current = name;
    device = null;
    topics = null;
    messages = [];
    setTimeout(() => { if (current === name && location.hash !== '#devices/' + enc(name)) history.replaceState(null, '', '#devices/' + enc(name)); }, 0);
    const view = $('view-devices');
    view.replaceChildren(
      el('div', { class: 'toolbar' },
        el('a', { href: '#devices', id: 'device-back', class: 'back' }, '← Devices'),
        el('h1', { id: 'device-title', text: name }),
        el('span', { id: 'device-badge' }),
        el('span', { class: 'spacer' }),
        el('button', { type: 'button', id: 'device-toggle' }, '…'),
        el('button', { type: 'button', id: 'device-rotate' }, 'Rotate secret'),
        el('button', { type: 'button', id: 'device-delete', class: 'danger' }, 'Delete')),
      el('div', { class: 'message error', id: 'device-error', hidden: true }),
      el('div', { class: 'card secret-box', id: 'device-secret', role: 'alert', hidden: true }),
      el('div', { class: 'device-layout' },
        el('div', { class: 'card panel', id: 'device-status' }, el('h2', { text: 'Status' }), el('dl', { class: 'facts', id: 'device-facts' })),
        el('div', { class: 'card panel', id: 'device-topics' }, el('h2', { text: 'Topics' }), el('div', { id: 'device-topic-lists' })),
        el('form', { class: 'card panel test-panel', id: 'device-test', autocomplete: 'off' },
          el('h2', { text: 'Test panel' }),
          el('p', { class: 'muted small', id: 'test-explain' }),
          el('div', { class: 'form-grid' },
            el('label', { class: 'span-all' }, 'Publish',
              el('select', { name: 'as', id: 'test-as', onchange: explainTest },
                el('option', { value: 'device', text: 'as this device (its PUBLISH)' }),
                el('option', { value: 'hub', text: 'to this device (a command from the hub)' }))),
            el('label', { class: 'span-2' }, 'Topic', el('input', { name: 'topic', id: 'test-topic', required: true, spellcheck: 'false', oninput: (e) => { e.target.dataset.auto = '0'; } })),
            el('label', null, 'QoS', el('select', { name: 'qos', id: 'test-qos' }, el('option', { text: '0' }), el('option', { text: '1', selected: true }), el('option', { text: '2' }))),
            el('label', { class: 'span-all' }, 'Payload', el('textarea', { name: 'payload', id: 'test-payload', rows: 3, spellcheck: 'false' }, '{"temp": 21.5}')),
            el('label', { class: 'check' }, el('input', { type: 'checkbox', name: 'retain', id: 'test-retain' }), ' Retain')),
          el('div', { class: 'form-actions' },
            el('span', { class: 'test-result', id: 'test-result', role: 'status' }),
            el('span', { class: 'spacer' }),
            el('button', { type: 'submit', class: 'primary', id: 'test-publish' }, 'Publish'))),
        el('div', { class: 'card panel messages-panel', id: 'device-messages' },
          el('div', { class: 'toolbar small' },
            el('h2', { text: 'Messages on its topics' }),
            el('span', { class: 'live-state', id: 'device-live', 'data-state': 'idle', text: 'not connected' }),
            el('span', { class: 'spacer' }),
            el('button', { type: 'button', class: 'small', id: 'device-messages-clear', onclick: () => { messages = []; renderMessages(); } }, 'Clear')),
          el('div', { class: 'table-wrap' },
            el('table', { class: 'table', id: 'device-messages-table' },
              el('thead', null, el('tr', null, ...['Time', 'Direction', 'Topic', 'Payload', 'QoS'].map((h) => el('th', { text: h })))),
              el('tbody'))),
          el('div', { class: 'empty', id: 'device-messages-empty' }, el('p', { text: 'No messages yet: what the device publishes and what is sent to it shows here live.' })))));
    $('device-test').onsubmit = testPublish;
    explainTest();
    refreshDevice(true);
  }

  async function refreshDevice(first) {
    const name = current;
    let d, t;
    try {
      [d, t] = await Promise.all([api('/api/v1/devices/' + enc(name)), api('/api/v1/devices/' + enc(name) + '/topics')]);
    } catch (e) {
      if (current !== name) return;
      const m = $('device-error');
      m.replaceChildren(e.status === 404 ? `There is no device named ${name}. ` : failed('Could not load the device', e) + ' ',
        el('a', { href: '#devices', text: 'Back to the devices' }));
      m.hidden = false;
      return;
    }
    if (current !== name || !$('device-facts')) return;
    $('device-error').hidden = true;
    const filtersChanged = !topics || JSON.stringify([topics.publish, topics.subscribe]) !== JSON.stringify([t.publish, t.subscribe]);
    device = d;
    topics = t;
    renderStatus(d);
    if (filtersChanged) {
      renderTopics(t);
      if (first) explainTest();
      startStream();
    }
  }

  function renderStatus(d) {
    $('device-badge').replaceChildren(badge(d));
    const toggle = $('device-toggle');
    toggle.textContent = d.enabled ? 'Disable' : 'Enable';
    toggle.dataset.enabled = d.enabled ? '1' : '0';
    toggle.onclick = async () => { if (await setEnabled(d, !d.enabled)) refreshDevice(); };
    $('device-rotate').hidden = !!d.cert_cn && !d.has_secret;
    $('device-rotate').onclick = () => rotate(d);
    $('device-delete').onclick = async () => { if (await remove(d)) location.hash = '#devices'; };
    const clients = d.clients || [];
    const fact = (k, ...v) => [el('dt', { text: k }), el('dd', null, ...v)];
    $('device-facts').replaceChildren(
      ...fact('Status', !d.enabled ? 'Disabled: it cannot connect' : clients.length ? `Online (${clients.length} connection${clients.length > 1 ? 's' : ''})` : 'Offline'),
      ...(clients.length ? fact('Connected', el('ul', { class: 'plain', id: 'device-clients' }, ...clients.map((c) => el('li', { 'data-client': c.client_id },
        el('code', { text: c.client_id }), ` from ${c.address || '?'}, ${c.protocol}, since ${c.connected_since ? fmtDateTime(c.connected_since) : '?'}`)))) : []),
      ...fact('Last seen', clients.length ? 'now (connected)' : d.last_seen ? `${ago(d.last_seen)} (${new Date(d.last_seen).toLocaleString()})` : 'never connected'),
      ...fact('Username', el('code', { id: 'device-username', text: d.username })),
      ...fact('Logs in with', ...(d.cert_cn ? ['client certificate CN ', el('code', { text: d.cert_cn }), d.has_secret ? ' or its secret' : ''] : ['its secret (shown once when made or rotated)'])),
      ...fact('Policies', chips(d.policies)),
      ...(d.groups && d.groups.length ? fact('Groups', chips(d.groups)) : []),
      ...fact('Tags', chips(d.tags, 'tag')),
      ...(d.description ? fact('Description', d.description) : []),
      ...fact('Created', d.created ? new Date(d.created).toLocaleString() : '?'));
  }

  function renderTopics(t) {
    const list = (items, id) => items.length
      ? el('ul', { class: 'plain topic-list', id }, ...items.map((f) => el('li', null, el('code', { text: f }))))
      : el('p', { class: 'muted', id, text: 'nothing' });
    const usesC = t.publish.concat(t.subscribe).some((f) => f.includes('%c'));
    $('device-topic-lists').replaceChildren(...[
      el('h3', { text: 'May publish to' }), list(t.publish, 'device-publish-filters'),
      el('h3', { text: 'May subscribe to' }), list(t.subscribe, 'device-subscribe-filters'),
      usesC ? el('p', { class: 'muted small', text: '%c stands for the client id it connects with.' }) : null,
      !t.publish.length && !t.subscribe.length ? el('p', { class: 'muted small', text: 'Attach a policy to let it publish or subscribe.' }) : null].filter(Boolean));
  }

  // the live stream's filters: every filter of the device, %c as any client id
  function streamFilters(t) {
    const all = [];
    for (const f of t.publish.concat(t.subscribe)) {
      const g = f.split('/').map((l) => (l.includes('%c') ? '+' : l)).join('/');
      if (!all.includes(g)) all.push(g);
    }
    return all.slice(0, 32);
  }

  function startStream() {
    closeStream();
    const state = $('device-live');
    const filters = streamFilters(topics);
    if (!filters.length) {
      state.dataset.state = 'idle';
      state.textContent = 'no topics to watch';
      return;
    }
    const es = new EventSource('/api/v1/live?' + filters.map((f) => 'filter=' + enc(f)).join('&'));
    stream = es;
    state.dataset.state = 'connecting';
    state.textContent = 'connecting…';
    es.onopen = () => { if (stream === es) { state.dataset.state = 'live'; state.textContent = 'live'; } };
    es.onerror = () => { if (stream === es) { state.dataset.state = 'error'; state.textContent = 'reconnecting…'; } };
    es.onmessage = (e) => {
      if (stream !== es) return;
      let m;
      try { m = JSON.parse(e.data); } catch (_) { return; }
      messages.unshift(m);
      if (messages.length > MAX_MESSAGES) messages.length = MAX_MESSAGES;
      renderMessages();
    };
  }

  function direction(m) {
    // a topic it may publish to is its own (sent by it, or as it by the test panel);
    // the others reach it through its subscribe filters
    const pub = (topics.publish || []).some((f) => topicMatches(f.replace(/[^/]*%c[^/]*/g, '+'), m.topic));
    return pub ? 'from device' : 'to device';
  }

  function renderMessages() {
    const body = $('device-messages-table');
    if (!body) return;
    body.tBodies[0].replaceChildren(...messages.map((m) => el('tr', { 'data-topic': m.topic },
      el('td', { class: 'nowrap', text: fmtDateTime(m.ts || Date.now()) }),
      el('td', { class: 'nowrap', text: direction(m) }),
      el('td', null, el('code', { text: m.topic })),
      el('td', { class: 'payload' }, m.encoding === 'base64' ? el('span', { class: 'muted', text: 'binary (base64) ' }) : null, el('code', { class: 'wrap', text: m.payload == null ? '' : String(m.payload) })),
      el('td', { class: 'nowrap', text: String(m.qos) + (m.retain ? ' retained' : '') }))));
    $('device-messages-empty').hidden = messages.length > 0;
  }

  function explainTest() {
    const asDevice = $('test-as').value === 'device';
    $('test-explain').textContent = asDevice
      ? 'Publishes as the device would: judged by its policies exactly as its own PUBLISH, so a topic they do not grant is refused here too.'
      : 'Publishes as the hub (an operator), to one of the topics the device subscribes to: it gets it as a command.';
    const t = $('test-topic');
    if (topics && (!t.value || t.dataset.auto === '1')) {
      t.value = asDevice ? examplePublishTopic({ name: current, publish: topics.publish }) : exampleCommandTopic();
      t.dataset.auto = '1';
    }
  }

  // a topic the device subscribes to, to send it a command
  function exampleCommandTopic() {
    const f = (topics.subscribe || []).find((x) => !x.startsWith('$')) || '';
    return f.split('/').map((l) => (l === '#' ? 'command' : l === '+' ? 'x' : l.replace('%c', current))).join('/');
  }

  async function testPublish(e) {
    e.preventDefault();
    const out = $('test-result');
    const f = new FormData(e.target);
    const topic = String(f.get('topic') || '').trim();
    if (!topic) { out.className = 'test-result error'; out.textContent = 'Give a topic.'; return; }
    const body = { topic, payload: String(f.get('payload') || ''), qos: Number(f.get('qos')), retain: !!f.get('retain') };
    out.className = 'test-result';
    out.textContent = 'publishing…';
    try {
      const path = f.get('as') === 'hub' ? '/api/v1/publish' : '/api/v1/devices/' + enc(current) + '/publish';
      const r = await api(path, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
      out.className = 'test-result ok';
      out.dataset.result = 'ok';
      out.textContent = `Published to ${r.topic} (QoS ${r.qos}${r.retain ? ', retained' : ''}): ${r.reason}`;
    } catch (err) {
      out.className = 'test-result error';
      out.dataset.result = err.status === 403 ? 'refused' : 'error';
      out.textContent = (err.status === 403 ? 'Refused: ' : 'Failed: ') + err.message;
    }
  }

  midge.tab('devices', { show, poll });
})();
