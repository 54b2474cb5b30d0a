//! Assembling a server: bind, start the cameras, serve the routes, and shut
//! it all down in order.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::control::{Control, ReloadSummary};
use crate::http::access::RouteSpec;
use crate::http::server::{Connections, ServerOptions, serve};
use crate::http::{AppState, redirect_routes, routes};
use crate::redact::KnownSecrets;
use crate::registry::Cameras;
use crate::tls::Tls;

/// A running server.
#[derive(Debug)]
pub struct App {
    local_addr: SocketAddr,
    cameras: Arc<Cameras>,
    control: Arc<Control>,
    /// The plain-HTTP listener that redirects to HTTPS, if any.
    redirect_addr: Option<SocketAddr>,
    routes: Arc<[RouteSpec]>,
    shutdown: CancellationToken,
    servers: Vec<JoinHandle<()>>,
}

impl App {
    /// Binds `config.server.listen` (port 0 picks a free port), starts every
    /// camera's supervisor and begins serving.
    pub async fn build(config: Config) -> anyhow::Result<App> {
        App::build_with(config, KnownSecrets::default()).await
    }

    /// [`App::build`], adding the secrets of every configuration it applies
    /// to `secrets` (the log writer's; see [`crate::logging::init`]).
    pub async fn build_with(config: Config, secrets: KnownSecrets) -> anyhow::Result<App> {
        crate::pipeline::init()?;
        let listen = config.server.listen;
        let listener = TcpListener::bind(listen).await.with_context(|| {
            format!(
                "cannot listen on {listen}: is another server using the port? Set [server] listen"
            )
        })?;
        let local_addr = listener.local_addr()?;
        // A certificate that cannot be served stops camstream here, with
        // the file and the fix.
        let tls = Tls::new(&config.server)?.map(Arc::new);
        let redirect_listener = match config.server.http_listen {
            Some(addr) => Some(TcpListener::bind(addr).await.with_context(|| {
                format!(
                    "cannot listen on {addr}: is another server using the port? Set [server] http_listen"
                )
            })?),
            None => None,
        };
        let redirect_addr = redirect_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?;

        let shutdown = CancellationToken::new();
        let cameras = Arc::new(Cameras::default());
        // Read before `config` moves into the control; like `listen`, these
        // take effect at start only.
        let max_viewers = config.server.max_viewers;
        let options = ServerOptions::from(&config.server);
        let control = Arc::new(Control::new(
            &config,
            Arc::clone(&cameras),
            shutdown.clone(),
            secrets,
        ));
        if let Some(tls) = &tls {
            control.set_tls(Arc::clone(tls));
        }
        // Starting is a reload from nothing: every camera is "added", and
        // config problems and auth warnings are logged on the way.
        control.apply(config).await;
        tokio::spawn(Arc::clone(&control).follow_upstreams());

        let connections = Arc::new(Connections::default());
        let state = AppState {
            cameras: Arc::clone(&cameras),
            shutdown: shutdown.clone(),
            max_viewers,
            control: Arc::clone(&control),
            gate: Arc::default(),
            connections: Arc::clone(&connections),
        };
        let (routes, filter) = routes(state.clone());
        let mut servers = Vec::new();
        if let Some(listener) = redirect_listener {
            // The same front door (caps, timeouts) as the HTTPS listener.
            servers.push(tokio::spawn(serve(
                listener,
                redirect_routes(state, local_addr.port()),
                shutdown.clone(),
                options.clone(),
                Arc::clone(&connections),
                None,
            )));
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        if let Some(tls) = &tls {
            tls.log("serving HTTPS (HTTP/2 and HTTP/1.1)");
        }
        servers.push(tokio::spawn(serve(
            listener,
            filter,
            shutdown.clone(),
            options,
            connections,
            tls,
        )));
        info!(
            "camstream {} listening on {scheme}://{local_addr}/ with {} camera(s)",
            env!("CARGO_PKG_VERSION"),
            cameras.len()
        );
        if let Some(addr) = redirect_addr {
            info!("redirecting http://{addr}/ to HTTPS");
        }
        Ok(App {
            local_addr,
            cameras,
            control,
            redirect_addr,
            routes,
            shutdown,
            servers,
        })
    }

    /// Every route served, with what it needs: the table the router was
    /// built from.
    pub fn routes(&self) -> &[RouteSpec] {
        &self.routes
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where `[server] http_listen` is bound (port 0 picks a free port).
    pub fn redirect_addr(&self) -> Option<SocketAddr> {
        self.redirect_addr
    }

    pub fn cameras(&self) -> &Arc<Cameras> {
        &self.cameras
    }

    /// Changes, adds and removes cameras to match `config`: unchanged
    /// cameras keep streaming with their viewers attached, changed ones
    /// restart with their viewers kept; auth and CORS changes apply to the
    /// next request; the TLS certificate to the next handshake. `listen`,
    /// `http_listen`, `pipelines_dir` and the connection limits and
    /// timeouts (`write_timeout_s`, `max_viewers`, ...) need a restart.
    pub async fn reload(&self, config: Config) -> ReloadSummary {
        self.control.apply(config).await
    }

    /// What changes the running server; lives as long as any clone.
    pub fn control(&self) -> Arc<Control> {
        Arc::clone(&self.control)
    }

    /// Serves until `signal` resolves, then shuts down.
    pub async fn run_until(self, signal: impl Future<Output = ()>) {
        signal.await;
        self.shutdown().await;
    }

    /// Ends every stream, sets every pipeline to NULL and closes the
    /// listener.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.cameras.shutdown().await;
        for server in self.servers {
            let _ = server.await;
        }
        info!("stopped");
    }
}

/// Reloads on every SIGHUP: `load` reads the configuration again, as at
/// start, and [`App::reload`] applies it. A file that no longer loads is
/// reported and the running configuration kept. The handler is installed
/// before this returns, so a SIGHUP never kills the process (the default
/// action) once the server is up.
pub fn spawn_reload_on_sighup<F>(control: Arc<Control>, load: F) -> anyhow::Result<JoinHandle<()>>
where
    F: Fn() -> anyhow::Result<Config> + Send + 'static,
{
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
    Ok(tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            info!("SIGHUP: reloading the configuration");
            match load() {
                Ok(config) => {
                    let summary = control.apply(config).await;
                    info!(
                        added = summary.added.len(),
                        changed = summary.changed.len(),
                        removed = summary.removed.len(),
                        unchanged = summary.unchanged,
                        "configuration reloaded"
                    );
                }
                Err(e) => warn!("reload failed, keeping the running configuration: {e:#}"),
            }
        }
    }))
}
