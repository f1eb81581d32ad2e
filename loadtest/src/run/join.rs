//! One participant of a run: join its room (on Chorus or on Janus), wait for the media milestones, stay
//! until the run ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use signaling::client::{Client, ClientError};
use signaling::protocol::ServerMessage;
use tokio::sync::watch;

use crate::engine::{Engine, ParticipantSpec};
use crate::signal::{self, SignalError};

use super::{expects_audio, ms, room_name, JoinRecord, RunConfig, Target};

pub(super) async fn participant(
    config: Arc<RunConfig>,
    engine: Engine,
    spec: ParticipantSpec,
    stop: watch::Receiver<bool>,
) -> JoinRecord {
    let mut rec = JoinRecord {
        index: spec.index,
        room: spec.room,
        talker: spec.talk.is_some(),
        answer_ms: None,
        connect_ms: None,
        first_audio_ms: None,
        error: None,
    };
    let r = match &config.target {
        Target::Chorus {
            ws_urls,
            api_key,
            api_secret,
        } => {
            let entry = super::entry_url(ws_urls, spec.index);
            chorus_session(
                &config, &engine, spec, entry, api_key, api_secret, stop, &mut rec,
            )
            .await
        }
        Target::Janus {
            ws_url,
            prebuffer,
            room_base,
        } => {
            let params = crate::janus::JanusParams {
                url: ws_url,
                room_base: *room_base,
                prebuffer: *prebuffer,
            };
            crate::janus::session(&config, &engine, spec, params, stop, &mut rec).await
        }
    };
    if let Err(e) = r {
        rec.error = Some(e);
        engine.remove(spec.index);
    }
    rec
}

/// Wait for the media milestones; fills `rec`. Errors are short reasons.
pub async fn await_media(
    config: &RunConfig,
    spec: &ParticipantSpec,
    t0: Instant,
    milestones: crate::engine::Milestones,
    rec: &mut JoinRecord,
) -> Result<(), String> {
    let deadline = t0 + config.join_timeout;
    let connected = tokio::time::timeout_at(deadline.into(), milestones.connected)
        .await
        .map_err(|_| "timeout:media_connected".to_string())?
        .map_err(|_| "media_failed".to_string())?;
    rec.connect_ms = Some(ms(connected.saturating_duration_since(t0)));
    if expects_audio(config, spec) {
        let first = tokio::time::timeout_at(deadline.into(), milestones.first_audio)
            .await
            .map_err(|_| "timeout:first_audio".to_string())?
            .map_err(|_| "media_failed".to_string())?;
        rec.first_audio_ms = Some(ms(first.saturating_duration_since(t0)));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn chorus_session(
    config: &RunConfig,
    engine: &Engine,
    spec: ParticipantSpec,
    ws_url: &str,
    api_key: &str,
    api_secret: &str,
    mut stop: watch::Receiver<bool>,
    rec: &mut JoinRecord,
) -> Result<(), String> {
    let mut ws = chorus_join(config, engine, spec, ws_url, api_key, api_secret, rec).await?;
    // Joined. Stay in the room until the run stops, answering the idle timeout with pings.
    let mut ping = tokio::time::interval(Duration::from_secs(10));
    let mut id = 0u64;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.changed() => {
                    let _ = ws.leave().await;
                    ws.close().await;
                    return;
                }
                _ = ping.tick() => {
                    id += 1;
                    if ws.ping(id).await.is_err() { return; }
                }
                m = ws.recv() => {
                    if !matches!(m, Ok(Some(_))) { return; }
                }
            }
        }
    });
    Ok(())
}

/// Join a Chorus room and wait for the media milestones (fills `rec`); returns the open signaling
/// WebSocket, which the caller must keep reading (and pinging) while the participant stays.
pub async fn chorus_join(
    config: &RunConfig,
    engine: &Engine,
    mut spec: ParticipantSpec,
    ws_url: &str,
    api_key: &str,
    api_secret: &str,
    rec: &mut JoinRecord,
) -> Result<Client, String> {
    let room = room_name(config, spec.room);
    let identity = format!("lt-{}", spec.index);
    let token =
        signal::chorus_token(api_key, api_secret, &room, &identity).map_err(|e| e.detailed())?;
    let t = config.join_timeout;
    let t0 = Instant::now();
    let detailed = |e: ClientError| SignalError::from(e).detailed();
    // Through the entry URL, following redirects to the node that owns the room.
    let session = Client::connect_and_join(ws_url, &token, Some(&room), Some(&identity), t)
        .await
        .map_err(detailed)?;
    let (mut ws, joined) = (session.client, session.joined);
    spec.slots = usize::from(joined.room.slots);
    let (offer, milestones) = engine.create(spec).await.map_err(|e| e.to_string())?;
    let answer = ws.offer(&offer, t).await.map_err(detailed)?;
    rec.answer_ms = Some(ms(t0.elapsed()));
    engine
        .answer(spec.index, answer.sdp)
        .await
        .map_err(|e| e.to_string())?;
    // Keep reading signaling while waiting for media, so the server never blocks on us.
    let media = await_media(config, &spec, t0, milestones, rec);
    tokio::pin!(media);
    loop {
        tokio::select! {
            r = &mut media => { r?; break; }
            m = ws.recv() => {
                match m {
                    Ok(Some(ServerMessage::Error(e))) => return Err(detailed(ClientError::Server(e))),
                    Ok(Some(_)) => {}
                    Ok(None) => return Err("closed:media".into()),
                    Err(e) => return Err(detailed(e)),
                }
            }
        }
    }
    Ok(ws)
}
