//! Herald's integration tests, as one binary: each module was a test crate of its own, and
//! fifteen crates meant fifteen links of Herald and its dependencies on every change; one
//! binary links once (the layout svix-webhooks and zero-to-production use).
//!
//! - [`support`]: what the modules share: settings isolated per test, a running Herald,
//!   the real RabbitMQ and PostgreSQL, an SMTP relay, a WebSocket client. What the benches
//!   need too (seed events, key material, the push providers' stand-ins) is the `testkit`
//!   crate (testkit/).
//! - One module per concern: the HTTP contract over a socket ([`api`]) and in process
//!   ([`router`]), the broker conformance suite ([`broker`]), the store suite ([`store`]),
//!   each channel ([`email`], [`push`], [`realtime`]), and faults of Herald's process
//!   ([`faults`]) and of RabbitMQ itself ([`rabbitmq_node`]).
//!
//! Data files live beside the module that reads them: `support/smtp_relay.py` (the SMTP
//! relay) and `contract/` (schemathesis's configuration and hooks). [`node_client`] runs
//! the Node client's own tests (`clients/node`) against the `herald` binary; [`browser`]
//! drives Debian's Chromium on a page of another origin.

mod support;

mod api;
mod audit;
mod broker;
mod browser;
mod contract;
mod conversations;
mod email;
mod faults;
mod idempotency;
mod ledger;
mod node_client;
mod push;
mod rabbitmq;
mod rabbitmq_node;
mod realtime;
mod realtime_transports;
mod router;
mod sharing;
mod shutdown;
mod socket_io;
mod store;
mod tenants;
mod updates;
