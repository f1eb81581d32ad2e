//! One playback's task: wait for its start time, enter the room as a source participant, then play its
//! items in order (looping if asked), each paced in real time by the ingest's pacer, until the list ends,
//! an operator stops it, or the participant is removed. Its state is published on a watch channel for
//! the admin API; skip and stop arrive as [`Control`] values.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use signaling::media::SourceRole;
use signaling::{SourceEnd, SourceRequest};
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep_until, Instant};
use tracing::{info, warn};
use vocab::SAMPLE_RATE;

use super::decode::Item;
use super::media::{Format, MediaError};
use super::JobKind;
use crate::ingest::pacer::Pacer;
use crate::ingest::{Kind, Source};
use crate::state::AppState;

/// How long packets are held back after the first is ready: files are local, so only the scheduler's
/// jitter needs absorbing.
const PACER_DELAY: Duration = Duration::from_millis(40);
/// An announcement leaves this long after its last packet is sent: the room's jitter buffer still
/// holds its end, which must be heard before the duck lifts.
const ANNOUNCEMENT_TAIL: Duration = Duration::from_millis(250);

/// What an operator asks of a running playback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// On to the next item.
    Skip,
    Stop,
}

/// Where a playback is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Waiting for its start time.
    Scheduled,
    Playing,
    /// Over: its list ended, it was stopped, removed, or could not enter the room (`error`).
    Finished,
}

/// A playback as the admin API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    pub room: String,
    pub kind: JobKind,
    pub state: State,
    /// The participant id it plays as, once in the room.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    pub name: String,
    /// The items, as named (playlists expanded).
    pub items: Vec<String>,
    #[serde(rename = "loop")]
    pub looping: bool,
    /// The item playing now (its index in `items`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// How far into the current item, milliseconds.
    pub position_ms: u64,
    pub played: u64,
    pub skipped: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_at_unix_ms: Option<u64>,
    /// Why it finished early (it could not enter the room, or every item failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A playback to run.
pub struct Job {
    pub status: Status,
    pub role: SourceRole,
    pub start_at: Option<SystemTime>,
}

/// Runs `job` to its end, publishing its state on `status`.
pub async fn run(
    job: Job,
    state: Arc<AppState>,
    mut control: mpsc::Receiver<Control>,
    status: watch::Sender<Status>,
) {
    let playout = Arc::clone(&state.playout);
    let kind = job.status.kind;
    playout
        .metrics
        .running
        .with_label_values(&[kind.as_str()])
        .inc();
    let end = play(&job, &state, &mut control, &status).await;
    playout
        .metrics
        .running
        .with_label_values(&[kind.as_str()])
        .dec();
    status.send_modify(|s| {
        s.state = State::Finished;
        s.current = None;
        s.index = None;
        if let Err(e) = end {
            s.error = Some(e);
        }
    });
}

async fn play(
    job: &Job,
    state: &Arc<AppState>,
    control: &mut mpsc::Receiver<Control>,
    status: &watch::Sender<Status>,
) -> Result<(), String> {
    if let Some(at) = job.start_at {
        let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            c = control.recv() => if c != Some(Control::Skip) { return Ok(()) },
        }
    }
    let request = SourceRequest {
        room: job.status.room.clone(),
        identity: job.status.kind.identity().to_owned(),
        name: job.status.name.clone(),
    };
    let mut source = Source::start_as(
        &state.ingest,
        &state.signaling,
        &state.sessions,
        Kind::Playout,
        request,
        job.role,
    )
    .await
    .map_err(|e| {
        warn!(room = %job.status.room, error = %e, "playback could not enter its room");
        format!("could not enter the room: {e}")
    })?;
    status.send_modify(|s| {
        s.state = State::Playing;
        s.sid = Some(source.member.sid().to_owned());
    });
    info!(room = %job.status.room, kind = job.status.kind.as_str(), items = job.status.items.len(), "playback started");
    let (end, result) = play_items(job, state, control, status, &mut source).await;
    if matches!(job.role, SourceRole::Announcement { .. }) && end == SourceEnd::Finished {
        tokio::time::sleep(ANNOUNCEMENT_TAIL).await;
    }
    source.leave(end).await;
    result
}

