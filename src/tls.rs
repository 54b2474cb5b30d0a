//! HTTPS: `[server.tls]`, the certificate camstream serves, the self-signed
//! one it can make for a LAN box, and swapping certificates on reload.
//!
//! The rustls server configuration is built once; its certificate comes
//! from a resolver holding the current [`CertifiedKey`] behind a lock. A
//! reload swaps that key: new handshakes get the new certificate, open
//! connections (and their viewers) keep the session they have. A
//! certificate that cannot be used (missing file, a key that is not its
//! own, expired) is an error at start and leaves the old one in place at
//! reload.

use std::fmt;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};
use warp::http::{HeaderMap, HeaderValue, header};

use crate::config::{CorsOrigin, ServerConfig};

/// Where `self_signed = true` keeps its certificate and key, beside the
/// config file.
pub const SELF_SIGNED_CERT: &str = "camstream-selfsigned.crt";
pub const SELF_SIGNED_KEY: &str = "camstream-selfsigned.key";
/// How long a self-signed certificate is valid: Apple platforms refuse
/// TLS server certificates valid for more than 825 days, even ones the
/// user trusts by hand.
const SELF_SIGNED_DAYS: i64 = 825;
/// A self-signed certificate this close to its end is replaced at start
/// (or reload), so it never expires under a running server unnoticed.
const RENEW_BEFORE_DAYS: i64 = 30;
/// The HSTS max-age when `hsts = true` sets none: one year, what browsers'
/// preload lists ask for.
pub const DEFAULT_HSTS_MAX_AGE_S: u64 = 365 * 24 * 3600;
/// ALPN: HTTP/2 preferred, HTTP/1.1 for clients without it (and for the
/// grid's WebSocket, which browsers open over HTTP/1.1).
pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// `[server.tls]`: serve HTTPS (HTTP/2 and HTTP/1.1) on `[server] listen`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file: the server's certificate, then any intermediates. Relative
    /// to the config file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// PEM file: the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// Make a certificate at first start (and reuse it) instead of `cert`
    /// and `key`.
    #[serde(default)]
    pub self_signed: bool,
    /// Extra host names and addresses for the self-signed certificate,
    /// beside the host's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// Send `Strict-Transport-Security`: browsers then refuse plain HTTP
    /// to this host for `hsts_max_age_s`. Off by default: it is hard to
    /// take back.
    #[serde(default)]
    pub hsts: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hsts_max_age_s: Option<u64>,
    /// Where relative paths and the self-signed files are: the config
    /// file's directory (set by the loader).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

impl TlsConfig {
    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        match (&self.cert, &self.key, self.self_signed) {
            (Some(_), Some(_), false) | (None, None, true) => {}
            (_, _, true) => {
                return Err(
                    "[server.tls] has self_signed = true and cert or key: set either cert and key (your own certificate) or self_signed = true".into(),
                );
            }
            (None, None, false) => {
                return Err(
                    "[server.tls] needs cert and key (PEM files), or self_signed = true for a certificate camstream makes itself".into(),
                );
            }
            (Some(_), None, false) => {
                return Err(
                    "[server.tls] has cert but no key: set key to the certificate's private key (PEM)".into(),
                );
            }
            (None, Some(_), false) => {
                return Err(
                    "[server.tls] has key but no cert: set cert to the certificate (PEM, then any intermediates)".into(),
                );
            }
        }
        if !self.names.is_empty() && !self.self_signed {
            return Err(
                "[server.tls] names only applies with self_signed = true: your own certificate already names its hosts".into(),
            );
        }
        for name in &self.names {
            if name.parse::<IpAddr>().is_err() && !is_dns_name(name) {
                return Err(format!(
                    "[server.tls] names entry {name:?} is neither an IP address nor a host name"
                ));
            }
        }
        if self.hsts_max_age_s.is_some() && !self.hsts {
            return Err(
                "[server.tls] hsts_max_age_s is set but hsts is not: set hsts = true as well"
                    .into(),
            );
        }
        Ok(())
    }

    /// Anchors relative paths at `dir`, the config file's directory.
    pub fn resolve(&mut self, dir: &Path) {
        self.base_dir = dir.to_path_buf();
        for path in [&mut self.cert, &mut self.key].into_iter().flatten() {
            *path = dir.join(&*path);
        }
    }

    /// The certificate and key files: the configured ones, or where the
    /// self-signed ones live.
    pub fn files(&self) -> (PathBuf, PathBuf) {
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => (cert.clone(), key.clone()),
            _ => (
                self.base_dir.join(SELF_SIGNED_CERT),
                self.base_dir.join(SELF_SIGNED_KEY),
            ),
        }
    }
}

fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '*')
        })
}

/// Why a certificate cannot be served. Each says which file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "cannot read the TLS {what} file {path}: {error}: check [server.tls] {what_key} (relative paths are relative to the config file)"
    )]
    Read {
        what: &'static str,
        what_key: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----): [server.tls] cert must be the server's certificate, then any intermediates, in PEM"
    )]
    NoCertificate { path: PathBuf },
    #[error("cannot parse the certificate in {path}: {reason}")]
    BadCertificate { path: PathBuf, reason: String },
    #[error(
        "{path} holds no PEM private key (-----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY): [server.tls] key must be the certificate's private key in PEM"
    )]
    NoKey { path: PathBuf },
    #[error(
        "the key in {path} cannot be used ({reason}): use an ECDSA (P-256, P-384), Ed25519 or RSA key"
    )]
    BadKey { path: PathBuf, reason: String },
    #[error(
        "the key in {key} does not belong to the certificate in {cert}: set [server.tls] key to the private key the certificate was issued for"
    )]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error(
        "the certificate in {path} expired on {not_after}: renew it and reload (SIGHUP), or with self_signed = true delete it and camstream makes a new one"
    )]
    Expired { path: PathBuf, not_after: String },
    #[error(
        "the certificate in {path} is not valid before {not_before}: check the machine's clock, or the certificate's dates"
    )]
    NotYetValid { path: PathBuf, not_before: String },
    #[error(
        "cannot store the self-signed certificate in {dir}: {error}: make that directory writable once (or run `camstream cert --config FILE` where it is), or set [server.tls] cert and key to a certificate you made"
    )]
    Store { dir: PathBuf, error: std::io::Error },
    #[error("cannot make a self-signed certificate: {0}")]
    Generate(String),
}

/// What a certificate is, for the log and `camstream cert`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// SHA-256 of the certificate, `AB:CD:...` (what browsers and
    /// `openssl x509 -fingerprint -sha256` show).
    pub fingerprint: String,
    /// base64 SHA-256 of the public key, for `curl --pinnedpubkey
    /// sha256//...` and Chromium's `--ignore-certificate-errors-spki-list`.
    pub public_key_pin: String,
    pub not_after: String,
    /// DNS names and addresses it is valid for.
    pub names: Vec<String>,
    pub self_signed: bool,
}

impl fmt::Display for CertInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "certificate: {}", self.cert_path.display())?;
        writeln!(f, "key: {}", self.key_path.display())?;
        writeln!(f, "SHA-256 fingerprint: {}", self.fingerprint)?;
        writeln!(f, "public-key pin: sha256//{}", self.public_key_pin)?;
        writeln!(f, "valid until: {}", self.not_after)?;
        write!(f, "names: {}", self.names.join(", "))
    }
}

/// A certificate chain and key, checked and ready to serve.
#[derive(Debug)]
pub struct Loaded {
    pub key: Arc<CertifiedKey>,
    pub info: CertInfo,
    not_after: OffsetDateTime,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The provider camstream serves with: the same suites, in the order this
/// CPU encrypts fastest, and the server's order wins over the client's.
/// Encrypting every viewer's frames is most of what HTTPS costs here, and
/// clients order suites by their own hardware, not the server's: rustls
/// clients put AES-256 first, and a browser on a laptop with AES
/// instructions asks a Raspberry Pi 4 (which has none) for AES too, where
/// ChaCha20-Poly1305 runs several times faster.
fn server_provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    let aes = aes_in_hardware();
    provider
        .cipher_suites
        .sort_by_key(|suite| suite_cost(suite.suite(), aes));
    Arc::new(provider)
}

