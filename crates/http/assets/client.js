// midge page: the MQTT web client (client.html).
'use strict';
