//! Debian's nginx, started on loopback with the shipped configuration
//! (deploy/nginx/camstream.conf) in front of a camstream. The file is used
//! as it is, with only its addresses and certificate paths replaced: a
//! replacement that no longer matches fails, so the test follows the file.
//! Used by tests/nginx.rs and the load benchmark (benches/load).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// nginx answers within a second; allow for a loaded machine.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// A running nginx; stopped on drop.
pub struct Nginx {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
}

impl Nginx {
    /// Starts nginx in `dir` (a fresh directory) listening with TLS on a
    /// free loopback port, proxying to camstream at `upstream`, with the
    /// certificate and key files given.
    pub fn start(
        dir: &Path,
        upstream: SocketAddr,
        cert: &Path,
        key: &Path,
    ) -> anyhow::Result<Nginx> {
        // A free port: bind, read it, let go.
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let conf = shipped(
            "camstream.conf",
            [
                (
                    "listen 443 ssl http2;",
                    format!("listen 127.0.0.1:{port} ssl http2;"),
                ),
                ("listen [::]:443 ssl http2;", String::new()),
                ("server 127.0.0.1:8000;", format!("server {upstream};")),
                (
                    "/etc/ssl/certs/cameras.example.com.pem",
                    cert.display().to_string(),
                ),
                (
                    "/etc/ssl/private/cameras.example.com.key",
                    key.display().to_string(),
                ),
            ],
        )?;
        Nginx::run(dir, &conf, addr)
    }

    /// Starts nginx in `dir` with the shipped relay-tier configuration
    /// (deploy/nginx/camstream-relays.conf), listening on plain HTTP on a
    /// free loopback port in front of `relays`.
    pub fn start_relays(dir: &Path, relays: &[SocketAddr]) -> anyhow::Result<Nginx> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let servers: Vec<String> = relays
            .iter()
            .map(|r| format!("server {r} max_fails=1 fail_timeout=10s;"))
            .collect();
        let conf = shipped(
            "camstream-relays.conf",
            [
                ("    listen 80;", format!("    listen 127.0.0.1:{port};")),
                ("listen [::]:80;", String::new()),
                (
                    "server 10.0.0.11:8000 max_fails=1 fail_timeout=10s;",
                    servers.join("\n    "),
                ),
                (
                    "server 10.0.0.12:8000 max_fails=1 fail_timeout=10s;",
                    String::new(),
                ),
            ],
        )?;
        Nginx::run(dir, &conf, addr)
    }

    /// Runs nginx in `dir` with `conf` as its one server's configuration.
    fn run(dir: &Path, conf: &str, addr: SocketAddr) -> anyhow::Result<Nginx> {
        std::fs::write(dir.join("camstream.conf"), conf)?;
        let d = dir.display();
        // One process in the foreground, everything it writes inside `dir`.
        let main = format!(
            "daemon off;\nmaster_process off;\nerror_log {d}/error.log info;\npid {d}/nginx.pid;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             include {d}/camstream.conf;\n}}\n"
        );
        std::fs::write(dir.join("nginx.conf"), main)?;
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot start nginx ({e}): install it with scripts/install-deps.sh --test (Debian package nginx)"
                )
            })?;
        let mut nginx = Nginx {
            child,
            dir: dir.to_path_buf(),
            addr,
        };
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while std::net::TcpStream::connect(addr).is_err() {
            if let Some(status) = nginx.child.try_wait()? {
                anyhow::bail!("nginx exited ({status}):\n{}", nginx.log());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "nginx did not listen within {STARTUP_TIMEOUT:?}:\n{}",
                nginx.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(nginx)
    }

    /// Where nginx listens (TLS, HTTP/2 and HTTP/1.1).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The nginx process (one: `master_process off`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// nginx's error log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shipped deploy/nginx/`file` with each `(from, to)` replaced; a
/// `from` the file no longer holds exactly once is an error naming it, so
/// the tests follow the file.
fn shipped<const N: usize>(
    file: &str,
    replacements: [(&str, String); N],
) -> anyhow::Result<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/nginx")
        .join(file);
    let mut conf = std::fs::read_to_string(&path)?;
    for (from, to) in replacements {
        anyhow::ensure!(
            conf.matches(from).count() == 1,
            "{} no longer has `{from}` exactly once: update tests/common/nginx.rs with it",
            path.display()
        );
        conf = conf.replace(from, &to);
    }
    Ok(conf)
}
