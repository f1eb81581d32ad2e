//! TURN credentials in `joined` from the real binary configured through the environment (the relay itself,
//! with a real coturn and browsers, is tests/browser/turn.test.js).

use std::process::Command;

use chorus_tests::{chorus_bin, Server, Signal};

use super::SECONDS;

const URLS: &str = "turn:127.0.0.1:3478?transport=udp,turns:turn.example.com:443?transport=tcp";
const SECRET: &str = "e2e-turn-shared-secret";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joined_carries_turn_credentials_from_the_environment() -> anyhow::Result<()> {
    let server = Server::start_with_env(
        &[],
        &[("CHORUS_TURN_URLS", URLS), ("CHORUS_TURN_SECRET", SECRET)],
    )
    .await?;
    let before = signaling::auth::unix_now();
    let mut signal = Signal::connect(&server.ws_url()).await?;
    let token = server.token("relayed", "ada", &[])?;
    let joined = signal
        .client()
        .join(&token, Some("relayed"), None, SECONDS)
        .await?;
    let after = signaling::auth::unix_now();
    let [ice] = joined.ice_servers.as_slice() else {
        panic!("one ICE server entry: {:?}", joined.ice_servers)
    };
    assert_eq!(
        ice.urls,
        [
            "turn:127.0.0.1:3478?transport=udp",
            "turns:turn.example.com:443?transport=tcp"
        ]
    );
    let (expiry, sid) = ice.username.split_once(':').expect("expiry:sid");
    assert_eq!(sid, joined.participant.sid);
    let expiry: u64 = expiry.parse()?;
    // Issued between `before` and `after`, for the default day.
    assert!(
        (before + 86_400..=after + 86_400).contains(&expiry),
        "default ttl: {} s after the join began",
        expiry.saturating_sub(before)
    );
    assert_eq!(
        ice.credential,
        signaling::turn::credential(SECRET, sid, expiry).1
    );
    assert_eq!(
        server
            .metric("chorus_turn_credentials_issued_total")
            .await?,
        1.0
    );
    // The secret is nowhere in the server's output.
    assert!(!server.log_tail().contains(SECRET));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_turn_joined_has_no_ice_servers() -> anyhow::Result<()> {
    let server = Server::start(&[]).await?;
    let (_signal, joined) = super::join(&server, "direct", "bob").await?;
    assert!(joined.get("ice_servers").is_none(), "{joined}");
    assert_eq!(
        server
            .metric("chorus_turn_credentials_issued_total")
            .await?,
        0.0
    );
    Ok(())
}

#[test]
fn print_config_redacts_the_turn_secret_and_bad_urls_are_refused() {
    let bin = chorus_bin().expect("chorus binary");
    let out = Command::new(&bin)
        .arg("--print-config")
        .env("CHORUS_TURN_URLS", URLS)
        .env("CHORUS_TURN_SECRET", SECRET)
        .output()
        .expect("chorus runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stdout.contains(SECRET), "{stdout}");
    assert!(stdout.contains("secret = \"<redacted>\""), "{stdout}");
    let out = Command::new(&bin)
        .arg("--print-config")
        .env("CHORUS_TURN_URLS", "stun:127.0.0.1:3478")
        .env("CHORUS_TURN_SECRET", SECRET)
        .output()
        .expect("chorus runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("turn.urls"), "{stderr}");
    assert!(!stderr.contains(SECRET), "{stderr}");
}
