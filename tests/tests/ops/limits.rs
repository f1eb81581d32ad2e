//! Issue 10 items 3 to 5 against the real binary: connection limits and deadlines, room squatting
//! (identity replacement, kick bans), and development mode refused on a network listener.

use std::process::Command;

use chorus_tests::chorus_bin;

#[test]
fn dev_mode_on_a_network_listener_is_refused_without_the_unsafe_flag() {
    let bin = chorus_bin().expect("the chorus binary builds");
    let out = Command::new(&bin)
        .args(["--http-listen", "0.0.0.0:0", "--media-port-start", "1"])
        .env_remove("CHORUS_API_KEY")
        .env_remove("CHORUS_API_SECRET")
        .output()
        .expect("chorus runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("refusing development mode on the non-loopback listener 0.0.0.0:0"),
        "{stderr}"
    );
    assert!(stderr.contains("--unsafe-dev-mode-on-network"), "{stderr}");
    // Nothing started: no ready banner.
    assert!(!stdout.contains("ready"), "{stdout}");
    // With real keys development mode is off, and the same listener is accepted (checked without
    // serving, through --print-config).
    let out = Command::new(&bin)
        .args(["--http-listen", "0.0.0.0:0", "--print-config"])
        .env("CHORUS_API_KEY", "prod")
        .env("CHORUS_API_SECRET", "0123456789abcdef0123456789abcdef")
        .output()
        .expect("chorus runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // And with the unsafe flag the operator's explicit choice is accepted.
    let out = Command::new(&bin)
        .args([
            "--http-listen",
            "0.0.0.0:0",
            "--unsafe-dev-mode-on-network",
            "--print-config",
        ])
        .output()
        .expect("chorus runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_development_key_is_refused_once_real_keys_are_configured() -> anyhow::Result<()> {
    use std::time::{SystemTime, UNIX_EPOCH};
    // Development mode is asked for (the default) but a real key is configured.
    let server = chorus_tests::Server::start_with_env(
        &["--dev-mode", "true"],
        &[
            ("CHORUS_API_KEY", "prod"),
            ("CHORUS_API_SECRET", "0123456789abcdef0123456789abcdef"),
        ],
    )
    .await?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let dev_admin = signaling::auth::create_admin_token(
        "devkey",
        "chorus-development-secret-do-not-use-in-production",
        &signaling::auth::AdminClaims {
            iss: "devkey".into(),
            sub: "mallory".into(),
            exp: now + 600,
            nbf: None,
            iat: Some(now),
            admin: true,
        },
    )?;
    let (status, body) = server
        .admin("GET", "/admin/v1/rooms", Some(&dev_admin), None)
        .await?;
    assert_eq!(status, 401, "{body}");
    // The token endpoint of development mode is off too.
    let (status, _) = server
        .http_get("/api/dev-token?room=lobby&identity=ada")
        .await?;
    assert_eq!(status, 404);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_join_with_the_same_identity_replaces_the_first() -> anyhow::Result<()> {
    let server = chorus_tests::Server::start(&["--room-max-participants", "2"]).await?;
    let (mut first, joined) = super::join(&server, "squat", "ada").await?;
    let first_sid = joined["participant"]["sid"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let (mut bob, _) = super::join(&server, "squat", "bob").await?;
    // The room is full (2); ada's second session takes her seat instead of a third one.
    let (_second, joined) = super::join(&server, "squat", "ada").await?;
    assert_ne!(joined["participant"]["sid"], first_sid.as_str());
    assert_eq!(joined["participants"].as_array().map(Vec::len), Some(1));
    let left = first.expect("left", super::SECONDS).await?;
    assert_eq!(left["reason"], "replaced", "{left}");
    assert_eq!(
        first.close_frame(super::SECONDS).await?,
        Some((1000, "replaced".to_owned()))
    );
    let gone = bob.expect("participant_left", super::SECONDS).await?;
    assert_eq!(
        (gone["sid"].as_str(), gone["reason"].as_str()),
        (Some(first_sid.as_str()), Some("replaced"))
    );
    bob.expect("participant_joined", super::SECONDS).await?;
    // One token cannot fill the room: ten more joins as ada still leave two participants.
    let mut copies = Vec::new();
    for _ in 0..10 {
        copies.push(super::join(&server, "squat", "ada").await?.0);
    }
    let (status, body) = server
        .admin(
            "GET",
            "/admin/v1/rooms/squat/participants",
            Some(&server.admin_token()?),
            None,
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        super::json(&body)["participants"].as_array().map(Vec::len),
        Some(2),
        "{body}"
    );
    assert_eq!(
        server
            .metric("chorus_session_limits_total{reason=\"identity_replaced\"}")
            .await?,
        11.0
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kicked_identity_cannot_rejoin_during_the_ban() -> anyhow::Result<()> {
    let config = std::env::temp_dir().join(format!("chorus-ban-{}.toml", std::process::id()));
    std::fs::write(&config, "[room]\nkick_ban_secs = 3\n")?;
    let config_path = config.display().to_string();
    let server = chorus_tests::Server::start(&["--config", &config_path]).await?;
    let admin = server.admin_token()?;
    let (mut ada, joined) = super::join(&server, "standup", "ada").await?;
    let sid = joined["participant"]["sid"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let path = format!("/admin/v1/rooms/standup/participants/{sid}");
    let (status, body) = server.admin("DELETE", &path, Some(&admin), None).await?;
    assert_eq!(status, 204, "{body}");
    assert_eq!(
        ada.expect("left", super::SECONDS).await?["reason"],
        "kicked"
    );
    let kicked_at = std::time::Instant::now();
    // Rejoining with the same token is refused while the ban lasts.
    let token = server.token("standup", "ada", &[])?;
    let mut again = chorus_tests::Signal::connect(&server.ws_url()).await?;
    again
        .send(serde_json::json!({"type": "join", "protocol": 1, "token": token}))
        .await?;
    let error = again.expect("error", super::SECONDS).await?;
    assert_eq!(error["code"], "banned", "{error}");
    assert_eq!(
        again.close_frame(super::SECONDS).await?.map(|c| c.0),
        Some(1008)
    );
    assert_eq!(
        server
            .metric("chorus_session_limits_total{reason=\"banned\"}")
            .await?,
        1.0
    );
    assert_eq!(
        server
            .metric("chorus_joins_total{result=\"banned\"}")
            .await?,
        1.0
    );
    // Someone else may join meanwhile.
    super::join(&server, "standup", "bob").await?;
    // After the ban (3 s here) the same token is admitted again.
    tokio::time::sleep(std::time::Duration::from_secs(3).saturating_sub(kicked_at.elapsed())).await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let mut back = chorus_tests::Signal::connect(&server.ws_url()).await?;
    back.join(&token, "standup").await?;
    let _ = std::fs::remove_file(&config);
    Ok(())
}
