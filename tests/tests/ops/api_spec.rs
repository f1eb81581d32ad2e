//! docs/openapi.json against the real server, property-based: schemathesis (PyPI, in `.venv`;
//! scripts/test.sh installs it, `$CHORUS_SCHEMATHESIS` overrides the path) generates requests from the
//! spec, valid and invalid, with every check on (server errors, status codes, response schemas and
//! headers, schema-valid requests accepted, schema-invalid ones refused, 405 with `Allow`, ...) and a
//! stateful phase that follows the spec's links (create room → get / delete / participants → kick /
//! mute). Participants are real: a background task keeps two signaling clients in the room [`LOBBY`],
//! rejoining with a fresh identity whenever one is kicked or the room is deleted, so the kick and mute
//! links reach real participants (`GET /admin/v1/rooms` → `rooms/0` → participants → kick / mute).
//!
//! Run here (not as a separate scripts/test.sh step) because the harness starts the server, mints the
//! admin token and joins the participants; the seed and example count are fixed, so the run is
//! reproducible and bounded (about three minutes: see [`MAX_EXAMPLES`]).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use chorus_tests::{Server, Signal};

use super::{join, json, root};

/// `-` is the least name the room-name pattern allows, so this room is always `rooms/0` in the
/// name-sorted room list, where the spec's links from `GET /admin/v1/rooms` start.
const LOBBY: &str = "-";
/// Fixed, so a failure reproduces with the same command.
const SEED: &str = "20261130";
/// Test cases per operation and phase. The fuzzing phase is bound by schemathesis' own generation (one
/// Python thread at a full core; the server idles): with 35 operations, 300 made 7,860 requests in 329 s,
/// the longest test of the suite by minutes. 150 halves that; the coverage phase (boundary values and
/// invalid inputs derived from each schema) does not depend on this count.
const MAX_EXAMPLES: &str = "150";

fn schemathesis() -> anyhow::Result<PathBuf> {
    let path = std::env::var("CHORUS_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join(".venv/bin/schemathesis"));
    anyhow::ensure!(
        path.is_file(),
        "{} not found: scripts/test.sh installs schemathesis into .venv",
        path.display()
    );
    Ok(path)
}

/// Runs schemathesis against `server` with `args` added; returns (success, requests made, output).
async fn run_schemathesis(
    server: &Server,
    token: &str,
    args: &[&str],
) -> anyhow::Result<(bool, usize, String)> {
    let har = std::env::temp_dir().join(format!(
        "chorus-schemathesis-{}-{}.har",
        std::process::id(),
        server.http.port()
    ));
    let out = tokio::process::Command::new(schemathesis()?)
        .current_dir(root())
        .args(["--config-file", "tests/api/schemathesis.toml", "--no-color"])
        .args(["run", "docs/openapi.json"])
        .args(["--url", &format!("http://{}", server.http)])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--checks", "all", "--seed", SEED])
        // Not use_after_free: deleting an occupied room is asynchronous (its participants are told and
        // disconnected; docs/openapi.json), and the lobby's keeper rejoins at once, so a GET right after
        // the DELETE may find the room. Reported as an open question (202 for an occupied room?).
        .args(["--exclude-checks", "use_after_free"])
        .args(["--max-examples", MAX_EXAMPLES, "--workers", "1"])
        .args(["--report", "har", "--report-har-path"])
        .arg(&har)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .context("running schemathesis")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let requests = std::fs::read_to_string(&har)
        .map(|h| json(&h)["log"]["entries"].as_array().map_or(0, Vec::len))
        .unwrap_or(0);
    let _ = std::fs::remove_file(&har);
    Ok((out.status.success(), requests, text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_agrees_with_its_openapi_document() -> anyhow::Result<()> {
    let _one_at_a_time = chorus_tests::cpu_heavy().await;
    let st = schemathesis()?;
    // Recording on, into a directory of this test's own, so the recording routes do their work (every
    // room made with `record` records; no cap is reached in one run). RTP ingest endpoints likewise: the
    // fuzzing phase opens well over the default 100, and a 503 at the cap would count as a server error.
    let base = std::env::temp_dir().join(format!("chorus-api-spec-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base)?;
    let config = base.join("chorus.toml");
    // Playout on, with an empty media directory: its routes check names and answer.
    let media = base.join("media");
    std::fs::create_dir_all(&media)?;
    std::fs::write(
        &config,
        format!(
            "[recording]\nenabled = true\nmax_active = 10000\ndir = \"{}\"\n\
             [playout]\nmedia_dir = \"{}\"\n\
             [ingest]\nmax_sources = 10000\n",
            base.join("recordings").display(),
            media.display()
        ),
    )?;
    let config_arg = config.to_str().context("a UTF-8 temp path")?.to_owned();
    let server = std::sync::Arc::new(Server::start(&["--config", &config_arg]).await?);
    let admin = server.admin_token()?;

    // Keep two participants in the lobby.
    let keeper = {
        let server = server.clone();
        let admin = admin.clone();
        tokio::spawn(async move {
            let mut held: Vec<Signal> = Vec::new();
            let mut n = 0;
            loop {
                let present = match server
                    .admin(
                        "GET",
                        &format!("/admin/v1/rooms/{LOBBY}/participants"),
                        Some(&admin),
                        None,
                    )
                    .await
                {
                    Ok((200, body)) => json(&body)["participants"].as_array().map_or(0, Vec::len),
                    _ => 0,
                };
                for _ in present..2 {
                    n += 1;
                    if let Ok((signal, _)) = join(&server, LOBBY, &format!("guest-{n}")).await {
                        held.push(signal);
                    }
                }
                // Kicked participants' sockets are closed by the server; forget them now and then.
                if held.len() > 20 {
                    held.drain(..held.len() - 2);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Everything but the drain, which is one-way: it turns every later room creation into 503.
    let (ok, requests, out) =
        run_schemathesis(&server, &admin, &["--exclude-operation-id", "startDrain"]).await?;
    println!(
        "schemathesis ({}): {requests} requests\n{out}",
        st.display()
    );
    assert!(ok, "schemathesis found failures:\n{out}");
    assert!(requests > 1000, "too few requests ({requests}):\n{out}");
    // Whether the kick and mute links reached the lobby's participants depends on the stateful phase's
    // path and the keeper's timing: shown, not asserted.
    if let Some(links) = out.lines().find(|l| l.contains("API Links:")) {
        println!("stateful phase: {}", links.trim());
    }
    keeper.abort();

    // Then the drain operations, last (the server drains).
    let (ok, drain_requests, out) = run_schemathesis(
        &server,
        &admin,
        &[
            "--include-operation-id",
            "startDrain",
            "--include-operation-id",
            "drainStatus",
            // No links between the two: nothing stateful to test.
            "--phases",
            "examples,coverage,fuzzing",
        ],
    )
    .await?;
    println!("schemathesis, drain: {drain_requests} requests\n{out}");
    assert!(
        ok,
        "schemathesis found failures in the drain operations:\n{out}"
    );
    assert_eq!(
        server.http_get("/readyz").await?.0,
        503,
        "the server drains"
    );
    println!(
        "schemathesis made {} requests in all",
        requests + drain_requests
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&base);
    Ok(())
}
