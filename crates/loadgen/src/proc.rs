//! The bridge's CPU time and memory, read from `/proc` (Linux).

use std::time::Instant;

use fakes::proc::{cpu_ticks, status_kb};

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
            rss_kb: status_kb(&format!("/proc/{}/status", self.pid), "VmRSS:"),
            own_cpu_seconds: ticks("/proc/self/stat"),
        }
    }

    /// The most resident memory the bridge has had (the kernel's high-water mark).
    pub fn peak_rss_kb(&self) -> u64 {
        status_kb(&format!("/proc/{}/status", self.pid), "VmHWM:")
    }
}
