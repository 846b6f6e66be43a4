//! Live reload of the config and policy files: read again, compiled and checked in full,
//! then swapped in at once for new requests, while in-flight requests finish under the
//! state they started with. A file that does not load keeps the old state serving; the
//! error is logged, counted and shown on `/policy`.
//!
//! Triggers: a change in a watched directory (the config file's and the policy files'; a
//! directory, not a file, so that editors' rename-over and the Kubernetes ConfigMap
//! `..data` symlink swap are seen), SIGHUP, and `POST /reload`. One reload runs at a time.
//!
//! This module knows when and how to replace the serving state; what the state does with
//! a request is `proxy`'s business.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};

use crate::config::{self, Config};
use crate::geoip::{Geo, GeoStatus};
use crate::identity::IssuerKeys;
use crate::proxy::{Load, Serving};
use crate::telemetry::Metrics;

/// How long file events are gathered before one reload: an editor's save or a ConfigMap
/// update is several events.
const DEBOUNCE: Duration = Duration::from_millis(250);

/// What `/policy` reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    /// The hash of the config and policy files serving now.
    pub hash: String,
    /// When they were loaded (RFC 3339, UTC).
    pub loaded_at: String,
    /// The config file.
    pub config: String,
    /// The policy files, in the order they were read.
    pub files: Vec<String>,
    /// Rules in the serving policy.
    pub rules: usize,
    /// Reloads since start, by result.
    pub reloads: Reloads,
    /// The last reload that failed, while no later one succeeded.
    pub last_error: Option<Failure>,
    /// Settings changed in the files that take effect only after a restart.
    pub restart_needed: Vec<String>,
    /// The country database, when one is configured.
    pub geoip: Option<GeoStatus>,
}

/// Reload counts.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Reloads {
    /// Reloads that replaced the serving state.
    pub ok: u64,
    /// Reloads that kept it because a file did not load.
    pub error: u64,
}

/// A failed reload.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Failure {
    /// When (RFC 3339, UTC).
    pub at: String,
    /// Each error, with file, line, column and YAML path.
    pub errors: Vec<String>,
}

/// What cannot change without a restart, as the gateway started.
#[derive(Debug, Clone)]
pub struct Fixed {
    /// The client listeners' addresses, as configured.
    pub listen: Vec<SocketAddr>,
    /// Whether each listener terminates TLS (its certificates reload; this does not).
    pub tls: Vec<bool>,
    /// The admin listener's address, as configured.
    pub admin: SocketAddr,
    /// `admin.allowed_hosts`.
    pub admin_hosts: Vec<config::HostPattern>,
    /// `limits.max_connections`.
    pub max_connections: usize,
    /// `limits.header_memory`.
    pub header_memory: usize,
    /// `shutdown.grace_period`.
    pub grace: Duration,
    /// `policy.watch`.
    pub watch: bool,
    /// `workers`, `None` for `auto`.
    pub workers: Option<usize>,
}

impl Fixed {
    /// What `config` sets of the things that need a restart.
    pub fn of(config: &Config) -> Fixed {
        Fixed {
            listen: config
                .listeners
                .iter()
                .map(|listener| listener.addr)
                .collect(),
            tls: (config.listeners.iter())
                .map(|listener| listener.tls.is_some())
                .collect(),
            admin: config.admin.addr,
            admin_hosts: config.admin.allowed_hosts.clone(),
            max_connections: config.limits.max_connections,
            header_memory: config.limits.header_memory,
            grace: config.shutdown_grace,
            watch: config.watch,
            workers: config.workers,
        }
    }

