//! Integration tests: the real daemon and simulator on loopback ports, real WebSocket clients.

mod backpressure;
mod cli;
mod client_input;
mod helpers;
mod reconnect;
mod shutdown;
mod streaming;
mod subscriptions;
mod throttle;
