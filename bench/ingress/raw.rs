//! The raw broker phases: the rate at which each broker takes Herald's audit envelope with
//! none of Herald in between. RabbitMQ through lapin alone, on a queue declared with the
//! arguments Herald gives `audit.events`; the embedded broker as Herald's own
//! `EmbeddedBroker`, opened in this process.

use crate::load::{Outcome, Run, Window, closed_loop};
use crate::message::{audit_envelope, message_id};
use crate::{MAX_LENGTH, bench_settings, unique_prefix};
use bytes::Bytes;
use herald::broker::embedded::EmbeddedBroker;
use herald::broker::{Broker, Publication, Topology};
use herald::config::Settings;
use herald::domain::EventKind;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Confirm-mode channels the raw RabbitMQ publishers share, as Herald's default.
const CONFIRM_CHANNELS: usize = 4;

pub async fn connect(url: &str) -> Result<Connection, String> {
    let connecting = Connection::connect(url, ConnectionProperties::default());
    match tokio::time::timeout(Duration::from_secs(5), connecting).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 5 s".into()),
    }
}

/// The raw queue, its dead-letter queue and the exchange it is bound to.
pub struct RawNames {
    exchange: String,
    queue: String,
    dead_letter_queue: String,
}

impl RawNames {
    pub fn under(prefix: &str) -> Self {
        let queue = format!("{prefix}raw.audit.events");
        RawNames {
            exchange: format!("{prefix}raw.audit"),
            dead_letter_queue: format!("{queue}.dlq"),
            queue,
        }
    }
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// The arguments Herald declares `audit.events` with (classic queue type).
fn audit_queue_arguments(settings: &Settings, dead_letter_queue: &str) -> FieldTable {
    let ttl_ms = settings
        .topology
        .queue(EventKind::Audit)
        .message_ttl
        .as_millis() as i64;
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), text("classic"));
    args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl_ms));
    args.insert(
        "x-max-length".into(),
        AMQPValue::LongLongInt(i64::from(MAX_LENGTH)),
    );
    args.insert("x-overflow".into(), text("reject-publish"));
    args.insert("x-dead-letter-exchange".into(), text(""));
    args.insert("x-dead-letter-routing-key".into(), text(dead_letter_queue));
    args
}

fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

/// Declares the raw exchange and queues as Herald declares its audit topology.
async fn declare_raw(
    channel: &Channel,
    names: &RawNames,
    settings: &Settings,
    routing_key: &str,
) -> Result<(), lapin::Error> {
    let exchange = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            names.exchange.as_str().into(),
            lapin::ExchangeKind::Topic,
            exchange,
            FieldTable::default(),
        )
        .await?;
    let mut classic = FieldTable::default();
    classic.insert("x-queue-type".into(), text("classic"));
    channel
        .queue_declare(
            names.dead_letter_queue.as_str().into(),
            durable_queue(),
            classic,
        )
        .await?;
    channel
        .queue_declare(
            names.queue.as_str().into(),
            durable_queue(),
            audit_queue_arguments(settings, &names.dead_letter_queue),
        )
        .await?;
    channel
        .queue_bind(
            names.queue.as_str().into(),
            names.exchange.as_str().into(),
            routing_key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}

/// The properties Herald gives every message: JSON, persistent, stamped, with an id.
fn persistent_properties() -> BasicProperties {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_timestamp(now)
        .with_message_id(message_id().into())
        .with_headers(FieldTable::default())
}

/// One mandatory, persistent publish, awaiting its confirm.
async fn publish_confirmed(
    channel: Channel,
    exchange: Arc<str>,
    routing_key: &'static str,
    body: Bytes,
) -> Outcome {
    let confirm = channel
        .basic_publish(
            exchange.as_ref().into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory: true,
                immediate: false,
            },
            &body,
            persistent_properties(),
        )
        .await;
    match confirm {
        Err(e) => Outcome::Failed(format!("publish error: {e}")),
        Ok(confirm) => match confirm.await {
            Ok(Confirmation::Ack(None)) => Outcome::Accepted(1),
            Ok(Confirmation::Ack(Some(_))) => Outcome::Failed("returned (unroutable)".into()),
            Ok(Confirmation::Nack(_)) => Outcome::Failed("nack".into()),
            Ok(Confirmation::NotRequested) => Outcome::Failed("not in confirm mode".into()),
            Err(e) => Outcome::Failed(format!("confirm error: {e}")),
        },
    }
}

