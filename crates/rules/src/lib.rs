//! midge's rule language: `SELECT ... FROM 'topic/#' WHERE ...` over one MQTT message.
