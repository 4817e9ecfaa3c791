//! Slipway's control plane: the controller that converges running instances and routes
//! toward the desired state in the store, the REST API, and the server that wires the
//! store, the router and the API together.

pub mod access;
pub mod acme;
pub mod api;
pub mod controller;
pub mod dashboard;
pub mod dto;
mod lock;
pub mod metrics;
pub mod platform;
pub mod tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use slipway_router::{Router, RouterConfig};
use slipway_state::Store;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Notify;

pub use controller::{Controller, ControllerConfig};
pub use slipway_core::app_key::{AppKey, DEVELOPMENT};
pub use slipway_core::names;
pub use slipway_runtime::{GUARD_ARG, guard_main};

/// How the daemon is started (`slipway server`).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    /// The router's listener.
    pub listen: SocketAddr,
    /// The admin listener (the API and metrics for tokens of the right role, the dashboard,
    /// `/healthz`).
    pub admin: SocketAddr,
    /// Whether the router records per-revision request figures (on by default; off only
    /// to measure what recording costs). Canary analysis and autoscaling need it.
    pub metrics: bool,
    /// Whether plain HTTP/1.1 requests take the router's fast path (off only to compare it
    /// with hyper's path in benchmarks).
    pub fast_path: bool,
    /// How many stopped instances of each service keep their logs.
    pub keep_logs: usize,
    /// The longest HTTP/1 request head the router takes, in bytes (see [`RouterConfig`]).
    pub max_head_bytes: usize,
    /// The most header fields an HTTP/1 request may have.
    pub max_headers: usize,
    /// How long a client may take to send a request head.
    pub head_timeout: std::time::Duration,
    /// The longest pause allowed while a client sends a request body.
    pub body_timeout: std::time::Duration,
    /// The router's HTTPS listener, if any (see [`tls`]).
    pub tls_listen: Option<SocketAddr>,
    /// Where the HTTPS listener's certificates are (`<host>.crt` + `<host>.key`); default
    /// `<data dir>/tls`.
    pub tls_dir: Option<PathBuf>,
    /// Serve the admin listener over HTTPS with this certificate chain and key (PEM files).
    pub admin_tls: Option<(PathBuf, PathBuf)>,
    /// Obtain certificates over ACME for the hosts the apps serve (needs `tls_listen`).
    pub acme: Option<acme::AcmeSettings>,
}

/// The Unix socket of the API inside a data dir.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("slipway.sock")
}

