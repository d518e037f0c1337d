//! Who may subscribe and publish.
//!
//! Auth is off by default (a warning is logged at start-up): every client may
//! subscribe to and publish on every channel. JWT verification and publish
//! keys plug in here without changing the transports, which only ask a
//! [`Principal`] whether a channel is allowed.

use std::sync::Arc;

use axum::http::{header, HeaderMap};

use crate::config::Config;

/// Why auth could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error(
        "{0} is not supported by this build yet (JWT auth and publish keys are tracked in issue 4)"
    )]
    Unsupported(&'static str),
}

/// A set of channels granted by a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grants {
    /// Every channel (auth off).
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
}

impl Principal {
    /// Everything allowed: auth is off.
    pub fn anonymous() -> Principal {
        Principal {
            user: None,
            subscribe: Grants::All,
            publish: Grants::All,
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
}

/// The server's auth policy.
#[derive(Debug, Clone)]
pub struct Auth {
    enabled: bool,
}

impl Auth {
    pub fn from_config(config: &Config) -> Result<Auth, AuthConfigError> {
        if config.jwt_secret.is_some() {
            return Err(AuthConfigError::Unsupported("--jwt-secret"));
        }
        if config.jwt_public_key.is_some() {
            return Err(AuthConfigError::Unsupported("--jwt-public-key"));
        }
        if !config.publish_key.is_empty() {
            return Err(AuthConfigError::Unsupported("--publish-key"));
        }
        Ok(Auth { enabled: false })
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// A subscriber from its token (query `token` or `Authorization: Bearer`).
    pub fn subscriber(&self, _token: Option<&str>) -> Principal {
        Principal::anonymous()
    }

    /// A publisher from its `Authorization` header.
    pub fn publisher(&self, _headers: &HeaderMap) -> Principal {
        Principal::anonymous()
    }
}

/// The bearer token of a request: `token` query parameter or header.
pub fn bearer<'a>(query_token: Option<&'a str>, headers: &'a HeaderMap) -> Option<&'a str> {
    query_token.or_else(|| {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
    })
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
        };
        assert!(p.may_subscribe("news"));
        assert!(!p.may_subscribe("news2"));
        assert!(p.may_subscribe("chat:room1"));
        assert!(p.may_subscribe("user:42"));
        assert!(!p.may_subscribe("user:43"));
        assert!(!p.may_publish("news"));
    }
}
