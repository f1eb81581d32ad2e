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
