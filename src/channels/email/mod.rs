//! Email: render the tenant's template, then send one message per recipient, so that no
//! recipient sees another, through the tenant's SMTP relay, else the configured one, else
//! the file outbox (`.eml` files under `data/outbox/`).
//!
//! Each recipient ends in its own outcome: an SMTP 4xx or a lost connection is retried
//! (only that recipient, on the message's next attempt), a 5xx fails that recipient for
//! good, and the relay's reply lands in the delivery ledger.
//!
//! The handler takes its [`EmailSettings`] ready: the default sender already a mailbox, the
//! configured relay checked, the extra CA already loaded.

mod message;
mod outbox;
mod relay_pool;
mod session;
mod smtp;

use message::Content;
pub use outbox::Outbox;
pub use smtp::{RelayError, RelaySettings, Relays, Security, SendResult, Whose};

use crate::channels::tls::ExtraCa;
use crate::channels::{OutboundLimit, TenantProviders};
use crate::domain::{EmailAddress, EmailNotification, Envelope, Event, TenantId};
use crate::ledger::Ledger;
use crate::outbound::OutboundPolicy;
use crate::outcome::{Channel, DeliveryOutcome, Outcome, Report};
use crate::store::ProviderStore;
use crate::templates::{RenderError, RenderLimits, Templates};
use crate::workers::Handler;
use async_trait::async_trait;
use futures_util::StreamExt;
use lettre::message::Mailbox;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Email delivery, as configured (`email.*`).
#[derive(Debug, Clone)]
pub struct EmailSettings {
    /// The sender of emails whose event and relay name none.
    pub from: Mailbox,
    /// Where the file outbox writes `.eml` files.
    pub outbox_dir: PathBuf,
    /// The SMTP relay for tenants without one of their own; without any, the outbox.
    pub smtp: Option<RelaySettings>,
    /// Connections kept open to each relay.
    pub pool_size: NonZeroU32,
    /// How long a relay may take to connect (greeting, TLS and login included), to take a
    /// write, or to answer a command.
    pub timeout: Duration,
    /// Recipients one email event is sent to at once.
    pub parallel_recipients: NonZeroUsize,
    /// CA certificates trusted for relays besides the system's, for a relay with a
    /// certificate from a private CA.
    pub extra_ca: Option<ExtraCa>,
    /// Outbound limits, in messages per second (0: none).
    pub rate_limits: EmailRateLimits,
    /// How much one email may render to, and how long it may take.
    pub render: RenderLimits,
}

/// Outbound email limits, in messages per second; 0 means no limit.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailRateLimits {
    /// Per tenant, over all its relays.
    pub per_tenant: u32,
    /// Per relay (host and port), over all tenants.
    pub per_relay: u32,
}

/// The ledger's channel for email.
const CHANNEL: Channel = Channel::Email;

/// The email queue's handler.
pub struct EmailHandler {
    templates: Arc<Templates>,
    ledger: Ledger,
    outbox: Outbox,
    relays: Relays,
    /// The relay of tenants without their own.
    relay: Option<RelaySettings>,
    tenant_relays: TenantProviders<RelaySettings>,
    default_from: Mailbox,
    per_tenant: OutboundLimit,
    per_relay: OutboundLimit,
    parallel_recipients: NonZeroUsize,
}

/// Where a tenant's email goes.
enum Route {
    Relay(RelaySettings, Whose),
    Outbox,
}

impl EmailHandler {
    /// A handler rendering with `templates` and sending as `settings` say.
    /// Tenants' own relays must be where `outbound` allows.
    pub fn new(
        settings: &EmailSettings,
        templates: Arc<Templates>,
        providers: Arc<dyn ProviderStore>,
        ledger: Ledger,
        outbound: OutboundPolicy,
    ) -> Self {
        EmailHandler {
            templates,
            ledger,
            outbox: Outbox::new(settings.outbox_dir.clone()),
            relays: Relays::new(
                settings.pool_size,
                settings.timeout,
                settings.extra_ca.as_ref(),
                outbound,
            ),
            relay: settings.smtp.clone(),
            tenant_relays: TenantProviders::new("smtp", providers, |json| {
                serde_json::from_str(json)
                    .map_err(|e| format!("the tenant's SMTP settings do not parse: {e}"))
            }),
            default_from: settings.from.clone(),
            per_tenant: OutboundLimit::per_second(settings.rate_limits.per_tenant),
            per_relay: OutboundLimit::per_second(settings.rate_limits.per_relay),
            parallel_recipients: settings.parallel_recipients,
        }
    }

