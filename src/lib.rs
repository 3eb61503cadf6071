//! Herald: a notification fan-out service.
//!
//! Events come in over HTTP ([`http`], thin) or straight from other services over AMQP,
//! are parsed once into [`domain`] types, and are accepted by [`ingress`]: admitted under
//! the tenant's rate limit, bound to their idempotency key, durably queued on a [`broker`]
//! (RabbitMQ, or the embedded broker in a SQLite file) and recorded in the [`ledger`]
//! before the answer. Per queue, a [`workers`] pool takes messages off with bounded
//! concurrency, hands each to its handler ([`channels`] for email and push, [`audit`],
//! [`realtime`] for chat and per-user updates) and reports its one [`outcome`] to an
//! outcome sink (the ledger) before settling it: delivered, retried with backoff,
//! dead-lettered, or expired. [`templates`] renders email within bounds; [`realtime`] carries chat and
//! in-app events to connected users over WebSocket.
//!
//! Dependencies point one way: [`config`] parses settings into the ready values each
//! component owns and takes; [`outcome`], [`domain`] and `audit::chain` are leaves;
//! [`app`] wires everything. `scripts/module-graph.py` checks that no two modules import
//! each other, in CI. [`tenants`] tells which tenant a request's API key is for, from the
//! [`store`] (PostgreSQL or SQLite); [`shutdown`] stops everything gracefully and
//! [`telemetry`] reports on it.

pub mod app;
pub mod audit;
pub mod broker;
pub mod channels;
pub mod config;
pub mod domain;
pub mod grouped;
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
pub mod templates;
pub mod tenants;
pub mod workers;
