//! Optional authentication: bearer tokens and HTTP basic users, from
//! `[server.auth]`.
//!
//! Tokens are long random strings (API keys); a user's password is stored
//! as its SHA-256 (`printf %s 'the password' | sha256sum`), or in plain text
//! with a warning at start. A fast hash is enough here: the file that holds
//! it also holds the camera passwords in clear, so a slow hash would not
//! protect anything the file does not already give away, and it would cost
//! CPU on every request of a page that polls the API.
//!
//! Every comparison is constant-time over fixed-size digests, so neither the
//! content nor the length of a secret can be timed. Secrets never appear in
//! `Debug` output, errors or logs.

use std::fmt;

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
            "password_sha256 must be 64 hex digits: generate it with `printf %s 'the password' | sha256sum`"
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

/// `[server.auth]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Bearer tokens with full access (`Authorization: Bearer TOKEN`, or
    /// `?token=TOKEN` on streams, snapshots and the page).
    #[serde(default)]
    pub tokens: Vec<Token>,
    /// Bearer tokens that can only watch: safe to put in an `<img src>` of a
    /// page other people load.
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
    /// SHA-256 of the password, hex: `printf %s 'the password' | sha256sum`.
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
}

/// Checks credentials against `[server.auth]`. Holds digests only.
pub struct Authenticator {
    tokens: Vec<([u8; 32], Role)>,
    users: Vec<([u8; 32], [u8; 32], Role)>,
    basic: bool,
    bearer: bool,
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
    /// off). Also returns warnings to log (plain-text passwords).
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
            let digest = match (&user.password_sha256, &user.password) {
                (Some(hash), None) => hash.0,
                (None, Some(plain)) => {
                    warnings.push(format!(
                        "[server.auth] user \"{}\" has a plain-text password: store password_sha256 instead (printf %s 'the password' | sha256sum)",
                        user.name
                    ));
                    sha256(plain.0.as_bytes())
                }
                _ => {
                    return Err(format!(
                        "[server.auth] user \"{}\": set exactly one of password_sha256 or password",
                        user.name
                    ));
                }
            };
            users.push((sha256(user.name.as_bytes()), digest, user.role));
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

    /// Checks the `Authorization` header, else `query_token` (only passed
    /// where the query is accepted). Returns what the caller may do.
    pub fn check(
        &self,
        authorization: Option<&[u8]>,
        query_token: Option<&str>,
        query_allowed: bool,
    ) -> Result<Role, AuthError> {
        if let Some(header) = authorization {
            let header = std::str::from_utf8(header)
                .map_err(|_| AuthError::Malformed("it is not valid UTF-8"))?;
            let (scheme, rest) = header.trim().split_once(' ').unwrap_or((header, ""));
            let rest = rest.trim();
            if scheme.eq_ignore_ascii_case("bearer") {
                return self.check_token(rest);
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
                return self.check_user(user, password);
            }
            return Err(AuthError::Malformed("use the Bearer or Basic scheme"));
        }
        match query_token {
            Some(token) if query_allowed => self.check_token(token),
            _ => Err(AuthError::Missing {
                query: if query_allowed && self.bearer {
                    " (or ?token=TOKEN)"
                } else {
                    ""
                },
            }),
        }
    }

    fn check_token(&self, token: &str) -> Result<Role, AuthError> {
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
        role.ok_or(AuthError::Invalid)
    }

    fn check_user(&self, user: &str, password: &str) -> Result<Role, AuthError> {
        let name = sha256(user.as_bytes());
        let password = sha256(password.as_bytes());
        let mut role = None;
        for (n, p, r) in &self.users {
            let hit: Choice = n.ct_eq(&name) & p.ct_eq(&password);
            if bool::from(hit) {
                role = Some(*r);
            }
        }
        role.ok_or(AuthError::Invalid)
    }
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
             [[users]]\nname = \"bob\"\npassword = \"bobs-password-123\"\nrole = \"viewer\"\n",
            // printf %s 'secret' | sha256sum
            "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
        ))
        .unwrap();
        let (auth, warnings) = Authenticator::new(&config).unwrap();
        assert_eq!(warnings.len(), 1, "bob's plain password is warned about");
        assert!(!warnings[0].contains("bobs-password"));
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
        assert!(err.contains("sha256sum"), "{err}");
        let config: AuthConfig = toml::from_str(&format!("tokens = [\"{ADMIN}\"]")).unwrap();
        assert!(!format!("{config:?}").contains(ADMIN));
        assert!(
            Authenticator::new(&AuthConfig::default())
                .unwrap()
                .0
                .is_none()
        );
    }
}