/// Runs the server until it is asked to stop (API, SIGTERM or SIGINT), then stops every
/// instance cleanly and returns.
///
/// # Errors
/// A data dir that is in use by another server, a foreign state database, or a listener
/// address that is taken: each with a message saying what to do.
pub async fn run_server(mut config: ServerConfig) -> anyhow::Result<()> {
    config.data_dir = std::path::absolute(&config.data_dir).with_context(|| {
        format!(
            "cannot resolve the data directory {}",
            config.data_dir.display()
        )
    })?;
    // The data dir holds the API socket: only its owner may reach it.
    create_private_dir(&config.data_dir)?;
    close_to_others(&config.data_dir)?;
    let _lock = lock::lock_data_dir(&config.data_dir).await?;
    // A server works in its data directory, not in whatever folder it was started from (an
    // app's folder, which may be moved or unmounted): every path it is given is absolute.
    std::env::set_current_dir(&config.data_dir).with_context(|| {
        format!(
            "cannot change to the data directory {}",
            config.data_dir.display()
        )
    })?;
    let store = Arc::new(Store::open(&config.data_dir.join("state.db"))?);

    // The data plane runs on a runtime of its own: its threads serve requests and nothing
    // else, so a store commit, a fork or a log write of the control plane (this runtime)
    // never holds up a request. Debug builds check it (`slipway_core::plane`).
    let data_plane = data_plane_runtime()?;
    // Jobs run behind this executable in guard mode (`slipway_runtime::guard_main`);
    // `/proc/self/exe` still names it after the file is replaced by an upgrade.
    slipway_runtime::set_guard_program(PathBuf::from("/proc/self/exe"));
    let listener = {
        // Registered with the data plane's reactor, so its runtime polls it.
        let _enter = data_plane.enter();
        bind(config.listen, "--listen", "router")?
    };
    if config.acme.is_some() && config.tls_listen.is_none() {
        bail!(
            "--acme-directory needs --tls-listen: certificates obtained over ACME are served on the HTTPS listener\n  hint: add --tls-listen 0.0.0.0:443"
        );
    }
    if let Some(ca) = config.acme.as_ref().and_then(|a| a.ca_file.as_ref()) {
        acme::check_ca_file(ca)?;
    }
    if let Some((cert, key)) = &config.admin_tls {
        tls::check_admin_pair(cert, key)?;
    }
    let tls_listener = match config.tls_listen {
        Some(addr) => {
            let _enter = data_plane.enter();
            Some(bind(addr, "--tls-listen", "HTTPS router")?)
        }
        None => None,
    };
    let admin = bind(config.admin, "--admin", "admin API")?;
    let router_addr = listener.local_addr()?;
    let admin_addr = admin.local_addr()?;
    let sock = socket_path(&config.data_dir);
    // We hold the data dir lock, so a socket file left here belongs to a dead server.
    let _ = std::fs::remove_file(&sock);
    let unix = UnixListener::bind(&sock)
        .with_context(|| format!("cannot create the API socket {}", sock.display()))?;
    // The socket is the local administrator's: no token, so no one else may connect.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot make the API socket {} private", sock.display()))?;
    }

    let router = Router::new(RouterConfig {
        metrics: config.metrics,
        h1_fast_path: config.fast_path,
        max_head_bytes: config.max_head_bytes,
        max_headers: config.max_headers,
        head_timeout: config.head_timeout,
        body_timeout: config.body_timeout,
        https_port: match &tls_listener {
            Some(listener) => Some(listener.local_addr()?.port()),
            None => None,
        },
        ..RouterConfig::default()
    });
    let controller = Controller::new(
        store.clone(),
        router.clone(),
        ControllerConfig {
            data_dir: config.data_dir.clone(),
            router_addr,
            keep_logs: config.keep_logs,
        },
    );
    controller.recover().await?;
    controller.spawn_autoscaler();
    controller.spawn_memory_return();

    let stop = Arc::new(Notify::new());
    let state = api::ApiState {
        controller: controller.clone(),
        info: dto::ServerInfo {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            data_dir: config.data_dir.display().to_string(),
            router: router_addr.to_string(),
            admin: admin_addr.to_string(),
            admin_https: config.admin_tls.is_some(),
        },
        stop: stop.clone(),
    };
    let app = api::router(state.clone()).layer(axum::Extension(access::Caller::Local));
    // The admin listener: the dashboard's page for anyone, the API for tokens.
    let (admin_app, mut dashboard_url) = dashboard::admin_app(state, &config.data_dir, admin_addr)?;
    if config.admin_tls.is_some() {
        dashboard_url = dashboard_url.replacen("http://", "https://", 1);
    }
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let router_task = data_plane.spawn(router.clone().serve(listener, wait(shutdown_rx.clone())));
    let tls_cancel = tokio_util::sync::CancellationToken::new();
    let tls_task = match tls_listener {
        Some(tls_listener) => {
            let certs = slipway_router::tls::TlsCerts::new();
            let dir = config
                .tls_dir
                .clone()
                .unwrap_or_else(|| config.data_dir.join("tls"));
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create the TLS directory {}", dir.display()))?;
            // The first load before the first handshake; then the watcher keeps it current.
            let (loaded, problems) = tls::load_dir(&dir);
            for problem in problems {
                eprintln!("warning: {problem}");
            }
            certs.publish(loaded);
            tokio::spawn(tls::watch(certs.clone(), dir.clone(), tls_cancel.clone()));
            controller.set_tls_certs(certs.clone());
            if let Some(settings) = config.acme.clone() {
                let master_key = controller.master_key(true)?;
                let directory = settings.directory.clone();
                let acme = acme::Acme::new(
                    settings,
                    &config.data_dir,
                    router.clone(),
                    certs.clone(),
                    store.clone(),
                    master_key,
                );
                acme.load_stored();
                controller.set_acme(acme.clone());
                tokio::spawn(acme.run(tls_cancel.clone()));
                println!("slipway ACME: certificates for the apps' hosts from {directory}");
            }
            let addr = tls_listener.local_addr()?;
            println!(
                "slipway HTTPS router: https://{addr} with the certificates in {} ({} host(s))",
                dir.display(),
                certs.hosts().len()
            );
            let config = slipway_router::tls::server_config(certs);
            Some(
                data_plane.spawn(router.clone().serve_tls(
                    tls_listener,
                    config,
                    wait(shutdown_rx.clone()),
                )),
            )
        }
        None => None,
    };
    // The peer's address reaches the handlers (the limiter of refused tokens is per address).
    let admin_task = match config.admin_tls.clone() {
        Some((cert, key)) => tokio::spawn(
            axum::serve(
                tls::AdminTlsListener::new(admin, cert, key, tls_cancel.clone())?,
                admin_app.into_make_service_with_connect_info::<dashboard::Peer>(),
            )
            .with_graceful_shutdown(wait(shutdown_rx.clone()))
            .into_future(),
        ),
        None => tokio::spawn(
            axum::serve(
                admin,
                admin_app.into_make_service_with_connect_info::<dashboard::Peer>(),
            )
            .with_graceful_shutdown(wait(shutdown_rx.clone()))
            .into_future(),
        ),
    };
    let unix_task = tokio::spawn(
        axum::serve(unix, app)
            .with_graceful_shutdown(wait(shutdown_rx.clone()))
            .into_future(),
    );
    tracing::info!(%router_addr, %admin_addr, socket = %sock.display(), "slipway server ready");
    println!(
        "slipway server listening: router http://{router_addr}  admin {}://{admin_addr}  api {}  dashboard {dashboard_url}",
        if config.admin_tls.is_some() {
            "https"
        } else {
            "http"
        },
        sock.display()
    );

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = stop.notified() => {}
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("stopping: the router finishes in-flight requests, then every instance stops");
    // The router stops accepting first and finishes what it has; only then do the
    // instances behind it stop, so no request is cut off or answered 404 on the way out.
    let _ = shutdown_tx.send(true);
    let _ = router_task.await;
    if let Some(tls_task) = tls_task {
        let _ = tls_task.await;
    }
    tls_cancel.cancel();
    controller.shutdown().await;
    let _ = admin_task.await;
    let _ = unix_task.await;
    let _ = std::fs::remove_file(&sock);
    Ok(())
}

