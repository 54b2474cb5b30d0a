//! Optional authentication: bearer tokens and HTTP basic users, from
//! `[server.auth]`.
//!
//! Tokens are long random strings (API keys), kept as SHA-256 digests. A
//! user's password is stored as an argon2 PHC string (`password_hash`,
//! made by `camstream hash-password`): salted and deliberately slow, so a
//! copied config file does not hand over passwords people reuse elsewhere.
//! The older unsalted `password_sha256` and plain `password` are still
//! accepted, with a warning that says how to upgrade.
//!
//! argon2 costs tens of milliseconds and ~19 MiB per check, and browsers
//! resend basic credentials on every request (each MJPEG `<img>`, each API
//! poll), so a successful check is remembered for [`VERIFIED_TTL`], keyed
//! by a salted digest of what was presented: a page of streams pays for one
//! argon2 run, not one per request. The cache belongs to one
//! [`Authenticator`], so a reload that changes a password forgets it.
//!
//! Every comparison is constant-time over fixed-size digests, so neither the
//! content nor the length of a secret can be timed. Secrets never appear in
//! `Debug` output, errors or logs.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use crate::redact::MASK;

/// Tokens shorter than this are refused: a token is the whole secret, and
/// 16 random characters is ~80 bits or more.
pub const MIN_TOKEN_LEN: usize = 16;
/// What 401 responses name as the protection space.
pub const REALM: &str = "camstream";
/// How long a verified basic credential is trusted without running argon2
/// again: long enough that a page polling the API and showing streams pays
/// for one check, short enough that a credential seen once is not good for
/// the life of the process.
pub const VERIFIED_TTL: Duration = Duration::from_secs(5 * 60);
/// Verified credentials remembered at once: a few per user and browser; a
/// bound on what a flood of distinct valid credentials can make us hold.
pub const VERIFIED_CAPACITY: usize = 256;

/// What a credential may do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Watch streams and snapshots, read the JSON API and metrics.
    Viewer,
    /// Also create, change and delete cameras.
    #[default]
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Admin => "admin",
        }
    }
}

/// A secret from the config file. Shown as `***` by `Debug` and when
/// serialized, so printing a config never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn new(token: impl Into<String>) -> Result<Token, String> {
        let token = token.into();
        if token.chars().count() < MIN_TOKEN_LEN {
            return Err(format!(
                "a token must be at least {MIN_TOKEN_LEN} characters: generate one with `openssl rand -hex 32`"
            ));
        }
        if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("a token cannot contain spaces or control characters".into());
        }
        Ok(Token(token))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl Serialize for Token {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(MASK)
    }
}

impl<'de> Deserialize<'de> for Token {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Token::new(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A plain-text password from the config file; masked like [`Token`].
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl Serialize for Password {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(MASK)
    }
}

impl<'de> Deserialize<'de> for Password {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Password(String::deserialize(d)?))
    }
}

/// A SHA-256 digest written as 64 hex digits.
#[derive(Clone, PartialEq, Eq)]
pub struct Sha256Hex([u8; 32]);

impl Sha256Hex {
    pub fn parse(hex: &str) -> Result<Sha256Hex, String> {
        let hex = hex.trim();
        let bad = || {
            "password_sha256 must be 64 hex digits; better, store password_hash from `camstream hash-password`"
                .to_string()
        };
        // ASCII first: the slicing below must not split a character.
        if hex.len() != 64 || !hex.is_ascii() {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Sha256Hex(out))
    }
}

impl fmt::Debug for Sha256Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl Serialize for Sha256Hex {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(MASK)
    }
}

impl<'de> Deserialize<'de> for Sha256Hex {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Sha256Hex::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// An argon2 password hash in PHC form (`$argon2id$v=19$m=...$salt$hash`),
/// checked when the config is read; masked like [`Token`].
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordPhc(String);

impl PasswordPhc {
    pub fn parse(phc: &str) -> Result<PasswordPhc, String> {
        let phc = phc.trim();
        let bad = |why: &str| {
            format!(
                "password_hash {why}: paste the whole line `camstream hash-password` prints, starting with $argon2id$"
            )
        };
        let hash = PasswordHash::new(phc).map_err(|_| bad("is not a PHC string"))?;
        if ![
            argon2::ARGON2ID_IDENT,
            argon2::ARGON2I_IDENT,
            argon2::ARGON2D_IDENT,
        ]
        .contains(&hash.algorithm)
        {
            return Err(bad("is not an argon2 hash"));
        }
        argon2::Params::try_from(&hash).map_err(|_| bad("has argon2 parameters out of range"))?;
        if hash.salt.is_none() || hash.hash.is_none() {
            return Err(bad("has no salt or no hash"));
        }
        Ok(PasswordPhc(phc.to_string()))
    }
}

impl fmt::Debug for PasswordPhc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl Serialize for PasswordPhc {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(MASK)
    }
}