/// The raw RabbitMQ rate: lapin only, 64 publishers over 4 confirm channels. With `pause`,
/// each publisher waits that long before each publish, as an HTTP client's round trip
/// makes each sender wait between Herald's answer and its next request.
pub async fn raw_rabbitmq(
    connection: &Connection,
    names: &RawNames,
    settings: &Settings,
    window: Window,
    pause: Option<Duration>,
) -> Result<Run, lapin::Error> {
    let (body, routing_key) = audit_envelope();
    let declaring = connection.create_channel().await?;
    declare_raw(&declaring, names, settings, routing_key).await?;
    let _ = declaring.close(200, "declared".into()).await;
    let mut channels = Vec::with_capacity(CONFIRM_CHANNELS);
    for _ in 0..CONFIRM_CHANNELS {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        channels.push(channel);
    }
    let exchange: Arc<str> = names.exchange.as_str().into();
    let run = closed_loop(window.start(), None, move |sender| {
        let publish = publish_confirmed(
            channels[sender % CONFIRM_CHANNELS].clone(),
            exchange.clone(),
            routing_key,
            body.clone(),
        );
        async move {
            if let Some(pause) = pause {
                // A thread's sleep, not tokio's timer, which rounds up to whole milliseconds.
                let _ = tokio::task::spawn_blocking(move || std::thread::sleep(pause)).await;
            }
            publish.await
        }
    })
    .await;
    Ok(run)
}

/// Deletes Herald's topology under the bench prefix, its real-time exchange, and the raw
/// queues and exchange.
pub async fn delete_rabbitmq(
    connection: &Connection,
    topology: &Topology,
    realtime_exchange: &String,
    raw: &RawNames,
) {
    let Ok(channel) = connection.create_channel().await else {
        println!("  cleanup: no channel; bench queues are left on RabbitMQ");
        return;
    };
    let mut deleted = 0;
    let raw_queues = [&raw.queue, &raw.dead_letter_queue];
    for queue in raw_queues {
        let deleting = channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default());
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(10), deleting).await {
            deleted += 1;
        }
    }
    let exchanges = [&raw.exchange, realtime_exchange];
    for exchange in exchanges {
        let deleting =
            channel.exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default());
        if let Ok(Ok(())) = tokio::time::timeout(Duration::from_secs(10), deleting).await {
            deleted += 1;
        }
    }
    let herald_total =
        herald::broker::amqp::topology::queue_names(topology).len() + topology.exchanges().len();
    let herald_topology = herald::broker::amqp::topology::delete(&channel, topology);
    deleted += tokio::time::timeout(Duration::from_secs(60), herald_topology)
        .await
        .map_or(0, |(herald_deleted, _)| herald_deleted);
    let total = raw_queues.len() + exchanges.len() + herald_total;
    let _ = channel.close(200, "cleaned up".into()).await;
    println!("  cleanup: deleted {deleted} of {total} bench queues and exchanges");
}

/// The raw embedded rate: Herald's `EmbeddedBroker` in this process, no HTTP.
pub async fn raw_embedded(dir: &Path, window: Window) -> Result<Run, String> {
    let settings = bench_settings(&unique_prefix(), &dir.join("broker.db"));
    let topology = settings.topology.clone();
    let broker = EmbeddedBroker::open(topology.clone(), settings.broker.embedded.clone())
        .await
        .map_err(|e| e.to_string())?;
    let (body, routing_key) = audit_envelope();
    let exchange = topology.queue(EventKind::Audit).exchange.clone();
    let publisher = broker.clone();
    let run = closed_loop(window.start(), None, move |_| {
        let broker = publisher.clone();
        // Not `Publication::of`: every publish carries the one envelope's bytes, as the raw
        // RabbitMQ phase does, each under an id of its own, so that encoding an envelope
        // per publish is not timed as the broker's.
        let publication = Publication {
            exchange: exchange.clone(),
            routing_key: routing_key.to_owned(),
            message_id: message_id(),
            body: body.clone(),
        };
        async move {
            match broker.publish(publication).await {
                Ok(()) => Outcome::Accepted(1),
                Err(e) => Outcome::Failed(e.label().to_owned()),
            }
        }
    })
    .await;
    broker.close().await;
    Ok(run)
}
