// midge page: the header (broker figures), the tabs, and the share-link read-only mode.
// Loaded last: every tab's module has registered itself by then.
'use strict';
(function () {
  const { $, el, svg, setAttrs, api, toast, fmtNumber, fmtCount, fmtClock, fmtDateTime, ago, parseDuration, topicMatches, getPath, parsePayload, extract, asNumber, niceStep } = window.midge;

  // ---------- header stats ----------

  let lastStats = null;
  async function pollStats() {
    try {
      const s = await api('/api/v1/stats');
      // the user's clients and retained messages: midge's own and $SYS apart
      $('stat-clients').textContent = fmtCount(s.clients_user ?? s.clients_connected);
      $('stat-subs').textContent = fmtCount(s.subscriptions);
      $('stat-retained').textContent = fmtCount(s.retained_user ?? s.retained);
      if (lastStats) {
        const dt = (s.time - lastStats.time) / 1000;
        if (dt > 0) {
          const rin = (s.messages_received - lastStats.messages_received) / dt;
          const rout = (s.messages_sent - lastStats.messages_sent) / dt;
          $('stat-rate-in').textContent = fmtNumber(Math.max(0, rin), rin < 10 ? 1 : 0);
          $('stat-rate-out').textContent = fmtNumber(Math.max(0, rout), rout < 10 ? 1 : 0);
        }
      }
      lastStats = s;
      $('stats').dataset.ok = '1';
    } catch (e) {
      $('stats').dataset.ok = '0';
      if (e.status === 403) readOnly();
    }
  }

  // A share link's visitor may see the dashboard only: no tabs, figures or editing that
  // would answer 403.
  function readOnly() {
    document.body.dataset.readonly = '1';
    for (const node of document.querySelectorAll('.tab:not(#tab-dashboard), #edit-toggle, #stats')) node.hidden = true;
  }


  // ---------- tabs and timers ----------

  function showTab(tab) {
    if (!midge.tabs.has(tab)) tab = 'dashboard';
    document.body.dataset.tab = tab;
    for (const b of document.querySelectorAll('.tab')) b.classList.toggle('active', b.dataset.tab === tab);
    for (const name of midge.tabs.keys()) { const v = $('view-' + name); if (v) v.hidden = name !== tab; }
    const h = midge.tabs.get(tab);
    if (h.show) h.show();
    if (location.hash !== '#' + tab) history.replaceState(null, '', tab === 'dashboard' ? location.pathname + location.search : '#' + tab);
  }
  midge.showTab = showTab;
  for (const b of document.querySelectorAll('.tab')) b.addEventListener('click', () => showTab(b.dataset.tab));

  setInterval(() => {
    if (document.hidden) return;
    pollStats();
    const h = midge.tabs.get(document.body.dataset.tab);
    if (h && h.poll) h.poll();
  }, 2000);

  pollStats();
  showTab(location.hash.replace('#', '') || 'dashboard');
})();
