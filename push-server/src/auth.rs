//! Who may subscribe and publish (docs/security.md, docs/protocol.md).
//!
//! - Subscribers present a JWT (`token` query parameter — browsers cannot set
//!   WebSocket headers — or `Authorization: Bearer`). Auth is off unless
//!   `jwt_secret` (HS256) or `jwt_public_key` (RS256/ES256 PEM) is set; then
//!   every connection needs a valid token. Claims: `sub`, `exp` (required),
//!   `nbf`, `channels` (exact names or trailing-`*` patterns) and `publish`.
//!   `user:<sub>` is always granted to its owner.
//! - Publishers use `Authorization: Bearer` with a static `publish_key`
//!   (compared in constant time) or a JWT with `publish`. With neither a JWT
//!   key nor publish keys configured, anyone may publish.
//!
//! Only one algorithm is accepted per server (the key decides which), so
//! `alg: none` and algorithm confusion (an HS256 token signed with the RSA
//! public key as secret) fail verification. Tokens are never logged.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{header, HeaderMap};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::config::Config;
use crate::protocol::{Error, ErrorCode};

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 5;

/// Why auth could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("set only one of jwt_secret and jwt_public_key")]
    BothKeys,
    #[error("jwt_secret must not be empty")]
    EmptySecret,
    #[error("cannot read jwt_public_key {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("jwt_public_key {0} is neither an RSA nor an EC (P-256) public key in PEM form")]
    BadKey(String),
    #[error("publish_key entries must not be empty")]
    EmptyPublishKey,
}

/// Why a request was not authenticated (401) or authorized (403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("a token is required (query parameter token= or Authorization: Bearer)")]
    Missing,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    #[error("the token is not valid: {0}")]
    Invalid(String),
}

impl AuthError {
    pub fn code(&self) -> ErrorCode {
        match self {
            AuthError::Missing => ErrorCode::Unauthorized,
            AuthError::Expired => ErrorCode::TokenExpired,
            AuthError::NotYetValid | AuthError::Invalid(_) => ErrorCode::InvalidToken,
        }
    }
}

impl From<AuthError> for Error {
    fn from(e: AuthError) -> Error {
        Error::new(e.code(), e.to_string())
    }
}

/// A set of channels granted by a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grants {
    /// Every channel.
    All,
    /// Exact names and trailing-`*` patterns.
    Some(Vec<String>),
}

impl Grants {
    pub fn allows(&self, channel: &str) -> bool {
        match self {
            Grants::All => true,
            Grants::Some(list) => list.iter().any(|g| match g.strip_suffix('*') {
                Some(prefix) => channel.starts_with(prefix),
                None => g == channel,
            }),
        }
    }
}

/// An authenticated client.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The token's `sub`, if any.
    pub user: Option<Arc<str>>,
    /// Channels it may subscribe to (besides `user:<sub>`).
    pub subscribe: Grants,
    /// Channels it may publish to.
    pub publish: Grants,
    /// When the token expires (Unix seconds, leeway included).
    pub expires: Option<u64>,
}

impl Principal {
    /// Everything allowed: auth is off.
    pub fn anonymous() -> Principal {
        Principal {
            user: None,
            subscribe: Grants::All,
            publish: Grants::All,
            expires: None,
        }
    }

    pub fn may_subscribe(&self, channel: &str) -> bool {
        if let (Some(user), Some(id)) = (&self.user, channel.strip_prefix("user:")) {
            if **user == *id {
                return true;
            }
        }
        self.subscribe.allows(channel)
    }

    pub fn may_publish(&self, channel: &str) -> bool {
        self.publish.allows(channel)
    }

    /// How long until the token expires, if it does.
    pub fn expires_in(&self) -> Option<Duration> {
        self.expires
            .map(|exp| Duration::from_secs(exp.saturating_sub(unix_now())))
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The claims Push reads; others are ignored.
#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    exp: u64,
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
}

/// The server's auth policy.
#[derive(Clone)]
pub struct Auth {
    /// Verifies subscriber and publisher JWTs; `None`: auth off.
    jwt: Option<(DecodingKey, Validation)>,
    /// Static publisher keys.
    publish_keys: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print keys.
        f.debug_struct("Auth")
            .field("jwt", &self.jwt.as_ref().map(|(_, v)| &v.algorithms))
            .field("publish_keys", &self.publish_keys.len())
            .finish()
    }
}

impl Auth {
    pub fn from_config(config: &Config) -> Result<Auth, AuthConfigError> {
        let jwt = match (&config.jwt_secret, &config.jwt_public_key) {
            (Some(_), Some(_)) => return Err(AuthConfigError::BothKeys),
            (Some(secret), None) => {
                if secret.is_empty() {
                    return Err(AuthConfigError::EmptySecret);
                }
                Some((
                    DecodingKey::from_secret(secret.as_bytes()),
                    validation(Algorithm::HS256),
                ))
            }
            (None, Some(path)) => {
                let shown = path.display().to_string();
                // The PEM itself is accepted too (an environment variable filled
                // from a Kubernetes Secret), or a path to a PEM file.
                let pem = match path.to_str() {
                    Some(inline) if inline.trim_start().starts_with("-----BEGIN") => {
                        inline.as_bytes().to_vec()
                    }
                    _ => std::fs::read(path).map_err(|source| AuthConfigError::Read {
                        path: shown.clone(),
                        source,
                    })?,
                };
                let key = if let Ok(k) = DecodingKey::from_rsa_pem(&pem) {
                    (k, validation(Algorithm::RS256))
                } else if let Ok(k) = DecodingKey::from_ec_pem(&pem) {
                    (k, validation(Algorithm::ES256))
                } else {
                    return Err(AuthConfigError::BadKey(shown));
                };
                Some(key)
            }
            (None, None) => None,
        };
        if config.publish_key.iter().any(|k| k.trim().is_empty()) {
            return Err(AuthConfigError::EmptyPublishKey);
        }
        let publish_keys = config
            .publish_key
            .iter()
            .map(|k| k.trim().as_bytes().to_vec())
            .collect();
        Ok(Auth { jwt, publish_keys })
    }

