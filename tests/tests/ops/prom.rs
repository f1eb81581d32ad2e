//! The metrics as Prometheus sees them: `promtool check metrics` on the live output, the deploy rules and
//! scrape config checked by `promtool`, every documented / alerted / charted metric exists, and a real
//! Prometheus server scrapes a running chorus and answers a query about it.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chorus_tests::{http_request, AudioClient, Server, Signal};

use super::{join, json, root, SECONDS};

/// A Prometheus tool: `$CHORUS_<NAME>` (e.g. CHORUS_PROMTOOL), else on PATH, else /usr/bin.
fn tool(name: &str) -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var(format!("CHORUS_{}", name.to_uppercase())) {
        return Ok(PathBuf::from(path));
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/bin").join(name)])
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "{name} not found: install the Debian package prometheus (scripts/test.sh does)"
            )
        })
}

/// Metric family names in Prometheus text output (`# TYPE name kind` lines).
fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Every `chorus_...` name mentioned in `text`, with histogram suffixes removed.
fn mentioned(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("chorus_") {
        let start = i + at;
        let preceded =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = text[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(text.len(), |n| start + n);
        // A bare prefix ("the `chorus_` prefix", `chorus_webhook_*`) names no metric.
        if !preceded && !text[start..end].ends_with('_') {
            let name = &text[start..end];
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            names.insert(base.to_owned());
        }
        i = end;
    }
    names
}

fn run(tool: &Path, args: &[&str], stdin: Option<&str>) -> anyhow::Result<(bool, String)> {
    let mut child = Command::new(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", tool.display()))?;
    let mut input = child.stdin.take().context("stdin")?;
    input.write_all(stdin.unwrap_or("").as_bytes())?;
    drop(input);
    let out = child.wait_with_output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

/// A server with some traffic behind it, so histograms and counters have data.
async fn server_with_a_call() -> anyhow::Result<(Server, Vec<AudioClient>, Vec<Signal>)> {
    let server = Server::start(&[]).await?;
    let mut clients = Vec::new();
    let mut signals = Vec::new();
    for (identity, freq) in [("ada", 440.0), ("bob", 660.0)] {
        let (mut signal, _) = join(&server, "metrics", identity).await?;
        let mut client = AudioClient::start(&mut signal, 3, freq, 0.3).await?;
        client.wait_connected(SECONDS).await?;
        clients.push(client);
        signals.push(signal);
    }
    let deadline = Instant::now() + SECONDS;
    while server
        .metric("chorus_forwarding_latency_seconds_count")
        .await?
        < 10.0
    {
        if Instant::now() > deadline {
            bail!("no forwarding observed: {}", server.log_tail());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((server, clients, signals))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_match_docs_rules_and_dashboard() -> anyhow::Result<()> {
    let promtool = tool("promtool")?;
    let (server, clients, _signals) = server_with_a_call().await?;
    let (status, text) = server.http_get("/metrics").await?;
    assert_eq!(status, 200);

    let (ok, out) = run(&promtool, &["check", "metrics"], Some(&text))?;
    assert!(
        ok && out.trim().is_empty(),
        "promtool check metrics:\n{out}"
    );

    let exposed = families(&text);
    let chorus: BTreeSet<String> = exposed
        .iter()
        .filter(|n| n.starts_with("chorus_"))
        .cloned()
        .collect();
    assert!(chorus.len() >= 40, "{chorus:?}");
    for needed in [
        "chorus_rooms",
        "chorus_participants",
        "chorus_joins_total",
        "chorus_leaves_total",
        "chorus_udp_received_bytes_total",
        "chorus_packets_dropped_total",
        "chorus_rtcp_nacks_received_total",
        "chorus_rtt_seconds",
        "chorus_jitter_seconds",
        "chorus_forwarding_latency_seconds",
        "chorus_udp_receive_delay_seconds",
        "chorus_mixer_tick_duration_seconds",
        "chorus_mixer_ticks_late_total",
        "chorus_mixer_ticks_skipped_total",
        "chorus_mixer_grid_moves_total",
        "chorus_jitter_buffer_delay_seconds",
        "chorus_jitter_buffer_concealed_frames_total",
        "chorus_jitter_buffer_delay_peaks_total",
        "chorus_join_latency_seconds",
        "chorus_signaling_errors_total",
        "chorus_worker_busy_seconds_total",
        "chorus_worker_core_seconds_total",
    ] {
        assert!(chorus.contains(needed), "{needed} missing");
    }
    assert!(exposed.contains("process_resident_memory_bytes"));
    // Forwarding latency buckets start at 10 µs.
    assert!(text.contains("chorus_forwarding_latency_seconds_bucket{le=\"0.00001\"}"));
    // No per-room or per-participant labels.
    for line in text.lines().filter(|l| l.starts_with("chorus_")) {
        assert!(
            !line.contains("room=") && !line.contains("participant=") && !line.contains("sid="),
            "{line}"
        );
    }

    // docs/metrics.md documents exactly what is exposed.
    let doc = std::fs::read_to_string(root().join("docs/metrics.md"))?;
    let documented = mentioned(&doc);
    let undocumented: Vec<_> = chorus.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "not in docs/metrics.md: {undocumented:?}"
    );
    // The cluster's metrics exist only on a node with a `cluster` section (tests/tests/cluster checks them).
    let stale: Vec<_> = documented
        .difference(&chorus)
        .filter(|name| !name.starts_with("chorus_cluster_"))
        .collect();
    assert!(stale.is_empty(), "documented but not exposed: {stale:?}");

    // The deploy files are valid and only use metrics that exist.
    let deploy = root().join("deploy");
    let rules = deploy.join("prometheus/alerts.yml");
    let (ok, out) = run(
        &promtool,
        &["check", "rules", &rules.to_string_lossy()],
        None,
    )?;
    assert!(ok, "promtool check rules:\n{out}");
    let config = deploy.join("prometheus/prometheus.yml");
    let (ok, out) = run(
        &promtool,
        &["check", "config", &config.to_string_lossy()],
        None,
    )?;
    assert!(ok, "promtool check config:\n{out}");
    let (ok, out) = run(
        &promtool,
        &[
            "test",
            "rules",
            &deploy.join("prometheus/alerts_test.yml").to_string_lossy(),
        ],
        None,
    )?;
    assert!(ok, "promtool test rules:\n{out}");
    for file in ["prometheus/alerts.yml", "grafana/chorus-dashboard.json"] {
        let text = std::fs::read_to_string(deploy.join(file))?;
        let unknown: Vec<_> = mentioned(&text)
            .into_iter()
            .filter(|n| !chorus.contains(n))
            .collect();
        assert!(
            unknown.is_empty(),
            "{file} uses unknown metrics: {unknown:?}"
        );
    }
    let dashboard = json(&std::fs::read_to_string(
        deploy.join("grafana/chorus-dashboard.json"),
    )?);
    assert!(dashboard["panels"]
        .as_array()
        .is_some_and(|p| p.len() >= 10));
    for client in clients {
        client.stop().await?;
    }
    Ok(())
}

/// A Prometheus server, killed on drop.
struct Prometheus {
    child: Child,
    dir: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_chorus() -> anyhow::Result<()> {
    let binary = tool("prometheus")?;
    let server = Server::start(&[]).await?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let dir = std::env::temp_dir().join(format!("chorus-prometheus-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let rules = root().join("deploy/prometheus/alerts.yml").canonicalize()?;
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n\
         scrape_configs:\n  - job_name: chorus\n    static_configs:\n      - targets: ['{}']\n",
        rules.display(),
        server.http
    );
    std::fs::write(dir.join("prometheus.yml"), config)?;
    let log = std::fs::File::create(dir.join("prometheus.log"))?;
    let child = Command::new(&binary)
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let prometheus = Prometheus { child, dir };
    let addr = format!("127.0.0.1:{port}").parse()?;

    // A chorus metric read back through the query API.
    let query = "/api/v1/query?query=chorus_build_info";
    let deadline = Instant::now() + Duration::from_secs(60);
    let result = loop {
        if let Ok((200, body)) = http_request(addr, "GET", query, &[], None).await {
            let v = json(&body);
            if let Some(first) = v["data"]["result"].as_array().and_then(|r| r.first()) {
                break first.clone();
            }
        }
        if Instant::now() > deadline {
            let log =
                std::fs::read_to_string(prometheus.dir.join("prometheus.log")).unwrap_or_default();
            bail!("Prometheus never scraped chorus; its log:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(result["metric"]["job"], "chorus");
    assert_eq!(result["metric"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(result["value"][1], "1");

    // The deploy alert rules loaded and evaluate without errors.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = http_request(addr, "GET", "/api/v1/rules", &[], None).await?;
        let groups = json(&body)["data"]["groups"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let rules: Vec<serde_json::Value> = groups
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        let evaluated = !rules.is_empty()
            && rules
                .iter()
                .all(|r| r["health"] == "ok" && r["lastEvaluation"] != "0001-01-01T00:00:00Z");
        if evaluated {
            break;
        }
        let failing: Vec<_> = rules.iter().filter(|r| r["health"] == "err").collect();
        assert!(failing.is_empty(), "rules failing: {failing:?}");
        assert!(Instant::now() < deadline, "rules not evaluated: {body}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drop(prometheus);
    Ok(())
}
