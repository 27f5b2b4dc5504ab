//! The bridge's CPU time and memory, read from `/proc` (Linux).

use std::time::Instant;

/// One reading.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at: Instant,
    /// The bridge's user + system CPU time so far.
    pub cpu_seconds: f64,
    /// The bridge's resident memory now.
    pub rss_kb: u64,
    /// This process's own CPU time so far (the load generator shares the machine).
    pub own_cpu_seconds: f64,
}

impl Sample {
    /// The same reading, as if this process were the one measured.
    pub fn own(&self) -> Sample {
        Sample {
            cpu_seconds: self.own_cpu_seconds,
            ..*self
        }
    }
}

/// Reads a process's figures on demand.
pub struct Sampler {
    pid: u32,
    ticks_per_second: f64,
}

impl Sampler {
    pub fn start(pid: u32) -> anyhow::Result<Self> {
        let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?
            .filter(|t| *t > 0)
            .unwrap_or(100);
        let sampler = Self {
            pid,
            ticks_per_second: ticks as f64,
        };
        // Fail now, not at the end, if /proc is not there.
        cpu_ticks(&format!("/proc/{pid}/stat"))?;
        Ok(sampler)
    }

    pub fn latest(&self) -> Sample {
        let at = Instant::now();
        let ticks = |path: &str| cpu_ticks(path).unwrap_or(0) as f64 / self.ticks_per_second;
        Sample {
            at,
            cpu_seconds: ticks(&format!("/proc/{}/stat", self.pid)),
            rss_kb: status_kb(self.pid, "VmRSS:"),
            own_cpu_seconds: ticks("/proc/self/stat"),
        }
    }

    /// The most resident memory the bridge has had (the kernel's high-water mark).
    pub fn peak_rss_kb(&self) -> u64 {
        status_kb(self.pid, "VmHWM:")
    }
}

/// utime + stime from a `stat` file.
fn cpu_ticks(path: &str) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(path)?;
    // The command name is in parentheses and may hold spaces: count fields after it.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow::anyhow!("unexpected {path}"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `after` starts at field 3.
    let field = |n: usize| {
        fields
            .get(n - 3)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(field(14) + field(15))
}

fn status_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
