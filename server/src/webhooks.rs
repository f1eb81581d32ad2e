//! Webhooks: room and participant lifecycle events POSTed as JSON to the configured receivers, signed so a
//! receiver can verify them, retried with exponential backoff.
//!
//! Nothing here is on the media path: signaling hands events over with `try_send` on a bounded queue (a full
//! queue drops the event and counts it), and deliveries run as tasks on the HTTP runtime.
//!
//! Signature (the "Standard Webhooks" scheme, so existing receiver libraries verify it): headers
//! `webhook-id`, `webhook-timestamp` (Unix seconds) and `webhook-signature: v1,<base64 HMAC-SHA256>` over
//! `"{id}.{timestamp}.{body}"`, keyed with the bytes of the API secret named by `x-chorus-api-key`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::hmac;
use base64::Engine;
use prometheus::IntGauge;
use serde_json::json;
use signaling::auth::unix_now;
use signaling::RoomEvent;
use tokio::sync::{mpsc, watch, Semaphore};
use tracing::{debug, info, warn, Instrument};

use crate::config::WebhookConfig;
use crate::metrics::ServerMetrics;

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("cannot build the webhook HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// The signing key of webhooks: an API key name and its secret.
#[derive(Clone)]
pub struct SigningKey {
    pub name: String,
    key: hmac::Key,
}

impl SigningKey {
    pub fn new(name: &str, secret: &[u8]) -> Self {
        SigningKey {
            name: name.to_owned(),
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// The `webhook-signature` header value for a message.
    pub fn sign(&self, id: &str, timestamp: u64, body: &str) -> String {
        let message = format!("{id}.{timestamp}.{body}");
        let tag = hmac::sign(&self.key, message.as_bytes());
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
        )
    }
}

/// The JSON body of an event.
pub fn payload(id: &str, created_at: u64, event: &RoomEvent) -> serde_json::Value {
    let mut body = json!({
        "id": id,
        "event": event.name(),
        "created_at": created_at,
        "room": event.room(),
    });
    match event {
        RoomEvent::ParticipantJoined { participant, .. } => {
            body["participant"] = json!(participant);
        }
        RoomEvent::ParticipantLeft {
            participant,
            reason,
            ..
        } => {
            body["participant"] = json!(participant);
            body["reason"] = json!(reason);
        }
        RoomEvent::RoomStarted { .. } | RoomEvent::RoomFinished { .. } => {}
    }
    body
}

/// The webhook deliveries under way (the `chorus_webhooks_in_flight` gauge), as a count a server's exit
/// can wait on, and the exit's word to the dispatcher to deliver what is queued and stop. Clones share
/// the state.
#[derive(Clone)]
pub struct InFlight {
    count: Arc<watch::Sender<usize>>,
    /// Set at exit: the dispatcher takes no new events, and begins a delivery for each one queued.
    closing: Arc<watch::Sender<bool>>,
    /// Whether every event the dispatcher will ever take has had its deliveries begun: true with no
    /// dispatcher, false from its start until it has emptied its queue after `closing`.
    drained: Arc<watch::Sender<bool>>,
}

impl Default for InFlight {
    fn default() -> Self {
        InFlight {
            count: Arc::new(watch::Sender::new(0)),
            closing: Arc::new(watch::Sender::new(false)),
            drained: Arc::new(watch::Sender::new(true)),
        }
    }
}

impl InFlight {
    /// Counts a delivery (here and in `gauge`) until the guard drops.
    fn begin(&self, gauge: &IntGauge) -> Delivery {
        self.count.send_modify(|count| *count += 1);
        gauge.inc();
        Delivery {
            count: Arc::clone(&self.count),
            gauge: gauge.clone(),
        }
    }

    /// Completes once no delivery is under way (at once if none is).
    pub async fn none(&self) {
        let mut count = self.count.subscribe();
        // `self` holds the sender, so the channel cannot close while this waits.
        let _ = count.wait_for(|count| *count == 0).await;
    }

    /// At exit: the dispatcher takes no more events, delivers every event already queued (waiting for
    /// a free delivery slot where `max_in_flight` are under way), and this completes once the last of
    /// those deliveries has ended. Events queued after this are refused (counted as dropped).
    pub async fn finish(&self) {
        self.closing.send_replace(true);
        let mut drained = self.drained.subscribe();
        // `self` holds the sender, so the channel cannot close while this waits.
        let _ = drained.wait_for(|drained| *drained).await;
        self.none().await;
    }
}

/// One delivery under way.
struct Delivery {
    count: Arc<watch::Sender<usize>>,
    gauge: IntGauge,
}

impl Drop for Delivery {
    fn drop(&mut self) {
        self.gauge.dec();
        self.count.send_modify(|count| *count -= 1);
    }
}

/// Starts the dispatcher on the current runtime; returns the queue signaling sends events to, or `None`
/// when no receiver is configured. Deliveries are counted in `in_flight`.
pub fn start(
    config: &WebhookConfig,
    key: SigningKey,
    metrics: ServerMetrics,
    in_flight: InFlight,
) -> Result<Option<mpsc::Sender<RoomEvent>>, WebhookError> {
    if config.urls.is_empty() {
        return Ok(None);
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(config.timeout_ms))
        .user_agent(concat!("chorus/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let (tx, rx) = mpsc::channel(config.queue_capacity);
    let dispatcher = Dispatcher {
        client,
        key,
        metrics,
        config: config.clone(),
        limit: Arc::new(Semaphore::new(config.max_in_flight)),
        in_flight,
    };
    info!(receivers = config.urls.len(), "webhooks enabled");
    dispatcher.in_flight.drained.send_replace(false);
    tokio::spawn(
        dispatcher
            .run(rx)
            .instrument(tracing::info_span!("webhooks")),
    );
    Ok(Some(tx))
}

struct Dispatcher {
    client: reqwest::Client,
    key: SigningKey,
    metrics: ServerMetrics,
    config: WebhookConfig,
    limit: Arc<Semaphore>,
    in_flight: InFlight,
}

impl Dispatcher {
    async fn run(self, mut events: mpsc::Receiver<RoomEvent>) {
        let this = Arc::new(self);
        let mut sequence: u64 = 0;
        let process = std::process::id();
        let mut closing = this.in_flight.closing.subscribe();
        let mut open = true;
        loop {
            let event = if open {
                tokio::select! {
                    event = events.recv() => event,
                    _ = closing.wait_for(|closing| *closing) => {
                        // Refuse new events; what is queued still comes out of `recv`, then `None`.
                        events.close();
                        open = false;
                        continue;
                    }
                }
            } else {
                events.recv().await
            };
            let Some(event) = event else {
                break;
            };
            sequence += 1;
            let created_at = unix_now();
            // Unique across restarts of this host's process ids and within the process.
            let id = format!("EV_{process:x}_{created_at:x}_{sequence:x}");
            let body = payload(&id, created_at, &event).to_string();
            for url in &this.config.urls {
                // Waits when too many deliveries are under way; the event queue absorbs the burst.
                let permit = Arc::clone(&this.limit)
                    .acquire_owned()
                    .await
                    .expect("the dispatcher owns its semaphore and never closes it");
                // Counted here, not in the task: the exit's `finish` sees it once the queue is empty.
                let delivery = this.in_flight.begin(&this.metrics.webhooks_in_flight);
                let this = Arc::clone(&this);
                let (url, id, body) = (url.clone(), id.clone(), body.clone());
                let span = tracing::info_span!("webhook", event = event.name(), %id);
                tokio::spawn(
                    async move {
                        let delivered = this.deliver(&url, &id, &body).await;
                        drop(delivery);
                        let result = if delivered { "delivered" } else { "failed" };
                        this.metrics
                            .webhook_deliveries
                            .with_label_values(&[result])
                            .inc();
                        drop(permit);
                    }
                    .instrument(span),
                );
            }
        }
        this.in_flight.drained.send_replace(true);
    }

    /// Delivers one event to one receiver, retrying; returns whether it was accepted (2xx).
    async fn deliver(&self, url: &str, id: &str, body: &str) -> bool {
        let mut backoff = Duration::from_millis(self.config.initial_backoff_ms);
        let max_backoff = Duration::from_millis(self.config.max_backoff_ms);
        for attempt in 1..=self.config.max_attempts {
            let timestamp = unix_now();
            let started = Instant::now();
            let response = self
                .client
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header("webhook-id", id)
                .header("webhook-timestamp", timestamp.to_string())
                .header("webhook-signature", self.key.sign(id, timestamp, body))
                .header("x-chorus-api-key", &self.key.name)
                .body(body.to_owned())
                .send()
                .await;
            let elapsed = started.elapsed().as_secs_f64();
            let retry = match response {
                Ok(r) if r.status().is_success() => {
                    self.observe("ok", elapsed);
                    debug!(url, attempt, "webhook delivered");
                    return true;
                }
                Ok(r) => {
                    self.observe("http_error", elapsed);
                    let status = r.status();
                    // A client error other than timeout / rate limit will not go away by retrying.
                    let retry = status.is_server_error()
                        || status == reqwest::StatusCode::REQUEST_TIMEOUT
                        || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
                    warn!(url, attempt, %status, retry, "webhook refused");
                    retry
                }
                Err(error) => {
                    self.observe("transport_error", elapsed);
                    warn!(url, attempt, error = %error, "webhook request failed");
                    true
                }
            };
            if !retry || attempt == self.config.max_attempts {
                break;
            }
            self.metrics
                .webhook_retry_wait
                .inc_by(backoff.as_secs_f64());
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(max_backoff);
        }
        warn!(url, id, "webhook given up");
        false
    }

    fn observe(&self, outcome: &str, seconds: f64) {
        self.metrics
            .webhook_attempts
            .with_label_values(&[outcome])
            .inc();
        self.metrics
            .webhook_duration
            .with_label_values(&[outcome])
            .observe(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use signaling::media::RoomMode;
    use signaling::protocol::{ParticipantInfo, ParticipantLeftReason, RoomInfo};

    #[test]
    fn signature_is_standard_webhooks_hmac_sha256() {
        // Computed independently: printf 'msg_1.1700000000.{"a":1}' | openssl dgst -sha256 -hmac secret -binary | base64
        let key = SigningKey::new("k", b"secret");
        assert_eq!(
            key.sign("msg_1", 1_700_000_000, r#"{"a":1}"#),
            "v1,Q5nZ7DiOGwijBBqvBVAK6c0zDr2JLkXI7TaV4f+Q2vY="
        );
    }

    #[test]
    fn payloads_name_the_event_room_and_participant() {
        let room = RoomInfo {
            name: "standup".into(),
            mode: RoomMode::Mix,
            slots: 1,
            max_participants: 10,
        };
        let participant = ParticipantInfo {
            sid: "PA_000000000001".into(),
            identity: "ada".into(),
            name: "Ada".into(),
            muted: false,
            can_publish: true,
            can_subscribe: true,
            server_muted: false,
            deafened: false,
            ptt: false,
            team: None,
            shout: false,
            remote: false,
        };
        let left = RoomEvent::ParticipantLeft {
            room: room.clone(),
            participant,
            reason: ParticipantLeftReason::Kicked,
        };
        let body = payload("EV_1", 7, &left);
        assert_eq!(body["event"], "participant_left");
        assert_eq!(body["room"]["mode"], "mix");
        assert_eq!(body["participant"]["identity"], "ada");
        assert_eq!(body["reason"], "kicked");
        let started = payload("EV_2", 7, &RoomEvent::RoomStarted { room });
        assert_eq!(started["event"], "room_started");
        assert!(started.get("participant").is_none());
    }

    /// At exit, more events are queued than may be under way at once (`max_in_flight` 1, a receiver that
    /// takes 200 ms per request): `finish` returns once all of them were delivered, and the queue is
    /// closed to new events. (The exit used to give the dispatcher 20 ms to pick up what was queued and
    /// then wait only for the deliveries under way: it delivered one of the three.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_exit_delivers_every_queued_event_even_beyond_the_deliveries_at_once() {
        let received = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post({
                let received = Arc::clone(&received);
                move |body: String| async move {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    received.lock().expect("not poisoned").push(body);
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("bound");
        tokio::spawn(async move { axum::serve(listener, app).await });
        let config = WebhookConfig {
            urls: vec![format!("http://{addr}/hook")],
            max_in_flight: 1,
            ..WebhookConfig::default()
        };
        let metrics = ServerMetrics::new(&prometheus::Registry::new()).expect("fresh registry");
        let in_flight = InFlight::default();
        let events = start(
            &config,
            SigningKey::new("k", b"secret"),
            metrics,
            in_flight.clone(),
        )
        .expect("a client")
        .expect("a receiver is configured");
        let room = RoomInfo {
            name: "last".into(),
            mode: RoomMode::Forward,
            slots: 3,
            max_participants: 10,
        };
        for _ in 0..3 {
            events
                .try_send(RoomEvent::RoomFinished { room: room.clone() })
                .expect("room in the queue");
        }
        tokio::time::timeout(Duration::from_secs(5), in_flight.finish())
            .await
            .expect("the queue is delivered within 5 s");
        assert_eq!(received.lock().expect("not poisoned").len(), 3);
        assert!(
            events.try_send(RoomEvent::RoomFinished { room }).is_err(),
            "after the exit began, the queue takes no new events"
        );
    }

    #[tokio::test]
    async fn without_a_dispatcher_the_exit_does_not_wait() {
        tokio::time::timeout(Duration::from_secs(1), InFlight::default().finish())
            .await
            .expect("nothing to deliver");
    }

    #[tokio::test]
    async fn the_exit_waits_for_deliveries_counted_like_the_gauge() {
        let gauge = IntGauge::new("in_flight", "deliveries under way").expect("a valid gauge");
        let in_flight = InFlight::default();
        in_flight.none().await;
        let first = in_flight.begin(&gauge);
        let second = in_flight.begin(&gauge);
        assert_eq!(gauge.get(), 2);
        let waiting = in_flight.clone();
        let waiter = tokio::spawn(async move { waiting.none().await });
        drop(first);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "one delivery is still under way");
        drop(second);
        assert_eq!(gauge.get(), 0);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the last delivery's end wakes the waiter")
            .expect("the waiter does not panic");
    }
}