/// Relative cost of a suite's bulk cipher: lower is served first.
fn suite_cost(suite: rustls::CipherSuite, aes_in_hardware: bool) -> u8 {
    use rustls::CipherSuite as S;
    let chacha = matches!(
        suite,
        S::TLS13_CHACHA20_POLY1305_SHA256
            | S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
            | S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
    );
    let aes_128 = matches!(
        suite,
        S::TLS13_AES_128_GCM_SHA256
            | S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
    );
    match (aes_in_hardware, chacha, aes_128) {
        (true, _, true) => 0,
        (true, false, false) => 1,
        (true, true, _) => 2,
        (false, true, _) => 0,
        (false, false, true) => 1,
        (false, false, false) => 2,
    }
}

/// Whether AES-GCM runs on dedicated instructions (AES and carry-less
/// multiply), as ring uses them.
#[cfg(target_arch = "x86_64")]
fn aes_in_hardware() -> bool {
    std::arch::is_x86_feature_detected!("aes") && std::arch::is_x86_feature_detected!("pclmulqdq")
}
#[cfg(target_arch = "aarch64")]
fn aes_in_hardware() -> bool {
    std::arch::is_aarch64_feature_detected!("aes")
        && std::arch::is_aarch64_feature_detected!("pmull")
}
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn aes_in_hardware() -> bool {
    false
}

/// Reads, parses and checks the certificate `config` names, making the
/// self-signed one first if it needs to be (missing, expiring, or not
/// covering every configured name).
pub fn load(config: &TlsConfig) -> Result<Loaded, TlsError> {
    if config.self_signed {
        ensure_self_signed(config)?;
    }
    let (cert_path, key_path) = config.files();
    load_files(&cert_path, &key_path, config.self_signed)
}

/// What `camstream check` says about `[server.tls]`, without writing
/// anything: the certificate that would be served, None for a self-signed
/// one not made yet (or due to be made again), or why it cannot be served.
pub fn inspect(config: &TlsConfig) -> Result<Option<CertInfo>, TlsError> {
    let (cert_path, key_path) = config.files();
    if config.self_signed && self_signed_problem(&cert_path, &key_path, &config.names).is_some() {
        return Ok(None);
    }
    load_files(&cert_path, &key_path, config.self_signed).map(|loaded| Some(loaded.info))
}

fn read(path: &Path, what: &'static str, what_key: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read {
        what,
        what_key,
        path: path.to_path_buf(),
        error,
    })
}

fn load_files(cert_path: &Path, key_path: &Path, self_signed: bool) -> Result<Loaded, TlsError> {
    let pem = read(cert_path, "certificate", "cert")?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadCertificate {
            path: cert_path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_path_buf(),
        });
    };
    let parsed = Parsed::new(leaf, cert_path)?;
    parsed.check_dates(cert_path)?;

    let pem = read(key_path, "key", "key")?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            path: key_path.to_path_buf(),
        },
        other => TlsError::BadKey {
            path: key_path.to_path_buf(),
            reason: other.to_string(),
        },
    })?;
    let info = CertInfo {
        cert_path: cert_path.to_path_buf(),
        key_path: key_path.to_path_buf(),
        fingerprint: fingerprint(leaf),
        public_key_pin: base64::engine::general_purpose::STANDARD
            .encode(Sha256::digest(&parsed.spki)),
        not_after: utc(parsed.not_after),
        names: parsed.names.clone(),
        self_signed,
    };
    let key = CertifiedKey::from_der(chain, key, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
            cert: cert_path.to_path_buf(),
            key: key_path.to_path_buf(),
        },
        other => TlsError::BadKey {
            path: key_path.to_path_buf(),
            reason: other.to_string(),
        },
    })?;
    Ok(Loaded {
        key: Arc::new(key),
        info,
        not_after: parsed.not_after,
    })
}

