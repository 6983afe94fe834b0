//! Integration tests: the real daemon and simulator on loopback ports, real WebSocket clients.

mod accounts;
mod backpressure;
mod cli;
mod client_input;
mod errors;
mod feeds;
mod helpers;
mod ingest;
mod reconnect;
mod sdk;
mod shutdown;
mod streaming;
mod subscriptions;
mod throttle;
