//! Wiring and lifecycle: build the proxy from a config, bind the listeners, serve, and
//! drain on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::admin::{self, AdminState, Readiness};
use crate::config::Config;
use crate::proxy::head_memory::HeadMemory;
use crate::proxy::listener::{self, Listeners};
use crate::proxy::{Live, Load, Serving};
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
    serving: Arc<Serving>,
    /// Tells the workers to stop once the drain is over; dropping it does too.
    stop: watch::Sender<bool>,
    workers: Vec<std::thread::JoinHandle<()>>,
    tasks: JoinSet<()>,
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every connection finished within the grace period.
    Clean,
    /// The grace period ran out with this many connections still open.
    GraceExpired(usize),
}

/// How long a shutdown waits for the workers to stop and the decision log's last lines to
/// be written, after the drain.
const THREADS_STOP: Duration = Duration::from_secs(5);

/// Backlog of each listening socket: connections the kernel completes before a worker
/// accepts them.
const BACKLOG: u32 = 1024;

/// How many workers serve: the config's count, or one per CPU the process may use (its
/// affinity and cgroup quota count; `TOKIO_WORKER_THREADS` overrides, as it did when
/// tokio's scheduler spread the work).
pub fn worker_count(configured: Option<usize>) -> usize {
    if let Some(count) = configured {
        return count;
    }
    let from_env = std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|value| value.trim().parse::<usize>().ok())
        .filter(|count| *count > 0);
    from_env.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// A listening socket on `addr` that other sockets of this process may share
/// (`SO_REUSEPORT`: the kernel spreads new connections among them). Made while a runtime
/// runs, handed over as a std socket, to be registered with a worker's runtime.
fn shared_socket(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    #[cfg(unix)]
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)?.into_std()
}

