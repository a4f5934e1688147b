// midge page: the Data tab (tables, topics and rows of the time-series store).
'use strict';
(function () {
  const { $, el, svg, setAttrs, api, toast, fmtNumber, fmtCount, fmtClock, fmtDateTime, ago, parseDuration, topicMatches, getPath, parsePayload, extract, asNumber, niceStep } = window.midge;

  // ---------- data browser ----------

  const data = { table: null, topic: '' };

  async function loadTables() {
    const ul = $('data-tables');
    try {
      const r = await api('/api/v1/tables');
      $('data-note').textContent = '';
      if (!r.tables.length) {
        ul.replaceChildren(el('li', { class: 'none', text: 'no tables yet' }));
        return;
      }
      ul.replaceChildren(...r.tables.map((t) => el('li', {
        'data-table': t.name, class: t.name === data.table ? 'active' : '',
        onclick: () => { data.table = t.name; data.topic = ''; $('data-topic').value = ''; loadTables(); loadTopics(); loadRows(); },
      }, el('span', { class: 'name', text: t.name }), el('span', { class: 'count', text: fmtCount(t.rows) }))));
      if (!data.table && r.tables.length) {
        data.table = r.tables[0].name;
        ul.firstChild.classList.add('active');
        loadTopics();
        loadRows();
      }
    } catch (e) {
      ul.replaceChildren();
      $('data-note').textContent = e.message;
    }
  }

  async function loadTopics() {
    const ul = $('data-topics');
    $('data-table-name').textContent = data.table || '';
    if (!data.table) { ul.replaceChildren(); return; }
    try {
      const r = await api('/api/v1/tables/' + encodeURIComponent(data.table) + '/topics');
      ul.replaceChildren(...r.topics.map((t) => el('li', {
        'data-topic': t.topic, class: t.topic === data.topic ? 'active' : '', title: 'last ' + fmtDateTime(t.last_ts),
        onclick: () => { data.topic = t.topic; $('data-topic').value = t.topic; loadTopics(); loadRows(); },
      }, el('span', { class: 'name', text: t.topic }), el('span', { class: 'count', text: fmtCount(t.rows) }))));
    } catch (e) {
      ul.replaceChildren(el('li', { class: 'none', text: e.message }));
    }
  }

  async function loadRows() {
    const body = $('data-rows').querySelector('tbody');
    if (!data.table) { body.replaceChildren(); return; }
    const q = new URLSearchParams({ limit: '200' });
    const topic = $('data-topic').value.trim();
    if (topic) q.set('topic', topic);
    const since = $('data-since').value;
    if (since) q.set('since', since);
    try {
      const r = await api('/api/v1/tables/' + encodeURIComponent(data.table) + '/rows?' + q);
      if (!r.rows.length) {
        body.replaceChildren(el('tr', null, el('td', { colspan: 4, class: 'muted', text: 'no rows' })));
        return;
      }
      body.replaceChildren(...r.rows.map((row) => {
        const json = JSON.stringify(row.data);
        return el('tr', { 'data-row': row.id },
          el('td', { class: 'mono', text: fmtDateTime(row.ts), title: new Date(row.ts).toISOString() }),
          el('td', { class: 'mono', text: row.topic }),
          el('td', { class: 'mono', text: row.client_id || '—' }),
          el('td', { class: 'data', text: json, title: json }));
      }));
      $('data-note').textContent = r.rows.length + ' rows (newest first)';
    } catch (e) {
      body.replaceChildren(el('tr', null, el('td', { colspan: 4, class: 'err', text: e.message })));
    }
  }

  $('data-refresh').addEventListener('click', () => { data.topic = $('data-topic').value.trim(); loadTopics(); loadRows(); });
  $('data-since').addEventListener('change', loadRows);
  $('data-topic').addEventListener('keydown', (e) => { if (e.key === 'Enter') { data.topic = e.target.value.trim(); loadRows(); } });


  midge.tab('data', { show: loadTables });
})();
