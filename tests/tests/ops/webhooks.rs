//! Webhooks to a local receiver: every lifecycle event arrives, signed, and a failed delivery is retried.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lc_rs::hmac;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use chorus_tests::Server;
use serde_json::{json, Value};

use super::{join, SECONDS};

const DEV_SECRET: &str = "chorus-development-secret-do-not-use-in-production";

#[derive(Clone, Debug)]
struct Delivery {
    id: String,
    timestamp: String,
    signature: String,
    key: String,
    body: String,
}

#[derive(Default)]
struct Receiver {
    deliveries: Vec<Delivery>,
    /// Requests answered 503 so far (the first one is, to force a retry).
    refused: usize,
}

async fn start_receiver() -> anyhow::Result<(std::net::SocketAddr, Arc<Mutex<Receiver>>)> {
    let state = Arc::new(Mutex::new(Receiver::default()));
    let shared = state.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let shared = shared.clone();
            async move {
                let header = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned()
                };
                {
                    let mut receiver = shared.lock().expect("receiver lock");
                    if receiver.refused == 0 {
                        receiver.refused += 1;
                        return StatusCode::SERVICE_UNAVAILABLE;
                    }
                }
                // A slow receiver for room "bye": a delivery counts once answered, and the server must
                // not exit before it has been.
                if body.contains(r#""name":"bye""#) {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                let mut receiver = shared.lock().expect("receiver lock");
                receiver.deliveries.push(Delivery {
                    id: header("webhook-id"),
                    timestamp: header("webhook-timestamp"),
                    signature: header("webhook-signature"),
                    key: header("x-chorus-api-key"),
                    body,
                });
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((addr, state))
}

/// What a receiver does to check a delivery: HMAC-SHA256 over "{id}.{timestamp}.{body}" with the secret.
fn verify(d: &Delivery, secret: &str) -> bool {
    let Some(signature) = d.signature.strip_prefix("v1,") else {
        return false;
    };
    let Ok(tag) = base64::engine::general_purpose::STANDARD.decode(signature) else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let message = format!("{}.{}.{}", d.id, d.timestamp, d.body);
    hmac::verify(&key, message.as_bytes(), &tag).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_retried_and_complete() -> anyhow::Result<()> {
    let (addr, receiver) = start_receiver().await?;
    let config = std::env::temp_dir().join(format!("chorus-webhooks-{}.toml", addr.port()));
    std::fs::write(
        &config,
        format!(
            "[webhooks]\nurls = [\"http://{addr}/hook\"]\ninitial_backoff_ms = 50\nmax_backoff_ms = 200\n"
        ),
    )?;
    let mut server = Server::start(&["--config", &config.to_string_lossy()]).await?;
    let (mut ada, joined) = join(&server, "hooks", "ada").await?;
    let sid = joined["participant"]["sid"].clone();
    ada.send(json!({"type": "leave"})).await?;
    ada.expect("left", SECONDS).await?;

    let expected = [
        "room_started",
        "participant_joined",
        "participant_left",
        "room_finished",
    ];
    let deadline = Instant::now() + SECONDS * 2;
    let deliveries = loop {
        let deliveries = receiver.lock().expect("receiver lock").deliveries.clone();
        if deliveries.len() >= expected.len() {
            break deliveries;
        }
        assert!(
            Instant::now() < deadline,
            "only {} webhooks arrived: {deliveries:?}\n{}",
            deliveries.len(),
            server.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = std::fs::remove_file(&config);

    let mut events: Vec<Value> = Vec::new();
    for d in &deliveries {
        assert_eq!(d.key, "devkey");
        assert!(verify(d, DEV_SECRET), "signature does not verify: {d:?}");
        assert!(!verify(d, "another-secret"), "any secret verifies: {d:?}");
        events.push(serde_json::from_str(&d.body)?);
    }
    // Deliveries run concurrently: compare as a set, then check the content of each.
    let mut names: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    names.sort_unstable();
    let mut want = expected.to_vec();
    want.sort_unstable();
    assert_eq!(names, want);
    for e in &events {
        assert_eq!(e["room"]["name"], "hooks");
        assert_eq!(e["room"]["mode"], "forward");
        assert!(e["id"].as_str().is_some_and(|id| !id.is_empty()));
        if e["event"]
            .as_str()
            .is_some_and(|n| n.starts_with("participant_"))
        {
            assert_eq!(e["participant"]["sid"], sid);
            assert_eq!(e["participant"]["identity"], "ada");
        }
        if e["event"] == "participant_left" {
            assert_eq!(e["reason"], "left");
        }
    }
    // The refused first attempt was retried and counted.
    assert_eq!(receiver.lock().expect("receiver lock").refused, 1);
    assert_eq!(
        server
            .metric("chorus_webhook_attempts_total{outcome=\"http_error\"}")
            .await?,
        1.0
    );
    let delivered = "chorus_webhook_deliveries_total{result=\"delivered\"}";
    let deadline = Instant::now() + SECONDS;
    while server.metric(delivered).await? < 4.0 {
        assert!(Instant::now() < deadline, "deliveries not counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A drain that ends the process still delivers the last room's events (to a slow receiver) before
    // exiting.
    let (mut bob, _) = join(&server, "bye", "bob").await?;
    server.signal(libc::SIGTERM)?;
    bob.expect("draining", SECONDS).await?;
    bob.send(json!({"type": "leave"})).await?;
    assert!(server.wait_exit(SECONDS * 2).await?.success());
    let last: Vec<Value> = receiver
        .lock()
        .expect("receiver lock")
        .deliveries
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(&d.body).ok())
        .filter(|e| e["room"]["name"] == "bye")
        .collect();
    let mut names: Vec<&str> = last.iter().filter_map(|e| e["event"].as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, want, "the last room's events before exit");
    Ok(())
}
