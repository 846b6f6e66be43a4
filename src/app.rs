//! Wiring and lifecycle: build the proxy from a config, bind the listeners, serve, and
//! drain on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use arc_swap::ArcSwap;

use crate::admin::{self, AdminState, Readiness};
use crate::config::Config;
use crate::proxy::Live;
use crate::proxy::Proxy;
use crate::proxy::head_memory::HeadMemory;
use crate::proxy::listener::{self, Listeners};
use crate::reload::{self, Reloader};
use crate::telemetry::Metrics;

/// A running gateway: listeners bound and serving.
pub struct Gateway {
    listen_addrs: Vec<SocketAddr>,
    admin_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    readiness: Arc<Readiness>,
    connections: Arc<Semaphore>,
    max_connections: usize,
    grace: Duration,
    reloader: Arc<Reloader>,
    live: Live,
    tasks: JoinSet<()>,
}

/// How long a shutdown waits for the decision log's last lines to be written.
const DECISION_LOG_CLOSE: Duration = Duration::from_secs(5);

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every connection finished within the grace period.
    Clean,
    /// The grace period ran out with this many connections still open.
    GraceExpired(usize),
}

impl Gateway {
    /// Binds every listener and starts serving. Fails, with nothing left running, when an
    /// address cannot be bound.
    pub async fn start(config: &Config) -> anyhow::Result<Gateway> {
        let metrics = Arc::new(Metrics::new());
        let proxy = Proxy::new(config, metrics.clone(), None).map_err(anyhow::Error::msg)?;
        proxy.serving();
        let readiness = Arc::new(Readiness::default());
        // Keys first, so that the first requests find them; an issuer whose keys cannot be
        // fetched is logged, keeps being retried, and holds `/readyz` back.
        proxy.identity().load_keys().await;
        let live: Live = Arc::new(ArcSwap::from_pointee(proxy));

        let mut bound = Vec::new();
        for settings in &config.listeners {
            let listener = TcpListener::bind(settings.addr)
                .await
                .with_context(|| format!("binding listener {}", settings.addr))?;
            bound.push(listener);
        }
        let admin_listener = TcpListener::bind(config.admin.addr)
            .await
            .with_context(|| format!("binding admin listener {}", config.admin.addr))?;

        let (shutdown, shutdown_rx) = watch::channel(false);
        let connections = Arc::new(Semaphore::new(config.limits.max_connections));
        let head_memory = Arc::new(HeadMemory::new(
            config.limits.header_memory,
            metrics.header_memory.clone(),
            metrics.header_memory_cuts.clone(),
        ));
        let listeners = Listeners {
            connections: connections.clone(),
            head_memory,
            shutdown: shutdown_rx,
        };
        let mut tasks = JoinSet::new();
        let mut listen_addrs = Vec::new();
        for listener in bound {
            let addr = listener
                .local_addr()
                .context("reading a bound listener's address")?;
            tracing::info!(addr = %addr, "listening");
            listen_addrs.push(addr);
            tasks.spawn(listener::run(listener, live.clone(), listeners.clone()));
        }
        let admin_addr = admin_listener
            .local_addr()
            .context("reading the admin listener's address")?;
        tracing::info!(addr = %admin_addr, "admin listening");
        let reloader = Reloader::new(config, live.clone(), metrics.clone());
        if config.watch {
            match reload::watch(reloader.clone()) {
                Ok(watching) => {
                    tasks.spawn(watching);
                }
                Err(problem) => {
                    tracing::warn!("{problem}; files are reloaded only on SIGHUP and POST /reload")
                }
            }
        }
        let admin_live = live.clone();
        let admin_state = Arc::new(AdminState {
            allowed_hosts: config.admin.allowed_hosts.clone(),
            metrics,
            readiness: readiness.clone(),
            live,
            reloader: reloader.clone(),
        });
        tasks.spawn(admin::run(admin_listener, admin_state));
        readiness.listeners_bound.store(true, Ordering::Relaxed);

        Ok(Gateway {
            listen_addrs,
            admin_addr,
            shutdown,
            readiness,
            connections,
            max_connections: config.limits.max_connections,
            grace: config.shutdown_grace,
            reloader,
            live: admin_live,
            tasks,
        })
    }

