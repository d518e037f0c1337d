//! URL templates: one string per endpoint with `{channel}` where the channel name goes, so
//! the same run can measure Push, nchan or any other server with the same scenarios.

use std::net::{SocketAddr, ToSocketAddrs};

use anyhow::{anyhow, bail, Context, Result};

/// A parsed `ws://`, `http://` URL template. TLS is out of scope: the benchmark measures the
/// server's messaging path on loopback, and TLS would mostly measure the cipher.
#[derive(Debug, Clone)]
pub struct Template {
    /// The original template, kept for reports.
    pub raw: String,
    /// `ws` or `http`.
    pub scheme: String,
    /// `host:port` as written, sent as the `Host` header.
    pub authority: String,
    /// Resolved address to connect to.
    pub addr: SocketAddr,
    /// Path and query, still holding `{channel}`.
    pub path: String,
}

impl Template {
    pub fn parse(raw: &str) -> Result<Self> {
        let (scheme, rest) = raw
            .split_once("://")
            .ok_or_else(|| anyhow!("URL template {raw:?} has no scheme"))?;
        let scheme = match scheme {
            "ws" | "http" => scheme.to_string(),
            "wss" | "https" => bail!("{scheme}:// is not supported (plain TCP only): {raw}"),
            other => bail!("unknown scheme {other:?} in {raw}"),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let default_port = 80;
        let with_port = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_string()
        } else {
            format!("{authority}:{default_port}")
        };
        let addr = with_port
            .to_socket_addrs()
            .with_context(|| format!("resolving {authority}"))?
            .find(|a| a.is_ipv4())
            .ok_or_else(|| anyhow!("{authority} has no IPv4 address"))?;
        Ok(Self {
            raw: raw.to_string(),
            scheme,
            authority: authority.to_string(),
            addr,
            path: path.to_string(),
        })
    }

    /// Path and query for one channel.
    pub fn path_for(&self, channel: &str) -> String {
        self.path.replace("{channel}", channel)
    }

    /// Full URL for one channel (the WebSocket handshake wants a URL).
    pub fn url_for(&self, channel: &str) -> String {
        format!(
            "{}://{}{}",
            self.scheme,
            self.authority,
            self.path_for(channel)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_substitutes() {
        let t = Template::parse("ws://127.0.0.1:8080/ws?channels={channel}").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(t.authority, "127.0.0.1:8080");
        assert_eq!(t.path_for("b7"), "/ws?channels=b7");
        assert_eq!(t.url_for("b7"), "ws://127.0.0.1:8080/ws?channels=b7");
    }

    #[test]
    fn default_port_and_path() {
        let t = Template::parse("http://127.0.0.1").unwrap();
        assert_eq!(t.addr.port(), 80);
        assert_eq!(t.path, "/");
    }

    #[test]
    fn rejects_tls() {
        assert!(Template::parse("wss://127.0.0.1/ws").is_err());
        assert!(Template::parse("127.0.0.1/ws").is_err());
    }
}
