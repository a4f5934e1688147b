// midge page: the Clients tab.
'use strict';
(function () {
  const { $, el, api } = window.midge;

  function show() {
    $('view-console').replaceChildren(el('div', { class: 'toolbar' }, el('h1', { text: 'Clients' })));
  }

  midge.tab('console', { show });
})();