impl Gateway {
    /// Binds every listener and starts serving. Fails, with nothing left running, when an
    /// address cannot be bound.
    pub async fn start(config: &Config) -> anyhow::Result<Gateway> {
        // Without SO_REUSEPORT, one socket per address: one worker.
        let workers = if cfg!(unix) {
            worker_count(config.workers)
        } else {
            1
        };
        let metrics = Arc::new(Metrics::new(workers));
        let geo = crate::geoip::Geo::load(config.geoip.as_ref(), None);
        geo.log();
        let load = Load::new(config, geo, &metrics, None).map_err(anyhow::Error::msg)?;
        load.serving(&metrics);
        let readiness = Arc::new(Readiness::default());
        // Keys first, so that the first requests find them; an issuer whose keys cannot be
        // fetched is logged, keeps being retried, and holds `/readyz` back.
        load.identity().load_keys().await;
        let serving = Arc::new(Serving::new(load, &metrics));

        // Each worker gets a socket of its own for every listener, all on one address.
        let mut sockets: Vec<Vec<std::net::TcpListener>> =
            (0..workers).map(|_| Vec::new()).collect();
        let mut listen_addrs = Vec::new();
        for settings in &config.listeners {
            // SO_REUSEPORT would let this process join the sockets of another one on the
            // same port (an old instance still running) and take half its traffic: a
            // plain bind first finds the address taken.
            if settings.addr.port() != 0 {
                drop(
                    std::net::TcpListener::bind(settings.addr)
                        .with_context(|| format!("binding listener {}", settings.addr))?,
                );
            }
            let mut addr = settings.addr;
            for worker in &mut sockets {
                let socket = shared_socket(addr)
                    .with_context(|| format!("binding listener {}", settings.addr))?;
                // Port 0 picks a port once; the other workers' sockets share it.
                addr = socket
                    .local_addr()
                    .context("reading a bound listener's address")?;
                worker.push(socket);
            }
            tracing::info!(addr = %addr, workers, "listening");
            listen_addrs.push(addr);
        }
        let admin_listener = TcpListener::bind(config.admin.addr)
            .await
            .with_context(|| format!("binding admin listener {}", config.admin.addr))?;
        let admin_addr = admin_listener
            .local_addr()
            .context("reading the admin listener's address")?;

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
        let (stop, stopped) = watch::channel(false);
        let mut threads = Vec::new();
        for (index, sockets) in sockets.into_iter().enumerate() {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting a worker's runtime")?;
            let live = serving
                .worker(index)
                .context("a worker without a serving state")?
                .clone();
            let listeners = listeners.clone();
            let stopped = stopped.clone();
            let thread = std::thread::Builder::new()
                .name(format!("worker-{index}"))
                .spawn(move || serve_worker(runtime, sockets, live, listeners, stopped))
                .context("starting a worker thread")?;
            threads.push(thread);
        }

        let mut tasks = JoinSet::new();
        tracing::info!(addr = %admin_addr, "admin listening");
        let reloader = Reloader::new(config, serving.clone(), metrics.clone());
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
        let admin_state = Arc::new(AdminState {
            allowed_hosts: config.admin.allowed_hosts.clone(),
            metrics,
            readiness: readiness.clone(),
            serving: serving.clone(),
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
            serving,
            stop,
            workers: threads,
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

    /// How many workers serve clients.
    pub fn workers(&self) -> usize {
        self.serving.workers()
    }

    /// Reads the config and policy files again and serves new requests with them, as
    /// SIGHUP does.
    pub fn reloader(&self) -> &Arc<Reloader> {
        &self.reloader
    }

    /// Stops accepting, asks every connection to finish its in-flight requests, and waits
    /// for them up to the grace period. Then stops the workers and writes the decision
    /// log's last lines.
    pub async fn shutdown(mut self) -> Drained {
        self.readiness.draining.store(true, Ordering::Relaxed);
        // Receivers only go away with the listeners, so a failed send means nothing to stop.
        let _ = self.shutdown.send(true);
        let all = u32::try_from(self.max_connections).unwrap_or(u32::MAX);
        let drained = tokio::time::timeout(self.grace, self.connections.acquire_many(all)).await;
        self.tasks.abort_all();
        self.reloader.stop();
        let _ = self.stop.send(true);
        let mut threads = std::mem::take(&mut self.workers);
        // The lines of every request answered are written before the process ends.
        threads.extend(self.serving.load().decision_log().close());
        if !joined(threads, THREADS_STOP).await {
            tracing::warn!("a worker or the decision-log writer did not stop in time");
        }
        match drained {
            Ok(_) => Drained::Clean,
            Err(_) => {
                Drained::GraceExpired(self.max_connections - self.connections.available_permits())
            }
        }
    }
}

/// A worker: its own runtime, accepting on its own sockets and serving those connections
/// from start to end, until the gateway stops it (or goes away).
fn serve_worker(
    runtime: tokio::runtime::Runtime,
    sockets: Vec<std::net::TcpListener>,
    live: Live,
    listeners: Listeners,
    mut stopped: watch::Receiver<bool>,
) {
    runtime.block_on(async move {
        let mut accepting = JoinSet::new();
        for (index, socket) in sockets.into_iter().enumerate() {
            match TcpListener::from_std(socket) {
                Ok(listener) => {
                    accepting.spawn(listener::run(
                        listener,
                        index,
                        live.clone(),
                        listeners.clone(),
                    ));
                }
                Err(err) => tracing::error!(error = %err, "a worker cannot accept on its socket"),
            }
        }
        // A closed channel (the gateway dropped) stops the worker too.
        let _ = stopped.wait_for(|stop| *stop).await;
    });
    // Connections still open past the grace period end here.
    runtime.shutdown_timeout(Duration::from_millis(100));
}

/// Waits for `threads` to end, at most `within`; whether they all did.
async fn joined(threads: Vec<std::thread::JoinHandle<()>>, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    for thread in threads {
        while !thread.is_finished() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _ = thread.join();
    }
    true
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