/// The router's runtime: one worker per core (as the default runtime has), threads named
/// `slipway-router` and marked as the data plane.
fn data_plane_runtime() -> anyhow::Result<DataPlane> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("slipway-router")
        .on_thread_start(slipway_core::plane::enter_data_plane)
        .enable_all()
        .build()
        .context("cannot start the router's threads")?;
    Ok(DataPlane(Some(runtime)))
}

/// The router's runtime, shut down without waiting when dropped: `run_server` is async, and
/// dropping a runtime there (on any return, early ones included) would block on its threads.
struct DataPlane(Option<tokio::runtime::Runtime>);

impl std::ops::Deref for DataPlane {
    type Target = tokio::runtime::Runtime;

    fn deref(&self) -> &Self::Target {
        self.0.as_ref().expect("the runtime is only taken on drop")
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Takes every permission away from others on an existing data directory. The group's bits
/// stay: on a directory with an ACL they are its mask, which the database user's entry
/// needs (`slipway_databases::OsUser`).
fn close_to_others(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir)
        .with_context(|| format!("cannot read the data directory {}", dir.display()))?
        .permissions()
        .mode();
    if mode & 0o007 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & !0o007))
            .with_context(|| {
                format!(
                    "cannot take others' access away from the data directory {} (mode {:o})\n  hint: run the server as the directory's owner, or `chmod o-rwx` it",
                    dir.display(),
                    mode & 0o7777
                )
            })?;
    }
    Ok(())
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.exists() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| {
            format!(
                "cannot create the data directory {}; choose another with --data-dir or SLIPWAY_HOME",
                dir.display()
            )
        })
}

/// How long a taken address is retried: a child the previous server forked just before it
/// was killed holds copies of its listening sockets until the child dies of its
/// parent-death signal, milliseconds later.
const ADDR_IN_USE_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// Binds a listener on the current runtime's reactor, as `TcpListener::bind` does
/// (`SO_REUSEADDR`, so a restarted server gets its port back at once; backlog 1024).
fn bind(addr: SocketAddr, flag: &str, what: &str) -> anyhow::Result<TcpListener> {
    let started = std::time::Instant::now();
    let bound = loop {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }?;
        socket.set_reuseaddr(true)?;
        match socket.bind(addr).and_then(|()| socket.listen(1024)) {
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && started.elapsed() < ADDR_IN_USE_RETRY =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => break other,
        }
    };
    match bound {
        Ok(l) => Ok(l),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => bail!(
            "cannot listen on {addr} for the {what}: the address is in use (another slipway server or another program)\n  hint: stop that program, or pass {flag} 127.0.0.1:PORT with a free port"
        ),
        Err(e) => bail!(
            "cannot listen on {addr} for the {what}: {e}\n  hint: pass {flag} with another address"
        ),
    }
}
