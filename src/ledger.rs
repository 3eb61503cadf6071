//! The delivery ledger: every accepted event and every delivery attempt, so that
//! `GET /v1/notifications/{id}` can answer each recipient's state.
//!
//! Writes go through one task that commits whatever has piled up in one transaction, with
//! multi-row statements, so that neither the API nor a worker pool pays a database round
//! trip of its own per event. Both wait for their write: an acceptance is written before
//! the 202 is answered, so that the `Location` it gives answers at once, from any instance
//! sharing the store; an outcome before its message is settled.
//!
//! The ledger is the worker pools' [`OutcomeSink`], and what the channels ask, through
//! [`Ledger::settled`], for the deliveries an earlier attempt already settled.

use crate::domain::{Envelope, Event, TenantId};
use crate::outcome::{
    Channel, DeliveryOutcome, DeliveryStatus, NotificationState, Outcome, Report,
};
use crate::store::{
    AuditStore, LedgerDelivery, LedgerNotification, LedgerRecord, LedgerStore, StoreError,
};
use crate::workers::{OutcomeSink, Rejection};
use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Most records one transaction takes.
const BATCH: usize = 512;

/// Records to write (none for a flush), and who waits for them.
type Write = (Vec<LedgerRecord>, oneshot::Sender<()>);

/// A handle on the ledger writer; cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    writes: mpsc::Sender<Write>,
    store: Arc<dyn LedgerStore>,
}

/// Deliveries settled for good by earlier attempts, by recipient and target.
pub type Settled = HashMap<(String, String), DeliveryOutcome>;

/// The deliveries an event makes: (channel, recipient, target).
fn deliveries(event: &Event) -> Vec<(Channel, String, String)> {
    match event {
        Event::Chat(m) => match m.listed_recipients() {
            Some(recipients) => recipients
                .into_iter()
                .map(|r| (Channel::Realtime, r.to_string(), String::new()))
                .collect(),
            // A conversation's members may be thousands: the ledger keeps one delivery,
            // to the conversation.
            None => vec![(
                Channel::Realtime,
                format!("conversation:{}", m.conversation_id),
                String::new(),
            )],
        },
        Event::Push(p) => p
            .recipient_ids
            .as_slice()
            .iter()
            .map(|r| (Channel::Push, r.to_string(), String::new()))
            .collect(),
        Event::Email(e) => {
            e.to.as_slice()
                .iter()
                .map(|a| (Channel::Email, a.as_str().to_owned(), a.as_str().to_owned()))
                .collect()
        }
        Event::Audit(a) => vec![(Channel::Audit, a.entity_id.to_string(), String::new())],
        Event::Update(u) => vec![(Channel::Realtime, u.user_id.to_string(), String::new())],
        // Like a chat message to its members: one delivery, to the message's audience.
        Event::MessageChange(c) => vec![(
            Channel::Realtime,
            format!("message:{}", c.message_id),
            String::new(),
        )],
    }
}

fn notification(
    envelope: &Envelope,
    status: NotificationState,
    now: DateTime<Utc>,
) -> LedgerNotification {
    LedgerNotification {
        id: envelope.id.to_string(),
        tenant_id: envelope.event.tenant_id().as_str().to_owned(),
        kind: envelope.event.kind().as_str().to_owned(),
        status,
        reason: None,
        created_at: envelope.created_at.trunc_subsecs(6),
        updated_at: now,
        template: None,
    }
}

/// A record giving every delivery of the event the same state.
fn record(
    envelope: &Envelope,
    status: DeliveryStatus,
    attempts: u32,
    last_error: Option<&str>,
    replace: bool,
) -> LedgerRecord {
    let now = Utc::now().trunc_subsecs(6);
    let mut notification = notification(envelope, NotificationState::of_delivery(status), now);
    // A whole event's failure is its reason; a delivery's own is in its row.
    notification.reason = last_error.map(str::to_owned);
    LedgerRecord {
        notification,
        deliveries: deliveries(&envelope.event)
            .into_iter()
            .map(|(channel, recipient, target)| LedgerDelivery {
                recipient,
                channel,
                target,
                status,
                attempts,
                last_error: last_error.map(str::to_owned),
                reply: None,
                updated_at: now,
            })
            .collect(),
        replace,
    }
}

