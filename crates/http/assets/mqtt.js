// midge page: a small MQTT client over WebSocket for the browser (the MQTT web client page
// and the device test panel).
'use strict';