impl<'de> Deserialize<'de> for PasswordPhc {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        PasswordPhc::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// Hashes `password` for `password_hash`: argon2id with the crate's
/// recommended parameters (19 MiB, 2 passes) and a random salt.
pub fn hash_password(password: &str) -> Result<String, String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

/// `[server.auth]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Bearer tokens with full access, in `Authorization: Bearer TOKEN`
    /// only.
    #[serde(default)]
    pub tokens: Vec<Token>,
    /// Bearer tokens that can only watch: safe to put in an `<img src>` of a
    /// page other people load (`?token=`).
    #[serde(default)]
    pub view_tokens: Vec<Token>,
    /// HTTP basic users.
    #[serde(default)]
    pub users: Vec<UserConfig>,
}

/// One `[[server.auth.users]]` entry.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// argon2 PHC string from `camstream hash-password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<PasswordPhc>,
    /// Unsalted SHA-256 of the password, hex; accepted with a warning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_sha256: Option<Sha256Hex>,
    /// The password in plain text; accepted with a warning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Password>,
    #[serde(default)]
    pub role: Role,
}

impl AuthConfig {
    /// Every secret here, for the redactor: tokens, and each plain-text
    /// password with the Basic credentials it makes.
    pub fn secrets(&self) -> Vec<String> {
        let mut out: Vec<String> = (self.tokens.iter())
            .chain(&self.view_tokens)
            .map(|t| t.expose().to_string())
            .collect();
        for user in &self.users {
            if let Some(password) = &user.password {
                out.push(password.expose().to_string());
                out.push(crate::redact::basic_credentials(
                    &user.name,
                    password.expose(),
                ));
            }
        }
        out
    }
}

/// Why a request was not let in. Messages never contain the secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "authentication required: send Authorization: Bearer TOKEN or HTTP basic credentials{query}"
    )]
    Missing { query: &'static str },
    #[error("the credentials are not valid")]
    Invalid,
    #[error("malformed Authorization header: {0}")]
    Malformed(&'static str),
    #[error(
        "an admin token is accepted only in the Authorization header, never in ?token= (URLs end up in logs, history and Referer headers): use a view token in URLs"
    )]
    AdminTokenInQuery,
}

impl AuthError {
    /// Whether this was a wrong credential (a failed login), as opposed to
    /// none, or one sent in the wrong place.
    pub fn is_failed_login(&self) -> bool {
        matches!(self, AuthError::Invalid)
    }
}

/// A credential as presented by a request.
#[derive(Clone)]
pub enum Credential {
    /// `Authorization: Bearer TOKEN`.
    Bearer(String),
    /// `?token=TOKEN`, where the route accepts it.
    QueryToken(String),
    /// `Authorization: Basic ...`.
    Basic { user: String, password: String },
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Credential::Bearer(_) => "Bearer(***)",
            Credential::QueryToken(_) => "QueryToken(***)",
            Credential::Basic { .. } => "Basic(***)",
        })
    }
}

impl Credential {
    /// The `Authorization` header, else `query_token` (pass it only where
    /// the route accepts it). `Ok(None)`: nothing was presented.
    pub fn from_request(
        authorization: Option<&[u8]>,
        query_token: Option<&str>,
    ) -> Result<Option<Credential>, AuthError> {
        let Some(header) = authorization else {
            return Ok(query_token.map(|t| Credential::QueryToken(t.to_string())));
        };
        let header = std::str::from_utf8(header)
            .map_err(|_| AuthError::Malformed("it is not valid UTF-8"))?;
        let (scheme, rest) = header.trim().split_once(' ').unwrap_or((header, ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            return Ok(Some(Credential::Bearer(rest.to_string())));
        }
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .map_err(|_| AuthError::Malformed("Basic credentials are not base64"))?;
            let decoded = String::from_utf8(decoded)
                .map_err(|_| AuthError::Malformed("Basic credentials are not UTF-8"))?;
            let (user, password) = decoded
                .split_once(':')
                .ok_or(AuthError::Malformed("Basic credentials need user:password"))?;
            return Ok(Some(Credential::Basic {
                user: user.to_string(),
                password: password.to_string(),
            }));
        }
        Err(AuthError::Malformed("use the Bearer or Basic scheme"))
    }
}

