//! A TCP proxy on loopback that can freeze its connections: bytes stop
//! flowing in both directions but the sockets stay open. This is how a hung
//! camera looks to rtspsrc (no error, no end of stream, just silence), the
//! case camstream's watchdog exists for.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct FreezableProxy {
    addr: SocketAddr,
    /// Connections numbered below this are frozen.
    frozen_below: Arc<watch::Sender<u64>>,
    next_id: Arc<AtomicU64>,
    accept: JoinHandle<()>,
}

impl FreezableProxy {
    /// Listens on 127.0.0.1 (free port) and forwards to `target`.
    pub async fn start(target: SocketAddr) -> FreezableProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let frozen_below = Arc::new(watch::Sender::new(0u64));
        let next_id = Arc::new(AtomicU64::new(0));
        let accept = {
            let frozen_below = Arc::clone(&frozen_below);
            let next_id = Arc::clone(&next_id);
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let id = next_id.fetch_add(1, Ordering::SeqCst);
                    let Ok(upstream) = TcpStream::connect(target).await else {
                        continue;
                    };
                    let (cr, cw) = client.into_split();
                    let (ur, uw) = upstream.into_split();
                    tokio::spawn(pump(cr, uw, id, frozen_below.subscribe()));
                    tokio::spawn(pump(ur, cw, id, frozen_below.subscribe()));
                }
            })
        };
        FreezableProxy {
            addr,
            frozen_below,
            next_id,
            accept,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Freezes every connection open now; later connections flow normally.
    pub fn freeze_current(&self) {
        self.frozen_below
            .send_replace(self.next_id.load(Ordering::SeqCst));
    }
}

impl Drop for FreezableProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Copies one direction until EOF, or until this connection is frozen, after
/// which it holds both halves open and silent until the test ends.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    id: u64,
    mut frozen_below: watch::Receiver<u64>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let frozen = async {
            // The Ref must not live across an await, so map it to a bool.
            let _ = frozen_below.wait_for(|below| id < *below).await.is_ok();
        };
        tokio::select! {
            _ = frozen => {
                // Frozen: keep the sockets, move nothing.
                std::future::pending::<()>().await;
            }
            n = from.read(&mut buf) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if to.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            },
        }
    }
}
