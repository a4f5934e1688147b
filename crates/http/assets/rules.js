// midge page: the Rules tab.
'use strict';
(function () {
  const { $, el, svg, setAttrs, api, toast, fmtNumber, fmtCount, fmtClock, fmtDateTime, ago, parseDuration, topicMatches, getPath, parsePayload, extract, asNumber, niceStep } = window.midge;

  // ---------- rules ----------
  //
  // Each row is tr[data-rule=NAME][data-source=config|api] with data-matched/-passed/-failed;
  // API rules have button[data-action=delete-rule] (two clicks: "Delete", then "Delete?"),
  // config rules a [data-role=config] badge. The form #rule-form POSTs /api/v1/rules; what
  // the server refuses is listed in #rule-problems-list, one li[data-role=problem] each, and
  // the form's data-state says sending, added, refused or error.

  const rules = {
    list: [],
    seq: 0,              // answers of older requests are ignored
    confirming: null,    // the rule whose delete button waits for a second click
    confirmTimer: null,
    deleting: new Set(),
    added: null,         // highlighted for a moment after it was added
  };
  const ruleForm = $('rule-form');

  async function loadRules() {
    const seq = ++rules.seq;
    try {
      const r = await api('/api/v1/rules');
      if (seq !== rules.seq) return;
      rules.list = r.rules;
      renderRules();
      $('rules-note').textContent = 'updated ' + fmtClock(Date.now(), true);
    } catch (e) {
      if (seq === rules.seq) $('rules-note').textContent = e.message;
    }
  }

  function renderRules() {
    $('rules-table').querySelector('tbody').replaceChildren(...rules.list.map(ruleRow));
    $('rules-empty').hidden = rules.list.length > 0;
  }

  function ruleRow(x) {
    let source;
    if (x.source === 'api') {
      const confirming = rules.confirming === x.name;
      source = el('button', {
        type: 'button',
        class: 'danger' + (confirming ? ' confirm' : ''),
        'data-action': 'delete-rule',
        title: confirming ? 'Click again to delete ' + x.name : 'Added through the API; delete it (its stored rows stay)',
        text: confirming ? 'Delete?' : 'Delete',
        disabled: rules.deleting.has(x.name),
        onclick: () => deleteRule(x.name),
      });
    } else {
      source = el('span', {
        class: 'badge',
        'data-role': 'config',
        title: 'From the configuration file: change or remove it there ([[rule]])',
        text: 'config file',
      });
    }
    return el('tr', {
      'data-rule': x.name,
      'data-source': x.source,
      'data-matched': x.matched,
      'data-passed': x.passed,
      'data-failed': x.failed,
      class: rules.added === x.name ? 'just-added' : null,
    },
      el('td', null, el('b', { text: x.name }), el('div', { class: 'muted', text: x.filters.join(', ') })),
      el('td', null, el('code', { text: x.sql })),
      el('td', { text: x.actions.join('; ') }),
      el('td', { class: 'num', 'data-role': 'matched', text: fmtCount(x.matched) }),
      el('td', { class: 'num', 'data-role': 'passed', text: fmtCount(x.passed) }),
      el('td', { class: 'num', 'data-role': 'failed', text: fmtCount(x.failed) }),
      el('td', { class: x.last_error ? 'err' : 'muted', 'data-role': 'last-error', text: x.last_error || '—' }),
      el('td', { class: 'source' }, source));
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

  // The form as the API's rule JSON, and what is wrong before asking the server.
  function ruleSpec() {
    const spec = { name: $('rule-name').value.trim(), sql: $('rule-sql').value.trim() };
    const local = [];
    const store = $('rule-store').value.trim();
    if (store) spec.store = store;
    const topic = $('rule-republish-topic').value.trim();
    const payload = $('rule-republish-payload').value;
    if (topic) {
      spec.republish = { topic, qos: Number($('rule-republish-qos').value) || 0, retain: $('rule-republish-retain').checked };
      if (payload !== '') spec.republish.payload = payload;
    } else if (payload !== '') {
      local.push('republish: a payload needs a topic to republish to');
    }
    const url = $('rule-webhook-url').value.trim();
    if (url) spec.webhook = { url };
    return [spec, local];
  }

  function openRuleForm() {
    ruleForm.hidden = false;
    $('rule-name').focus();
  }

  function closeRuleForm() {
    ruleForm.hidden = true;
    showProblems([]);
  }

  ruleForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    const [spec, local] = ruleSpec();
    if (local.length) {
      showProblems(local, 'Fix this first:');
      ruleForm.dataset.state = 'refused';
      return;
    }
    const button = $('rule-submit');
    button.disabled = true;
    ruleForm.dataset.state = 'sending';
    try {
      const response = await fetch('/api/v1/rules', {
        method: 'POST',
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
        ruleForm.dataset.state = 'added';
        toast('Rule ' + spec.name + ' added: it runs from now on');
        await loadRules();
      } else {
        const problems = body && Array.isArray(body.problems) && body.problems.length
          ? body.problems
          : [body && body.error ? body.error : response.status + ' ' + response.statusText];
        showProblems(problems, problems.length > 1 ? 'The server refused the rule (' + problems.length + ' problems):' : 'The server refused the rule:');
        ruleForm.dataset.state = 'refused';
      }
    } catch (err) {
      showProblems([String(err && err.message ? err.message : err)], 'Could not reach the server:');
      ruleForm.dataset.state = 'error';
    } finally {
      button.disabled = false;
    }
  });
  $('rule-new').addEventListener('click', () => (ruleForm.hidden ? openRuleForm() : $('rule-name').focus()));
  $('rule-cancel').addEventListener('click', closeRuleForm);
  $('rule-sql').addEventListener('keydown', (e) => {
    // Ctrl/Cmd+Enter adds the rule from the SQL box
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) { e.preventDefault(); ruleForm.requestSubmit(); }
  });


  midge.tab('rules', { show: loadRules, poll: loadRules });
})();
