//! What the load generator and the benchmark examples read about a process from `/proc`
//! (Linux). Not a double: the one reader they share, so every CPU and memory figure in
//! docs/performance.md is counted the same way (`utime + stime`, as the anchor's compare.sh
//! counts a bridge's).

use std::io;

/// utime + stime, in clock ticks, from a `stat` file (`/proc/PID/stat`, `/proc/self/stat`).
///
/// # Errors
/// When the file cannot be read or is not a `stat` line.
pub fn cpu_ticks(stat_path: &str) -> io::Result<u64> {
    let stat = std::fs::read_to_string(stat_path)?;
    // The command name is in parentheses and may hold spaces: count fields after it.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected {stat_path}"),
        )
    })?;
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

/// A figure in kB from a `status` file (`VmRSS:`, `VmHWM:`); 0 when it is not there.
pub fn status_kb(status_path: &str, key: &str) -> u64 {
    std::fs::read_to_string(status_path)
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn this_process_has_cpu_time_and_memory_and_a_missing_one_is_an_error() {
        // Burn a little CPU so at least one tick is counted.
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < std::time::Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(cpu_ticks("/proc/self/stat").unwrap() > 0);
        assert!(status_kb("/proc/self/status", "VmRSS:") > 0);
        assert_eq!(status_kb("/proc/self/status", "NoSuchKey:"), 0);
        assert!(cpu_ticks("/proc/no-such-process/stat").is_err());
    }
}
