//! Wiring: opens the broker, then runs the API and the worker pools that this process's
//! role asks for, side by side, until shutdown.

use crate::audit::AuditHandler;
use crate::broker::amqp::AmqpBroker;
use crate::broker::embedded::EmbeddedBroker;
use crate::broker::{Broker, BrokerError, Topology};
use crate::channels::email::EmailHandler;
use crate::channels::push::PushHandler;
use crate::config::{BrokerKind, Settings};
use crate::domain::EventKind;
use crate::http::{self, AppState};
use crate::idempotency::Idempotency;
use crate::ingress::Ingress;
use crate::ledger::Ledger;
use crate::realtime::chat::ChatHandler;
use crate::realtime::updates::UpdateHandler;
use crate::realtime::{Bus, Realtime, RealtimeError};
use crate::shutdown::Shutdown;
use crate::store::{self, Store, StoreError, Stores};
use crate::telemetry::Metrics;
use crate::templates::Templates;
use crate::tenants::Tenancy;
use crate::tenants::limits::RateLimits;
use crate::workers::{Handler, WorkerPool};
use std::sync::Arc;
use tokio::net::TcpListener;

/// What one process does: serve the API, work some queues, or both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roles {
    /// Serve the HTTP API.
    pub api: bool,
    /// Run the worker pools of these queues.
    pub queues: Vec<EventKind>,
}

impl Roles {
    /// The API and every worker pool (`herald serve`).
    pub fn everything() -> Self {
        Roles {
            api: true,
            queues: EventKind::ALL.to_vec(),
        }
    }

    /// The API alone, with no worker pool (`herald api`).
    pub fn api_only() -> Self {
        Roles {
            api: true,
            queues: Vec::new(),
        }
    }
}

/// A started Herald: its settings, store, broker and metrics.
#[derive(Clone)]
pub struct Herald {
    /// The settings it runs with.
    pub settings: Arc<Settings>,
    /// The whole store, opened once: each component is handed the narrow view it needs
    /// (an `Arc<dyn LedgerStore>`, say) of this one value.
    pub store: Arc<dyn Store>,
    /// The broker events are queued on.
    pub broker: Arc<dyn Broker>,
    /// The queue topology.
    pub topology: Arc<Topology>,
    /// Its metrics.
    pub metrics: Arc<Metrics>,
    /// Tenants and API keys, in the store.
    pub tenancy: Arc<Tenancy>,
    /// Per-tenant ingress rate limits.
    pub rate_limits: Arc<RateLimits>,
    /// The delivery ledger.
    pub ledger: Ledger,
    /// Email templates, built-in and tenants' own, compiled.
    pub templates: Arc<Templates>,
    /// Real-time delivery over WebSocket.
    pub realtime: Arc<Realtime>,
    /// Where sends are accepted.
    pub ingress: Arc<Ingress>,
}

/// Why Herald could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The broker could not be opened.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The store could not be opened or migrated.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Real-time delivery could not start.
    #[error(transparent)]
    Realtime(#[from] RealtimeError),
}

/// Opens the configured broker: the embedded one creates its file and schema, RabbitMQ is
/// connected and its topology declared. Answers it with the bus real-time delivery tells
/// other instances over: RabbitMQ's, on the broker's connection, or none in process (the
/// embedded broker has one process).
pub async fn open_broker(
    settings: &Settings,
    topology: &Topology,
) -> Result<(Arc<dyn Broker>, Bus), BrokerError> {
    Ok(match settings.broker.kind {
        BrokerKind::Embedded => (
            Arc::new(
                EmbeddedBroker::open(topology.clone(), settings.broker.embedded.clone()).await?,
            ),
            Bus::InProcess,
        ),
        BrokerKind::Rabbitmq => {
            let broker = AmqpBroker::connect(
                topology.clone(),
                &settings.broker.rabbitmq,
                settings.broker.publish_timeout,
            )
            .await?;
            let bus = Bus::Rabbitmq {
                broker: broker.clone(),
                exchange: settings.realtime_exchange(),
            };
            (Arc::new(broker), bus)
        }
    })
}

/// Applies the database's migrations and prepares the broker (the embedded one's file, or
/// RabbitMQ's topology), then closes both, starting nothing: what `herald migrate` does.
/// It fails, saying why, when RabbitMQ does not accept a connection within
/// `broker.rabbitmq.migrate_wait`, rather than wait forever.
/// Answers what the broker lacks of what Herald needs (RabbitMQ's gaps, see
/// [`crate::broker::amqp::policies`]), none for the embedded broker.
pub async fn migrate(settings: &Settings) -> Result<Vec<String>, StartError> {
    crate::channels::tls::install_default_provider();
    store::open(&settings.database.url).await?;
    Ok(match settings.broker.kind {
        BrokerKind::Embedded => {
            EmbeddedBroker::migrate(&settings.broker.embedded).await?;
            Vec::new()
        }
        BrokerKind::Rabbitmq => {
            AmqpBroker::declare(
                &settings.topology,
                &settings.broker.rabbitmq,
                settings.broker.rabbitmq.migrate_wait,
            )
            .await?
        }
    })
}

/// The handler of each queue.
fn handler_for(kind: EventKind, herald: &Herald) -> Arc<dyn Handler> {
    let stores = Stores::new(&herald.store);
    match kind {
        EventKind::Email => Arc::new(EmailHandler::new(
            &herald.settings.email,
            herald.templates.clone(),
            stores.providers,
            herald.ledger.clone(),
            herald.settings.providers.outbound(),
        )),
        EventKind::Push => Arc::new(PushHandler::new(
            &herald.settings.push,
            stores.devices,
            stores.providers,
            herald.ledger.clone(),
            herald.realtime.clone(),
            herald.settings.providers.outbound(),
        )),
        EventKind::Audit => Arc::new(AuditHandler::start(stores.audit)),
        EventKind::Chat => Arc::new(ChatHandler::new(herald.realtime.clone())),
        EventKind::Update => Arc::new(UpdateHandler::new(herald.realtime.clone())),
    }
}