/// A record of each delivery's own outcome.
///
/// The acceptance recorded one row per recipient before the targets were known (a push's
/// devices, say); each such row is rewritten as the sum of that recipient's targets, so
/// that no row stays `queued` once the event has an outcome.
fn reported(envelope: &Envelope, report: &Report) -> LedgerRecord {
    let now = Utc::now().trunc_subsecs(6);
    let mut notification = notification(envelope, report.status(), now);
    notification.template.clone_from(&report.template);
    let mut rows: Vec<LedgerDelivery> = report
        .deliveries
        .iter()
        .map(|d| {
            let (status, error) = status_of(&d.outcome);
            LedgerDelivery {
                recipient: d.recipient.clone(),
                channel: report.channel,
                target: d.target.clone(),
                status,
                attempts: d.attempt,
                last_error: error.map(str::to_owned),
                reply: d.reply.clone(),
                updated_at: now,
            }
        })
        .collect();
    for (channel, recipient, target) in deliveries(&envelope.event) {
        let written = |r: &LedgerDelivery| {
            r.channel == channel && r.recipient == recipient && r.target == target
        };
        if rows.iter().any(written) {
            continue;
        }
        let targets: Vec<&DeliveryOutcome> = report
            .deliveries
            .iter()
            .filter(|d| d.recipient == recipient)
            .collect();
        let summary = Report {
            channel: report.channel,
            deliveries: targets.iter().map(|d| (*d).clone()).collect(),
            template: None,
        };
        rows.push(LedgerDelivery {
            recipient,
            channel,
            target,
            status: summary.status().of_recipient(),
            attempts: targets.iter().map(|d| d.attempt).max().unwrap_or(0),
            last_error: match summary.settlement() {
                Outcome::Retry { error, .. } | Outcome::Failed { error } => Some(error),
                Outcome::Undeliverable { reason } => Some(reason),
                _ if targets.is_empty() => Some("no delivery was made for this recipient".into()),
                _ => None,
            },
            reply: None,
            updated_at: now,
        });
    }
    LedgerRecord {
        notification,
        deliveries: rows,
        replace: true,
    }
}

/// The ledger status of a delivery's outcome, and its error.
fn status_of(outcome: &Outcome) -> (DeliveryStatus, Option<&str>) {
    match outcome {
        Outcome::Delivered => (DeliveryStatus::Delivered, None),
        Outcome::Retry { error, .. } => (DeliveryStatus::Queued, Some(error.as_str())),
        Outcome::Failed { error } => (DeliveryStatus::Failed, Some(error.as_str())),
        Outcome::Expired => (
            DeliveryStatus::Expired,
            Some("it waited longer than its queue's TTL"),
        ),
        Outcome::Rejected { reason } => (DeliveryStatus::Rejected, Some(reason.as_str())),
        Outcome::Undeliverable { reason } => (DeliveryStatus::Undeliverable, Some(reason.as_str())),
        Outcome::PerDelivery(report) => (report.status().of_recipient(), None),
    }
}

impl Ledger {
    /// Starts the writer on `store`; it runs until every handle is dropped.
    pub fn start(store: Arc<dyn LedgerStore>) -> Self {
        // Bounded: when the writer falls behind, senders wait (back-pressure on the API
        // and the worker pools) rather than the queue growing.
        let (writes, queued) = mpsc::channel(BATCH);
        tokio::spawn(write_loop(store.clone(), queued));
        Ledger { writes, store }
    }

    /// Records accepted events, and waits until they are written, so that the `Location`
    /// of their 202 answers at once.
    pub async fn accepted(&self, envelopes: &[Envelope]) {
        let records = envelopes
            .iter()
            .map(|e| record(e, DeliveryStatus::Queued, 0, None, false))
            .collect();
        self.write(records).await;
    }

    /// Withdraws the acceptances of events the broker did not take (or did not confirm),
    /// written while it was asked. An event a worker has handled since (it was queued
    /// after all) keeps its record.
    pub async fn withdraw(&self, envelopes: &[&Envelope]) {
        let ids: Vec<String> = envelopes.iter().map(|e| e.id.to_string()).collect();
        if let Err(e) = self.store.withdraw_acceptances(&ids).await {
            // The events show `queued` until they expire from the ledger; say so.
            tracing::error!(error = %e, events = ids.len(), "withdrawing acceptances failed");
        }
    }

    /// What earlier attempts at `envelope` settled for good on `channel`, by recipient
    /// and target: a retry carries those forward instead of sending them again. A first
    /// attempt has nothing before it, unless the event may have been published more than
    /// once (an idempotency key's repeat): then another copy may have been handled, and
    /// what it did is looked up too.
    pub async fn settled(
        &self,
        envelope: &Envelope,
        attempt: u32,
        channel: Channel,
    ) -> Result<Settled, StoreError> {
        if attempt <= 1 && !envelope.deduplicate {
            return Ok(HashMap::new());
        }
        let tenant: &TenantId = envelope.event.tenant_id();
        let Some((_, deliveries)) = self
            .store
            .notification(tenant, &envelope.id.to_string())
            .await?
        else {
            return Ok(HashMap::new());
        };
        Ok(deliveries
            .into_iter()
            .filter(|d| d.channel == channel && !d.target.is_empty())
            .filter_map(|d| {
                let outcome = match d.status {
                    DeliveryStatus::Delivered => Outcome::Delivered,
                    DeliveryStatus::Failed => Outcome::failed(d.last_error.unwrap_or_default()),
                    _ => return None,
                };
                let key = (d.recipient.clone(), d.target.clone());
                let settled = DeliveryOutcome {
                    recipient: d.recipient,
                    target: d.target,
                    outcome,
                    attempt: d.attempts,
                    reply: d.reply,
                };
                Some((key, settled))
            })
            .collect())
    }