    /// What `config` changes of it, in words.
    fn changes(&self, config: &Config) -> Vec<String> {
        let now = Fixed::of(config);
        let mut changes = Vec::new();
        if now.listen != self.listen {
            changes.push(format!(
                "listen: {} (serving on {})",
                addresses(&now.listen),
                addresses(&self.listen)
            ));
        }
        if now.listen == self.listen && now.tls != self.tls {
            for (index, (now, then)) in now.tls.iter().zip(&self.tls).enumerate() {
                if now != then {
                    let (turned, serving) = if *now {
                        ("on", "plain HTTP")
                    } else {
                        ("off", "TLS")
                    };
                    changes.push(format!(
                        "listen[{index}].tls: turned {turned} (serving {serving})"
                    ));
                }
            }
        }
        if now.admin != self.admin {
            changes.push(format!(
                "admin.addr: {} (serving on {})",
                now.admin, self.admin
            ));
        }
        if now.admin_hosts != self.admin_hosts {
            changes.push("admin.allowed_hosts: changed".to_owned());
        }
        if now.max_connections != self.max_connections {
            changes.push(format!(
                "limits.max_connections: {} (enforcing {})",
                now.max_connections, self.max_connections
            ));
        }
        if now.header_memory != self.header_memory {
            changes.push(format!(
                "limits.header_memory: {} (enforcing {})",
                config::format_size(now.header_memory as u64),
                config::format_size(self.header_memory as u64)
            ));
        }
        if now.grace != self.grace {
            changes.push(format!(
                "shutdown.grace_period: {} (in force: {})",
                config::format_duration(now.grace),
                config::format_duration(self.grace)
            ));
        }
        if now.workers != self.workers {
            let count =
                |workers: Option<usize>| workers.map_or("auto".to_owned(), |n| n.to_string());
            changes.push(format!(
                "workers: {} (in force: {})",
                count(now.workers),
                count(self.workers)
            ));
        }
        if now.watch != self.watch {
            changes.push(format!(
                "policy.watch: {} (in force: {})",
                now.watch, self.watch
            ));
        }
        changes
    }
}

fn addresses(addrs: &[SocketAddr]) -> String {
    let addrs: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    addrs.join(", ")
}

/// Replaces the serving state when asked to.
pub struct Reloader {
    config_path: PathBuf,
    serving: Arc<Serving>,
    metrics: Arc<Metrics>,
    fixed: Fixed,
    status: Mutex<Status>,
    /// Held for the whole of a reload: one at a time.
    reloading: tokio::sync::Mutex<()>,
    /// The tasks keeping the serving key sets fresh, one per set; a set carried over by a
    /// reload keeps its task (and so its schedule).
    refreshing: Mutex<Vec<(Arc<IssuerKeys>, tokio::task::AbortHandle)>>,
    /// Set by `stop`: a reload that ends later starts no refresh task.
    stopped: AtomicBool,
}

impl Reloader {
    /// A reloader for the state `config` built, serving in `serving`; starts keeping its
    /// token issuers' key sets fresh.
    pub fn new(config: &Config, serving: Arc<Serving>, metrics: Arc<Metrics>) -> Arc<Reloader> {
        metrics
            .policy_info
            .with_label_values(&[&config.hash])
            .set(1);
        let refreshing = keep_keys_fresh(&serving.load(), Vec::new());
        Arc::new(Reloader {
            config_path: config.file.clone(),
            fixed: Fixed::of(config),
            status: Mutex::new(Status {
                hash: config.hash.clone(),
                loaded_at: crate::telemetry::rfc3339(SystemTime::now()),
                config: config.file.display().to_string(),
                files: files(config),
                rules: config.policy.rules().len(),
                reloads: Reloads::default(),
                last_error: None,
                restart_needed: Vec::new(),
                geoip: serving.load().geo().status(),
            }),
            reloading: tokio::sync::Mutex::new(()),
            refreshing: Mutex::new(refreshing),
            stopped: AtomicBool::new(false),
            serving,
            metrics,
        })
    }

