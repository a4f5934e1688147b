// midge page: the dashboard (widgets fed live by /api/v1/live, chart history from the series
// API, edit mode).
//
//
// Widgets come from /api/v1/dashboard; live values from one EventSource on /api/v1/live
// subscribed to the union of the widgets' topics; chart history from the series API.
// Elements that tests read carry ids or data attributes: each widget is
// [data-widget-id][data-kind] with data-value (last value), charts data-points, switches
// data-state, map markers [data-role=marker][data-topic]; body[data-live] and
// body[data-ready] tell the live stream's state and that the first load is done.
'use strict';
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
  };
  const LATEST_MAX = 1000;

  function dispatch(msg) {
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
    for (const msg of state.latest.values()) dispatch(msg);
    $('empty').hidden = list.length > 0;
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
    const filters = [...new Set(shown().flatMap(midge.widgetTopics))];
    const key = filters.join('\n');
    if (key === state.filters && state.source && state.source.readyState !== EventSource.CLOSED) return;
    if (state.source) state.source.close();
    clearTimeout(state.retry);
    state.source = null;
    state.filters = key;
    if (!filters.length) { setLive('idle'); return; }
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
    $('live-text').textContent = { open: 'live', connecting: 'connecting…', error: 'offline', idle: 'idle' }[s] || s;
  }

  async function loadDashboard() {
    try {
      const d = await api('/api/v1/dashboard');
      state.saved = d.widgets || [];
      $('dash-note').textContent = d.persistent ? '' : 'edits last until the server restarts (no dashboard_file)';
    } catch (e) {
      state.saved = [];
      $('dash-note').textContent = 'could not load the dashboard: ' + e.message;
    }
    await render();
    document.body.dataset.ready = '1';
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
      const d = await api('/api/v1/dashboard', {
        method: 'PUT',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ widgets: state.draft }),
      });
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
  });
  setInterval(() => { for (const v of state.views) v.tick(); }, 10000);
  loadDashboard();
})();
