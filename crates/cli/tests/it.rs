//! Every process test of the `midge` binary in one test binary (ripgrep's `tests/tests.rs`
//! shape): one link instead of one per file, and shared helpers compiled once. Each file is
//! a module; `common` (with its `persistence` and `security` submodules) holds the one
//! `midge serve` launcher and the shared helpers. `cargo nextest run -p midge --test it
//! broker_raw::` runs one file's tests.

mod common;

mod bench;
mod bridge;
mod broker_config;
mod broker_limits;
mod broker_mosquitto_clients;
mod broker_paho;
mod broker_protocol;
mod broker_raw;
mod broker_rumqttc;
mod broker_slow_subscriber;
mod cluster;
mod cluster_flows;
mod devices;
mod devices_acl_parity;
mod devices_page;
mod hub_http;
mod hub_postgres;
mod hub_rules;
mod hub_tsdb;
mod hub_tsdb_api;
mod mosquitto_conf;
mod mosquitto_import;
mod passwd;
mod persistence_crash;
mod persistence_perf;
mod persistence_restart;
mod pubsub;
mod security_auth;
mod security_browser;
mod security_classic_certs;
mod security_tls;
mod security_ws;
mod web_client;