    /// What `/policy` shows.
    pub fn status(&self) -> Status {
        self.status
            .lock()
            .map(|status| status.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    /// Reads the config file and everything it names again; when all of it loads, the
    /// new state serves every request from now on. `why` is for the log.
    ///
    /// The reload runs as a task of its own: a caller that goes away (an admin client
    /// hanging up) does not stop it halfway, and a signal handler is not held up by it.
    pub async fn reload(self: &Arc<Self>, why: &'static str) -> Result<Status, Failure> {
        let reloader = Arc::clone(self);
        tokio::spawn(async move { reloader.reload_now(why).await })
            .await
            .unwrap_or_else(|err| {
                Err(Failure {
                    at: crate::telemetry::rfc3339(SystemTime::now()),
                    errors: vec![format!("the reload stopped: {err}")],
                })
            })
    }

    async fn reload_now(&self, why: &str) -> Result<Status, Failure> {
        let _one_at_a_time = self.reloading.lock().await;
        let path = self.config_path.clone();
        let previous = self.serving.load();
        // A new country database is read (and checked) off the runtime, as the files are.
        let previous_geo = Arc::clone(previous.geo());
        let loaded = tokio::task::spawn_blocking(move || {
            config::load(&path).map(|config| {
                let geo = Geo::load(config.geoip.as_ref(), Some(&previous_geo));
                (config, geo)
            })
        })
        .await
        .unwrap_or_else(|err| {
            Err(config::ConfigErrors::from(config::ConfigError::unreadable(
                &self.config_path,
                &std::io::Error::other(err.to_string()),
            )))
        });
        let (config, geo) = match loaded {
            Ok(loaded) => loaded,
            Err(errors) => return Err(self.failed(why, &errors)),
        };
        geo.log();
        let load = match Load::new(&config, geo, &self.metrics, Some(&previous)) {
            Ok(load) => load,
            Err(problem) => {
                let errors = config::ConfigErrors::from(config::ConfigError::at(
                    &config.file,
                    None,
                    "log.decisions",
                    problem,
                ));
                return Err(self.failed(why, &errors));
            }
        };
        // Issuers new to this config (or with a new key source) fetch their keys before
        // they serve; the others keep theirs. A new issuer without keys would refuse
        // every token it signed: the reload fails instead, and the old state serves on.
        load.identity().load_keys().await;
        let unavailable: Vec<String> = load
            .identity()
            .remote_key_sets()
            .filter(|keys| {
                !previous
                    .identity()
                    .remote_key_sets()
                    .any(|old| Arc::ptr_eq(old, keys))
            })
            .filter_map(|keys| keys.unavailable())
            .collect();
        if !unavailable.is_empty() {
            let errors = config::ConfigErrors(
                unavailable
                    .into_iter()
                    .map(|problem| {
                        config::ConfigError::at(&config.file, None, "identity.jwt", problem)
                    })
                    .collect(),
            );
            return Err(self.failed(why, &errors));
        }
        load.serving(&self.metrics);
        let load = Arc::new(load);
        self.serving.replace(Arc::clone(&load));
        {
            let mut refreshing = self
                .refreshing
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            // After `stop` (shutdown), nothing is kept fresh any more.
            if !self.stopped.load(Ordering::Acquire) {
                let before = std::mem::take(&mut *refreshing);
                *refreshing = keep_keys_fresh(&load, before);
            }
        }

        forget_removed(&self.metrics, previous.config(), &config);

        let restart_needed = self.fixed.changes(&config);
        for change in &restart_needed {
            tracing::warn!(
                reload.trigger = why,
                "changed but needs a restart to take effect: {change}"
            );
        }
        for warning in &config.warnings {
            tracing::warn!("{warning}");
        }
        self.metrics.policy_reloads.with_label_values(&["ok"]).inc();
        self.metrics.policy_last_reload_successful.set(1);
        // The new hash first, then the old one removed: a scrape between sees both, never
        // neither.
        let old_hash = self.status().hash;
        self.metrics
            .policy_info
            .with_label_values(&[&config.hash])
            .set(1);
        if old_hash != config.hash {
            let _ = self.metrics.policy_info.remove_label_values(&[&old_hash]);
        }
        let status = self.update(|status| {
            status.hash = config.hash.clone();
            status.loaded_at = crate::telemetry::rfc3339(SystemTime::now());
            status.files = files(&config);
            status.rules = config.policy.rules().len();
            status.reloads.ok += 1;
            status.last_error = None;
            status.restart_needed = restart_needed;
            status.geoip = load.geo().status();
        });
        tracing::info!(
            reload.trigger = why,
            policy.hash = %config.hash,
            policy.rules = status.rules,
            "reloaded; new requests are served with it"
        );
        Ok(status)
    }

    fn failed(&self, why: &str, errors: &config::ConfigErrors) -> Failure {
        let failure = Failure {
            at: crate::telemetry::rfc3339(SystemTime::now()),
            errors: errors.0.iter().map(ToString::to_string).collect(),
        };
        tracing::error!(
            reload.trigger = why,
            "reload failed; still serving the files loaded before:\n{errors}"
        );
        self.metrics
            .policy_reloads
            .with_label_values(&["error"])
            .inc();
        self.metrics.policy_last_reload_successful.set(0);
        self.update(|status| {
            status.reloads.error += 1;
            status.last_error = Some(failure.clone());
        });
        failure
    }

    fn update(&self, change: impl FnOnce(&mut Status)) -> Status {
        let mut status = self
            .status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        change(&mut status);
        status.clone()
    }

    /// Stops the tasks keeping key sets fresh (at shutdown), for good.
    pub fn stop(&self) {
        let mut refreshing = self
            .refreshing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.stopped.store(true, Ordering::Release);
        for (_, task) in refreshing.drain(..) {
            task.abort();
        }
    }
}

/// Drops the metric series of rules, routes, upstreams and issuers that `before` had and
/// `after` has not (a rule whose effect or mode changed keeps its id: its old series goes
/// with the old combination only when the id is gone).
fn forget_removed(metrics: &Metrics, before: &Config, after: &Config) {
    fn gone<'a>(
        before: impl Iterator<Item = &'a str>,
        after: impl Iterator<Item = &'a str>,
    ) -> Vec<&'a str> {
        let after: BTreeSet<&str> = after.collect();
        before.filter(|id| !after.contains(id)).collect()
    }
    let rules = gone(
        before.policy.rules().iter().map(|rule| rule.id.0),
        after.policy.rules().iter().map(|rule| rule.id.0),
    );
    let routes = gone(
        before.routes.iter().map(|route| &*route.id.0),
        after.routes.iter().map(|route| &*route.id.0),
    );
    let upstreams = gone(
        before.upstreams.iter().map(|upstream| &*upstream.name.0),
        after.upstreams.iter().map(|upstream| &*upstream.name.0),
    );
    let issuers = gone(
        before.identity.jwt.iter().map(|issuer| issuer.id.as_str()),
        after.identity.jwt.iter().map(|issuer| issuer.id.as_str()),
    );
    metrics.forget(&rules, &routes, &upstreams, &issuers);
}