/// Plays the list (again and again if it loops) until it ends or the source must go.
async fn play_items(
    job: &Job,
    state: &Arc<AppState>,
    control: &mut mpsc::Receiver<Control>,
    status: &watch::Sender<Status>,
    source: &mut Source,
) -> (SourceEnd, Result<(), String>) {
    let playout = &state.playout;
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut pacer = Pacer::new(PACER_DELAY, seed as u16, seed.rotate_left(16));
    let mut encoder = match new_encoder(playout.config.bitrate_bps) {
        Ok(e) => e,
        Err(e) => return (SourceEnd::Failed, Err(e)),
    };
    loop {
        let mut any_played = false;
        for (index, name) in job.status.items.iter().enumerate() {
            status.send_modify(|s| {
                s.index = Some(index);
                s.current = Some(name.clone());
                s.position_ms = 0;
            });
            let mut item = match open(playout, name).await {
                Ok(item) => item,
                Err((reason, why)) => {
                    playout.metrics.skip(reason);
                    warn!(room = %job.status.room, item = %name, reason, error = %why, "playlist item skipped");
                    status.send_modify(|s| s.skipped += 1);
                    continue;
                }
            };
            let (format, item) = (item.0, &mut item.1);
            let mut position: u64 = 0;
            let outcome = 'item: loop {
                let packet = match item.next(&mut encoder) {
                    None => break Ok(()),
                    Some(Ok(p)) => p,
                    Some(Err(e)) => break Err(e),
                };
                let now = Instant::now().into_std();
                let paced = pacer.push(
                    now,
                    packet.payload,
                    packet.samples,
                    packet.granule,
                    packet.last,
                );
                for paced in paced {
                    tokio::select! {
                        end = source.member.removed() => return (end, Ok(())),
                        c = control.recv() => match c {
                            Some(Control::Skip) => break 'item Ok(()),
                            // Stopped (or the playback was replaced: its handle is gone).
                            _ => return (SourceEnd::Finished, Ok(())),
                        },
                        () = sleep_until(paced.due.into()) => {}
                    }
                    let samples = packet_samples(&paced.packet.payload);
                    if source.packets.send(paced.packet).await.is_err() {
                        return (SourceEnd::Failed, Ok(()));
                    }
                    state
                        .ingest
                        .metrics
                        .packets
                        .with_label_values(&[Kind::Playout.as_str()])
                        .inc();
                    position += samples;
                    let ms = position * 1000 / u64::from(SAMPLE_RATE);
                    // Published every 100 ms of audio, not every packet.
                    status.send_if_modified(|s| {
                        let changed = s.position_ms / 100 != ms / 100;
                        s.position_ms = ms;
                        changed
                    });
                }
            };
            match outcome {
                Ok(()) => {
                    any_played = true;
                    playout
                        .metrics
                        .played
                        .with_label_values(&[format.as_str()])
                        .inc();
                    status.send_modify(|s| s.played += 1);
                }
                Err(e) => {
                    // What was played stays played; the rest of the item is skipped.
                    any_played |= position > 0;
                    playout.metrics.skip(e.as_str());
                    warn!(room = %job.status.room, item = %name, reason = e.as_str(), error = %e, "playlist item cut short");
                    status.send_modify(|s| s.skipped += 1);
                }
            }
        }
        if !job.status.looping {
            return (SourceEnd::Finished, Ok(()));
        }
        if !any_played {
            return (
                SourceEnd::Finished,
                Err("no item of the looping list can be played".to_owned()),
            );
        }
    }
}

/// The duration of an Opus packet, samples (0 if it is not one: the pacer only gets valid packets).
fn packet_samples(payload: &[u8]) -> u64 {
    media_core::mixer::opus_packet_info(payload).map_or(0, |(n, _)| u64::from(n))
}

fn new_encoder(bitrate_bps: u32) -> Result<opus::Encoder, String> {
    let mut encoder =
        opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Audio)
            .map_err(|e| format!("no Opus encoder: {e}"))?;
    encoder
        .set_bitrate(opus::Bitrate::Bits(bitrate_bps as i32))
        .map_err(|e| format!("no Opus encoder: {e}"))?;
    Ok(encoder)
}

/// Resolves, reads and opens one item; an error is its skip reason (a metric label) and why.
async fn open(
    playout: &super::Playout,
    name: &str,
) -> Result<(Format, Item), (&'static str, String)> {
    let file = playout
        .media
        .resolve(name)
        .map_err(|e: MediaError| (e.as_str(), e.to_string()))?;
    if file.format == Format::M3u {
        return Err((
            "nested_playlist",
            "a playlist inside a playlist is not played".to_owned(),
        ));
    }
    let size = tokio::fs::metadata(&file.path)
        .await
        .map_err(|e| ("unreadable", e.to_string()))?
        .len();
    if size > playout.config.max_file_bytes {
        return Err((
            "too_large",
            format!("{size} bytes, over playout.max_file_bytes"),
        ));
    }
    let bytes = tokio::fs::read(&file.path)
        .await
        .map_err(|e| ("unreadable", e.to_string()))?;
    let format = file.format;
    // Probing a file decodes its first frames: off the async threads.
    let item = tokio::task::spawn_blocking(move || Item::open(bytes, format))
        .await
        .map_err(|e| ("undecodable", e.to_string()))?
        .map_err(|e| (e.as_str(), e.to_string()))?;
    Ok((format, item))
}