    /// Waits until everything handed to the ledger before is written: at shutdown, so
    /// that nothing accepted leaves without its record.
    pub async fn flush(&self) {
        self.write(Vec::new()).await;
    }

    async fn write(&self, records: Vec<LedgerRecord>) {
        let (written, done) = oneshot::channel();
        if self.writes.send((records, written)).await.is_ok() {
            let _ = done.await;
        }
    }
}

#[async_trait]
impl OutcomeSink for Ledger {
    /// Records the outcome of an attempt, and waits until it is written.
    ///
    /// A delivered audit event is not written: its audit record, committed before, is the
    /// receipt, and [`status`] reads it from there. Writing it twice would double the
    /// database's work for the busiest stream of events.
    async fn outcome(&self, envelope: &Envelope, attempt: u32, outcome: &Outcome) {
        if matches!(
            (&envelope.event, outcome),
            (Event::Audit(_), Outcome::Delivered)
        ) {
            return;
        }
        let record = match outcome {
            Outcome::PerDelivery(report) => reported(envelope, report),
            other => {
                let (status, error) = status_of(other);
                record(envelope, status, attempt, error, true)
            }
        };
        self.write(vec![record]).await;
    }

    /// Records that a message which could not be read as an event was rejected: known
    /// only by its id, tenant and kind.
    async fn rejected(&self, rejection: &Rejection, reason: &str) {
        let now = Utc::now().trunc_subsecs(6);
        let notification = LedgerNotification {
            id: rejection.id.to_string(),
            tenant_id: rejection.tenant.as_str().to_owned(),
            kind: rejection.kind.as_str().to_owned(),
            status: NotificationState::Rejected,
            reason: Some(reason.to_owned()),
            created_at: rejection.created_at.trunc_subsecs(6),
            updated_at: now,
            template: None,
        };
        self.write(vec![LedgerRecord {
            notification,
            deliveries: Vec::new(),
            replace: true,
        }])
        .await;
    }
}

/// A tenant's notification with this id and the state of each of its deliveries.
///
/// An audit event is delivered once its audit record is stored; the record answers for
/// it, whether or not the ledger saw the event accepted.
pub async fn status(
    ledger: &dyn LedgerStore,
    audit: &dyn AuditStore,
    tenant: &TenantId,
    id: &str,
) -> Result<Option<(LedgerNotification, Vec<LedgerDelivery>)>, StoreError> {
    let found = ledger.notification(tenant, id).await?;
    if found.as_ref().is_some_and(|(n, _)| n.kind != "audit") {
        return Ok(found);
    }
    let Some(stored) = audit.audit_record(tenant, id).await? else {
        return Ok(found);
    };
    // Published straight to the exchange, it was never seen accepted: it dates from
    // its record.
    let (mut notification, earlier) = found.unwrap_or_else(|| {
        let unseen = LedgerNotification {
            id: id.to_owned(),
            tenant_id: tenant.as_str().to_owned(),
            kind: "audit".to_owned(),
            status: NotificationState::Delivered,
            reason: None,
            created_at: stored.recorded_at,
            updated_at: stored.recorded_at,
            template: None,
        };
        (unseen, Vec::new())
    });
    notification.status = NotificationState::Delivered;
    notification.updated_at = stored.recorded_at;
    // Attempts that failed before were recorded; the one that stored the record was not.
    let failed_before = earlier
        .iter()
        .filter(|d| d.status != DeliveryStatus::Delivered)
        .map(|d| d.attempts)
        .max()
        .unwrap_or(0);
    let delivery = LedgerDelivery {
        recipient: stored.record.entity_id,
        channel: Channel::Audit,
        target: String::new(),
        status: DeliveryStatus::Delivered,
        attempts: failed_before + 1,
        last_error: None,
        reply: None,
        updated_at: stored.recorded_at,
    };
    Ok(Some((notification, vec![delivery])))
}

async fn write_loop(store: Arc<dyn LedgerStore>, mut queued: mpsc::Receiver<Write>) {
    let mut batch = Vec::with_capacity(BATCH);
    while queued.recv_many(&mut batch, BATCH).await > 0 {
        let (records, waiters): (Vec<Vec<LedgerRecord>>, Vec<_>) =
            std::mem::take(&mut batch).into_iter().unzip();
        let records: Vec<LedgerRecord> = records.into_iter().flatten().collect();
        if !records.is_empty()
            && let Err(e) = store.write_ledger(&records).await
        {
            // The ledger reports; it must not stop delivery. The statuses of this batch
            // are lost and the next outcome of each event rewrites them.
            tracing::error!(error = %e, records = records.len(), "writing the delivery ledger failed");
        }
        for waiter in waiters {
            let _ = waiter.send(());
        }
    }
}
