//! What the real-process tests (redis_probe, sentinel) share: free ports,
//! a per-run temp folder, and a clear failure when a binary is missing.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;

/// `n` distinct free loopback ports: all listeners are held until every
/// port is chosen, so two processes of one test never get the same port.
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind loopback"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// A fresh folder for one test's files, unique per process and call.
pub fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "push-op-{tag}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// Fails the test, saying what to install, when `bin` is not on PATH.
pub fn require(bin: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{bin} not found on PATH: install redis-server and redis-sentinel \
         (make test-operator does)"
    );
}
