// midge page: the Alarms tab.
'use strict';
(function () {
  const { $, el, api } = window.midge;

  function show() {
    $('view-alarms').replaceChildren(el('div', { class: 'toolbar' }, el('h1', { text: 'Alarms' })));
  }

  midge.tab('alarms', { show });
})();
