//! Delivery channels: how each kind of event reaches people.

pub mod email;
mod limits;
mod providers;
pub mod push;
pub mod tls;

pub use limits::OutboundLimit;
pub use providers::{Parsed, TenantProviders};
