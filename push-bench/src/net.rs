//! TCP connections with spread source addresses.
//!
//! One source address has about 28,000 ephemeral ports; binding each client socket to one of
//! 127.0.0.2 … 127.0.0.(n+1) before connecting multiplies that, so the port range is never the
//! limit on loopback. (Here the hard limit of 20,000 open files per process comes first.)

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use tokio::net::{TcpSocket, TcpStream};

/// Chooses the source address for connection number `i`.
#[derive(Debug, Clone, Copy)]
pub struct SourceAddrs {
    /// How many loopback source addresses to use; 0 lets the kernel choose.
    pub count: u8,
}

impl SourceAddrs {
    pub fn for_conn(&self, target: SocketAddr, i: usize) -> Option<Ipv4Addr> {
        // Only loopback targets: other source addresses would not route.
        if self.count == 0 || !target.ip().is_loopback() {
            return None;
        }
        let host = 2 + (i % usize::from(self.count)) as u8;
        Some(Ipv4Addr::new(127, 0, 0, host))
    }
}

/// Connects to `target`, from `source` when given. Nagle is off: small frames should leave
/// at once, latency is what we measure.
pub async fn connect(target: SocketAddr, source: Option<Ipv4Addr>) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(ip) = source {
        socket.bind(SocketAddrV4::new(ip, 0).into())?;
    }
    let stream = socket.connect(target).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_over_loopback_only() {
        let s = SourceAddrs { count: 4 };
        let lo: SocketAddr = "127.0.0.1:80".parse().unwrap();
        assert_eq!(s.for_conn(lo, 0), Some(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(s.for_conn(lo, 5), Some(Ipv4Addr::new(127, 0, 0, 3)));
        assert_eq!(s.for_conn("10.0.0.1:80".parse().unwrap(), 0), None);
        assert_eq!(SourceAddrs { count: 0 }.for_conn(lo, 0), None);
    }
}
