//! Delivery channels: how each kind of event reaches people.

pub mod email;
