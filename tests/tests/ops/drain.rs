//! SIGTERM drain of a real `chorus` process.

use std::time::Duration;

use chorus_tests::{AudioClient, Server};
use serde_json::json;

use super::{join, json, SECONDS};

/// Long enough never to end a test's call by itself.
const LONG_GRACE: &str = "120";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_keeps_calls_and_exits_when_empty() -> anyhow::Result<()> {
    let mut server = Server::start(&["--shutdown-grace-period-secs", LONG_GRACE]).await?;
    let (mut ada, _) = join(&server, "call", "ada").await?;
    let mut ada_media = AudioClient::start(&mut ada, 3, 440.0, 0.3).await?;
    let (mut bob, _) = join(&server, "call", "bob").await?;
    let mut bob_media = AudioClient::start(&mut bob, 3, 660.0, 0.3).await?;
    ada_media.wait_connected(SECONDS).await?;
    bob_media.wait_connected(SECONDS).await?;

    server.signal(libc::SIGTERM)?;
    // Every client is told, with the time left.
    for signal in [&mut ada, &mut bob] {
        let notice = signal.expect("draining", SECONDS).await?;
        let grace = notice["grace_period_secs"].as_u64().unwrap_or(0);
        assert!((1..=120).contains(&grace), "{notice}");
    }
    // Not ready, still healthy; joins refused; the admin API reports the drain.
    assert_eq!(server.http_get("/readyz").await?.0, 503);
    assert_eq!(server.http_get("/healthz").await?.0, 200);
    let token = server.token("call", "carol", &[])?;
    let mut carol = chorus_tests::Signal::connect(&server.ws_url()).await?;
    carol
        .send(json!({"type": "join", "protocol": 1, "token": token}))
        .await?;
    assert_eq!(carol.expect("error", SECONDS).await?["code"], "draining");
    let admin = server.admin_token()?;
    let (status, body) = server
        .admin("GET", "/admin/v1/drain", Some(&admin), None)
        .await?;
    assert_eq!(status, 200);
    let drain = json(&body);
    assert_eq!(
        (drain["draining"].as_bool(), drain["participants"].as_u64()),
        (Some(true), Some(2))
    );
    assert_eq!(server.metric("chorus_draining").await?, 1.0);

    // The call goes on: bob keeps hearing ada.
    let heard = || bob_media.heard.lock().map(|h| h.packets.len()).unwrap_or(0);
    let before = heard();
    let deadline = std::time::Instant::now() + SECONDS;
    while heard() < before + 25 {
        assert!(
            std::time::Instant::now() < deadline,
            "audio stopped during the drain"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(server.running());

    // One leaves: the server waits for the other.
    ada.send(json!({"type": "leave"})).await?;
    ada.expect("left", SECONDS).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(server.running(), "exited with a call in progress");
    // The last one leaves: the server exits cleanly.
    bob.send(json!({"type": "leave"})).await?;
    let status = server.wait_exit(SECONDS * 2).await?;
    assert!(status.success(), "{status}");
    let _ = ada_media.stop().await;
    let _ = bob_media.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_sigterm_exits_at_once() -> anyhow::Result<()> {
    let mut server = Server::start(&["--shutdown-grace-period-secs", LONG_GRACE]).await?;
    let (mut ada, _) = join(&server, "call", "ada").await?;
    server.signal(libc::SIGTERM)?;
    ada.expect("draining", SECONDS).await?;
    assert!(server.running());
    server.signal(libc::SIGTERM)?;
    let status = server.wait_exit(SECONDS * 2).await?;
    assert_eq!(status.code(), Some(143), "{status}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grace_period_ends_remaining_calls_with_going_away() -> anyhow::Result<()> {
    let mut server = Server::start(&["--shutdown-grace-period-secs", "1"]).await?;
    let (mut ada, _) = join(&server, "call", "ada").await?;
    server.signal(libc::SIGTERM)?;
    let notice = ada.expect("draining", SECONDS).await?;
    assert_eq!(notice["grace_period_secs"], 1);
    // ada never leaves: after the grace period the server closes her socket and exits.
    assert!(ada.recv(SECONDS).await?.is_none(), "the socket stays open");
    let status = server.wait_exit(SECONDS * 2).await?;
    assert!(status.success(), "{status}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chorus_drain_command_drains_and_waits_for_the_last_call() -> anyhow::Result<()> {
    let mut server = Server::start(&["--shutdown-grace-period-secs", LONG_GRACE]).await?;
    let (mut ada, _) = join(&server, "call", "ada").await?;
    let url = format!("http://{}", server.http);
    let bin = chorus_tests::chorus_bin()?;
    // What a Kubernetes preStop hook runs.
    let out = std::process::Command::new(&bin)
        .args(["drain", "--url", &url])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ada.expect("draining", SECONDS).await?;
    assert_eq!(server.http_get("/readyz").await?.0, 503);
    assert!(
        server.running(),
        "the drain command does not stop the process"
    );

    let mut waiting = std::process::Command::new(&bin)
        .args(["drain", "--url", &url, "--wait"])
        .stdout(std::process::Stdio::null())
        .spawn()?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        waiting.try_wait()?.is_none(),
        "returned with a call in progress"
    );
    ada.send(json!({"type": "leave"})).await?;
    let deadline = std::time::Instant::now() + SECONDS;
    let status = loop {
        if let Some(status) = waiting.try_wait()? {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "drain --wait never returned"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success());
    // Then SIGTERM finds an empty server and it exits at once.
    server.signal(libc::SIGTERM)?;
    assert!(server.wait_exit(SECONDS).await?.success());
    Ok(())
}