/// How a user's password is checked.
enum Secret {
    /// argon2: slow, salted; successful checks are cached.
    Phc(String),
    /// SHA-256 of the password (from `password_sha256` or `password`).
    Sha256([u8; 32]),
}

struct User {
    name: [u8; 32],
    secret: Secret,
    role: Role,
}

/// A basic credential that passed argon2, remembered for [`VERIFIED_TTL`].
struct Verified {
    /// Salted digest of `user:password`; never the password.
    key: [u8; 32],
    role: Role,
    until: Instant,
}

/// Checks credentials against `[server.auth]`. Holds digests only.
pub struct Authenticator {
    tokens: Vec<([u8; 32], Role)>,
    users: Vec<User>,
    basic: bool,
    bearer: bool,
    /// Random per authenticator, so cache keys are useless outside it.
    cache_salt: [u8; 32],
    verified: Mutex<Vec<Verified>>,
    /// argon2 runs so far (the cost the cache saves; tests read it).
    slow_checks: AtomicU64,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("tokens", &self.tokens.len())
            .field("users", &self.users.len())
            .finish()
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl Authenticator {
    /// Builds the checker, or None when no credential is configured (auth
    /// off). Also returns warnings to log (weakly stored passwords).
    pub fn new(config: &AuthConfig) -> Result<(Option<Authenticator>, Vec<String>), String> {
        let mut warnings = Vec::new();
        let mut tokens = Vec::new();
        for token in &config.tokens {
            tokens.push((sha256(token.expose().as_bytes()), Role::Admin));
        }
        for token in &config.view_tokens {
            tokens.push((sha256(token.expose().as_bytes()), Role::Viewer));
        }
        let mut users = Vec::new();
        for user in &config.users {
            if user.name.is_empty() || user.name.contains(':') {
                return Err(format!(
                    "[server.auth] user name {:?} is not valid: it must be non-empty and contain no ':'",
                    user.name
                ));
            }
            let upgrade =
                "run `camstream hash-password` and store its output as password_hash instead";
            let secret = match (&user.password_hash, &user.password_sha256, &user.password) {
                (Some(phc), None, None) => Secret::Phc(phc.0.clone()),
                (None, Some(hash), None) => {
                    warnings.push(format!(
                        "[server.auth] user \"{}\" has an unsalted password_sha256, which is quick to brute-force from a copy of the file: {upgrade}",
                        user.name
                    ));
                    Secret::Sha256(hash.0)
                }
                (None, None, Some(plain)) => {
                    warnings.push(format!(
                        "[server.auth] user \"{}\" has a plain-text password: {upgrade}",
                        user.name
                    ));
                    Secret::Sha256(sha256(plain.0.as_bytes()))
                }
                _ => {
                    return Err(format!(
                        "[server.auth] user \"{}\": set exactly one of password_hash (from `camstream hash-password`), password_sha256 or password",
                        user.name
                    ));
                }
            };
            users.push(User {
                name: sha256(user.name.as_bytes()),
                secret,
                role: user.role,
            });
        }
        if tokens.is_empty() && users.is_empty() {
            return Ok((None, warnings));
        }
        Ok((
            Some(Authenticator {
                basic: !users.is_empty(),
                bearer: !tokens.is_empty(),
                tokens,
                users,
                cache_salt: random_salt(),
                verified: Mutex::new(Vec::new()),
                slow_checks: AtomicU64::new(0),
            }),
            warnings,
        ))
    }

    /// Refuses every credential: what a broken `[server.auth]` falls back
    /// to, so a mistake never leaves the server open.
    pub fn deny_all() -> Authenticator {
        Authenticator {
            tokens: Vec::new(),
            users: Vec::new(),
            basic: true,
            bearer: true,
            cache_salt: random_salt(),
            verified: Mutex::new(Vec::new()),
            slow_checks: AtomicU64::new(0),
        }
    }

    /// Whether `?token=` could ever succeed (tokens are configured).
    pub fn accepts_tokens(&self) -> bool {
        self.bearer
    }

    /// The `WWW-Authenticate` challenges of a 401: Basic makes a browser ask
    /// for a user name and password, Bearer tells API clients what to send.
    pub fn challenges(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.basic {
            out.push(format!("Basic realm=\"{REALM}\", charset=\"UTF-8\""));
        }
        if self.bearer {
            out.push(format!("Bearer realm=\"{REALM}\""));
        }
        out
    }

    /// What to say when no credential was presented.
    pub fn missing(&self, query_allowed: bool) -> AuthError {
        AuthError::Missing {
            query: if query_allowed && self.bearer {
                " (or ?token=VIEW_TOKEN)"
            } else {
                ""
            },
        }
    }

    /// Checks the `Authorization` header, else `query_token` (only passed
    /// where the query is accepted). May run argon2: call it off the async
    /// threads, or use [`Authenticator::verify_quick`] first.
    pub fn check(
        &self,
        authorization: Option<&[u8]>,
        query_token: Option<&str>,
        query_allowed: bool,
    ) -> Result<Role, AuthError> {
        let query_token = query_token.filter(|_| query_allowed);
        match Credential::from_request(authorization, query_token)? {
            None => Err(self.missing(query_allowed)),
            Some(credential) => self.verify(&credential),
        }
    }

    /// The verdict on `credential` when it needs no argon2 run (tokens,
    /// SHA-256 users, credentials verified recently); None when it does.
    pub fn verify_quick(&self, credential: &Credential) -> Option<Result<Role, AuthError>> {
        match credential {
            Credential::Bearer(token) => Some(self.check_token(token, false)),
            Credential::QueryToken(token) => Some(self.check_token(token, true)),
            Credential::Basic { user, password } => {
                match self.find_user(user).map(|u| &u.secret) {
                    Some(Secret::Sha256(_)) => Some(self.check_sha256_user(user, password)),
                    Some(Secret::Phc(_)) => self.cached(user, password).map(Ok),
                    // An unknown name still costs an argon2 run when
                    // argon2 users exist, so the time taken does not
                    // tell which names exist.
                    None if self.has_phc_users() => None,
                    None => Some(Err(AuthError::Invalid)),
                }
            }
        }
    }

    /// The verdict on `credential`; may run argon2 (tens of milliseconds).
    pub fn verify(&self, credential: &Credential) -> Result<Role, AuthError> {
        if let Some(verdict) = self.verify_quick(credential) {
            return verdict;
        }
        let Credential::Basic { user, password } = credential else {
            return Err(AuthError::Invalid);
        };
        let found = self.find_user(user);
        // For an unknown name, check against some argon2 user's hash and
        // discard the result: the same work either way.
        let (phc, role) = match found {
            Some(User {
                secret: Secret::Phc(phc),
                role,
                ..
            }) => (phc, Some(*role)),
            _ => match self.users.iter().find_map(|u| match &u.secret {
                Secret::Phc(phc) => Some(phc),
                Secret::Sha256(_) => None,
            }) {
                Some(phc) => (phc, None),
                None => return Err(AuthError::Invalid),
            },
        };
        self.slow_checks.fetch_add(1, Ordering::Relaxed);
        let ok = PasswordHash::new(phc)
            .map(|hash| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &hash)
                    .is_ok()
            })
            .unwrap_or(false);
        match role {
            Some(role) if ok => {
                self.remember(user, password, role);
                Ok(role)
            }
            _ => Err(AuthError::Invalid),
        }
    }

    /// argon2 checks run so far.
    pub fn slow_checks(&self) -> u64 {
        self.slow_checks.load(Ordering::Relaxed)
    }

    fn has_phc_users(&self) -> bool {
        self.users
            .iter()
            .any(|u| matches!(u.secret, Secret::Phc(_)))
    }

    /// The user called `name`, visiting every entry whatever matches.
    fn find_user(&self, name: &str) -> Option<&User> {
        let name = sha256(name.as_bytes());
        let mut found = None;
        for user in &self.users {
            if bool::from(user.name.ct_eq(&name)) {
                found = Some(user);
            }
        }
        found
    }

    fn check_token(&self, token: &str, in_query: bool) -> Result<Role, AuthError> {
        let presented = sha256(token.as_bytes());
        // Visit every entry whatever matches, so the time taken says nothing
        // about which token (or whether one) matched.
        let mut role = None;
        for (digest, r) in &self.tokens {
            let hit: Choice = digest.ct_eq(&presented);
            if bool::from(hit) {
                role = Some(role.map_or(*r, |old: Role| old.max(*r)));
            }
        }
        match role {
            Some(Role::Admin) if in_query => Err(AuthError::AdminTokenInQuery),
            Some(role) => Ok(role),
            None => Err(AuthError::Invalid),
        }
    }

    fn check_sha256_user(&self, user: &str, password: &str) -> Result<Role, AuthError> {
        let name = sha256(user.as_bytes());
        let password = sha256(password.as_bytes());
        let mut role = None;
        for u in &self.users {
            if let Secret::Sha256(digest) = &u.secret {
                let hit: Choice = u.name.ct_eq(&name) & digest.ct_eq(&password);
                if bool::from(hit) {
                    role = Some(u.role);
                }
            }
        }
        role.ok_or(AuthError::Invalid)
    }

    fn cache_key(&self, user: &str, password: &str) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.cache_salt);
        hasher.update(user.as_bytes());
        hasher.update([0]);
        hasher.update(password.as_bytes());
        hasher.finalize().into()
    }

    fn cached(&self, user: &str, password: &str) -> Option<Role> {
        let key = self.cache_key(user, password);
        let now = Instant::now();
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        verified.retain(|v| v.until > now);
        let mut role = None;
        for v in verified.iter() {
            if bool::from(v.key.ct_eq(&key)) {
                role = Some(v.role);
            }
        }
        role
    }

    fn remember(&self, user: &str, password: &str, role: Role) {
        let key = self.cache_key(user, password);
        let now = Instant::now();
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        verified.retain(|v| v.until > now && !bool::from(v.key.ct_eq(&key)));
        if verified.len() >= VERIFIED_CAPACITY {
            // The oldest goes: it expires first anyway.
            verified.remove(0);
        }
        verified.push(Verified {
            key,
            role,
            until: now + VERIFIED_TTL,
        });
    }
}