/// `2026-01-31 12:00:00 UTC`.
fn utc(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{} {:02}:{:02}:{:02} UTC",
        at.date(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// `AB:CD:...`: SHA-256 of the DER certificate.
pub fn fingerprint(cert: &[u8]) -> String {
    Sha256::digest(cert)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// What camstream reads from a certificate.
struct Parsed {
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    names: Vec<String>,
    spki: Vec<u8>,
}

impl Parsed {
    fn new(der: &[u8], path: &Path) -> Result<Parsed, TlsError> {
        let bad = |reason: String| TlsError::BadCertificate {
            path: path.to_path_buf(),
            reason,
        };
        let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| bad(e.to_string()))?;
        let mut names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    x509_parser::extensions::GeneralName::DNSName(dns) => {
                        names.push(dns.to_string())
                    }
                    x509_parser::extensions::GeneralName::IPAddress(bytes) => {
                        let ip = match bytes.len() {
                            4 => <[u8; 4]>::try_from(*bytes).ok().map(IpAddr::from),
                            16 => <[u8; 16]>::try_from(*bytes).ok().map(IpAddr::from),
                            _ => None,
                        };
                        names.extend(ip.map(|ip| ip.to_string()));
                    }
                    _ => {}
                }
            }
        }
        Ok(Parsed {
            not_before: cert.validity().not_before.to_datetime(),
            not_after: cert.validity().not_after.to_datetime(),
            names,
            spki: cert.public_key().raw.to_vec(),
        })
    }

    fn check_dates(&self, path: &Path) -> Result<(), TlsError> {
        let now = OffsetDateTime::now_utc();
        if now > self.not_after {
            return Err(TlsError::Expired {
                path: path.to_path_buf(),
                not_after: utc(self.not_after),
            });
        }
        if now < self.not_before {
            return Err(TlsError::NotYetValid {
                path: path.to_path_buf(),
                not_before: utc(self.not_before),
            });
        }
        Ok(())
    }
}