    /// Whether subscribers need a token.
    pub fn enabled(&self) -> bool {
        self.jwt.is_some()
    }

    /// Whether publishers need a key or token.
    pub fn publish_protected(&self) -> bool {
        self.jwt.is_some() || !self.publish_keys.is_empty()
    }

    fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let Some((key, validation)) = &self.jwt else {
            return Ok(Principal::anonymous());
        };
        let data =
            jsonwebtoken::decode::<Claims>(token, key, validation).map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                ErrorKind::InvalidSignature => AuthError::Invalid("bad signature".into()),
                ErrorKind::InvalidAlgorithm => {
                    AuthError::Invalid("algorithm not accepted by this server".into())
                }
                ErrorKind::MissingRequiredClaim(c) => {
                    AuthError::Invalid(format!("claim {c:?} is required"))
                }
                _ => AuthError::Invalid("malformed token".into()),
            })?;
        let c = data.claims;
        Ok(Principal {
            user: c.sub.map(Arc::from),
            subscribe: Grants::Some(c.channels),
            publish: Grants::Some(c.publish),
            expires: Some(c.exp + LEEWAY_SECS),
        })
    }

    /// A subscriber from its token. With auth off, everyone is anonymous.
    pub fn subscriber(&self, token: Option<&str>) -> Result<Principal, AuthError> {
        if self.jwt.is_none() {
            let mut p = Principal::anonymous();
            if self.publish_protected() {
                p.publish = Grants::Some(Vec::new());
            }
            return Ok(p);
        }
        match token {
            None | Some("") => Err(AuthError::Missing),
            Some(t) => self.verify(t),
        }
    }

    /// A publisher from its `Authorization: Bearer` header: a publish key
    /// (may publish everywhere and read history) or a JWT with `publish`.
    pub fn publisher(&self, headers: &HeaderMap) -> Result<Principal, AuthError> {
        self.publisher_bearer(header_bearer(headers))
    }

    /// [`Auth::publisher`] from the header's token, already extracted (the
    /// raw publish path has no `HeaderMap`).
    pub fn publisher_bearer(&self, token: Option<&str>) -> Result<Principal, AuthError> {
        if !self.publish_protected() {
            return Ok(Principal::anonymous());
        }
        let Some(token) = token else {
            return Err(AuthError::Missing);
        };
        if self.is_publish_key(token) {
            return Ok(Principal::anonymous());
        }
        if self.jwt.is_none() {
            return Err(AuthError::Invalid("unknown publish key".into()));
        }
        self.verify(token)
    }

    /// A reader of history or presence: a subscriber token, or a publish key.
    pub fn reader(
        &self,
        query_token: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<Principal, AuthError> {
        if let Some(t) = header_bearer(headers) {
            if self.is_publish_key(t) {
                return Ok(Principal::anonymous());
            }
        }
        self.subscriber(bearer(query_token, headers))
    }

    fn is_publish_key(&self, token: &str) -> bool {
        // Check every key, so the time taken does not tell which one matched.
        self.publish_keys.iter().fold(false, |hit, k| {
            hit | bool::from(k.as_slice().ct_eq(token.as_bytes()))
        })
    }
}

fn validation(alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = LEEWAY_SECS;
    v.validate_nbf = true;
    v.validate_aud = false;
    v.set_required_spec_claims(&["exp"]);
    v
}

fn header_bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_of)
}

/// The token of an `Authorization` header's value, if it is a bearer one.
pub fn bearer_of(value: &str) -> Option<&str> {
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
}

/// The bearer token of a request: `token` query parameter or header.
pub fn bearer<'a>(query_token: Option<&'a str>, headers: &'a HeaderMap) -> Option<&'a str> {
    query_token
        .filter(|t| !t.is_empty())
        .or_else(|| header_bearer(headers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_and_personal_channels() {
        let p = Principal {
            user: Some("42".into()),
            subscribe: Grants::Some(vec!["news".into(), "chat:*".into()]),
            publish: Grants::Some(vec![]),
            expires: None,
        };
        assert!(p.may_subscribe("news"));
        assert!(!p.may_subscribe("news2"));
        assert!(p.may_subscribe("chat:room1"));
        assert!(p.may_subscribe("user:42"));
        assert!(!p.may_subscribe("user:43"));
        assert!(!p.may_subscribe("user:4"));
        assert!(!p.may_publish("news"));
        assert!(Grants::Some(vec!["*".into()]).allows("anything"));
    }
}
