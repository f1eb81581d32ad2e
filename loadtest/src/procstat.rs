//! CPU time and memory of a process, from /proc.

use std::path::PathBuf;

/// CPU seconds (user, system) and resident memory of a process at one moment.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct ProcSample {
    pub user_s: f64,
    pub system_s: f64,
    pub rss_kb: u64,
    /// The anonymous part of `rss_kb` (`RssAnon`): the process' private memory, without the file pages it
    /// maps (its binary's code and shared libraries, which the page cache holds once for every process).
    pub rss_anon_kb: u64,
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
    // sysconf(_SC_CLK_TCK), which the kernel passes in the auxiliary vector.
    let t = rustix::param::clock_ticks_per_second();
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
    let kb = |field: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(ProcSample {
        user_s,
        system_s,
        rss_kb: kb("VmRSS:"),
        rss_anon_kb: kb("RssAnon:"),
    })
}

/// UDP sockets of process `pid` and the datagrams the kernel dropped on them (full receive queue), from
/// the `drops` column of /proc/PID/net/udp and udp6 for the socket inodes among the process' descriptors.
pub fn udp_drops(pid: u32) -> Result<(usize, u64), ProcError> {
    let inodes = socket_inodes(pid)?;
    let (mut sockets, mut drops) = (0, 0);
    for table in ["udp", "udp6"] {
        let path = PathBuf::from(format!("/proc/{pid}/net/{table}"));
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let (s, d) = udp_table_drops(&text, &inodes);
        sockets += s;
        drops += d;
    }
    Ok((sockets, drops))
}

/// The inodes of the sockets among process `pid`'s open descriptors.
pub fn socket_inodes(pid: u32) -> Result<std::collections::HashSet<String>, ProcError> {
    let fd_dir = PathBuf::from(format!("/proc/{pid}/fd"));
    let mut inodes = std::collections::HashSet::new();
    for e in std::fs::read_dir(&fd_dir).map_err(|e| ProcError::Read(fd_dir.clone(), e))? {
        let Ok(e) = e else { continue };
        if let Ok(link) = std::fs::read_link(e.path()) {
            let l = link.to_string_lossy();
            if let Some(i) = l.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                inodes.insert(i.to_owned());
            }
        }
    }
    Ok(inodes)
}

/// One socket of a /proc/net/udp (or udp6) table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpRow {
    pub local_port: u16,
    pub inode: String,
    /// Datagrams dropped on its full receive queue.
    pub drops: u64,
}

/// The sockets of a /proc/net/udp table.
pub fn udp_table(text: &str) -> Vec<UdpRow> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
            if f.len() < 13 {
                return None;
            }
            Some(UdpRow {
                local_port: u16::from_str_radix(f[1].rsplit(':').next()?, 16).ok()?,
                inode: f[9].to_owned(),
                drops: f[f.len() - 1].parse().unwrap_or(0),
            })
        })
        .collect()
}

/// Sockets of `inodes` in a /proc/net/udp table and the sum of their `drops` (the last column).
pub fn udp_table_drops(text: &str, inodes: &std::collections::HashSet<String>) -> (usize, u64) {
    udp_table(text)
        .iter()
        .filter(|row| inodes.contains(&row.inode))
        .fold((0, 0), |(sockets, drops), row| {
            (sockets + 1, drops + row.drops)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_drops_are_read_for_the_process_sockets_only() {
        let table = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
  1: 0100007F:1EC8 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 111 2 0000000000000000 17\n\
  2: 0100007F:1EC9 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 222 2 0000000000000000 5\n";
        let ours: std::collections::HashSet<String> = ["111".to_string()].into();
        assert_eq!(udp_table_drops(table, &ours), (1, 17));
        assert_eq!(
            udp_table(table)[1],
            UdpRow {
                local_port: 0x1EC9,
                inode: "222".into(),
                drops: 5
            }
        );
        let _socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a loopback socket");
        let (sockets, _) = udp_drops(std::process::id()).expect("our /proc");
        assert!(sockets >= 1);
    }

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        // Busy for 50 ms of CPU time (the exact thread clock): /proc counts whole 10 ms clock ticks.
        let start = crate::floor::thread_cpu().total;
        let mut x = 0u64;
        while crate::floor::thread_cpu().total - start < std::time::Duration::from_millis(50) {
            for i in 0..100_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
        }
        std::hint::black_box(x);
        let s = sample(None).expect("/proc/self");
        assert!(s.rss_kb > 0);
        assert!(s.rss_anon_kb > 0 && s.rss_anon_kb <= s.rss_kb, "{s:?}");
        assert!(s.cpu_s() > 0.0);
        let by_pid = sample(Some(std::process::id())).expect("/proc/pid");
        assert!(by_pid.rss_kb > 0);
    }
}