fn random_salt() -> [u8; 32] {
    let mut salt = [0u8; 32];
    // Without an OS random source the salt stays fixed: the cache keys are
    // then plain salted digests, which hold no password either.
    let _ = getrandom::fill(&mut salt);
    salt
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADMIN: &str = "admin-token-0123456789";
    const VIEW: &str = "view-token-0123456789";

    fn auth() -> Authenticator {
        let config: AuthConfig = toml::from_str(&format!(
            "tokens = [\"{ADMIN}\"]\nview_tokens = [\"{VIEW}\"]\n\
             [[users]]\nname = \"ann\"\npassword_sha256 = \"{}\"\n\
             [[users]]\nname = \"bob\"\npassword = \"bobs-password-123\"\nrole = \"viewer\"\n\
             [[users]]\nname = \"cy\"\npassword_hash = \"{}\"\n",
            // printf %s 'secret' | sha256sum
            "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b",
            hash_password("cys password").unwrap(),
        ))
        .unwrap();
        let (auth, warnings) = Authenticator::new(&config).unwrap();
        assert_eq!(
            warnings.len(),
            2,
            "ann's SHA-256 and bob's plain password are warned about: {warnings:?}"
        );
        for warning in &warnings {
            assert!(
                warning.contains("camstream hash-password") && warning.contains("password_hash"),
                "{warning}"
            );
            assert!(!warning.contains("bobs-password"), "{warning}");
        }
        auth.unwrap()
    }

    fn basic(user: &str, pw: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
        )
    }

    #[test]
    fn tokens_and_users_map_to_roles() {
        let a = auth();
        let bearer = |t: &str| format!("Bearer {t}");
        assert_eq!(
            a.check(Some(bearer(ADMIN).as_bytes()), None, false),
            Ok(Role::Admin)
        );
        assert_eq!(
            a.check(Some(bearer(VIEW).as_bytes()), None, false),
            Ok(Role::Viewer)
        );
        assert_eq!(
            a.check(Some(basic("ann", "secret").as_bytes()), None, false),
            Ok(Role::Admin)
        );
        assert_eq!(
            a.check(
                Some(basic("bob", "bobs-password-123").as_bytes()),
                None,
                false
            ),
            Ok(Role::Viewer)
        );
        assert_eq!(
            a.check(Some(basic("ann", "wrong").as_bytes()), None, false),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            a.check(Some(basic("bob", "secret").as_bytes()), None, false),
            Err(AuthError::Invalid),
            "a password only works for its own user"
        );
        assert_eq!(
            a.check(Some(b"Bearer nope"), None, false),
            Err(AuthError::Invalid)
        );
    }

    #[test]
    fn query_tokens_only_where_allowed() {
        let a = auth();
        assert_eq!(a.check(None, Some(VIEW), true), Ok(Role::Viewer));
        assert!(matches!(
            a.check(None, Some(ADMIN), false),
            Err(AuthError::Missing { .. })
        ));
        // An admin token never rides in a URL, even where view tokens may.
        assert_eq!(
            a.check(None, Some(ADMIN), true),
            Err(AuthError::AdminTokenInQuery)
        );
        assert!(!AuthError::AdminTokenInQuery.is_failed_login());
        assert!(matches!(
            a.check(None, None, true),
            Err(AuthError::Missing { .. })
        ));
        assert!(matches!(
            a.check(Some(b"Digest x"), None, true),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn config_errors_name_the_fix_and_hide_secrets() {
        let err = toml::from_str::<AuthConfig>("tokens = [\"short\"]")
            .unwrap_err()
            .message()
            .to_string();
        assert!(
            err.contains("at least 16") && !err.contains("\"short\""),
            "{err}"
        );
        let err = toml::from_str::<AuthConfig>("[[users]]\nname = \"a\"\npassword_sha256 = \"zz\"")
            .unwrap_err()
            .message()
            .to_string();
        assert!(err.contains("hash-password"), "{err}");
        for bad in [
            "nope",
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ",
            "$pbkdf2$i=1$c2FsdA$aGFzaA",
        ] {
            let err = toml::from_str::<AuthConfig>(&format!(
                "[[users]]\nname = \"a\"\npassword_hash = \"{bad}\""
            ))
            .unwrap_err()
            .message()
            .to_string();
            assert!(err.contains("camstream hash-password"), "{bad}: {err}");
        }
        let err = Authenticator::new(
            &toml::from_str::<AuthConfig>("[[users]]\nname = \"a\"\npassword = \"x\"\npassword_sha256 = \"2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b\"").unwrap(),
        )
        .unwrap_err();
        assert!(err.contains("exactly one of password_hash"), "{err}");
        let config: AuthConfig = toml::from_str(&format!("tokens = [\"{ADMIN}\"]")).unwrap();
        assert!(!format!("{config:?}").contains(ADMIN));
        assert!(
            Authenticator::new(&AuthConfig::default())
                .unwrap()
                .0
                .is_none()
        );
    }

    #[test]
    fn argon2_users_are_checked_once_then_remembered() {
        let a = auth();
        let cy = basic("cy", "cys password");
        assert_eq!(a.check(Some(cy.as_bytes()), None, false), Ok(Role::Admin));
        assert_eq!(a.slow_checks(), 1);
        let first = std::time::Instant::now();
        for _ in 0..100 {
            assert_eq!(a.check(Some(cy.as_bytes()), None, false), Ok(Role::Admin));
        }
        let cached = first.elapsed() / 100;
        assert_eq!(a.slow_checks(), 1, "the cache answered the repeats");
        // A wrong password is never cached, and costs a run each time.
        for _ in 0..2 {
            assert_eq!(
                a.check(Some(basic("cy", "wrong").as_bytes()), None, false),
                Err(AuthError::Invalid)
            );
        }
        assert_eq!(a.slow_checks(), 3);
        // An unknown name costs the same argon2 run as a known one.
        let start = std::time::Instant::now();
        assert_eq!(
            a.check(
                Some(basic("nobody", "cys password").as_bytes()),
                None,
                false
            ),
            Err(AuthError::Invalid)
        );
        let slow = start.elapsed();
        assert_eq!(a.slow_checks(), 4);
        // The figures, for the record (argon2 is optimised in every
        // profile, see Cargo.toml): `cargo test --lib auth -- --nocapture`.
        eprintln!("argon2 check {slow:?}; cached check {cached:?}");
        // A SHA-256 user never runs argon2.
        assert_eq!(
            a.check(Some(basic("ann", "secret").as_bytes()), None, false),
            Ok(Role::Admin)
        );
        assert_eq!(a.slow_checks(), 4);
    }

    #[test]
    fn hashes_are_salted_argon2id() {
        let one = hash_password("same").unwrap();
        let two = hash_password("same").unwrap();
        assert!(one.starts_with("$argon2id$v=19$"), "{one}");
        assert_ne!(one, two, "each hash has its own salt");
        assert!(PasswordPhc::parse(&one).is_ok());
        assert!(!format!("{:?}", PasswordPhc::parse(&one).unwrap()).contains("argon2"));
    }
}
