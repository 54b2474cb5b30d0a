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

use crate::camera::{Camera, Configured};
use crate::config::Config;
use crate::http::server::{ServerOptions, serve};
use crate::http::{AppState, routes};
use crate::registry::Cameras;

/// A running server.
#[derive(Debug)]
pub struct App {
    local_addr: SocketAddr,
    cameras: Arc<Cameras>,
    shutdown: CancellationToken,
    server: JoinHandle<()>,
}

impl App {
    /// Binds `config.server.listen` (port 0 picks a free port), starts every
    /// camera's supervisor and begins serving.
    pub async fn build(config: Config) -> anyhow::Result<App> {
        crate::pipeline::init()?;
        let listen = config.server.listen;
        let listener = TcpListener::bind(listen).await.with_context(|| {
            format!(
                "cannot listen on {listen}: is another server using the port? Set [server] listen"
            )
        })?;
        let local_addr = listener.local_addr()?;

        for problem in &config.problems {
            warn!("{problem}");
        }
        let shutdown = CancellationToken::new();
        let cameras = Arc::new(Cameras::default());
        let server_config = config.server.clone();
        for entry in config.cameras {
            if let Err(reason) = &entry.settings {
                warn!(camera = %entry.id, "{reason}");
            }
            let camera = Camera::spawn(
                entry.id,
                Configured {
                    name: entry.name,
                    settings: entry.settings,
                },
                &shutdown,
            );
            if let Err(duplicate) = cameras.insert(camera) {
                // Config::parse already drops duplicates; stop the extra
                // supervisor all the same.
                duplicate.shutdown().await;
            }
        }

        let state = AppState {
            cameras: Arc::clone(&cameras),
            shutdown: shutdown.clone(),
            max_viewers: server_config.max_viewers,
        };
        let options = ServerOptions {
            write_timeout: server_config.write_timeout(),
        };
        let server = tokio::spawn(serve(listener, routes(state), shutdown.clone(), options));
        info!(
            "camstream {} listening on http://{local_addr}/ with {} camera(s)",
            env!("CARGO_PKG_VERSION"),
            cameras.len()
        );
        Ok(App {
            local_addr,
            cameras,
            shutdown,
            server,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn cameras(&self) -> &Arc<Cameras> {
        &self.cameras
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
        let _ = self.server.await;
        info!("stopped");
    }
}