/// The names a self-signed certificate is made for: `localhost`, the host
/// name, every address of the host's interfaces except link-local ones
/// (a browser cannot reach those by URL without a zone), and `extra`.
pub fn host_names(extra: &[String]) -> Vec<String> {
    let mut names = vec!["localhost".to_string()];
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    if !host.is_empty() && is_dns_name(&host) {
        names.push(host);
    }
    let mut addresses: Vec<IpAddr> = match if_addrs::get_if_addrs() {
        Ok(interfaces) => interfaces.into_iter().map(|i| i.ip()).collect(),
        Err(e) => {
            warn!("cannot list the host's addresses for the self-signed certificate: {e}");
            vec![
                IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
                IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            ]
        }
    };
    addresses.retain(|ip| match ip {
        IpAddr::V4(v4) => !v4.is_link_local(),
        IpAddr::V6(v6) => !v6.is_unicast_link_local(),
    });
    addresses.sort();
    addresses.dedup();
    names.extend(addresses.iter().map(IpAddr::to_string));
    for name in extra {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
}

/// Makes the self-signed certificate unless a usable one is stored: one
/// that has more than [`RENEW_BEFORE_DAYS`] left and names every entry of
/// `names`. A host address that changed does not replace it (that would
/// break every pinned fingerprint on a DHCP renewal); add such an address
/// to `names` to have it covered.
fn ensure_self_signed(config: &TlsConfig) -> Result<(), TlsError> {
    let (cert_path, key_path) = config.files();
    if let Some(why) = self_signed_problem(&cert_path, &key_path, &config.names) {
        if cert_path.exists() {
            info!(
                "replacing the self-signed certificate {}: {why}",
                cert_path.display()
            );
        }
        let names = host_names(&config.names);
        let (cert_pem, key_pem) = make_self_signed(&names)?;
        let dir = cert_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        // The key first: a certificate beside a stale key would not load.
        store_private(&key_path, key_pem.as_bytes()).map_err(|error| TlsError::Store {
            dir: dir.clone(),
            error,
        })?;
        store_private(&cert_path, cert_pem.as_bytes())
            .map_err(|error| TlsError::Store { dir, error })?;
        info!(
            "made a self-signed certificate for {}: {}",
            names.join(", "),
            cert_path.display()
        );
    }
    Ok(())
}

/// Why the stored self-signed certificate cannot be kept, or None.
fn self_signed_problem(cert_path: &Path, key_path: &Path, names: &[String]) -> Option<String> {
    if !cert_path.exists() || !key_path.exists() {
        return Some("there is none yet".into());
    }
    let loaded = match load_files(cert_path, key_path, true) {
        Ok(loaded) => loaded,
        Err(e) => return Some(e.to_string()),
    };
    if loaded.not_after - OffsetDateTime::now_utc() < time::Duration::days(RENEW_BEFORE_DAYS) {
        return Some(format!("it expires on {}", loaded.info.not_after));
    }
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !loaded.info.names.contains(n))
        .collect();
    if !missing.is_empty() {
        return Some(format!(
            "it does not name {}",
            missing
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    None
}

/// A new ECDSA P-256 key and a certificate for `names`, as PEM.
pub fn make_self_signed(names: &[String]) -> Result<(String, String), TlsError> {
    let generate = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(generate)?;
    let now = OffsetDateTime::now_utc();
    // A day of slack for clients whose clock is behind.
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(SELF_SIGNED_DAYS);
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!(
            "camstream {}",
            names.get(1).map_or("server", String::as_str)
        ),
    );
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = rcgen::KeyPair::generate().map_err(generate)?;
    let cert = params.self_signed(&key).map_err(generate)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Writes `data` to `path` readable by the owner only (mode 0600), through
/// a temporary file and a rename so a crash never leaves half a key.
fn store_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let mut file = tempfile::NamedTempFile::new_in(dir.unwrap_or(Path::new(".")))?;
    // NamedTempFile is created with mode 0600.
    file.write_all(data)?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Serves the current certificate to every new handshake.
#[derive(Debug)]
struct Resolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(|e| e.into_inner()),
        ))
    }
}

/// The running server's TLS: the acceptor, the certificate behind it, and
/// the headers HTTPS responses carry. Reloaded in place.
pub struct Tls {
    acceptor: TlsAcceptor,
    resolver: Arc<Resolver>,
    info: RwLock<CertInfo>,
    headers: RwLock<Arc<HeaderMap>>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls").field("info", &self.info).finish()
    }
}