    async fn route(&self, tenant: &TenantId) -> Result<Route, String> {
        let own = self
            .tenant_relays
            .get(tenant)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(relay) = own {
            return relay.map(|relay| Route::Relay((*relay).clone(), Whose::Tenant));
        }
        Ok(self
            .relay
            .clone()
            .map_or(Route::Outbox, |relay| Route::Relay(relay, Whose::Operator)))
    }

    /// Sends the `index`th message of the event to `to`.
    async fn send_one(
        &self,
        envelope: &Envelope,
        index: usize,
        from: &Mailbox,
        to: &EmailAddress,
        content: &Content,
        route: &Route,
    ) -> (Outcome, Option<String>) {
        let tenant = envelope.event.tenant_id();
        let email = match message::build(
            &format!("{}.{index}", envelope.id),
            from,
            to.as_str(),
            content,
        ) {
            Ok(email) => email,
            Err(e) => return (Outcome::failed(format!("building the message: {e}")), None),
        };
        match route {
            Route::Outbox => match self.outbox.write(&email).await {
                Ok(file) => (
                    Outcome::Delivered,
                    Some(format!("written to the outbox as {file}")),
                ),
                Err(e) => (Outcome::retry(format!("writing to the outbox: {e}")), None),
            },
            Route::Relay(relay, whose) => {
                self.per_tenant.wait(tenant.as_str()).await;
                self.per_relay.wait(&relay.address()).await;
                match self.relays.send(relay, *whose, email).await {
                    SendResult::Accepted(reply) => (Outcome::Delivered, Some(reply)),
                    SendResult::Transient(reply) => (Outcome::retry(&reply), Some(reply)),
                    SendResult::Permanent(reply) => (Outcome::failed(&reply), Some(reply)),
                }
            }
        }
    }

    /// The outcome for one recipient: what an earlier attempt settled, else a send now.
    async fn deliver_to(
        &self,
        envelope: &Envelope,
        index: usize,
        to: &EmailAddress,
        earlier: Option<DeliveryOutcome>,
        attempt: u32,
        (from, content, route): (&Mailbox, &Content, &Route),
    ) -> DeliveryOutcome {
        if let Some(earlier) = earlier {
            return earlier;
        }
        let (outcome, reply) = self
            .send_one(envelope, index, from, to, content, route)
            .await;
        DeliveryOutcome {
            recipient: to.as_str().to_owned(),
            target: to.as_str().to_owned(),
            outcome,
            attempt,
            reply,
        }
    }

    async fn deliver(
        &self,
        envelope: &Envelope,
        email: &EmailNotification,
        attempt: u32,
    ) -> Outcome {
        let tenant = envelope.event.tenant_id();
        let rendered = self
            .templates
            .render(
                tenant,
                email.template.as_str(),
                email.locale.as_ref().map(|l| l.as_str()),
                &email.data,
                email.subject.as_deref(),
            )
            .await;
        let (rendered, template) = match rendered {
            Ok(rendered) => rendered,
            Err(RenderError::Store(e)) => return Outcome::retry(e),
            // The same data renders the same way every time: retrying cannot help.
            Err(e) => return Outcome::failed(e),
        };
        let content = Content::new(&rendered);
        let route = match self.route(tenant).await {
            Ok(route) => route,
            Err(e) => return Outcome::retry(e),
        };
        let from = match (&email.from, &route) {
            (Some(from), _) => from.as_str().parse::<Mailbox>().ok(),
            (
                None,
                Route::Relay(
                    RelaySettings {
                        from: Some(from), ..
                    },
                    _,
                ),
            ) => from.parse().ok(),
            _ => None,
        }
        .unwrap_or_else(|| self.default_from.clone());
        let mut settled = match self.ledger.settled(envelope, attempt, CHANNEL).await {
            Ok(settled) => settled,
            Err(e) => return Outcome::retry(e),
        };
        let sends: Vec<_> = email
            .to
            .as_slice()
            .iter()
            .enumerate()
            .map(|(index, to)| {
                let address = to.as_str().to_owned();
                let earlier = settled.remove(&(address.clone(), address));
                self.deliver_to(
                    envelope,
                    index,
                    to,
                    earlier,
                    attempt,
                    (&from, &content, &route),
                )
            })
            .collect();
        let deliveries = futures_util::stream::iter(sends)
            .buffered(self.parallel_recipients.get())
            .collect()
            .await;
        Outcome::PerDelivery(Report {
            channel: CHANNEL,
            deliveries,
            template: Some(template),
        })
    }
}

#[async_trait]
impl Handler for EmailHandler {
    async fn handle(&self, envelope: &Envelope, attempt: u32) -> Outcome {
        match &envelope.event {
            Event::Email(email) => self.deliver(envelope, email, attempt).await,
            other => Outcome::failed(format!("not an email event: {:?}", other.kind())),
        }
    }
}
