//! CPU time and memory of a process, from /proc.

use std::path::PathBuf;

/// CPU seconds (user, system) and resident memory of a process at one moment.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct ProcSample {
    pub user_s: f64,
    pub system_s: f64,
    pub rss_kb: u64,
}

impl ProcSample {
    pub fn cpu_s(&self) -> f64 {
        self.user_s + self.system_s
    }
}

/// Errors reading /proc.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("reading {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("unexpected format of {0}")]
    Format(PathBuf),
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Sample process `pid` ("self" for this process when `pid` is `None`).
pub fn sample(pid: Option<u32>) -> Result<ProcSample, ProcError> {
    let dir = match pid {
        Some(p) => PathBuf::from(format!("/proc/{p}")),
        None => PathBuf::from("/proc/self"),
    };
    let stat_path = dir.join("stat");
    let stat =
        std::fs::read_to_string(&stat_path).map_err(|e| ProcError::Read(stat_path.clone(), e))?;
    // Fields after the command name (which may contain spaces) start at field 3 (state).
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| ProcError::Format(stat_path.clone()))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime is field 14, stime field 15 (1-based); `fields[0]` is field 3.
    let tick = clock_ticks();
    let num = |i: usize| -> Result<f64, ProcError> {
        fields
            .get(i - 3)
            .and_then(|f| f.parse::<f64>().ok())
            .ok_or_else(|| ProcError::Format(stat_path.clone()))
    };
    let user_s = num(14)? / tick;
    let system_s = num(15)? / tick;
    let status_path = dir.join("status");
    let status = std::fs::read_to_string(&status_path)
        .map_err(|e| ProcError::Read(status_path.clone(), e))?;
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok(ProcSample {
        user_s,
        system_s,
        rss_kb,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let s = sample(None).expect("/proc/self");
        assert!(s.rss_kb > 0);
        assert!(s.cpu_s() > 0.0);
        let by_pid = sample(Some(std::process::id())).expect("/proc/pid");
        assert!(by_pid.rss_kb > 0);
    }
}