impl Herald {
    /// Opens the store (applying its migrations) and the broker.
    pub async fn start(settings: Settings) -> Result<Herald, StartError> {
        crate::channels::tls::install_default_provider();
        let store = store::open(&settings.database.url).await?;
        let stores = Stores::new(&store);
        let topology = settings.topology.clone();
        let (broker, bus) = open_broker(&settings, &topology).await?;
        let topology = Arc::new(topology);
        let metrics = Arc::new(Metrics::new());
        let ledger = Ledger::start(stores.ledger.clone());
        let rate_limits = Arc::new(RateLimits::new(&settings.rate_limits));
        let ingress = Arc::new(Ingress::new(
            broker.clone(),
            topology.clone(),
            ledger.clone(),
            // A request answers within its publish timeout and a ledger write: a claim
            // unanswered for three timeouts was left by a process that died.
            Idempotency::new(
                stores.idempotency.clone(),
                settings.broker.publish_timeout * 3,
            ),
            rate_limits.clone(),
            metrics.clone(),
            settings.broker.publish_timeout,
        ));
        let realtime = Realtime::start(&settings.realtime, &bus, &stores).await?;
        // A socket's `message:send` goes through the same ingress as a POST.
        realtime.send_chats_through(Arc::new(http::SocketSends::new(
            ingress.clone(),
            settings.http.retry_after,
        )));
        Ok(Herald {
            broker,
            topology,
            metrics,
            ledger,
            templates: Arc::new(Templates::new(
                stores.templates.clone(),
                settings.email.render,
            )),
            realtime,
            tenancy: Arc::new(Tenancy::new(stores.tenants.clone())),
            store,
            rate_limits,
            ingress,
            settings: Arc::new(settings),
        })
    }

    /// The HTTP API.
    pub fn router(&self) -> axum::Router {
        http::router(AppState {
            broker: self.broker.clone(),
            topology: self.topology.clone(),
            metrics: self.metrics.clone(),
            body_limit: self.settings.http.body_limit_bytes,
            retry_after: self.settings.http.retry_after,
            tenancy: self.tenancy.clone(),
            stores: Stores::new(&self.store),
            admin_token: self.settings.admin.token(),
            ingress: self.ingress.clone(),
            templates: self.templates.clone(),
            realtime: self.realtime.clone(),
            outbound: self.settings.providers.outbound(),
            allowed_origins: self.settings.http.allowed_origins.clone(),
        })
    }

    /// The worker pool of `kind`'s queue, with `handler`.
    pub fn worker_pool(&self, kind: EventKind, handler: Arc<dyn Handler>) -> WorkerPool {
        WorkerPool::new(
            self.topology.queue(kind).clone(),
            self.broker.clone(),
            handler,
            self.metrics.clone(),
            self.settings.workers.handler_timeout,
        )
        .with_outcome_sink(Arc::new(self.ledger.clone()))
        .with_tenancy(self.tenancy.clone())
        .with_default_tenant(self.settings.broker.default_tenant.clone())
        .with_dead_letter_bounds(self.settings.dead_letters.every)
    }

    /// Runs `roles` until `shutdown`: the API on `listener` (when it serves the API), and
    /// the worker pools. Returns once the API has stopped and the pools have drained.
    pub async fn run(
        self,
        roles: Roles,
        listener: Option<TcpListener>,
        shutdown: Shutdown,
    ) -> anyhow::Result<()> {
        let grace = self.settings.workers.shutdown_grace;
        let pools: Vec<_> = roles
            .queues
            .iter()
            .map(|&kind| {
                let pool = self.worker_pool(kind, handler_for(kind, &self));
                tokio::spawn(pool.run(shutdown.clone(), grace))
            })
            .collect();
        let mut background = vec![tokio::spawn(crate::retention::run(
            self.store.clone(),
            self.settings.retention.clone(),
            shutdown.clone(),
        ))];
        if roles.api {
            let listener =
                listener.ok_or_else(|| anyhow::anyhow!("the API role needs a listener"))?;
            tracing::info!(
                address = %listener.local_addr()?,
                broker = self.broker.name(),
                "Herald is accepting events"
            );
            // Idle tenants' rate-limit state is dropped once a minute.
            let (limits, stop) = (self.rate_limits.clone(), shutdown.clone());
            background.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
                loop {
                    tokio::select! {
                        _ = tick.tick() => limits.evict_idle(),
                        _ = stop.raised() => return,
                    }
                }
            }));
            let stop = shutdown.clone();
            let serving = axum::serve(listener, self.router())
                .with_graceful_shutdown(async move { stop.raised().await });
            // Graceful shutdown waits for every open response, and a Server-Sent Events
            // stream never ends by itself: after the grace, the streams still open are
            // cut (their clients resume from their `Last-Event-ID` elsewhere) rather than
            // holding the process.
            let stop = shutdown.clone();
            tokio::select! {
                served = serving => served?,
                () = async move {
                    stop.raised().await;
                    tokio::time::sleep(grace).await;
                } => tracing::info!(?grace, "long-lived responses still open after the grace; closed"),
            }
        }
        for pool in pools {
            pool.await?;
        }
        // Nothing accepted leaves without its record: publishes answered before their
        // confirmation are followed to their end, and the ledger writes what it holds.
        self.ingress.drain(grace).await;
        self.ledger.flush().await;
        for task in background {
            let _ = task.await;
        }
        self.broker.close().await;
        Ok(())
    }
}
