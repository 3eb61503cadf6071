//! Delivery channels: how each kind of event reaches people. Each is a worker pool's
//! handler: it answers an [`crate::outcome::Outcome`] with a report of every delivery, asks
//! the ledger what earlier attempts settled, reads only the store traits it needs, and
//! reads tenants' own provider settings through [`TenantProviders`], parsed once.

pub mod email;
mod limits;
mod providers;
pub mod push;
pub mod tls;

pub use limits::OutboundLimit;
pub use providers::{Parsed, TenantProviders};