impl Tls {
    /// Loads the certificate `server.tls` names; None without `[server.tls]`.
    pub fn new(server: &ServerConfig) -> Result<Option<Tls>, TlsError> {
        let Some(config) = &server.tls else {
            return Ok(None);
        };
        let loaded = load(config)?;
        let resolver = Arc::new(Resolver {
            current: RwLock::new(loaded.key),
        });
        let mut tls = rustls::ServerConfig::builder_with_provider(server_provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Generate(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&resolver) as Arc<dyn ResolvesServerCert>);
        tls.ignore_client_order = true;
        tls.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
        Ok(Some(Tls {
            acceptor: TlsAcceptor::from(Arc::new(tls)),
            resolver,
            info: RwLock::new(loaded.info),
            headers: RwLock::new(Arc::new(security_headers(server))),
        }))
    }

    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// The certificate being served.
    pub fn info(&self) -> CertInfo {
        self.info.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Headers every HTTPS response gets (unless it sets them itself).
    pub fn headers(&self) -> Arc<HeaderMap> {
        Arc::clone(&self.headers.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Re-reads the certificate and the header settings from `server`.
    /// On an error the current certificate stays. Returns whether the
    /// certificate changed.
    pub fn reload(&self, server: &ServerConfig) -> Result<bool, TlsError> {
        *self.headers.write().unwrap_or_else(|e| e.into_inner()) =
            Arc::new(security_headers(server));
        let Some(config) = &server.tls else {
            warn!("[server.tls] was removed: camstream keeps serving HTTPS until it is restarted");
            return Ok(false);
        };
        let loaded = load(config)?;
        let mut info = self.info.write().unwrap_or_else(|e| e.into_inner());
        if *info == loaded.info {
            return Ok(false);
        }
        *self
            .resolver
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner()) = loaded.key;
        *info = loaded.info;
        Ok(true)
    }

    /// Logs what is being served, so a user can pin the fingerprint.
    pub fn log(&self, what: &str) {
        let info = self.info();
        info!(
            cert = %info.cert_path.display(),
            valid_until = %info.not_after,
            names = %info.names.join(","),
            "{what}: SHA-256 fingerprint {}, public-key pin sha256//{}",
            info.fingerprint,
            info.public_key_pin
        );
    }
}

/// The headers of HTTPS responses:
/// - `X-Content-Type-Options: nosniff`: a JPEG or JSON is never run as
///   script;
/// - `Referrer-Policy: no-referrer`: page and stream URLs can hold a view
///   token, which must not leak to other sites in `Referer`;
/// - `Content-Security-Policy: frame-ancestors`: only this server and the
///   `cors_origins` front ends may frame its pages. This does not touch
///   `<img>`, which is how front ends embed streams (images are not
///   framed), so X-Frame-Options, which cannot list origins, is not sent;
/// - `Strict-Transport-Security` only with `hsts = true`.
fn security_headers(server: &ServerConfig) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    let ancestors = if server
        .cors_origins
        .iter()
        .any(|o| o.as_str() == CorsOrigin::ANY)
    {
        "*".to_string()
    } else {
        std::iter::once("'self'")
            .chain(server.cors_origins.iter().map(CorsOrigin::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    };
    if let Ok(value) = HeaderValue::from_str(&format!("frame-ancestors {ancestors}")) {
        headers.insert(header::CONTENT_SECURITY_POLICY, value);
    }
    if let Some(tls) = server.tls.as_ref().filter(|t| t.hsts) {
        let max_age = tls.hsts_max_age_s.unwrap_or(DEFAULT_HSTS_MAX_AGE_S);
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_str(&format!("max-age={max_age}"))
                .expect("a number is a header value"),
        );
    }
    headers
}

/// Client settings that accept exactly the certificate in `cert_file` (its
/// first certificate) and nothing else, whatever names it has: for
/// `camstream healthcheck`, which reaches the server on loopback.
pub fn pinned_client_config(cert_file: &Path) -> Result<rustls::ClientConfig, TlsError> {
    let pem = read(cert_file, "certificate", "cert")?;
    let cert = CertificateDer::pem_slice_iter(&pem)
        .next()
        .ok_or_else(|| TlsError::NoCertificate {
            path: cert_file.to_path_buf(),
        })?
        .map_err(|e| TlsError::BadCertificate {
            path: cert_file.to_path_buf(),
            reason: e.to_string(),
        })?;
    Ok(pinned(Pin::Cert(cert)))
}

/// Client settings for an upstream (`[[upstreams]] ca`, or the system's
/// CAs): the usual WebPKI checks, names included, against `roots`.
pub fn ca_client_config(roots: &[CertificateDer<'static>]) -> Result<rustls::ClientConfig, String> {
    let mut store = rustls::RootCertStore::empty();
    let (added, _ignored) = store.add_parsable_certificates(roots.iter().cloned());
    if added == 0 {
        return Err("no usable CA certificate to trust".into());
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(config)
}

/// Client settings that accept exactly the certificate whose SHA-256 is
/// `sha256` (what `camstream cert` prints), whatever names it has:
/// `[[upstreams]] fingerprint`, for an edge with a self-signed certificate.
pub fn fingerprint_client_config(sha256: [u8; 32]) -> rustls::ClientConfig {
    pinned(Pin::Sha256(sha256))
}

/// HTTP/1.1 client settings that accept only the certificate `pin` names.
fn pinned(pin: Pin) -> rustls::ClientConfig {
    let provider = provider();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned { pin, provider }))
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    config
}

/// What a [`Pinned`] verifier accepts.
#[derive(Debug)]
enum Pin {
    /// This certificate, byte for byte.
    Cert(CertificateDer<'static>),
    /// The certificate with this SHA-256.
    Sha256([u8; 32]),
}

/// Trusts one certificate; signatures are still checked.
#[derive(Debug)]
struct Pinned {
    pin: Pin,
    provider: Arc<CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let (matches, what) = match &self.pin {
            Pin::Cert(cert) => (
                end_entity.as_ref() == cert.as_ref(),
                "the one in [server.tls] cert",
            ),
            Pin::Sha256(sha256) => (
                Sha256::digest(end_entity.as_ref()).as_slice() == sha256,
                "the one with the configured fingerprint",
            ),
        };
        if matches {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the server's certificate is not {what} (SHA-256 {})",
                fingerprint(end_entity.as_ref())
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Adds `headers` to a response, keeping any it already has.
pub fn add_headers(response: &mut HeaderMap, headers: &HeaderMap) {
    for (name, value) in headers {
        if !response.contains_key(name) {
            response.insert(name.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_serves_the_cipher_this_cpu_runs_fastest_first() {
        let provider = server_provider();
        let first = provider.cipher_suites[0].suite();
        if aes_in_hardware() {
            assert_eq!(first, rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
        } else {
            assert_eq!(first, rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256);
        }
        // Same suites as the default, only reordered: nothing a client
        // could use before is refused now.
        let mut ours: Vec<_> = provider.cipher_suites.iter().map(|s| s.suite()).collect();
        let mut all: Vec<_> = rustls::crypto::ring::default_provider()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        ours.sort_by_key(|s| u16::from(*s));
        all.sort_by_key(|s| u16::from(*s));
        assert_eq!(ours, all);
        assert_eq!(
            suite_cost(rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256, false),
            0
        );
        assert_eq!(
            suite_cost(rustls::CipherSuite::TLS13_AES_256_GCM_SHA384, true),
            1
        );
    }

    #[test]
    fn self_signed_is_made_once_kept_private_and_remade_for_new_names() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let mut config = TlsConfig {
            self_signed: true,
            names: vec!["cam.example".into()],
            ..TlsConfig::default()
        };
        config.resolve(dir.path());
        let first = load(&config).unwrap().info;
        assert!(
            first.names.contains(&"cam.example".to_string()),
            "{first:?}"
        );
        assert!(first.names.contains(&"127.0.0.1".to_string()), "{first:?}");
        for file in [SELF_SIGNED_CERT, SELF_SIGNED_KEY] {
            let mode = std::fs::metadata(dir.path().join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
        // Reused as long as it fits.
        assert_eq!(load(&config).unwrap().info.fingerprint, first.fingerprint);
        // A name it does not cover makes a new one.
        config.names.push("10.9.8.7".into());
        let second = load(&config).unwrap().info;
        assert_ne!(second.fingerprint, first.fingerprint);
        assert!(second.names.contains(&"10.9.8.7".to_string()));
    }

    #[test]
    fn tls_config_needs_one_kind_of_certificate() {
        let mut c = TlsConfig::default();
        assert!(c.validate().unwrap_err().contains("needs cert and key"));
        c.cert = Some("a.pem".into());
        assert!(c.validate().unwrap_err().contains("no key"));
        c.key = Some("k.pem".into());
        c.validate().unwrap();
        c.self_signed = true;
        assert!(c.validate().unwrap_err().contains("either"));
        let c = TlsConfig {
            self_signed: true,
            names: vec!["bad name".into()],
            ..TlsConfig::default()
        };
        assert!(c.validate().unwrap_err().contains("bad name"));
    }
}
