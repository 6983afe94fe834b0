//! Integration tests: the real daemon and simulator on loopback ports, real WebSocket clients.

mod accounts;
mod auth;
mod backpressure;
mod cli;
mod client_input;
mod conformance;
mod dashboard;
mod docker;
mod errors;
mod feeds;
mod fields;
mod guard;
mod hardening;
mod helpers;
mod ingest;
mod metrics;
mod reconnect;
mod redis_sink;
mod scaleout;
mod sdk;
mod sdk_packages;
mod shutdown;
mod streaming;
mod subscriptions;
mod systemd;
mod throttle;