fn files(config: &Config) -> Vec<String> {
    config
        .policy_summary
        .files
        .iter()
        .map(|file| file.display().to_string())
        .collect()
}

/// The tasks keeping `load`'s fetched key sets fresh: those of `before` whose set it
/// still uses, and new ones for new sets. The others are stopped.
fn keep_keys_fresh(
    load: &Load,
    mut before: Vec<(Arc<IssuerKeys>, tokio::task::AbortHandle)>,
) -> Vec<(Arc<IssuerKeys>, tokio::task::AbortHandle)> {
    let mut now = Vec::new();
    for keys in load.identity().remote_key_sets() {
        match before.iter().position(|(kept, _)| Arc::ptr_eq(kept, keys)) {
            Some(position) => now.push(before.swap_remove(position)),
            None => now.push((
                Arc::clone(keys),
                tokio::spawn(Arc::clone(keys).keep_fresh()).abort_handle(),
            )),
        }
    }
    for (_, task) in before {
        task.abort();
    }
    now
}

impl Drop for Reloader {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reloads whenever a file the config reads changes, for as long as the returned future
/// runs. After each reload the watched directories follow the new config.
pub fn watch(
    reloader: Arc<Reloader>,
) -> Result<impl std::future::Future<Output = ()> + Send + 'static, String> {
    // One pending trigger is enough: events while one waits or a reload runs join it.
    let (trigger, mut triggered) = tokio::sync::mpsc::channel::<()>(1);
    // Only changes to what the config reads count. The filter runs for every event in a
    // watched directory, including each line a log beside the config gets, so it is a
    // lookup, with no system call.
    let first = Relevant::of(reloader.serving.load().config());
    let mut watching = BTreeSet::new();
    let relevant = Arc::new(std::sync::RwLock::new(first.clone()));
    let wanted = Arc::clone(&relevant);
    let mut watcher = notify::recommended_watcher(move |result: notify::Result<Event>| {
        let changed = match result {
            // Reading files (ours, during a reload) is not a change. An event without a
            // path (`Other`: the kernel's queue overflowed, events were lost) may be one.
            Ok(event) => {
                !matches!(event.kind, EventKind::Access(_))
                    && (event.paths.is_empty()
                        || wanted.read().map_or(true, |wanted| {
                            event.paths.iter().any(|path| wanted.touched_by(path))
                        }))
            }
            // A watch that failed may have missed a change: reload to be sure.
            Err(_) => true,
        };
        if changed {
            let _ = trigger.try_send(());
        }
    })
    .map_err(|err| format!("cannot watch files: {err}"))?;
    follow(&mut watcher, &mut watching, first.dirs());
    tracing::info!(
        dirs = ?watching.iter().map(|dir| dir.display().to_string()).collect::<Vec<_>>(),
        "watching for changes"
    );
    Ok(async move {
        while triggered.recv().await.is_some() {
            // An editor's save or a ConfigMap update is several events: gather them.
            tokio::time::sleep(DEBOUNCE).await;
            while triggered.try_recv().is_ok() {}
            let _ = reloader.reload("file change").await;
            let now = Relevant::of(reloader.serving.load().config());
            follow(&mut watcher, &mut watching, now.dirs());
            match relevant.write() {
                Ok(mut relevant) => *relevant = now,
                Err(poisoned) => *poisoned.into_inner() = now,
            }
        }
    })
}

