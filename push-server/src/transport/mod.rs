//! Client transports: the connection core ([`core`]) and the framing of
//! WebSocket ([`ws`]) and Server-Sent Events ([`sse`]) under it, plus the
//! acknowledged-delivery policy ([`acks`]). The HTTP layer upgrades or opens
//! a connection and hands it to [`core::Core::run`].

pub(crate) mod acks;
pub(crate) mod core;
mod gate;
pub(crate) mod sse;
pub(crate) mod ws;

/// Most bytes a lane write copies into one buffer (see [`try_send`]).
const SEND_COPY: usize = 512;

/// Writes what the socket takes now of `parts`, concatenated: how much.
///
/// Small deliveries (a 64-byte message is a 120–160 byte frame or event)
/// are copied into one stack buffer and written with `send`: a `writev` of
/// the same parts costs the kernel its vector import, the file layer and a
/// positioned descriptor lookup on every delivery, more than the copy
/// (docs/benchmarks.md, "Issue 14, sliced lanes"). Larger ones go as they
/// are, with `writev`.
pub(crate) fn try_send<const N: usize>(
    tcp: &tokio::net::TcpStream,
    parts: [&[u8]; N],
) -> std::io::Result<usize> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len > SEND_COPY {
        return tcp.try_write_vectored(&parts.map(std::io::IoSlice::new));
    }
    let mut buf = [0u8; SEND_COPY];
    let mut at = 0;
    for part in parts {
        buf[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    tcp.try_write(&buf[..len])
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    /// Both ways of writing (copied and `send`, or `writev`) put the parts'
    /// bytes on the wire concatenated, on either side of the bound.
    #[tokio::test]
    async fn try_send_writes_the_parts_concatenated() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let (mut reader, writer) = (client.unwrap(), accepted.unwrap().0);
        for len in [
            0,
            1,
            super::SEND_COPY - 1,
            super::SEND_COPY,
            super::SEND_COPY + 1,
            4096,
        ] {
            let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let (a, rest) = body.split_at(len / 3);
            let (b, c) = rest.split_at(rest.len() / 2);
            writer.writable().await.unwrap();
            assert_eq!(super::try_send(&writer, [a, b, c]).unwrap(), len);
            let mut got = vec![0u8; len];
            reader.read_exact(&mut got).await.unwrap();
            assert_eq!(got, body, "{len} bytes");
        }
    }
}
