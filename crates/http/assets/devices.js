// midge page: the Devices tab.
'use strict';
(function () {
  const { $, el, api } = window.midge;

  function show() {
    $('view-devices').replaceChildren(el('div', { class: 'toolbar' }, el('h1', { text: 'Devices' })));
  }

  midge.tab('devices', { show });
})();