/// What a change must touch to be worth a reload: a file the config read (the config
/// file, policy and list files, identity's key, secret and CA files), a new file a
/// `policy.files` pattern would take, or an entry of a Kubernetes ConfigMap or Secret
/// volume's own (`..data`, `..2026_11_28_…`).
#[derive(Debug, Clone, Default)]
struct Relevant {
    files: BTreeSet<PathBuf>,
    /// Each pattern's directory (resolved) and file-name wildcard.
    patterns: Vec<(PathBuf, String)>,
}

impl Relevant {
    fn of(config: &Config) -> Relevant {
        let files = std::iter::once(&config.file)
            .chain(&config.policy_summary.files)
            .chain(&config.policy_summary.list_files)
            .chain(&config.identity_files)
            .chain(&config.tls_files)
            .chain(config.geoip.iter().flat_map(|geoip| &geoip.database))
            .map(|file| resolved(file))
            .collect();
        let base = config.file.parent().unwrap_or(Path::new(""));
        let patterns = config
            .policy_patterns
            .iter()
            .filter_map(|pattern| {
                let full = resolved(&base.join(pattern));
                let name = full.file_name()?.to_str()?.to_owned();
                Some((full.parent()?.to_path_buf(), name))
            })
            .collect();
        Relevant { files, patterns }
    }

    /// The directories to watch: those of the files and of the patterns, as resolved
    /// (so that events name files as `files` does).
    fn dirs(&self) -> BTreeSet<PathBuf> {
        self.files
            .iter()
            .filter_map(|file| file.parent())
            .chain(self.patterns.iter().map(|(dir, _)| dir.as_path()))
            .filter(|dir| dir.is_dir())
            .map(Path::to_path_buf)
            .collect()
    }

    /// Whether an event's path (a watched directory, resolved, joined with a name) is one.
    fn touched_by(&self, path: &Path) -> bool {
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or("");
        if name.starts_with("..") || self.files.contains(path) {
            return true;
        }
        // Hidden files (editors' swap files) are never policy files.
        !name.starts_with('.')
            && path.parent().is_some_and(|dir| {
                self.patterns.iter().any(|(pattern_dir, glob)| {
                    pattern_dir == dir && config::wildcard_match(glob, name)
                })
            })
    }
}

/// One name for a file however it was reached: its directory resolved (symlinks,
/// relative parts), then its own name. The file itself may not exist any more.
fn resolved(path: &Path) -> PathBuf {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return path.to_path_buf();
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    std::fs::canonicalize(dir).map_or_else(|_| path.to_path_buf(), |dir| dir.join(name))
}

/// Watches `wanted`, and no longer what `watching` held. Every directory is watched
/// afresh: one that was replaced (deleted and made again, a symlink swapped) under the
/// same name would otherwise keep a watch on the old one.
fn follow(
    watcher: &mut RecommendedWatcher,
    watching: &mut BTreeSet<PathBuf>,
    wanted: BTreeSet<PathBuf>,
) {
    for dir in watching.iter() {
        let _ = watcher.unwatch(dir);
    }
    for dir in &wanted {
        if let Err(err) = watcher.watch(dir, RecursiveMode::NonRecursive) {
            tracing::warn!(error = %err, dir = %dir.display(), "cannot watch for changes; use SIGHUP or POST /reload");
        }
    }
    *watching = wanted;
}
