//! Herald: a notification fan-out service.
//!
//! Events come in over HTTP ([`http`]) or straight from other services over AMQP, are
//! parsed once into [`domain`] types, and are accepted by [`ingress`]: bound to their
//! idempotency key, durably queued on a [`broker`] (RabbitMQ, or the embedded broker in a
//! SQLite file) and recorded in the [`ledger`] before the answer. Per queue, a [`workers`] pool takes messages off
//! with bounded concurrency, hands each to its handler, and settles it by its one outcome:
//! delivered, retried with backoff, dead-lettered, or expired. [`app`] wires these together
//! from [`config`]; [`shutdown`] stops them gracefully and [`telemetry`] reports on them.
//! [`tenants`] tells which tenant a request's API key is for, from the [`store`]
//! (PostgreSQL or SQLite); [`channels`] deliver, and [`realtime`] carries chat and in-app
//! events to connected users over WebSocket.

pub mod app;
pub mod audit;
pub mod broker;
pub mod channels;
pub mod config;
pub mod domain;
pub mod http;
pub mod idempotency;
pub mod ingress;
pub mod ledger;
pub mod outbound;
pub mod outcome;
pub mod realtime;
pub mod retention;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod tenants;
pub mod workers;
