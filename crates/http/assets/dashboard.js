// midge page: the dashboards (a selector, new/rename/copy/delete/export/import), their
// widgets fed live by /api/v1/live, chart history from the series API, edit mode, and the
// first-run list of the topics flowing when a dashboard has no widgets.
//
// Dashboards come from /api/v1/dashboards (the open one is ?d=ID in the URL); live values
// from one EventSource on /api/v1/live subscribed to the union of the widgets' topics (to
// `#` while the first-run list shows); chart history from the series API.
// Elements that tests read carry ids or data attributes: each widget is
// [data-widget-id][data-kind] with data-value (last value), charts data-points, switches
// data-state, map markers [data-role=marker][data-topic]; body[data-live] and
// body[data-ready] tell the live stream's state and that the first load is done. The
// selector's tabs are #dash-tabs [data-dashboard-id] (.active the open one); the first-run
// rows #first-run-topics tr[data-topic] with [data-action=make-widget].
'use strict';
(function () {
  const { $, el, svg, setAttrs, api, toast, fmtNumber, fmtCount, fmtClock, fmtDateTime, ago, parseDuration, topicMatches, getPath, parsePayload, extract, asNumber, niceStep } = window.midge;

  const KINDS = midge.widgetKinds;

  // ---------- the dashboard ----------

  const state = {
    saved: [],       // widgets as the server has them
    draft: null,     // widgets being edited (edit mode)
    editing: false,
    views: [],       // Widget instances on screen
    source: null,    // the EventSource
    filters: '',
    retry: null,
    formIndex: null, // the widget the form edits (null: a new one)
    latest: new Map(), // the last message of each topic, replayed into re-drawn widgets
    boards: [],      // the dashboards' summaries (GET /api/v1/dashboards)
    board: null,     // the open dashboard (id, name, source, readonly, persistent)
    shared: false,   // opened by a share link: that dashboard only, read-only
    firstRun: false, // the first-run list shows (a dashboard without widgets)
    flowing: new Map(), // topic → {msg, arrivals: [ts...], row} for the first-run list
  };
  const LATEST_MAX = 1000;

  function dispatch(msg) {
    if (state.firstRun && !state.replaying) noteFlowing(msg, true);
    for (const v of state.views) {
      if (v.accepts ? v.accepts(msg.topic) : topicMatches(v.def.topic, msg.topic)) {
        try { v.handle(msg); } catch (err) { console.error('widget', v.key, err); }
      }
    }
  }

  function shown() { return state.editing ? state.draft : state.saved; }

  function render() {
    const list = shown();
    for (const v of state.views) v.destroy();
    const grid = $('grid');
    grid.replaceChildren();
    state.views = list.map((def, i) => {
      const Kind = KINDS[def.kind] || KINDS.value;
      const view = new Kind(def, def.id || 'new-' + (i + 1));
      if (state.editing) addControls(view, i);
      grid.append(view.card);
      return view;
    });
    // what is already known (retained states, last readings) at once
    state.replaying = true;
    try { for (const msg of state.latest.values()) dispatch(msg); } finally { state.replaying = false; }
    $('empty').hidden = list.length > 0 || state.editing;
    setFirstRun(list.length === 0 && !state.editing && !state.shared);
    connectLive();
    return Promise.allSettled(state.views.map((v) => v.load()));
  }

  function addControls(view, i) {
    const c = view.controls;
    const list = state.draft;
    const move = (d) => () => {
      const j = i + d;
      if (j < 0 || j >= list.length) return;
      [list[i], list[j]] = [list[j], list[i]];
      render();
    };
    c.append(
      el('button', { type: 'button', title: 'Move left', 'data-action': 'left', onclick: move(-1), text: '◀' }),
      el('button', { type: 'button', title: 'Move right', 'data-action': 'right', onclick: move(1), text: '▶' }),
      el('button', { type: 'button', title: 'Edit', 'data-action': 'edit', onclick: () => openForm(i), text: '✎' }),
      el('button', { type: 'button', title: 'Remove', class: 'danger', 'data-action': 'remove', onclick: () => { list.splice(i, 1); closeForm(); render(); }, text: '✕' }));
  }

  function connectLive() {
    // the first-run list reads the last values; the live stream on '#' only when they are off
    const filters = state.firstRun ? (state.lastOff ? ['#'] : []) : [...new Set(shown().flatMap(midge.widgetTopics))];
    const key = filters.join('\n');
    if (key === state.filters && state.source && state.source.readyState !== EventSource.CLOSED) return;
    if (state.source) state.source.close();
    clearTimeout(state.retry);
    state.source = null;
    state.filters = key;
    if (!filters.length) { setLive(state.firstRun ? 'polling' : 'idle'); return; }
    const url = '/api/v1/live?' + filters.map((f) => 'filter=' + encodeURIComponent(f)).join('&');
    const source = new EventSource(url);
    state.source = source;
    setLive('connecting');
    source.onopen = () => setLive('open');
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) {
        // refused (a 4xx/5xx): try again later
        setLive('error');
        state.filters = '';
        state.retry = setTimeout(connectLive, 5000);
      } else {
        setLive('connecting');
      }
    };
    source.onmessage = (e) => {
      let m;
      try { m = JSON.parse(e.data); } catch (_) { return; }
      if (m.dropped) {
        // the server skipped messages this page could not take fast enough
        $('live-status').title = m.dropped + ' messages skipped: this page could not keep up';
        $('live-status').dataset.dropped = String(m.dropped);
      }
      const text = m.encoding === 'base64' ? atob(m.payload) : m.payload;
      const msg = { topic: m.topic, text, ts: m.ts || Date.now(), retain: m.retain, qos: m.qos };
      state.latest.delete(msg.topic);
      state.latest.set(msg.topic, msg);
      if (state.latest.size > LATEST_MAX) state.latest.delete(state.latest.keys().next().value);
      dispatch(msg);
    };
  }

  function setLive(s) {
    document.body.dataset.live = s;
    $('live-text').textContent = { open: 'live', connecting: 'connecting…', error: 'offline', idle: 'idle', polling: 'live (every 2 s)' }[s] || s;
  }

  // ---------- the dashboards ----------

  const enc = encodeURIComponent;

  function wantedId() { return new URLSearchParams(location.search).get('d'); }

  function rememberId(id) {
    const q = new URLSearchParams(location.search);
    q.set('d', id);
    const search = q.toString();
    history.replaceState(null, '', location.pathname + (search ? '?' + search : '') + location.hash);
  }

  async function loadBoards(open) {
    let d;
    try {
      d = await api('/api/v1/dashboards');
    } catch (e) {
      state.boards = [];
      state.board = null;
      state.saved = [];
      renderTabs();
      $('dash-note').textContent = 'could not load the dashboards: ' + e.message;
      await render();
      document.body.dataset.ready = '1';
      return;
    }
    state.boards = d.dashboards || [];
    state.first = d.first;
    state.shared = !!d.shared;
    document.body.classList.toggle('shared-dashboard', state.shared);
    const want = open || wantedId();
    const id = state.boards.some((b) => b.id === want) ? want : d.first;
    await openBoard(id);
  }

  async function openBoard(id) {
    if (state.editing) setEditing(false);
    hideNameForm();
    let d = null;
    try {
      d = id == null ? null : await api('/api/v1/dashboards/' + enc(id));
    } catch (e) {
      $('dash-note').textContent = 'could not load the dashboard: ' + e.message;
    }
    state.board = d;
    state.saved = (d && d.widgets) || [];
    if (d) rememberId(d.id);
    renderTabs();
    await render();
    document.body.dataset.ready = '1';
  }

  function lockIcon() {
    return svg('svg', { class: 'lock', viewBox: '0 0 16 16', width: 12, height: 12, 'aria-hidden': 'true' },
      svg('rect', { x: 3, y: 7, width: 10, height: 8, rx: 1.5 }),
      svg('path', { d: 'M5 7V5a3 3 0 0 1 6 0v2', fill: 'none', 'stroke-width': 1.6 }));
  }

  function renderTabs() {
    const nav = $('dash-tabs');
    const cur = state.board ? state.board.id : null;
    nav.replaceChildren(...state.boards.map((b) => el('button', {
      type: 'button', role: 'tab', class: 'dash-tab' + (b.id === cur ? ' active' : ''),
      'aria-selected': b.id === cur ? 'true' : 'false',
      'data-dashboard-id': b.id, 'data-source': b.source,
      title: b.readonly ? b.name + ': from midge.toml ([[dashboard.widget]]), read-only' : b.name,
      onclick: () => { if (b.id !== cur) openBoard(b.id); },
    }, b.readonly ? lockIcon() : null, b.name)));
    const d = state.board;
    const ro = !d || d.readonly;
    $('dash-manage').hidden = state.shared;
    $('dash-rename').hidden = ro;
    // the only dashboard cannot go (the server says so too): no button for it
    $('dash-delete').hidden = ro || (state.boards.length === 1);
    $('dash-copy').hidden = !d || !d.readonly;
    $('dash-export').hidden = !d;
    $('dash-share').hidden = !d;
    if ($('dash-share-box').dataset.dashboard !== (d && d.id)) $('dash-share-box').hidden = true;
    $('edit-toggle').hidden = ro || state.shared;
    if (d) {
      $('dash-export').href = '/api/v1/dashboards/' + enc(d.id) + '/export';
      $('dash-export').setAttribute('download', 'midge-dashboard-' + d.id + '.json');
    }
    const note = $('dash-note');
    note.dataset.source = d ? d.source : '';
    if (!d) return;
    if (state.shared) note.textContent = 'read-only view (a share link)';
    else if (d.readonly) note.textContent = 'from midge.toml ([[dashboard.widget]]): edit the file to change it, or Copy it to a dashboard you can edit';
    else if (!d.persistent) note.textContent = 'edits last until the server restarts (no dashboard_file)';
    else note.textContent = '';
  }

  // New and Rename ask for a name in the toolbar (no blocking prompt()).
  let nameAction = null;
  function askName(value, action) {
    nameAction = action;
    const f = $('dash-name-form');
    f.hidden = false;
    $('dash-name-input').value = value;
    $('dash-name-input').focus();
    $('dash-name-input').select();
  }
  function hideNameForm() { $('dash-name-form').hidden = true; nameAction = null; }

  const jsonBody = (method, body) => ({ method, headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });

  $('dash-name-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const name = $('dash-name-input').value.trim();
    if (!name || !nameAction) return;
    try {
      await nameAction(name);
      hideNameForm();
    } catch (err) {
      toast(err.message);
    }
  });
  $('dash-name-cancel').addEventListener('click', hideNameForm);

  $('dash-new').addEventListener('click', () => askName('', async (name) => {
    const d = await api('/api/v1/dashboards', jsonBody('POST', { name }));
    await loadBoards(d.id);
    toast('Dashboard "' + d.name + '" made: click Edit to add widgets');
  }));
  $('dash-rename').addEventListener('click', () => {
    const d = state.board;
    if (!d) return;
    askName(d.name, async (name) => {
      await api('/api/v1/dashboards/' + enc(d.id), jsonBody('PUT', { name }));
      await loadBoards(d.id);
    });
  });
  $('dash-copy').addEventListener('click', () => {
    const d = state.board;
    if (!d) return;
    askName(d.name + ' (copy)', async (name) => {
      const widgets = d.widgets.map((w) => Object.assign({}, w));
      const made = await api('/api/v1/dashboards', jsonBody('POST', { name, widgets }));
      await loadBoards(made.id);
      toast('Copied to "' + made.name + '": this one you can edit');
    });
  });
  // Delete asks again on the button itself: a second click within 4 s deletes.
  $('dash-delete').addEventListener('click', async () => {
    const b = $('dash-delete');
    const d = state.board;
    if (!d) return;
    if (!b.dataset.confirm) {
      b.dataset.confirm = '1';
      b.textContent = 'Delete "' + d.name + '"?';
      clearTimeout(b.timer);
      b.timer = setTimeout(() => { delete b.dataset.confirm; b.textContent = 'Delete'; }, 4000);
      return;
    }
    clearTimeout(b.timer);
    delete b.dataset.confirm;
    b.textContent = 'Delete';
    try {
      await api('/api/v1/dashboards/' + enc(d.id), { method: 'DELETE' });
      toast('Dashboard "' + d.name + '" deleted');
      await loadBoards(null);
    } catch (err) {
      toast(err.message);
    }
  });
  $('dash-import-file').addEventListener('change', async (e) => {
    const input = e.target;
    const file = input.files && input.files[0];
    input.value = '';
    if (!file) return;
    let doc;
    try {
      doc = JSON.parse(await file.text());
    } catch (err) {
      toast(file.name + ' is not JSON: ' + err.message);
      return;
    }
    try {
      const d = await api('/api/v1/dashboards', jsonBody('POST', doc));
      await loadBoards(d.id);
      toast('Imported "' + d.name + '"' + (doc.id && doc.id !== d.id ? ' (as ' + d.id + ': that id was taken)' : ''));
    } catch (err) {
      toast('Not imported: ' + err.message);
    }
  });

  // Share: a token for the open dashboard (POST /api/v1/tokens), its URL to copy.
  $('dash-share').addEventListener('click', () => {
    const d = state.board;
    if (!d) return;
    const box = $('dash-share-box');
    box.dataset.dashboard = d.id;
    $('dash-share-name').textContent = d.name;
    $('dash-share-result').hidden = true;
    box.hidden = false;
  });
  $('dash-share-box').addEventListener('submit', async (e) => {
    e.preventDefault();
    const d = state.board;
    if (!d) return;
    try {
      const t = await api('/api/v1/tokens', jsonBody('POST', { dashboard: d.id, ttl: Number($('dash-share-ttl').value) }));
      $('dash-share-url').value = t.url || (location.origin + t.path);
      $('dash-share-expires').textContent = 'valid until ' + fmtDateTime(t.expires) + '; revoke it with DELETE /api/v1/tokens/' + t.id;
      $('dash-share-result').hidden = false;
      $('dash-share-url').select();
    } catch (err) {
      toast('No link made: ' + err.message);
    }
  });
  $('dash-share-copy').addEventListener('click', async () => {
    const url = $('dash-share-url').value;
    try { await navigator.clipboard.writeText(url); toast('Link copied'); } catch (_) { $('dash-share-url').select(); toast('Select the link and copy it (Ctrl+C)'); }
  });
  $('dash-share-close').addEventListener('click', () => { $('dash-share-box').hidden = true; });

  // ---------- first run: the topics flowing ----------

  const RATE_WINDOW = 10000; // ms of arrivals a rate is counted over
  const FLOWING_MAX = 200;

  function setFirstRun(on) {
    const was = state.firstRun;
    state.firstRun = on;
    $('first-run').hidden = !on;
    $('empty-shared').hidden = !state.shared;
    if (on && !was) pollFlowing();
  }

  function hiddenTopic(t) { return !t || t.startsWith('$'); }

  // A topic's message, from the live stream (live: each one counted for its rate) or from a
  // poll of the last values (count: the broker's count of its messages).
  function noteFlowing(msg, live, count) {
    if (hiddenTopic(msg.topic)) return;
    let f = state.flowing.get(msg.topic);
    if (!f) {
      if (state.flowing.size >= FLOWING_MAX) return;
      f = { msg, arrivals: [], samples: [] };
      state.flowing.set(msg.topic, f);
    }
    const now = Date.now();
    if (live) f.arrivals.push(now);
    if (count != null) {
      f.samples.push([now, count]);
      while (f.samples.length > 2 && now - f.samples[1][0] >= RATE_WINDOW) f.samples.shift();
    }
    if (live || msg.ts >= f.msg.ts) f.msg = msg;
    if (live) drawFlowing();
  }

  async function pollFlowing() {
    if (!state.firstRun) return;
    const box = $('first-run');
    try {
      // the broker's topics with their counts (/api/v1/topics, in topic order, bounded);
      // a server without that route answers from the last values
      let d;
      try {
        d = await api('/api/v1/topics?filter=%23&limit=' + FLOWING_MAX);
      } catch (e) {
        if (e.status !== 404) throw e;
        d = await api('/api/v1/last?topic=%23');
      }
      $('first-run-more').hidden = !(d.truncated && d.total > (d.topics || []).length);
      $('first-run-more').textContent = d.total ? 'The first ' + FLOWING_MAX + ' of ' + fmtCount(d.total) + ' topics.' : '';
      for (const t of d.topics || []) {
        const text = t.payload == null ? '(' + fmtCount(t.size) + ' bytes)' : t.encoding === 'base64' ? atob(t.payload) : t.payload;
        noteFlowing({ topic: t.topic, text, ts: t.ts, retain: t.retain, qos: t.qos }, false, t.count);
      }
      box.dataset.last = 'on';
    } catch (e) {
      // last values off (503): the list fills from the live stream on '#'
      box.dataset.last = 'off';
    }
    state.lastOff = box.dataset.last === 'off';
    if (state.firstRun) connectLive();
    drawFlowing();
  }

  // The numeric fields of a JSON value: paths like temp, env.temp, values[0].
  function numericFields(v, prefix, out, depth) {
    if (out.length >= 20 || depth > 4) return out;
    if (Array.isArray(v)) {
      v.slice(0, 10).forEach((x, i) => numericFields(x, prefix + '[' + i + ']', out, depth + 1));
    } else if (v !== null && typeof v === 'object') {
      for (const [k, x] of Object.entries(v)) {
        if (!/^[^.[\]]+$/.test(k)) continue;
        numericFields(x, prefix ? prefix + '.' + k : k, out, depth + 1);
      }
    } else if (typeof v === 'number' && isFinite(v) && prefix) {
      out.push(prefix);
    }
    return out;
  }

  const ON_OFF = /^(on|off|true|false|open|closed|opened|close|yes|no|up|down|active|inactive|online|offline)$/i;
  const LAT = ['lat', 'latitude'];
  const LON = ['lon', 'lng', 'long', 'longitude'];

  // The widget a topic's last payload suggests (field: the one picked for a JSON object).
  function suggest(topic, text, field) {
    const parsed = parsePayload(text);
    const title = topic.split('/').filter(Boolean).slice(-2).join(' ') || topic;
    const w = { topic, title };
    const num = (v) => typeof v === 'number' ? v : (typeof v === 'string' ? asNumber(v) : null);
    const dial = (v) => {
      if (v != null && v >= 0 && v <= 100) Object.assign(w, { kind: 'gauge', min: 0, max: 100 });
      else w.kind = 'value';
    };
    if (parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed)) {
      const keys = Object.keys(parsed);
      const lat = keys.find((k) => LAT.includes(k.toLowerCase()));
      const lon = keys.find((k) => LON.includes(k.toLowerCase()));
      if (lat && lon && num(parsed[lat]) != null && num(parsed[lon]) != null) {
        return Object.assign(w, { kind: 'map', lat_field: lat, lon_field: lon, width: 2 });
      }
      const fields = numericFields(parsed, '', [], 0);
      const f = field && fields.includes(field) ? field : fields[0];
      if (f) {
        w.field = f;
        w.title = title + ' ' + f;
        dial(getPath(parsed, f));
        return w;
      }
      const sw = keys.find((k) => typeof parsed[k] === 'boolean' || (typeof parsed[k] === 'string' && ON_OFF.test(parsed[k])));
      if (sw) {
        w.field = sw;
        w.kind = KINDS.led ? 'led' : 'value';
        return w;
      }
      w.kind = 'value';
      w.field = keys[0] || 'value';
      return w;
    }
    w.field = 'value';
    if (typeof parsed === 'boolean' || (typeof parsed === 'string' && ON_OFF.test(parsed.trim()))) {
      w.kind = KINDS.led ? 'led' : 'value';
      return w;
    }
    dial(num(parsed));
    return w;
  }

  const KIND_NAMES = { gauge: 'Gauge', value: 'Value', map: 'Map', led: 'LED', switch: 'Switch', chart: 'Chart' };

  // msg/s: from the broker's counts between polls, else from the live stream's arrivals
  function rateOf(f, now) {
    if (f.samples.length >= 2) {
      const [t0, c0] = f.samples[0];
      const [t1, c1] = f.samples[f.samples.length - 1];
      return t1 > t0 ? Math.max(0, c1 - c0) / ((t1 - t0) / 1000) : 0;
    }
    if (f.samples.length === 1) return null;
    f.arrivals = f.arrivals.filter((t) => now - t < RATE_WINDOW);
    const span = Math.min(RATE_WINDOW, now - (state.flowingSince || now)) / 1000;
    return span > 0 ? f.arrivals.length / Math.max(span, 2) : 0;
  }

  function drawFlowing() {
    if (!state.firstRun) return;
    const body = $('first-run-topics').tBodies[0];
    const now = Date.now();
    const topics = [...state.flowing.keys()].sort();
    $('first-run-none').hidden = topics.length > 0;
    $('first-run-topics').hidden = topics.length === 0;
    const rows = topics.map((topic) => {
      const f = state.flowing.get(topic);
      if (!f.row) f.row = flowingRow(topic, f);
      const r = f.row;
      const text = f.msg.text == null ? '' : String(f.msg.text);
      r.payload.textContent = text.length > 120 ? text.slice(0, 120) + '…' : text;
      r.payload.title = text.slice(0, 2000);
      r.when.textContent = f.msg.ts ? ago(f.msg.ts) : '';
      r.when.title = f.msg.ts ? fmtDateTime(f.msg.ts) : '';
      const rate = rateOf(f, now);
      r.rate.textContent = rate == null ? '…' : rate > 0 ? fmtNumber(rate, rate < 10 ? 1 : 0) + ' msg/s' : '0 msg/s';
      r.rate.dataset.rate = rate == null ? '' : String(rate);
      // the numeric fields to pick from, refreshed as the payload changes
      const fields = numericFields(parsePayload(text), '', [], 0);
      const key = fields.join('\n');
      if (key !== r.fieldsKey) {
        r.fieldsKey = key;
        const keep = r.picker.value;
        r.picker.replaceChildren(...fields.map((p) => el('option', { value: p, text: p })));
        if (fields.includes(keep)) r.picker.value = keep;
      }
      const w = suggest(topic, text, r.picker.value);
      // a field to pick when the widget shows one of several numbers
      r.picker.hidden = fields.length < 2 || w.kind === 'map' || !w.field;
      r.button.textContent = w.kind === 'led' ? 'Make an LED' : 'Make a ' + (KIND_NAMES[w.kind] || w.kind).toLowerCase();
      r.button.dataset.kind = w.kind;
      r.button.title = 'Add a ' + (KIND_NAMES[w.kind] || w.kind) + ' widget of ' + topic + (w.field && w.kind !== 'map' ? ' (' + w.field + ')' : '') + ' to this dashboard';
      return r.tr;
    });
    body.replaceChildren(...rows);
  }

  function flowingRow(topic, f) {
    const r = {};
    r.payload = el('td', { class: 'payload', 'data-role': 'payload' });
    r.when = el('td', { class: 'when', 'data-role': 'when' });
    r.rate = el('td', { class: 'rate', 'data-role': 'rate' });
    r.picker = el('select', { 'data-role': 'field', 'aria-label': 'Field of ' + topic, hidden: true, onchange: () => drawFlowing() });
    r.button = el('button', { type: 'button', class: 'primary', 'data-action': 'make-widget', onclick: () => makeWidget(topic) });
    r.tr = el('tr', { 'data-topic': topic },
      el('td', { class: 'topic', text: topic }), r.payload, r.when, r.rate,
      el('td', { class: 'make' }, r.picker, r.button));
    return r;
  }

  async function makeWidget(topic) {
    const f = state.flowing.get(topic);
    const d = state.board;
    if (!f || !d) return;
    const w = suggest(topic, String(f.msg.text ?? ''), f.row && f.row.picker.value);
    try {
      const saved = await api('/api/v1/dashboards/' + enc(d.id), jsonBody('PUT', { widgets: state.saved.concat([w]) }));
      state.saved = saved.widgets;
      // the widget starts from what the list had
      state.latest.set(topic, f.msg);
      const sum = state.boards.find((b) => b.id === d.id);
      if (sum) sum.widget_count = saved.widgets.length;
      await render();
      toast('Widget added: ' + (w.title || topic));
    } catch (err) {
      toast('No widget added: ' + err.message);
    }
  }

  // ---------- edit mode ----------

  function setEditing(on) {
    state.editing = on;
    midge.editing = on;
    document.body.classList.toggle('editing', on);
    state.draft = on ? JSON.parse(JSON.stringify(state.saved)) : null;
    $('edit-message').hidden = true;
    if (!on) closeForm();
    render();
  }

  const form = $('widget-form');

  function openForm(index) {
    state.formIndex = index;
    const def = index == null ? { kind: 'gauge' } : state.draft[index];
    form.reset();
    midge.widgetForm.fill(form, def);
    if (index == null) {
      form.elements.width.value = '1';
      form.elements.qos.value = '0';
    }
    $('form-title').textContent = index == null ? 'Add a widget' : 'Edit widget';
    $('form-submit').textContent = index == null ? 'Add' : 'Update';
    showKindFields();
    form.hidden = false;
    form.elements.title.focus();
  }

  function closeForm() { form.hidden = true; state.formIndex = null; }

  function showKindFields() {
    const kind = form.elements.kind.value;
    for (const label of form.querySelectorAll('[data-kinds]')) {
      label.hidden = !label.dataset.kinds.split(' ').includes(kind);
    }
  }

  // the form's fields are read by widgets.js (it knows each kind's fields)
  function formWidget() {
    return midge.widgetForm.read(form, state.formIndex != null ? state.draft[state.formIndex] : null);
  }

  form.elements.kind.addEventListener('change', showKindFields);
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    let w;
    try { w = formWidget(); } catch (err) { toast(err.message); return; }
    if (!w.topic) { toast('A topic filter is needed'); return; }
    if (state.formIndex == null) state.draft.push(w);
    else state.draft[state.formIndex] = w;
    closeForm();
    render();
  });
  $('form-cancel').addEventListener('click', closeForm);
  $('edit-toggle').addEventListener('click', () => setEditing(true));
  $('edit-cancel').addEventListener('click', () => setEditing(false));
  $('edit-add').addEventListener('click', () => openForm(null));
  $('edit-save').addEventListener('click', async () => {
    const box = $('edit-message');
    try {
      const d = await api('/api/v1/dashboards/' + enc(state.board.id), jsonBody('PUT', { widgets: state.draft }));
      state.saved = d.widgets;
      setEditing(false);
      toast(d.persistent ? 'Dashboard saved' : 'Dashboard updated (not saved to a file)');
    } catch (e) {
      box.textContent = e.message;
      box.hidden = false;
    }
  });


  midge.tab('dashboard', {
    show() { for (const v of state.views) if (v.schedule) v.schedule(); },
    poll() { if (state.firstRun) pollFlowing(); },
  });
  setInterval(() => { for (const v of state.views) v.tick(); }, 10000);
  state.flowingSince = Date.now();
  loadBoards(null);
})();