    /// The bound addresses of the client listeners, in config order.
    pub fn listen_addrs(&self) -> &[SocketAddr] {
        &self.listen_addrs
    }

    /// The bound address of the admin listener.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Reads the config and policy files again and serves new requests with them, as
    /// SIGHUP does.
    pub fn reloader(&self) -> &Arc<Reloader> {
        &self.reloader
    }

    /// Stops accepting, asks every connection to finish its in-flight requests, and waits
    /// for them up to the grace period.
    pub async fn shutdown(mut self) -> Drained {
        self.readiness.draining.store(true, Ordering::Relaxed);
        // Receivers only go away with the listeners, so a failed send means nothing to stop.
        let _ = self.shutdown.send(true);
        let all = u32::try_from(self.max_connections).unwrap_or(u32::MAX);
        let drained = tokio::time::timeout(self.grace, self.connections.acquire_many(all)).await;
        self.tasks.abort_all();
        self.reloader.stop();
        // The lines of every request answered are written before the process ends.
        self.live
            .load()
            .decision_log()
            .close(DECISION_LOG_CLOSE)
            .await;
        match drained {
            Ok(_) => Drained::Clean,
            Err(_) => {
                Drained::GraceExpired(self.max_connections - self.connections.available_permits())
            }
        }
    }
}

/// Runs the gateway until SIGTERM or SIGINT, then drains it.
pub async fn run(config: Config) -> anyhow::Result<()> {
    // Handlers first: a signal that arrives once the listeners are up must drain, not kill.
    let signal = shutdown_signal()?;
    let mut hangups = hangup_signal()?;
    let gateway = Gateway::start(&config).await?;
    tracing::info!(
        config = %config.file.display(),
        routes = config.routes.len(),
        upstreams = config.upstreams.len(),
        rules = config.policy.rules().len(),
        "portcullis started"
    );
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    // Reloads on SIGHUP in a task of their own, one after another (signals that arrive
    // during one make one more): a SIGTERM during a slow reload still drains at once.
    let reloader = Arc::clone(gateway.reloader());
    let reloads = tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP received: reloading");
            let _ = reloader.reload("SIGHUP").await;
        }
    });
    signal.await;
    reloads.abort();
    tracing::info!(
        grace_period = %crate::config::format_duration(config.shutdown_grace),
        "shutting down: finishing in-flight requests"
    );
    match gateway.shutdown().await {
        Drained::Clean => tracing::info!("all connections finished; exiting"),
        Drained::GraceExpired(open) => {
            tracing::warn!(
                open_connections = open,
                "grace period over; closing the remaining connections"
            );
        }
    }
    Ok(())
}

/// Installs the SIGTERM and SIGINT handlers; the future resolves at the first signal.
#[cfg(unix)]
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
            _ = interrupt.recv() => tracing::info!("SIGINT received"),
        }
    })
}

/// SIGHUP, once per signal.
#[cfg(unix)]
fn hangup_signal() -> anyhow::Result<tokio::sync::mpsc::Receiver<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            // One pending reload is enough: signals while it waits join it.
            let _ = sender.try_send(());
        }
    });
    Ok(receiver)
}

/// No SIGHUP here: reloads come from file changes and `POST /reload`.
#[cfg(not(unix))]
fn hangup_signal() -> anyhow::Result<tokio::sync::mpsc::Receiver<()>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    std::mem::forget(sender);
    Ok(receiver)
}

/// Waits for Ctrl-C.
#[cfg(not(unix))]
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %err, "cannot wait for Ctrl-C");
            std::future::pending::<()>().await;
        }
    })
}
