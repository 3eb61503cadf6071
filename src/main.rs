//! The `herald` binary: parses the command line and hands over to the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use herald::app::{Herald, Roles};
use herald::broker::amqp::AmqpBroker;
use herald::config::Settings;
use herald::domain::EventKind;
use herald::domain::TenantId;
use herald::shutdown::Shutdown;
use herald::store;
use herald::tenants::Tenancy;
use secrecy::ExposeSecret;
use std::path::PathBuf;
use std::process::ExitCode;

/// Herald: notification fan-out over RabbitMQ or its embedded durable broker.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Directory holding default.toml and local.toml.
    #[arg(
        long,
        global = true,
        default_value = "config",
        env = "HERALD_CONFIG_DIR"
    )]
    config_dir: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API and every worker pool in one process (the default).
    Serve,
    /// Run only the HTTP API.
    Api,
    /// Run only the worker pools of some queues.
    Worker {
        /// The queues to work, by kind: chat, push, email, audit, update.
        #[arg(long, value_delimiter = ',', required = true, value_parser = parse_kind)]
        queues: Vec<EventKind>,
    },
    /// Apply the database's migrations, prepare the broker (schema or topology), and exit.
    ///
    /// On RabbitMQ, Herald's policies (overflow, dead-letter route, TTL, length, alternate
    /// exchange) are set through the management API; when it cannot be reached, the
    /// equivalent `rabbitmqctl set_policy` lines are printed.
    Migrate {
        /// Also write the policies as a RabbitMQ definitions file (for a broker that loads
        /// one at boot, `load_definitions`).
        #[arg(long, value_name = "FILE")]
        definitions: Option<std::path::PathBuf>,
    },
    /// Manage tenants and their API keys.
    Tenant {
        #[command(subcommand)]
        action: TenantAction,
    },
}

#[derive(Subcommand)]
enum TenantAction {
    /// Create a tenant and print its first API key (shown once).
    Create {
        /// The tenant's id, which its events carry as tenantId (A-Z a-z 0-9 _ - .).
        name: String,
    },
    /// List a tenant's API keys by id.
    Keys {
        /// The tenant's id.
        name: String,
    },
    /// Add an API key to a tenant and print it (shown once).
    AddKey {
        /// The tenant's id.
        name: String,
    },
    /// Revoke one of a tenant's API keys.
    RevokeKey {
        /// The tenant's id.
        name: String,
        /// The key's id (hk_...), as listed by `herald tenant keys`.
        key_id: String,
    },
}

async fn manage_tenants(tenancy: &Tenancy, action: TenantAction) -> anyhow::Result<()> {
    let tenant =
        |name: &str| TenantId::parse(name).map_err(|e| anyhow::anyhow!("tenant id '{name}' {e}"));
    match action {
        TenantAction::Create { name } => {
            herald::domain::check_tenant_name(&name)
                .map_err(|e| anyhow::anyhow!("tenant name {e}"))?;
            let (tenant, key) = tenancy.create_tenant(&tenant(&name)?, &name).await?;
            println!(
                "tenant: {}\napi key (shown once): {}",
                tenant.id,
                key.key.expose_secret()
            );
        }
        TenantAction::Keys { name } => {
            let tenant = tenant(&name)?;
            if tenancy.store().tenant(&tenant).await?.is_none() {
                anyhow::bail!("no tenant '{name}'");
            }
            for key in tenancy.store().api_keys(&tenant).await? {
                let state = key
                    .revoked_at
                    .map_or_else(|| "active".to_owned(), |t| format!("revoked {t}"));
                println!("{}  created {}  {state}", key.id, key.created_at);
            }
        }
        TenantAction::AddKey { name } => {
            let tenant = tenant(&name)?;
            if tenancy.store().tenant(&tenant).await?.is_none() {
                anyhow::bail!("no tenant '{name}'");
            }
            let (_, key) = tenancy.add_key(&tenant).await?;
            println!("api key (shown once): {}", key.key.expose_secret());
        }
        TenantAction::RevokeKey { name, key_id } => {
            if !tenancy
                .store()
                .revoke_api_key(&tenant(&name)?, &key_id)
                .await?
            {
                anyhow::bail!("tenant '{name}' has no key '{key_id}'");
            }
            println!("revoked {key_id}");
        }
    }
    Ok(())
}

fn parse_kind(raw: &str) -> Result<EventKind, String> {
    EventKind::parse(raw)
        .ok_or_else(|| format!("'{raw}' is not a queue; use chat, push, email or audit"))
}

#[tokio::main]
async fn main() -> ExitCode {
    herald::telemetry::init_logging();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        // Once, to stderr, where the logs also go.
        Err(e) => {
            eprintln!("herald: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = Settings::load(&cli.config_dir)?;
    let listen = settings.http.listen;
    let roles = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => Roles::everything(),
        Command::Api => Roles {
            api: true,
            queues: Vec::new(),
        },
        Command::Worker { queues } => Roles { api: false, queues },
        Command::Migrate { definitions } => {
            let gaps = herald::app::migrate(&settings).await?;
            tracing::info!("database migrated, broker prepared");
            if settings.broker.kind == herald::config::BrokerKind::Rabbitmq {
                let (lines, file) =
                    AmqpBroker::policies(&settings.topology, &settings.broker.rabbitmq);
                if !gaps.is_empty() {
                    println!(
                        "# Herald's RabbitMQ policies, to apply where the management API is not reachable:"
                    );
                    for line in lines {
                        println!("{line}");
                    }
                }
                if let Some(path) = definitions {
                    let text = serde_json::to_string_pretty(&file)?;
                    std::fs::write(&path, text + "\n")
                        .with_context(|| format!("writing {}", path.display()))?;
                    tracing::info!(path = %path.display(), "RabbitMQ definitions written");
                }
            }
            return Ok(());
        }
        Command::Tenant { action } => {
            let tenancy = Tenancy::new(store::open(&settings.database.url).await?);
            return manage_tenants(&tenancy, action).await;
        }
    };
    let herald = Herald::start(settings).await?;
    if roles.api
        && herald.settings.admin.token().is_none()
        && let Some((tenant, key)) = herald.tenancy.create_default_tenant_if_none().await?
    {
        println!(
            "\nHerald created the tenant \"{}\". Its API key, shown only this once:\n\n    {}\n\n\
             Send events with the header  Authorization: Bearer <key>\n",
            tenant.id,
            key.key.expose_secret()
        );
    }
    let listener = if roles.api {
        Some(
            tokio::net::TcpListener::bind(listen)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?,
        )
    } else {
        None
    };
    herald.run(roles, listener, Shutdown::on_signals()).await
}
