//! The connections this instance holds, by user, and the bus that tells instances which
//! users have news. A poke carries no event: the connection reads the user's log from its
//! cursor, so that events arrive in order and exactly once whatever the bus does.
//!
//! A signal is the one thing the bus carries itself: an ephemeral frame (someone is
//! typing) for the user's connections online now, never stored, never replayed, and lost
//! without harm when a connection has more waiting than it holds.

use async_trait::async_trait;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::Notify;

/// The bus key of a user's presence: `presence.{tenantId}.{userId}`, escaped as
/// [`user_key`] is.
pub fn presence_key(tenant: &str, user: &str) -> String {
    format!("presence.{}", &user_key(tenant, user)["user.".len()..])
}

/// The bus key of a user: `user.{tenantId}.{userId}`, with the characters that a topic
/// exchange treats specially escaped.
pub fn user_key(tenant: &str, user: &str) -> String {
    let escape = |s: &str| {
        let mut out = String::with_capacity(s.len());
        for c in s.chars() {
            match c {
                '.' | '*' | '#' | '%' => out.push_str(&format!("%{:02X}", c as u32)),
                c => out.push(c),
            }
        }
        out
    };
    format!("user.{}.{}", escape(tenant), escape(user))
}

/// Tells the instances holding a user's connections that the user has news.
#[async_trait]
pub trait UserBus: Send + Sync {
    /// Starts receiving pokes for `key` on this instance.
    async fn bind(&self, key: &str);
    /// Stops receiving them.
    async fn unbind(&self, key: &str);
    /// Pokes `key` on every instance bound to it.
    async fn poke(&self, key: &str);
    /// Hands `signal` to `key`'s connections on every instance bound to it.
    async fn signal(&self, key: &str, signal: &str);
    /// Why the bus cannot carry pokes now, if it cannot.
    fn trouble(&self) -> Option<String> {
        None
    }
}

/// Signals a connection holds until its session takes them: a typing indicator is worth
/// nothing late, so a connection that falls this far behind loses the oldest.
const SIGNALS_HELD: usize = 32;

/// One connection's doorbell.
pub struct Doorbell {
    /// Rung when the user has news; a ring with nobody waiting is kept for the next wait.
    pub notify: Notify,
    /// Signals (JSON text) not yet taken by the session, oldest first.
    signals: Mutex<VecDeque<Arc<str>>>,
}

impl Doorbell {
    fn new() -> Self {
        Doorbell {
            notify: Notify::new(),
            signals: Mutex::new(VecDeque::new()),
        }
    }

    /// Holds `signal` for the session, and rings.
    fn hand(&self, signal: &Arc<str>) {
        {
            let mut signals = self.signals.lock().expect("never poisoned");
            if signals.len() == SIGNALS_HELD {
                signals.pop_front();
            }
            signals.push_back(signal.clone());
        }
        self.notify.notify_one();
    }

    /// The signals handed since the last take, oldest first.
    pub fn take_signals(&self) -> Vec<Arc<str>> {
        self.signals
            .lock()
            .expect("never poisoned")
            .drain(..)
            .collect()
    }
}

/// The connections of this instance.
pub struct Hub {
    connections: Mutex<HashMap<String, Vec<Arc<Doorbell>>>>,
    bus: Mutex<Option<Arc<dyn UserBus>>>,
}

/// A connection's place in the hub; leaving drops it.
pub struct Membership {
    hub: Weak<Hub>,
    key: String,
    doorbell: Arc<Doorbell>,
}

impl Membership {
    /// The connection's doorbell.
    pub fn doorbell(&self) -> &Arc<Doorbell> {
        &self.doorbell
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.upgrade() {
            hub.leave(&self.key, &self.doorbell);
        }
    }
}

impl Hub {
    /// An empty hub; [`Hub::set_bus`] connects it to the other instances.
    pub fn new() -> Arc<Self> {
        Arc::new(Hub {
            connections: Mutex::new(HashMap::new()),
            bus: Mutex::new(None),
        })
    }

    /// The bus pokes travel over.
    pub fn set_bus(&self, bus: Arc<dyn UserBus>) {
        *self.bus.lock().expect("never poisoned") = Some(bus);
    }

    fn bus(&self) -> Option<Arc<dyn UserBus>> {
        self.bus.lock().expect("never poisoned").clone()
    }

    /// Adds a connection of the user with bus key `key`, with a doorbell of its own.
    pub async fn join(self: &Arc<Self>, key: String) -> Membership {
        self.join_with(key, Arc::new(Doorbell::new())).await
    }

