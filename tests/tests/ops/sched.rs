//! The media workers' scheduler slice (`media.worker_slice_us`, server/src/worker/sched.rs), as the kernel
//! reports it for the real process's threads in `/proc/<pid>/task/<tid>/sched`.

use chorus_tests::Server;

/// Whether this kernel honours a fair thread's own slice (Linux 6.12 on).
fn custom_slices() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.trim().split(['.', '-']);
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor) >= (6, 12)
}

/// `se.slice` (ns) of each thread of `pid` whose name starts with `prefix`.
fn slices(pid: u32, prefix: &str) -> anyhow::Result<Vec<u64>> {
    let mut found = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let dir = task?.path();
        let comm = std::fs::read_to_string(dir.join("comm"))?;
        if !comm.trim().starts_with(prefix) {
            continue;
        }
        let sched = std::fs::read_to_string(dir.join("sched"))?;
        let slice: Option<u64> = sched
            .lines()
            .find(|l| l.trim_start().starts_with("se.slice"))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|v| v.trim().parse().ok());
        found.extend(slice);
    }
    Ok(found)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_workers_ask_for_a_short_scheduler_slice_and_nothing_else_does() -> anyhow::Result<()>
{
    if !custom_slices() {
        println!(
            "sched: this kernel has no custom slices for fair threads (Linux 6.12); not checked"
        );
        return Ok(());
    }
    let server = Server::start(&["--workers", "2"]).await?;
    let workers = slices(server.pid(), "chorus-media")?;
    let main = slices(server.pid(), "")?;
    println!("sched: worker slices {workers:?} ns; all threads {main:?} ns");
    assert_eq!(
        workers,
        [100_000, 100_000],
        "each worker runs with a 0.1 ms slice"
    );
    assert!(
        main.len() > workers.len()
            && main.iter().filter(|&&s| s == 100_000).count() == workers.len(),
        "only the media workers ask for a slice: {main:?}"
    );

    // 0 keeps the kernel's default: the workers' slice is the other threads'.
    let config = std::env::temp_dir().join(format!("chorus-slice-{}.toml", std::process::id()));
    std::fs::write(&config, "[media]\nworker_slice_us = 0\n")?;
    let default = Server::start(&["--config", &config.to_string_lossy()]).await?;
    let workers = slices(default.pid(), "chorus-media")?;
    let all = slices(default.pid(), "")?;
    let _ = std::fs::remove_file(&config);
    assert_eq!(workers.len(), 1);
    assert!(
        workers[0] != 100_000 && all.iter().all(|&s| s == workers[0]),
        "worker_slice_us = 0: every thread has the kernel's slice: {all:?}"
    );
    Ok(())
}
