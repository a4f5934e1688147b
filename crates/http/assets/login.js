// The dashboard's "Log out" link: shown when a login session (the cookie of /login) signs
// the page's requests in, hidden otherwise (anonymous listeners, Basic credentials).
(function () {
  'use strict';
  function show() {
    var link = document.getElementById('logout');
    if (!link) return;
    fetch('/api/v1/session', { credentials: 'same-origin' })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (s) {
        if (s && s.session) {
          link.hidden = false;
          link.title = 'Logged in as ' + s.name;
        }
      })
      .catch(function () {});
  }
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', show);
  else show();
})();