    /// Also rings `doorbell` for `key` (a connection watching another user's presence).
    pub async fn join_with(self: &Arc<Self>, key: String, doorbell: Arc<Doorbell>) -> Membership {
        let first = {
            let mut connections = self.connections.lock().expect("never poisoned");
            let list = connections.entry(key.clone()).or_default();
            list.push(doorbell.clone());
            list.len() == 1
        };
        if first && let Some(bus) = self.bus() {
            bus.bind(&key).await;
        }
        Membership {
            hub: Arc::downgrade(self),
            key,
            doorbell,
        }
    }

    fn leave(&self, key: &str, doorbell: &Arc<Doorbell>) {
        let last = {
            let mut connections = self.connections.lock().expect("never poisoned");
            let Some(list) = connections.get_mut(key) else {
                return;
            };
            list.retain(|d| !Arc::ptr_eq(d, doorbell));
            let empty = list.is_empty();
            if empty {
                connections.remove(key);
            }
            empty
        };
        if last && let Some(bus) = self.bus() {
            let key = key.to_owned();
            tokio::spawn(async move { bus.unbind(&key).await });
        }
    }

    /// Rings every local connection of `key`.
    pub fn ring(&self, key: &str) {
        let connections = self.connections.lock().expect("never poisoned");
        for doorbell in connections.get(key).into_iter().flatten() {
            doorbell.notify.notify_one();
        }
    }

    /// Hands `signal` to every local connection of `key`.
    pub fn hand(&self, key: &str, signal: &str) {
        let connections = self.connections.lock().expect("never poisoned");
        if let Some(doorbells) = connections.get(key) {
            let signal: Arc<str> = Arc::from(signal);
            for doorbell in doorbells {
                doorbell.hand(&signal);
            }
        }
    }

    /// The keys of every user connected here (and of those whose presence is watched).
    pub fn keys(&self) -> Vec<String> {
        self.connections
            .lock()
            .expect("never poisoned")
            .keys()
            .cloned()
            .collect()
    }

    /// Why pokes cannot travel between instances now, if they cannot.
    pub fn bus_trouble(&self) -> Option<String> {
        self.bus().and_then(|bus| bus.trouble())
    }

    /// How many connections this instance holds.
    pub fn connection_count(&self) -> usize {
        self.connections
            .lock()
            .expect("never poisoned")
            .values()
            .map(Vec::len)
            .sum()
    }

    /// Pokes the user of `key` wherever it is connected.
    pub async fn poke(&self, key: &str) {
        match self.bus() {
            Some(bus) => bus.poke(key).await,
            None => self.ring(key),
        }
    }

    /// Hands `signal` to the connections of `key` wherever they are.
    pub async fn signal(&self, key: &str, signal: &str) {
        match self.bus() {
            Some(bus) => bus.signal(key, signal).await,
            None => self.hand(key, signal),
        }
    }
}

/// The bus of a single process (the embedded broker): a poke rings local connections.
pub struct LocalBus {
    hub: Weak<Hub>,
}

impl LocalBus {
    /// A bus ringing `hub`'s connections.
    pub fn new(hub: &Arc<Hub>) -> Self {
        LocalBus {
            hub: Arc::downgrade(hub),
        }
    }
}

#[async_trait]
impl UserBus for LocalBus {
    async fn bind(&self, _key: &str) {}
    async fn unbind(&self, _key: &str) {}
    async fn poke(&self, key: &str) {
        if let Some(hub) = self.hub.upgrade() {
            hub.ring(key);
        }
    }
    async fn signal(&self, key: &str, signal: &str) {
        if let Some(hub) = self.hub.upgrade() {
            hub.hand(key, signal);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_signal_reaches_the_users_connections_only_and_the_oldest_go_first() {
        let hub = Hub::new();
        hub.set_bus(Arc::new(LocalBus::new(&hub)));
        let ann = hub.join(user_key("t", "ann")).await;
        let ann_again = hub.join(user_key("t", "ann")).await;
        let bob = hub.join(user_key("t", "bob")).await;
        for i in 0..SIGNALS_HELD + 2 {
            hub.signal(&user_key("t", "ann"), &i.to_string()).await;
        }
        for connection in [&ann, &ann_again] {
            let held: Vec<String> = connection
                .doorbell()
                .take_signals()
                .iter()
                .map(|s| s.to_string())
                .collect();
            let expected: Vec<String> = (2..SIGNALS_HELD + 2).map(|i| i.to_string()).collect();
            assert_eq!(held, expected);
            assert!(
                connection.doorbell().take_signals().is_empty(),
                "taken once"
            );
        }
        assert!(bob.doorbell().take_signals().is_empty());
    }
}
