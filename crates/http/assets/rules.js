// midge page: the Rules tab.
'use strict';
(function () {
  const { $, el, api, toast, fmtCount, fmtClock } = window.midge;

  // ---------- rules ----------
  //
  // Each row is tr[data-rule=NAME][data-source=config|api][data-enabled=true|false] with
  // data-matched/-passed/-failed. API rules have button[data-action=edit-rule],
  // input[data-action=toggle-rule] (enabled) and button[data-action=delete-rule] (two clicks:
  // "Delete", then "Delete?"); config rules a [data-role=config] badge and
  // button[data-action=view-rule] (the form opens read-only, with #rule-readonly-note).
  // Every row has button[data-action=test-rule] (fills the Test panel).
  // The form #rule-form (data-mode add|edit|view) POSTs /api/v1/rules or PUTs
  // /api/v1/rules/NAME; what the server refuses is listed in #rule-problems-list, one
  // li[data-role=problem] each, and the form's data-state says sending, added, saved,
  // refused or error. The Test panel #rule-test POSTs /api/v1/rules/test; #rule-test-result
  // has data-state matched|nomatch|error, the row in #rule-test-row (tr[data-column]) and
  // the verdict or reason in #rule-test-verdict.

  const rules = {
    list: [],
    seq: 0,              // answers of older requests are ignored
    confirming: null,    // the rule whose delete button waits for a second click
    confirmTimer: null,
    deleting: new Set(),
    toggling: new Set(),
    added: null,         // highlighted for a moment after it was added or saved
    editing: null,       // the rule the form edits (null: a new one)
    base: null,          // the edited rule's spec as the server gave it (keeps what the form has no field for)
  };
  const ruleForm = $('rule-form');
  const testForm = $('rule-test');

  async function loadRules() {
    const seq = ++rules.seq;
    try {
      const r = await api('/api/v1/rules');
      if (seq !== rules.seq) return;
      rules.list = r.rules;
      renderRules();
      $('rules-note').textContent = 'counts updated ' + fmtClock(Date.now(), true);
    } catch (e) {
      if (seq === rules.seq) $('rules-note').textContent = e.message;
    }
  }

  function renderRules() {
    $('rules-table').querySelector('tbody').replaceChildren(...rules.list.map(ruleRow));
    $('rules-empty').hidden = rules.list.length > 0;
  }

  function ruleRow(x) {
    const buttons = [];
    let enabled;
    if (x.source === 'api') {
      buttons.push(el('button', {
        type: 'button', 'data-action': 'edit-rule', title: 'Change this rule in place (its counts go on while its SQL stays the same)',
        text: 'Edit', onclick: () => openRuleForm('edit', x),
      }));
      const confirming = rules.confirming === x.name;
      buttons.push(el('button', {
        type: 'button',
        class: 'danger' + (confirming ? ' confirm' : ''),
        'data-action': 'delete-rule',
        title: confirming ? 'Click again to delete ' + x.name : 'Added through the API; delete it (its stored rows stay)',
        text: confirming ? 'Delete?' : 'Delete',
        disabled: rules.deleting.has(x.name),
        onclick: () => deleteRule(x.name),
      }));
      enabled = el('label', { class: 'toggle', title: x.enabled ? 'Running: untick to stop it (it keeps its settings and counts)' : 'Stopped: tick to run it again' },
        el('input', {
          type: 'checkbox', 'data-action': 'toggle-rule', checked: x.enabled,
          disabled: rules.toggling.has(x.name),
          'aria-label': 'Rule ' + x.name + ' enabled',
          onchange: (e) => setEnabled(x.name, e.target.checked),
        }),
        el('span', { text: x.enabled ? 'on' : 'off' }));
    } else {
      buttons.push(el('span', {
        class: 'badge', 'data-role': 'config',
        title: 'From the configuration file: change or remove it there ([[rule]])',
        text: 'config file',
      }));
      buttons.push(el('button', { type: 'button', 'data-action': 'view-rule', text: 'View', onclick: () => openRuleForm('view', x) }));
      enabled = el('span', { class: 'muted', title: 'Rules of midge.toml always run', text: 'always' });
    }
    buttons.push(el('button', { type: 'button', 'data-action': 'test-rule', title: 'Try this rule on a message', text: 'Test', onclick: () => openTest(x) }));
    return el('tr', {
      'data-rule': x.name,
      'data-source': x.source,
      'data-enabled': String(x.enabled !== false),
      'data-matched': x.matched,
      'data-passed': x.passed,
      'data-failed': x.failed,
      class: (rules.added === x.name ? 'just-added' : '') + (x.enabled === false ? ' disabled-rule' : '') || null,
    },
      el('td', null, el('b', { text: x.name }), el('div', { class: 'muted', text: x.filters.join(', ') })),
      el('td', null, el('code', { text: x.sql })),
      el('td', null, ...x.actions.map((a) => el('div', { text: a }))),
      el('td', { class: 'num', 'data-role': 'matched', text: fmtCount(x.matched) }),
      el('td', { class: 'num', 'data-role': 'passed', text: fmtCount(x.passed) }),
      el('td', { class: 'num', 'data-role': 'failed', text: fmtCount(x.failed) }),
      el('td', { class: x.last_error ? 'err' : 'muted', 'data-role': 'last-error', text: x.last_error || '—' }),
      el('td', { 'data-role': 'enabled' }, enabled),
      el('td', { class: 'source rule-buttons' }, ...buttons));
  }

  async function setEnabled(name, enabled) {
    rules.toggling.add(name);
    renderRules();
    try {
      await api('/api/v1/rules/' + encodeURIComponent(name), {
        method: 'PATCH',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ enabled }),
      });
      toast('Rule ' + name + (enabled ? ' enabled: it runs from now on' : ' disabled: it stops matching (settings and counts kept)'));
    } catch (e) {
      toast('Could not ' + (enabled ? 'enable ' : 'disable ') + name + ': ' + e.message);
    }
    rules.toggling.delete(name);
    await loadRules();
  }

  async function deleteRule(name) {
    clearTimeout(rules.confirmTimer);
    if (rules.confirming !== name) {
      rules.confirming = name;
      rules.confirmTimer = setTimeout(() => { rules.confirming = null; renderRules(); }, 4000);
      renderRules();
      return;
    }
    rules.confirming = null;
    rules.deleting.add(name);
    renderRules();
    try {
      await api('/api/v1/rules/' + encodeURIComponent(name), { method: 'DELETE' });
      toast('Rule ' + name + ' deleted (its stored rows stay)');
    } catch (e) {
      toast('Could not delete ' + name + ': ' + e.message);
    }
    rules.deleting.delete(name);
    await loadRules();
  }

  function showProblems(problems, title) {
    const box = $('rule-problems');
    $('rule-problems-title').textContent = title || '';
    $('rule-problems-list').replaceChildren(...problems.map((p) => el('li', { 'data-role': 'problem', text: p })));
    box.hidden = problems.length === 0;
  }

  const first = (v) => (Array.isArray(v) ? v[0] : v);
  const rest = (v) => (Array.isArray(v) ? v.slice(1) : []);
  const withRest = (one, more) => (more.length ? [one, ...more] : one);

  // The form as the API's rule JSON, and what is wrong before asking the server. When
  // editing, what the form has no field for (webhook headers, a second republish) is kept.
  function ruleSpec() {
    const base = rules.base || {};
    const spec = { name: $('rule-name').value.trim(), sql: $('rule-sql').value.trim() };
    const local = [];
    const store = $('rule-store').value.trim();
    if (store) spec.store = store;
    if ($('rule-tsdb').checked) spec.tsdb = true;
    const topic = $('rule-republish-topic').value.trim();
    const payload = $('rule-republish-payload').value;
    if (topic) {
      const r = { topic, qos: Number($('rule-republish-qos').value) || 0, retain: $('rule-republish-retain').checked };
      if (payload !== '') r.payload = payload;
      spec.republish = withRest(r, rest(base.republish));
    } else if (payload !== '') {
      local.push('republish: a payload needs a topic to republish to');
    }
    const url = $('rule-webhook-url').value.trim();
    if (url) spec.webhook = withRest(Object.assign({}, first(base.webhook) || {}, { url }), rest(base.webhook));
    const alarmName = $('rule-alarm-name').value.trim();
    const raise = $('rule-alarm-raise').value.trim();
    if (alarmName || raise) {
      if (!alarmName) local.push('alarm: give the alarm a name');
      if (!raise) local.push('alarm: give the condition that raises it (Raise when), e.g. temp > 80');
      const a = { name: alarmName, raise, severity: $('rule-alarm-severity').value, source: $('rule-alarm-source').value };
      const clear = $('rule-alarm-clear').value.trim();
      if (clear) a.clear = clear;
      const at = $('rule-alarm-topic').value.trim();
      if (at) a.topic = at;
      spec.alarm = withRest(a, rest(base.alarm));
    }
    if (base.enabled === false) spec.enabled = false;
    return [spec, local];
  }

  function fillForm(spec) {
    $('rule-name').value = spec.name || '';
    $('rule-sql').value = spec.sql || '';
    $('rule-store').value = spec.store === true ? 'telemetry' : (typeof spec.store === 'string' ? spec.store : '');
    $('rule-tsdb').checked = spec.tsdb === true;
    const r = first(spec.republish) || {};
    $('rule-republish-topic').value = r.topic || '';
    $('rule-republish-payload').value = r.payload == null ? '' : r.payload;
    $('rule-republish-qos').value = String(r.qos || 0);
    $('rule-republish-retain').checked = !!r.retain;
    $('rule-webhook-url').value = (first(spec.webhook) || {}).url || '';
    const a = first(spec.alarm) || {};
    $('rule-alarm-name').value = a.name || '';
    $('rule-alarm-raise').value = a.raise || '';
    $('rule-alarm-clear').value = a.clear || '';
    $('rule-alarm-severity').value = a.severity || 'major';
    $('rule-alarm-source').value = a.source || 'topic';
    $('rule-alarm-topic').value = a.topic || '';
  }

  // mode: add (empty form), edit (an API rule, filled), view (a config rule, read-only)
  function openRuleForm(mode, rule) {
    ruleForm.hidden = false;
    ruleForm.dataset.mode = mode;
    ruleForm.dataset.state = '';
    ruleForm.dataset.editing = rule ? rule.name : '';
    showProblems([]);
    rules.editing = mode === 'edit' ? rule.name : null;
    rules.base = mode === 'edit' ? (rule.spec || null) : null;
    const view = mode === 'view';
    for (const c of ruleForm.querySelectorAll('input, textarea, select')) c.disabled = view;
    $('rule-name').readOnly = mode === 'edit';
    $('rule-name').title = mode === 'edit' ? 'A rule cannot be renamed: add a new one and delete this one' : '';
    $('rule-readonly-note').hidden = !view;
    $('rule-submit').hidden = view;
    $('rule-config-actions').hidden = !view;
    ruleForm.querySelector('.rule-actions .form-grid').hidden = view;
    ruleForm.querySelector('.rule-alarm').hidden = view;
    if (mode === 'add') {
      ruleForm.reset();
      $('rule-form-title').textContent = 'New rule';
      $('rule-submit').textContent = 'Add rule';
      $('rule-name').focus();
    } else if (mode === 'edit') {
      fillForm(rule.spec || { name: rule.name, sql: rule.sql });
      $('rule-form-title').textContent = 'Edit rule ' + rule.name;
      $('rule-submit').textContent = 'Save changes';
      $('rule-sql').focus();
    } else {
      fillForm({ name: rule.name, sql: rule.sql });
      $('rule-form-title').textContent = 'Rule ' + rule.name + ' (from midge.toml)';
      $('rule-config-actions').textContent = 'Actions: ' + (rule.actions.join('; ') || 'none');
    }
    ruleForm.scrollIntoView({ block: 'nearest' });
  }

  function closeRuleForm() {
    ruleForm.hidden = true;
    rules.editing = null;
    rules.base = null;
    showProblems([]);
  }

  ruleForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    if (ruleForm.dataset.mode === 'view') return;
    const [spec, local] = ruleSpec();
    if (local.length) {
      showProblems(local, 'Fix this first:');
      ruleForm.dataset.state = 'refused';
      return;
    }
    const editing = rules.editing;
    const button = $('rule-submit');
    button.disabled = true;
    ruleForm.dataset.state = 'sending';
    try {
      const response = await fetch(editing ? '/api/v1/rules/' + encodeURIComponent(editing) : '/api/v1/rules', {
        method: editing ? 'PUT' : 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(spec),
      });
      let body = null;
      try { body = await response.json(); } catch (_) { /* not JSON */ }
      if (response.ok) {
        rules.added = spec.name;
        setTimeout(() => { if (rules.added === spec.name) { rules.added = null; renderRules(); } }, 5000);
        ruleForm.reset();
        closeRuleForm();
        ruleForm.dataset.state = editing ? 'saved' : 'added';
        toast(editing ? 'Rule ' + spec.name + ' saved: the change runs from now on' : 'Rule ' + spec.name + ' added: it runs from now on');
        await loadRules();
      } else {
        const problems = body && Array.isArray(body.problems) && body.problems.length
          ? body.problems
          : [body && body.error ? body.error : response.status + ' ' + response.statusText];
        const what = editing ? 'the change' : 'the rule';
        showProblems(problems, problems.length > 1 ? 'The server refused ' + what + ' (' + problems.length + ' problems):' : 'The server refused ' + what + ':');
        ruleForm.dataset.state = 'refused';
      }
    } catch (err) {
      showProblems([String(err && err.message ? err.message : err)], 'Could not reach the server:');
      ruleForm.dataset.state = 'error';
    } finally {
      button.disabled = false;
    }
  });
  $('rule-new').addEventListener('click', () => openRuleForm('add'));
  $('rule-cancel').addEventListener('click', closeRuleForm);
  $('rule-sql').addEventListener('keydown', (e) => {
    // Ctrl/Cmd+Enter saves the rule from the SQL box
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) { e.preventDefault(); ruleForm.requestSubmit(); }
  });
  $('rule-form-test').addEventListener('click', () => openTest({ sql: $('rule-sql').value.trim(), filters: [] }));

  // ---------- the Test panel (dry run) ----------

  // A topic the filter matches, to start from: `sensors/#` → `sensors/test`.
  function sampleTopic(filter) {
    if (!filter) return '';
    const f = filter.replace(/^\$share\/[^/]+\//, '');
    return f.split('/').map((l) => (l === '+' ? 'test' : l === '#' ? 'test' : l)).join('/');
  }

  function openTest(rule) {
    testForm.hidden = false;
    if (rule.sql) $('rule-test-sql').value = rule.sql;
    if (rule.filters && rule.filters.length && !$('rule-test-topic').value) $('rule-test-topic').value = sampleTopic(rule.filters[0]);
    if (!$('rule-test-payload').value) $('rule-test-payload').value = '{"temp": 31.5}';
    testForm.scrollIntoView({ block: 'nearest' });
    $('rule-test-payload').focus();
  }

  function showTest(state, verdict, row) {
    const box = $('rule-test-result');
    box.hidden = false;
    box.dataset.state = state;
    const v = $('rule-test-verdict');
    v.className = state === 'matched' ? 'verdict ok' : state === 'nomatch' ? 'verdict no' : 'verdict err';
    v.replaceChildren(...verdict);
    const table = $('rule-test-row');
    table.hidden = !row;
    table.querySelector('tbody').replaceChildren(...Object.entries(row || {}).map(([k, val]) =>
      el('tr', { 'data-column': k }, el('td', null, el('code', { text: k })), el('td', { class: 'mono', text: typeof val === 'string' ? val : JSON.stringify(val) }))));
  }

  testForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    const sql = $('rule-test-sql').value.trim();
    const topic = $('rule-test-topic').value.trim();
    if (!sql || !topic) {
      showTest('error', [el('b', { text: 'Give ' + (!sql ? 'the SQL' : 'a topic') + ' to test with.' })], null);
      return;
    }
    const body = { sql, topic, payload: $('rule-test-payload').value };
    const clientid = $('rule-test-clientid').value.trim();
    if (clientid) body.clientid = clientid;
    $('rule-test-run').disabled = true;
    try {
      const response = await fetch('/api/v1/rules/test', {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
      });
      let r = null;
      try { r = await response.json(); } catch (_) { /* not JSON */ }
      if (!response.ok) {
        showTest('error', [el('b', { text: 'The rule cannot run: ' }), el('span', { text: r && r.error ? r.error : response.status + ' ' + response.statusText })], null);
      } else if (r.matched) {
        const n = Object.keys(r.row || {}).length;
        showTest('matched', [el('b', { text: 'Matches: ' }), el('span', { text: 'the rule produces this row (' + n + (n === 1 ? ' column' : ' columns') + ')' + (n ? '' : '; an empty row') + '.' })], r.row || {});
      } else {
        showTest('nomatch', [el('b', { text: 'No row: ' }), el('span', { 'data-role': 'reason', text: r.reason }),
          el('span', { class: 'muted', text: ' (FROM ' + (r.filters || []).join(', ') + ')' })], null);
      }
    } catch (err) {
      showTest('error', [el('b', { text: 'Could not reach the server: ' }), el('span', { text: String(err && err.message ? err.message : err) })], null);
    } finally {
      $('rule-test-run').disabled = false;
    }
  });
  $('rule-test-open').addEventListener('click', () => (testForm.hidden ? openTest({}) : testForm.scrollIntoView({ block: 'nearest' })));
  $('rule-test-close').addEventListener('click', () => { testForm.hidden = true; });
  $('rule-test-payload').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) { e.preventDefault(); testForm.requestSubmit(); }
  });

  midge.tab('rules', { show: loadRules, poll: loadRules });
})();
