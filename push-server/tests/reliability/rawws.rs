//! A raw WebSocket client that writes any frame, well-formed or not
//! (fragmented, oversized, unmasked, reserved opcodes, bad UTF-8), and reads
//! the server's frames. tungstenite refuses to send most of these.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{find, WAIT};

pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CONTINUATION: u8 = 0x0;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// One frame as written on the wire.
#[derive(Debug, Clone)]
pub struct Frame {
    pub fin: bool,
    /// The three RSV bits (must be 0 without extensions).
    pub rsv: u8,
    pub opcode: u8,
    /// Client frames must be masked.
    pub masked: bool,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn text(s: &str) -> Frame {
        Frame::new(TEXT, s.as_bytes().to_vec())
    }
    pub fn new(opcode: u8, payload: Vec<u8>) -> Frame {
        Frame {
            fin: true,
            rsv: 0,
            opcode,
            masked: true,
            payload,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.payload.len() + 14);
        out.push(((self.fin as u8) << 7) | ((self.rsv & 7) << 4) | (self.opcode & 0xF));
        let mask_bit = if self.masked { 0x80 } else { 0 };
        let len = self.payload.len();
        if len < 126 {
            out.push(mask_bit | len as u8);
        } else if len <= u16::MAX as usize {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        if self.masked {
            let key: [u8; 4] = rand_key();
            out.extend_from_slice(&key);
            out.extend(self.payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            out.extend_from_slice(&self.payload);
        }
        out
    }

    /// Whether this is a frame RFC 6455 allows a client to send on its own
    /// (a complete, masked, unfragmented data or control frame).
    pub fn is_valid_alone(&self) -> bool {
        let control = self.opcode >= 8;
        self.masked
            && self.rsv == 0
            && self.fin
            && matches!(self.opcode, TEXT | BINARY | PING | PONG | CLOSE)
            && (!control || self.payload.len() <= 125)
            && (self.opcode != TEXT || std::str::from_utf8(&self.payload).is_ok())
    }
}

fn rand_key() -> [u8; 4] {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0x9e37_79b9);
    let n = N.fetch_add(0x6d2b_79f5, Ordering::Relaxed);
    n.to_le_bytes()
}

/// What the server sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Got {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>),
    /// The TCP connection ended (EOF or reset).
    Eof,
}

pub struct RawWs {
    pub tcp: TcpStream,
    buf: Vec<u8>,
}

impl RawWs {
    /// Performs the handshake on `path` (e.g. `/ws?channels=a`).
    pub async fn connect(addr: SocketAddr, path: &str) -> Result<RawWs, String> {
        Self::connect_with(addr, path, &[]).await
    }

    pub async fn connect_with(
        addr: SocketAddr,
        path: &str,
        extra: &[(&str, &[u8])],
    ) -> Result<RawWs, String> {
        let mut tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        )
        .into_bytes();
        for (n, v) in extra {
            req.extend_from_slice(n.as_bytes());
            req.extend_from_slice(b": ");
            req.extend_from_slice(v);
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(b"\r\n");
        tcp.write_all(&req)
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let end = tokio::time::timeout(WAIT, async {
            loop {
                if let Some(i) = find(&buf, b"\r\n\r\n") {
                    return Ok(i);
                }
                let n = tcp.read(&mut chunk).await.map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err("closed during handshake".to_string());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        })
        .await
        .map_err(|_| "handshake hung".to_string())??;
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        if !head.starts_with("HTTP/1.1 101") {
            return Err(format!("handshake refused: {head}"));
        }
        Ok(RawWs {
            tcp,
            buf: buf[end + 4..].to_vec(),
        })
    }

    pub async fn send(&mut self, frame: &Frame) -> std::io::Result<()> {
        self.tcp.write_all(&frame.encode()).await
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.tcp.write_all(bytes).await
    }

    /// The next frame from the server, within `within`; `None` on timeout.
    pub async fn next_within(&mut self, within: Duration) -> Option<Got> {
        tokio::time::timeout(within, self.next_frame()).await.ok()
    }

    /// The next frame, or a failure if none comes within [`WAIT`].
    pub async fn next(&mut self) -> Result<Got, String> {
        self.next_within(WAIT)
            .await
            .ok_or_else(|| format!("no frame within {WAIT:?} (hung)"))
    }

    /// The next text frame as JSON, skipping Pings (answering none).
    pub async fn next_json(&mut self) -> Result<Value, String> {
        loop {
            match self.next().await? {
                Got::Text(t) => {
                    return serde_json::from_str(&t).map_err(|e| format!("bad JSON {t:?}: {e}"))
                }
                Got::Ping(_) | Got::Pong(_) => continue,
                other => return Err(format!("expected a text frame, got {other:?}")),
            }
        }
    }

    async fn fill(&mut self, want: usize) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        while self.buf.len() < want {
            match self.tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
        true
    }

    async fn next_frame(&mut self) -> Got {
        if !self.fill(2).await {
            return Got::Eof;
        }
        let opcode = self.buf[0] & 0xF;
        let mut len = (self.buf[1] & 0x7F) as usize;
        let mut head = 2;
        if len == 126 {
            if !self.fill(4).await {
                return Got::Eof;
            }
            len = u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize;
            head = 4;
        } else if len == 127 {
            if !self.fill(10).await {
                return Got::Eof;
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&self.buf[2..10]);
            len = u64::from_be_bytes(b) as usize;
            head = 10;
        }
        if !self.fill(head + len).await {
            return Got::Eof;
        }
        let payload: Vec<u8> = self.buf[head..head + len].to_vec();
        self.buf.drain(..head + len);
        match opcode {
            TEXT => Got::Text(String::from_utf8_lossy(&payload).to_string()),
            BINARY => Got::Binary(payload),
            PING => Got::Ping(payload),
            PONG => Got::Pong(payload),
            CLOSE => Got::Close(
                (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]])),
            ),
            _ => Got::Binary(payload),
        }
    }

    /// Reads until the server closes (Close frame or EOF) within `within`;
    /// returns the close code, or an error if the socket stayed open.
    pub async fn closed_within(&mut self, within: Duration) -> Result<Option<u16>, String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.next_frame()).await {
                Err(_) => return Err(format!("still open after {within:?}")),
                Ok(Got::Close(code)) => return Ok(code),
                Ok(Got::Eof) => return Ok(None),
                Ok(_) => continue,
            }
        }
    }
}
