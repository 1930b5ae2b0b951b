//! What the machine did during a benchmark, read from `/proc` (Linux only): the CPU time each
//! measured process spent, the load average the run started under, and how long one small
//! durable write takes here; and which hookgate binary is measured.
//!
//! CPU time is what a run cost: on a machine whose cores the load generator, the servers and the
//! database share, requests per second alone do not say how much of the machine each server
//! used. A process's `utime + stime` in `/proc/<pid>/stat` covers all its threads.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The CPU time (user and system) each process had used at one moment, by process id.
#[derive(Debug, Clone, Default)]
pub struct CpuSample(pub HashMap<u32, Duration>);

impl CpuSample {
    /// The CPU time of `pids` now; a process that is gone is left out.
    pub fn of(pids: impl IntoIterator<Item = u32>) -> CpuSample {
        CpuSample(pids.into_iter().filter_map(|pid| Some((pid, process_cpu(pid)?))).collect())
    }

    /// The CPU time spent between `before` and this later sample, summed over the processes in
    /// this one. A process that started in between counts all it used; one that ended in
    /// between cannot be read any more and counts nothing (the benches keep their processes
    /// for the whole interval, so this only drops short-lived database workers).
    pub fn since(&self, before: &CpuSample) -> Duration {
        self.0.iter().map(|(pid, now)| now.saturating_sub(before.0.get(pid).copied().unwrap_or_default())).sum()
    }
}

/// The user plus system CPU time process `pid` has used, or `None` if it cannot be read.
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of the line (utime, stime); field 3 (state) is the first after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_secs_f64((utime + stime) as f64 / ticks_per_second() as f64))
}

/// Clock ticks per second, the unit of `/proc/<pid>/stat` times (`getconf CLK_TCK`; 100 on
/// every Linux this runs on, should `getconf` be missing).
fn ticks_per_second() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|output| String::from_utf8(output.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .filter(|ticks| *ticks > 0)
            .unwrap_or(100)
    })
}

/// The one-minute load average, or `NaN` if it cannot be read.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().and_then(|first| first.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// The median and the slowest of `rounds` durable 4 KiB writes (`write` then `fdatasync`) to a
/// file in `directory`: what one commit costs the disk at the least.
pub fn fsync_time(directory: &Path, rounds: usize) -> std::io::Result<(Duration, Duration)> {
    let path = directory.join("fsync-probe");
    let mut file = std::fs::File::create(&path)?;
    let block = [0x5a_u8; 4096];
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds.max(1) {
        let started = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        times.push(started.elapsed());
    }
    drop(file);
    std::fs::remove_file(&path)?;
    times.sort_unstable();
    Ok((times[times.len() / 2], times[times.len() - 1]))
}

/// The hookgate binary to measure: `HOOKGATE_BENCH_BINARY` when set (another build, to compare two
/// builds in turn on the same machine), else the one cargo built with this bench.
pub fn hookgate_binary() -> std::ffi::OsString {
    std::env::var_os("HOOKGATE_BENCH_BINARY")
        .filter(|path| !path.is_empty())
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_hookgate").into())
}

/// CPU time per 10,000 events, in seconds.
pub fn per_10k(spent: Duration, events: u64) -> f64 {
    match events {
        0 => f64::NAN,
        events => spent.as_secs_f64() * 10_000.0 / events as f64,
    }
}
