// midge page: the Data tab (tables, topics and rows of the time-series store): paging with
// the API's cursor, a time range, CSV export, purge, drop and each table's retention.
'use strict';
(function () {
  const { $, el, api, toast, fmtCount, fmtDateTime } = window.midge;

  const data = {
    table: null,
    tables: [],          // the last /api/v1/tables answer
    topics: [],          // the selected table's topics
    cursors: [null],     // cursor of each page up to the one shown (null: the first)
    shown: 0,            // rows on the pages before the one shown
    pending: null,       // the action waiting for confirmation
  };

  const pad = (n, w) => String(n).padStart(w || 2, '0');

  /** Local date and time, `2026-12-07 21:05:09.123`. */
  function fmtFull(ts) {
    const d = new Date(ts);
    return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' +
      pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds()) + '.' + pad(d.getMilliseconds(), 3);
  }

  function fmtDays(days) {
    if (days == null) return 'forever';
    return days === 1 ? '1 day' : fmtCount(days) + ' days';
  }

  const tablePath = (t) => '/api/v1/tables/' + encodeURIComponent(t || data.table);

  function currentTable() {
    return data.tables.find((t) => t.name === data.table) || null;
  }

  // ---------- tables ----------

  async function loadTables() {
    const ul = $('data-tables');
    if (!ul.children.length) ul.replaceChildren(el('li', { class: 'none', text: 'loading…' }));
    try {
      const r = await api('/api/v1/tables');
      data.tables = r.tables;
      $('data-note').textContent = '';
      if (data.table && !r.tables.some((t) => t.name === data.table)) data.table = null;
      if (!r.tables.length) {
        ul.replaceChildren(el('li', { class: 'none', text: 'no tables yet: a rule with a store action makes one' }));
        showCard();
        $('data-topics').replaceChildren();
        $('data-rows').querySelector('tbody').replaceChildren();
        $('data-count').textContent = '';
        return;
      }
      const first = !data.table;
      if (first) data.table = r.tables[0].name;
      ul.replaceChildren(...r.tables.map((t) => el('li', {
        'data-table': t.name, class: t.name === data.table ? 'active' : '',
        title: t.rows + ' rows, kept ' + fmtDays(t.retention_days),
        onclick: () => selectTable(t.name),
      }, el('span', { class: 'name', text: t.name }), el('span', { class: 'count', text: fmtCount(t.rows) }))));
      showCard();
      if (first) { loadTopics(); loadRows(true); }
    } catch (e) {
      ul.replaceChildren(el('li', { class: 'none err', text: e.message }));
      $('data-note').textContent = 'Could not list the tables: ' + e.message;
    }
  }

  function selectTable(name) {
    data.table = name;
    $('data-topic').value = '';
    hideConfirm();
    loadTables();
    loadTopics();
    loadRows(true);
  }

  function showCard() {
    const t = currentTable();
    const card = $('data-table-card');
    card.hidden = !t;
    if (!t) return;
    $('data-card-name').textContent = t.name;
    $('data-card-rows').textContent = t.rows.toLocaleString();
    $('data-card-span').textContent = t.first_ts == null ? 'empty' : fmtFull(t.first_ts) + ' to ' + fmtFull(t.last_ts);
    const own = t.own_retention_days;
    const source = { table: ' (this table\'s own)', config: ' (from the configuration)' }[t.retention_source] || ' (the default)';
    $('data-retention-text').textContent = fmtDays(t.retention_days) + source;
    const input = $('data-retention-days');
    if (document.activeElement !== input) input.value = own == null ? '' : String(own);
    $('data-retention-default').disabled = own == null;
  }

  function cardError(message) {
    const p = $('data-card-error');
    p.textContent = message || '';
    p.hidden = !message;
  }

  // ---------- retention, purge, drop ----------

  async function saveRetention(days) {
    cardError('');
    try {
      const r = await api(tablePath() + '/retention', {
        method: 'PUT', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ days }),
      });
      toast(r.table + ' now keeps rows ' + (r.effective_days == null ? 'forever' : 'for ' + fmtDays(r.effective_days)));
      $('data-retention-days').blur();
      await loadTables();
    } catch (e) {
      cardError('Retention not saved: ' + e.message);
    }
  }

  $('data-retention-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const v = $('data-retention-days').value.trim();
    if (v === '') { saveRetention(null); return; }
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0 || n > 36500) {
      cardError('Days: a whole number from 0 (keep forever) to 36500, or empty for the default.');
      return;
    }
    saveRetention(n);
  });
  $('data-retention-default').addEventListener('click', () => saveRetention(null));

  function askConfirm(text, yes, action) {
    data.pending = action;
    $('data-confirm-text').textContent = text;
    $('data-confirm-yes').textContent = yes;
    $('data-confirm').hidden = false;
    $('data-confirm-no').focus();
  }

  function hideConfirm() {
    data.pending = null;
    $('data-confirm').hidden = true;
  }

  $('data-purge').addEventListener('click', () => {
    const t = currentTable();
    if (!t) return;
    cardError('');
    const sel = $('data-purge-age');
    const before = sel.value;
    const label = sel.options[sel.selectedIndex].text;
    const what = before === 'now' ? 'all ' + t.rows.toLocaleString() + ' rows of ' + t.name
      : 'the rows of ' + t.name + ' older than ' + label;
    askConfirm('Delete ' + what + '? This cannot be undone.', 'Delete rows', async () => {
      const r = await api(tablePath(t.name) + '/purge', {
        method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ before }),
      });
      toast('Deleted ' + r.deleted.toLocaleString() + ' rows from ' + r.table);
    });
  });

  $('data-drop').addEventListener('click', () => {
    const t = currentTable();
    if (!t) return;
    cardError('');
    askConfirm('Drop the table ' + t.name + ' with its ' + t.rows.toLocaleString() +
      ' rows and its retention? Rules that store into it will make it again, empty. This cannot be undone.',
    'Drop table', async () => {
      await api(tablePath(t.name), { method: 'DELETE' });
      toast('Table ' + t.name + ' dropped');
      data.table = null;
    });
  });

  $('data-confirm-no').addEventListener('click', hideConfirm);
  $('data-confirm-yes').addEventListener('click', async () => {
    const action = data.pending;
    hideConfirm();
    if (!action) return;
    try {
      await action();
    } catch (e) {
      cardError(e.message);
    }
    await loadTables();
    loadTopics();
    loadRows(true);
  });

  // ---------- topics ----------

  async function loadTopics() {
    const ul = $('data-topics');
    $('data-table-name').textContent = data.table || '';
    if (!data.table) { ul.replaceChildren(); data.topics = []; return; }
    const asked = data.table;
    if (ul.dataset.table !== asked) {
      // counting a large table's topics takes a moment
      ul.dataset.table = asked;
      ul.replaceChildren(el('li', { class: 'none', text: 'counting topics…' }));
    }
    try {
      const r = await api(tablePath(asked) + '/topics');
      if (data.table !== asked) return;
      data.topics = r.topics;
      const filter = $('data-topic').value.trim();
      if (!r.topics.length) {
        ul.replaceChildren(el('li', { class: 'none', text: 'no rows' }));
        return;
      }
      ul.replaceChildren(...r.topics.map((t) => el('li', {
        'data-topic': t.topic, class: t.topic === filter ? 'active' : '', title: 'last ' + fmtDateTime(t.last_ts),
        onclick: () => { $('data-topic').value = t.topic; loadTopics(); loadRows(true); },
      }, el('span', { class: 'name', text: t.topic }), el('span', { class: 'count', text: fmtCount(t.rows) }))));
    } catch (e) {
      ul.replaceChildren(el('li', { class: 'none err', text: e.message }));
    }
  }

  // ---------- rows ----------

  /** The filter of the page as query parameters (throws a readable error). */
  function filterParams() {
    const q = new URLSearchParams();
    const topic = $('data-topic').value.trim();
    if (topic) q.set('topic', topic);
    const range = $('data-since').value;
    if (range === 'custom') {
      const from = $('data-from').value;
      const to = $('data-to').value;
      const since = from ? new Date(from).getTime() : null;
      const until = to ? new Date(to).getTime() : null;
      if (Number.isNaN(since) || Number.isNaN(until)) throw new Error('Pick a valid from and to time.');
      if (since != null && until != null && since > until) throw new Error('"from" is after "to": nothing could match.');
      if (since != null) q.set('since', String(since));
      if (until != null) q.set('until', String(until));
    } else if (range) {
      q.set('since', range);
    }
    return q;
  }

  /** How many rows the filter matches, when the page already knows it. */
  function knownTotal() {
    const range = $('data-since').value;
    if (range) return null;
    const topic = $('data-topic').value.trim();
    if (!topic) { const t = currentTable(); return t ? t.rows : null; }
    if (/[+#]/.test(topic)) return null;
    const t = data.topics.find((x) => x.topic === topic);
    return t ? t.rows : 0;
  }

  function updateCsvLink() {
    const a = $('data-csv');
    try {
      if (!data.table) throw new Error('no table');
      const q = filterParams();
      a.href = tablePath() + '/rows.csv' + (q.toString() ? '?' + q : '');
      a.setAttribute('download', data.table + '.csv');
      a.removeAttribute('aria-disabled');
    } catch (_) {
      a.removeAttribute('href');
      a.setAttribute('aria-disabled', 'true');
    }
  }

  /** Shows the page `data.cursors.length - 1`; `reset` starts again from the newest rows. */
  async function loadRows(reset) {
    const body = $('data-rows').querySelector('tbody');
    $('data-custom').hidden = $('data-since').value !== 'custom';
    if (reset) { data.cursors = [null]; data.shown = 0; data.pageSizes = []; }
    updateCsvLink();
    const count = $('data-count');
    if (!data.table) { body.replaceChildren(); count.textContent = ''; return; }
    let q;
    try {
      q = filterParams();
    } catch (e) {
      body.replaceChildren(el('tr', null, el('td', { colspan: 4, class: 'err', text: e.message })));
      count.textContent = '';
      return;
    }
    const size = Number($('data-page-size').value) || 200;
    q.set('limit', String(size));
    const cursor = data.cursors[data.cursors.length - 1];
    if (cursor) q.set('cursor', cursor);
    try {
      const r = await api(tablePath() + '/rows?' + q);
      data.next = r.next || null;
      $('data-older').disabled = !r.next;
      $('data-newer').disabled = data.cursors.length <= 1;
      if (!r.rows.length) {
        body.replaceChildren(el('tr', null, el('td', { colspan: 4, class: 'muted', text: 'no rows match' })));
        count.textContent = 'no rows';
        return;
      }
      body.replaceChildren(...r.rows.map((row) => {
        const json = JSON.stringify(row.data);
        const iso = new Date(row.ts).toISOString();
        return el('tr', { 'data-row': row.id, 'data-ts': row.ts },
          el('td', { class: 'mono time', text: fmtFull(row.ts), title: iso + ' (' + row.ts + ' ms)' }),
          el('td', { class: 'mono', text: row.topic }),
          el('td', { class: 'mono', text: row.client_id || '—' }),
          el('td', { class: 'data', text: json, title: json }));
      }));
      const from = data.shown + 1;
      const to = data.shown + r.rows.length;
      const total = knownTotal();
      let text = 'rows ' + from.toLocaleString() + '–' + to.toLocaleString();
      if (total != null && total >= to) text += ' of about ' + total.toLocaleString();
      else if (r.truncated) text += ' (more older)';
      else text += ' of ' + to.toLocaleString();
      count.textContent = text + ', newest first';
      data.pageRows = r.rows.length;
    } catch (e) {
      body.replaceChildren(el('tr', null, el('td', { colspan: 4, class: 'err', text: 'Could not read the rows: ' + e.message })));
      count.textContent = '';
      $('data-older').disabled = true;
    }
  }

  $('data-older').addEventListener('click', () => {
    if (!data.next) return;
    data.shown += data.pageRows || 0;
    data.pageSizes = (data.pageSizes || []).concat([data.pageRows || 0]);
    data.cursors.push(data.next);
    loadRows(false);
  });
  $('data-newer').addEventListener('click', () => {
    if (data.cursors.length <= 1) return;
    data.cursors.pop();
    const sizes = data.pageSizes || [];
    data.shown -= sizes.pop() || 0;
    data.pageSizes = sizes;
    loadRows(false);
  });

  const refresh = () => { loadTopics(); loadRows(true); };
  $('data-refresh').addEventListener('click', () => { loadTables(); refresh(); });
  $('data-since').addEventListener('change', () => {
    if ($('data-since').value === 'custom' && !$('data-from').value) {
      // start from the last hour, in local time
      const local = (ms) => fmtFull(ms).slice(0, 19).replace(' ', 'T');
      $('data-from').value = local(Date.now() - 3600e3);
      $('data-to').value = local(Date.now());
    }
    refresh();
  });
  $('data-from').addEventListener('change', refresh);
  $('data-to').addEventListener('change', refresh);
  $('data-page-size').addEventListener('change', refresh);
  $('data-topic').addEventListener('keydown', (e) => { if (e.key === 'Enter') refresh(); });
  $('data-topic').addEventListener('change', updateCsvLink);

  midge.tab('data', {
    show: () => {
      loadTables();
      if (data.table) { loadTopics(); loadRows(false); }
    },
  });
})();
