//! The same workload against Janus (1.1.x) over its WebSocket API.
//!
//! - Mix mode uses the AudioBridge plugin: each participant joins a room, then `configure`s with one
//!   `sendrecv` Opus m-line (client offer, Janus answer) and receives the room's mix on it.
//! - Forward mode uses the VideoRoom plugin, audio only: each talker publishes (`join` as publisher,
//!   `configure` with a send-only offer); every participant then attaches a subscriber handle that
//!   subscribes to all the room's other publishers at once (Janus 1.x multistream: Janus offers, we
//!   answer and `start`). Talkers therefore have two peer connections (publish + subscribe), as in any
//!   Janus VideoRoom client; the subscriber's engine index is `participants + index`.
//!
//! Rooms are created (not permanent) by a control session before the ramp and destroyed afterwards.
//! Janus needs a keepalive per session within its 60 s session timeout; each session sends one every 20 s.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::watch;

use crate::engine::{Engine, ParticipantSpec, PeerShape};
use crate::run::{await_media, JoinRecord, Mode, RunConfig};
use crate::signal::{SignalError, Ws};

/// A Janus session on one WebSocket.
pub struct JanusSession {
    ws: Ws,
    pub id: u64,
    next_tx: u64,
}

fn janus_error(v: &Value) -> Result<(), SignalError> {
    if v["janus"] == "error" {
        return Err(SignalError::Server {
            code: v["error"]["code"].to_string(),
            message: v["error"]["reason"].as_str().unwrap_or("").to_owned(),
        });
    }
    if let Some(code) = v["plugindata"]["data"]["error_code"].as_u64() {
        return Err(SignalError::Server {
            code: code.to_string(),
            message: v["plugindata"]["data"]["error"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
        });
    }
    Ok(())
}

impl JanusSession {
    pub async fn open(url: &str, timeout: Duration) -> Result<JanusSession, SignalError> {
        let ws = Ws::connect(url, Some("janus-protocol")).await?;
        let mut s = JanusSession {
            ws,
            id: 0,
            next_tx: 0,
        };
        let r = s.call(json!({"janus": "create"}), timeout).await?;
        s.id = r["data"]["id"]
            .as_u64()
            .ok_or_else(|| SignalError::Unexpected(r.to_string()))?;
        Ok(s)
    }

    fn tx(&mut self) -> String {
        self.next_tx += 1;
        format!("t{}", self.next_tx)
    }

    /// Send a request and wait for its final reply (not the `ack`).
    async fn call(&mut self, mut msg: Value, timeout: Duration) -> Result<Value, SignalError> {
        let tx = self.tx();
        msg["transaction"] = json!(tx);
        if self.id != 0 {
            msg["session_id"] = json!(self.id);
        }
        self.ws.send(&msg).await?;
        self.ws
            .wait_for("janus reply", timeout, |v| {
                if v["transaction"] != json!(tx) || v["janus"] == "ack" {
                    return Ok(false);
                }
                janus_error(v)?;
                Ok(true)
            })
            .await
    }

    pub async fn attach(&mut self, plugin: &str, timeout: Duration) -> Result<u64, SignalError> {
        let r = self
            .call(json!({"janus": "attach", "plugin": plugin}), timeout)
            .await?;
        r["data"]["id"]
            .as_u64()
            .ok_or_else(|| SignalError::Unexpected(r.to_string()))
    }

    /// A plugin message; returns the reply (`success` for synchronous requests, `event` otherwise).
    pub async fn message(
        &mut self,
        handle: u64,
        body: Value,
        jsep: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, SignalError> {
        let mut m = json!({"janus": "message", "handle_id": handle, "body": body});
        if let Some(j) = jsep {
            m["jsep"] = j;
        }
        self.call(m, timeout).await
    }

    /// Tell Janus our candidates are all in the SDP.
    pub async fn trickle_completed(&mut self, handle: u64) -> Result<(), SignalError> {
        let tx = self.tx();
        self.ws
            .send(
                &json!({"janus": "trickle", "session_id": self.id, "handle_id": handle,
                "transaction": tx, "candidate": {"completed": true}}),
            )
            .await
    }

    pub async fn keepalive(&mut self) -> Result<(), SignalError> {
        let tx = self.tx();
        self.ws
            .send(&json!({"janus": "keepalive", "session_id": self.id, "transaction": tx}))
            .await
    }

    pub async fn destroy(mut self) {
        let tx = self.tx();
        let _ = self
            .ws
            .send(&json!({"janus": "destroy", "session_id": self.id, "transaction": tx}))
            .await;
        self.ws.close().await;
    }

    /// Read (and drop) asynchronous events; `None` once closed.
    async fn next_event(&mut self) -> Result<Option<Value>, SignalError> {
        self.ws.recv().await
    }
}

/// The Janus room number of room `room` in this run.
pub fn room_id(base: u64, room: usize) -> u64 {
    base + room as u64
}

/// Create the run's rooms (AudioBridge or VideoRoom); returns the control session to destroy them later.
pub async fn create_rooms(
    config: &RunConfig,
    url: &str,
    room_base: u64,
    prebuffer: Option<u32>,
) -> Result<(JanusSession, u64), SignalError> {
    let t = Duration::from_secs(10);
    let mut s = JanusSession::open(url, t).await?;
    let plugin = match config.mode {
        Mode::Mix => "janus.plugin.audiobridge",
        Mode::Forward => "janus.plugin.videoroom",
    };
    let h = s.attach(plugin, t).await?;
    for r in 0..config.rooms {
        let id = room_id(room_base, r);
        let body = match config.mode {
            Mode::Mix => {
                let mut b = json!({"request": "create", "room": id, "permanent": false,
                    "description": format!("chorus-loadtest {id}"), "sampling_rate": media_core::audio::SAMPLE_RATE,
                    "audiolevel_ext": true});
                if let Some(p) = prebuffer {
                    b["default_prebuffering"] = json!(p);
                }
                b
            }
            Mode::Forward => json!({"request": "create", "room": id, "permanent": false,
                "description": format!("chorus-loadtest {id}"),
                "publishers": config.talkers.max(1) + 1, "audiocodec": "opus",
                "audiolevel_ext": true}),
        };
        s.message(h, body, None, t).await?;
    }
    Ok((s, h))
}

/// Destroy the rooms made by [`create_rooms`].
pub async fn destroy_rooms(mut s: JanusSession, handle: u64, config: &RunConfig, room_base: u64) {
    let t = Duration::from_secs(5);
    for r in 0..config.rooms {
        let _ = s
            .message(
                handle,
                json!({"request": "destroy", "room": room_id(room_base, r)}),
                None,
                t,
            )
            .await;
    }
    s.destroy().await;
}

/// Send a plugin `configure` request carrying our offer, apply Janus' answer to participant `index`'s
/// peer, and end trickle (the offer already holds every candidate).
async fn configure_with_offer(
    s: &mut JanusSession,
    handle: u64,
    engine: &Engine,
    index: usize,
    configure: Value,
    offer: String,
    timeout: Duration,
) -> Result<(), String> {
    let r = s
        .message(
            handle,
            configure,
            Some(json!({"type": "offer", "sdp": offer})),
            timeout,
        )
        .await
        .map_err(reason)?;
    let answer = r["jsep"]["sdp"]
        .as_str()
        .ok_or_else(|| "janus:no_answer".to_string())?
        .to_owned();
    engine
        .answer(index, answer)
        .await
        .map_err(|e| e.to_string())?;
    s.trickle_completed(handle).await.map_err(reason)
}

fn reason(e: SignalError) -> String {
    e.detailed()
}

/// Where and how to reach Janus.
#[derive(Clone, Copy, Debug)]
pub struct JanusParams<'a> {
    pub url: &'a str,
    pub room_base: u64,
    pub prebuffer: Option<u32>,
}

/// One participant's Janus session; fills `rec`, keeps the session alive until `stop`.
pub async fn session(
    config: &RunConfig,
    engine: &Engine,
    spec: ParticipantSpec,
    janus: JanusParams<'_>,
    stop: watch::Receiver<bool>,
    rec: &mut JoinRecord,
) -> Result<(), String> {
    let JanusParams {
        url,
        room_base,
        prebuffer,
    } = janus;
    let t = config.join_timeout;
    let t0 = Instant::now();
    let mut s = JanusSession::open(url, t).await.map_err(reason)?;
    let room = room_id(room_base, spec.room);
    let display = format!("lt-{}", spec.index);
    match config.mode {
        Mode::Mix => {
            let h = s
                .attach("janus.plugin.audiobridge", t)
                .await
                .map_err(reason)?;
            let mut join = json!({"request": "join", "room": room, "display": display});
            if let Some(p) = prebuffer {
                join["prebuffer"] = json!(p);
            }
            s.message(h, join, None, t).await.map_err(reason)?;
            let (offer, milestones) = engine.create(spec).await.map_err(|e| e.to_string())?;
            let configure = json!({"request": "configure", "muted": spec.talk.is_none()});
            configure_with_offer(&mut s, h, engine, spec.index, configure, offer, t).await?;
            await_media(config, &spec, t0, milestones, rec).await?;
        }
        Mode::Forward => {
            let h = s
                .attach("janus.plugin.videoroom", t)
                .await
                .map_err(reason)?;
            let own_id = 1_000 + spec.index as u64;
            let mut publisher_milestones = None;
            if spec.talk.is_some() {
                s.message(
                    h,
                    json!({"request": "join", "ptype": "publisher", "room": room,
                        "id": own_id, "display": display}),
                    None,
                    t,
                )
                .await
                .map_err(reason)?;
                let pspec = ParticipantSpec {
                    slots: 0,
                    shape: PeerShape::Slots,
                    ..spec
                };
                let (offer, m) = engine.create(pspec).await.map_err(|e| e.to_string())?;
                let configure = json!({"request": "configure", "audio": true, "video": false});
                configure_with_offer(&mut s, h, engine, spec.index, configure, offer, t).await?;
                publisher_milestones = Some(m);
            }
            // Subscribe to every other talker of the room, once they all publish.
            let others = config.talkers - usize::from(spec.talk.is_some());
            let deadline = t0 + t;
            let feeds: Vec<u64> = loop {
                let r = s
                    .message(
                        h,
                        json!({"request": "listparticipants", "room": room}),
                        None,
                        t,
                    )
                    .await
                    .map_err(reason)?;
                let feeds: Vec<u64> = r["plugindata"]["data"]["participants"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter(|p| p["publisher"] == json!(true))
                            .filter_map(|p| p["id"].as_u64())
                            .filter(|id| *id != own_id)
                            .collect()
                    })
                    .unwrap_or_default();
                if feeds.len() >= others {
                    break feeds;
                }
                if Instant::now() > deadline {
                    return Err("timeout:publishers".into());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            if let Some(m) = publisher_milestones {
                // The talker's own publish must connect too (its first audio comes from the others).
                let mut pub_rec = rec.clone();
                let pspec = ParticipantSpec { talk: None, ..spec };
                let quiet = RunConfig {
                    talkers: 0,
                    ..config.clone()
                };
                await_media(&quiet, &pspec, t0, m, &mut pub_rec).await?;
            }
            if feeds.is_empty() {
                rec.connect_ms = rec.connect_ms.or(Some(t0.elapsed().as_secs_f64() * 1e3));
            } else {
                let sh = s
                    .attach("janus.plugin.videoroom", t)
                    .await
                    .map_err(reason)?;
                let streams: Vec<Value> = feeds.iter().map(|f| json!({"feed": f})).collect();
                let r = s
                    .message(
                        sh,
                        json!({"request": "join", "ptype": "subscriber", "room": room,
                            "streams": streams}),
                        None,
                        t,
                    )
                    .await
                    .map_err(reason)?;
                let offer = r["jsep"]["sdp"]
                    .as_str()
                    .ok_or_else(|| "janus:no_offer".to_string())?
                    .to_owned();
                let sub = ParticipantSpec {
                    index: config.participants + spec.index,
                    talk: None,
                    ..spec
                };
                let (answer, m) = engine
                    .create_answering(sub, offer)
                    .await
                    .map_err(|e| e.to_string())?;
                s.message(
                    sh,
                    json!({"request": "start"}),
                    Some(json!({"type": "answer", "sdp": answer})),
                    t,
                )
                .await
                .map_err(reason)?;
                s.trickle_completed(sh).await.map_err(reason)?;
                await_media(config, &sub, t0, m, rec).await?;
            }
        }
    }
    let mut stop = stop;
    tokio::spawn(async move {
        let mut keepalive = tokio::time::interval(Duration::from_secs(20));
        loop {
            tokio::select! {
                _ = stop.changed() => { s.destroy().await; return; }
                _ = keepalive.tick() => { if s.keepalive().await.is_err() { return; } }
                e = s.next_event() => { if !matches!(e, Ok(Some(_))) { return; } }
            }
        }
    });
    Ok(())
}
