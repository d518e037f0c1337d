//! Server and generator resource usage from `/proc`: CPU time (utime + stime, all threads of
//! a process) and resident memory. Linux only, which is what the benchmark runs on.

use std::fs;

use anyhow::{anyhow, Context, Result};

/// `USER_HZ`: the unit of `/proc/<pid>/stat` times. It is 100 on every Linux architecture
/// that exposes it to user space (the kernel converts from its internal HZ).
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// CPU seconds (user + system) used so far by `pid` ("self" for this process).
pub fn cpu_seconds(pid: &str) -> Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    parse_stat_cpu(&stat).ok_or_else(|| anyhow!("unexpected /proc/{pid}/stat format"))
}

/// Fields 14 and 15 (utime, stime) come after the parenthesised command name, which may
/// itself contain spaces and parentheses: split after the last `)`.
fn parse_stat_cpu(stat: &str) -> Option<f64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace();
    // After ")" the first field is field 3 (state); utime is field 14.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / CLOCK_TICKS_PER_SEC)
}

/// Resident set size of `pid` in KiB (`VmRSS`).
pub fn rss_kib(pid: &str) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    parse_vmrss(&status).ok_or_else(|| anyhow!("no VmRSS in /proc/{pid}/status"))
}

fn parse_vmrss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The soft limit on open files of this process, from `/proc/self/limits`.
pub fn open_files_limit() -> Option<u64> {
    let limits = fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Ticks of one CPU core from `/proc/stat`: (busy, softirq). Busy is everything except idle
/// and iowait. Softirq time matters on loopback: the kernel's packet processing for a sender
/// often runs in softirq context on the sender's core, outside any process's utime/stime.
pub fn core_ticks(core: usize) -> Result<(u64, u64)> {
    let stat = fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    parse_core_ticks(&stat, core).ok_or_else(|| anyhow!("no cpu{core} line in /proc/stat"))
}

fn parse_core_ticks(stat: &str, core: usize) -> Option<(u64, u64)> {
    let name = format!("cpu{core}");
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy: u64 = v.iter().take(8).sum::<u64>() - v.get(3)? - v.get(4)?;
    Some((busy, *v.get(6)?))
}

/// Busy and softirq seconds of a set of cores.
pub fn cores_seconds(cores: &[usize]) -> Option<(f64, f64)> {
    let mut busy = 0;
    let mut softirq = 0;
    for &c in cores {
        let (b, s) = core_ticks(c).ok()?;
        busy += b;
        softirq += s;
    }
    Some((
        busy as f64 / CLOCK_TICKS_PER_SEC,
        softirq as f64 / CLOCK_TICKS_PER_SEC,
    ))
}

/// Sums over a set of server processes (e.g. nginx master + worker + redis-server).
#[derive(Debug, Clone, Default)]
pub struct ServerProcs {
    /// The pids given on the command line.
    pub pids: Vec<String>,
}

impl ServerProcs {
    pub fn cpu_seconds(&self) -> Result<f64> {
        self.pids.iter().map(|p| cpu_seconds(p)).sum()
    }

    pub fn rss_kib(&self) -> Result<u64> {
        self.pids.iter().map(|p| rss_kib(p)).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.pids.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_command_name() {
        let stat = "1234 (nginx: (worker) x) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 99 1000 200";
        assert_eq!(parse_stat_cpu(stat), Some(3.0));
    }

    #[test]
    fn vmrss() {
        assert_eq!(
            parse_vmrss("Name:\tx\nVmRSS:\t   12345 kB\nVmSwap: 0 kB\n"),
            Some(12345)
        );
        assert_eq!(parse_vmrss("Name:\tx\n"), None);
    }

    #[test]
    fn core_line() {
        let stat =
            "cpu  1 2 3 4 5 6 7 8 0 0\ncpu0 10 0 20 500 5 1 30 0 0 0\ncpu1 1 1 1 1 1 1 1 1 0 0\n";
        assert_eq!(parse_core_ticks(stat, 0), Some((61, 30)));
        assert_eq!(parse_core_ticks(stat, 2), None);
    }

    #[test]
    fn reads_self() {
        assert!(cpu_seconds("self").unwrap() >= 0.0);
        assert!(rss_kib("self").unwrap() > 0);
    }
}
