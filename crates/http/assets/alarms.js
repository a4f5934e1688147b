// midge page: the Alarms tab.
'use strict';
(function () {
  const { $, el, api, toast, fmtDateTime, ago, fmtClock } = window.midge;

  // Active alarms: #alarms-active tbody, one tr[data-alarm-id][data-name][data-source]
  // [data-severity][data-acknowledged] each, with button[data-action=ack] and
  // button[data-action=clear]; #alarms-empty when there is none. History: #alarms-history,
  // tr[data-alarm-id][data-status=active|cleared]. The header's Alarms tab carries
  // #alarms-badge (data-count, data-severity: the worst active one) on every tab.

  const state = { seq: 0, busy: new Set() };

  const fmtValue = (v) => (v == null ? '—' : typeof v === 'string' ? v : JSON.stringify(v));
  const when = (ts) => (ts == null ? '—' : fmtDateTime(ts));

  function sev(s) {
    return el('span', { class: 'sev sev-' + s, 'data-role': 'severity', text: s });
  }

  function activeRow(a) {
    const busy = state.busy.has(a.id);
    return el('tr', {
      'data-alarm-id': a.id, 'data-name': a.name, 'data-source': a.source,
      'data-severity': a.severity, 'data-acknowledged': String(a.acknowledged),
      class: 'alarm-row sev-row-' + a.severity + (a.acknowledged ? ' acked' : ''),
    },
      el('td', null, sev(a.severity)),
      el('td', null, el('b', { text: a.name })),
      el('td', { class: 'mono', text: a.source }),
      el('td', { title: when(a.raised_at) }, el('div', { text: ago(a.raised_at) }), el('div', { class: 'muted', text: when(a.raised_at) })),
      el('td', { class: 'num mono', 'data-role': 'value', text: fmtValue(a.value) }),
      el('td', { class: 'num', title: 'Times this alarm was raised for this source', text: String(a.count) }),
      el('td', { class: 'muted', text: a.rule }),
      el('td', { class: 'alarm-buttons' },
        a.acknowledged
          ? el('span', { class: 'muted', 'data-role': 'acked', title: when(a.acknowledged_at), text: 'acknowledged' })
          : el('button', { type: 'button', 'data-action': 'ack', disabled: busy, text: 'Acknowledge', onclick: () => change(a, 'ack') }),
        el('button', { type: 'button', class: 'danger', 'data-action': 'clear', disabled: busy, title: 'Clear it now (its rule raises it again when the raise condition holds)', text: 'Clear', onclick: () => change(a, 'clear') })));
  }

  function historyRow(a) {
    const cleared = a.status === 'cleared';
    return el('tr', { 'data-alarm-id': a.id, 'data-status': a.status, 'data-name': a.name, 'data-source': a.source },
      el('td', null, sev(a.severity)),
      el('td', null, el('b', { text: a.name }), el('div', { class: 'muted', text: 'rule ' + a.rule })),
      el('td', { class: 'mono', text: a.source }),
      el('td', { text: when(a.raised_at) }),
      el('td', { class: 'num mono', text: fmtValue(a.value) }),
      el('td', { 'data-role': 'cleared' }, cleared
        ? el('span', { text: when(a.cleared_at) + (a.cleared_by === 'api' ? ' (by hand)' : '') })
        : el('span', { class: 'active-now', text: 'active' })),
      el('td', { class: 'num mono', text: cleared ? fmtValue(a.clear_value) : '—' }),
      el('td', { class: a.acknowledged ? '' : 'muted', text: a.acknowledged ? when(a.acknowledged_at) : 'no' }));
  }

  async function change(a, what) {
    state.busy.add(a.id);
    try {
      if (what === 'ack') {
        await api('/api/v1/alarms/' + a.id + '/ack', { method: 'POST' });
        toast('Alarm ' + a.name + ' on ' + a.source + ' acknowledged');
      } else {
        await api('/api/v1/alarms/' + a.id, { method: 'DELETE' });
        toast('Alarm ' + a.name + ' on ' + a.source + ' cleared');
      }
    } catch (e) {
      toast('Could not ' + (what === 'ack' ? 'acknowledge' : 'clear') + ' the alarm: ' + e.message);
    }
    state.busy.delete(a.id);
    await load();
  }

  function badge(active) {
    const tab = $('tab-alarms');
    if (!tab) return;
    let b = $('alarms-badge');
    if (!b) {
      b = el('span', { class: 'tab-badge', id: 'alarms-badge' });
      tab.append(b);
    }
    const n = active.length;
    b.hidden = n === 0;
    b.dataset.count = String(n);
    b.dataset.severity = n ? active[0].severity : '';
    b.textContent = String(n);
    b.title = n ? n + ' active alarm' + (n === 1 ? '' : 's') : '';
  }

  async function loadBadge() {
    try {
      const r = await api('/api/v1/alarms');
      badge(r.alarms);
      return r;
    } catch (_) {
      return null; // locked, a share link, or no rules engine: no badge
    }
  }

  async function load() {
    const seq = ++state.seq;
    try {
      const [act, hist] = await Promise.all([api('/api/v1/alarms'), api('/api/v1/alarms/history?limit=200')]);
      if (seq !== state.seq) return;
      badge(act.alarms);
      $('alarms-active').querySelector('tbody').replaceChildren(...act.alarms.map(activeRow));
      $('alarms-empty').hidden = act.alarms.length > 0;
      $('alarms-active-count').textContent = act.active ? act.active + ' active, ' + act.unacknowledged + ' not acknowledged' : '';
      $('alarms-history').querySelector('tbody').replaceChildren(...hist.alarms.map(historyRow));
      $('alarms-history-empty').hidden = hist.alarms.length > 0;
      $('alarms-note').textContent = 'updated ' + fmtClock(Date.now(), true) + (hist.truncated ? ' · the newest 200 shown' : '');
    } catch (e) {
      if (seq === state.seq) $('alarms-note').textContent = 'Could not load the alarms: ' + e.message;
    }
  }

  midge.tab('alarms', { show: load, poll: load });
  // the badge follows the alarms whichever tab is open
  setTimeout(loadBadge, 500);
  setInterval(() => { if (document.body.dataset.tab !== 'alarms' && !document.hidden) loadBadge(); }, 5000);
})();
