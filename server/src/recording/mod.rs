//! Recordings (docs/broadcast.md, "Recording"): a room's mix, or one participant's own microphone packets
//! as received, written to an Ogg/Opus file with a JSON side file (who was there, who spoke when).
//!
//! The media workers hand out what is tapped (the room tap the listener streams use,
//! [`media_core::Output::Broadcast`], and [`media_core::Output::Microphone`] for participants); which rooms
//! and participants are tapped is published through the listener streams' one tap set
//! ([`crate::broadcast::TapSet`]). Frames reach the [`writer`] thread over a bounded queue; it owns the
//! files. This manager keeps the index (every recording on disk, by id), starts and stops recordings
//! (the admin API, the rooms' `record` setting, rooms and participants that go), and enforces retention.
//! Files are named by recording id only, in `recording.dir`: no URL or request names a path.

mod http;
mod meta;
mod metrics;
mod range;
mod retention;
mod writer;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use media_core::{ParticipantId, RoomId};
use serde::{Deserialize, Serialize};
use signaling::Signaling;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

use crate::broadcast::ogg::OggStream;
use crate::broadcast::TapSet;
use crate::config::RecordingConfig;
pub use http::routes;
pub use meta::RecordingId;
pub(crate) use meta::{rfc3339, unix_ms};
use meta::{Kind, Person, RecordingMeta, State, StopReason, FORMAT};
pub use metrics::RecordingMetrics;
pub use writer::RecordSink;
use writer::{Control, Data, DataSender, Event, Progress, Start, WriteError, Writer};

/// How long a stop waits for the writer to close the file.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How often rooms and participants that went are looked for, presence is reported and `record`
/// settings are applied.
const TICK: Duration = Duration::from_secs(1);

/// A room's `record` setting: what is recorded from its creation on, automatically.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordSettings {
    /// The room's mix (default true).
    #[serde(default = "yes")]
    pub mix: bool,
    /// Each participant's own stream, from when it joins (default false).
    #[serde(default)]
    pub participants: bool,
}

fn yes() -> bool {
    true
}

/// Why a recording could not be started or found.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("recording is disabled on this server (recording.enabled)")]
    Disabled,
    #[error("no such room")]
    RoomNotFound,
    #[error("no such participant in the room")]
    ParticipantNotFound,
    #[error("this is being recorded already: recording {0}")]
    AlreadyRecording(RecordingId),
    #[error("the server runs its maximum of recordings (recording.max_active)")]
    Capacity,
    #[error("the recording file cannot be written: {0}")]
    Write(#[from] WriteError),
}

/// A recording as the admin API shows it (docs/openapi.json `Recording`).
#[derive(Clone, Debug, Serialize)]
pub struct RecordingView {
    pub id: RecordingId,
    pub room: String,
    pub kind: Kind,
    pub participant: Option<String>,
    pub state: State,
    pub started_at_ms: u64,
    pub started_at: String,
    pub ended_at_ms: Option<u64>,
    pub duration_ms: u64,
    pub bytes: u64,
    pub stop_reason: Option<StopReason>,
    pub error: Option<String>,
}

/// One recording in the index: its side file's static part and end, and while it runs its size.
struct Entry {
    meta: RecordingMeta,
    participant: Option<ParticipantId>,
    progress: Arc<Progress>,
}

impl Entry {
    fn running(&self) -> bool {
        self.meta.state == State::Recording
    }

    fn bytes(&self) -> u64 {
        self.progress
            .bytes
            .load(Ordering::Relaxed)
            .max(self.meta.bytes)
    }

    fn view(&self) -> RecordingView {
        let m = &self.meta;
        RecordingView {
            id: m.id.clone(),
            room: m.room.clone(),
            kind: m.kind,
            participant: m.participant.clone(),
            state: m.state,
            started_at_ms: m.started_at_ms,
            started_at: m.started_at.clone(),
            ended_at_ms: m.ended_at_ms,
            duration_ms: self.progress.duration_ms().max(m.duration_ms),
            bytes: self.bytes(),
            stop_reason: m.stop_reason,
            error: m.error.clone(),
        }
    }
}

/// A room with a `record` setting, and what it has started.
struct Auto {
    settings: RecordSettings,
    mix_started: bool,
    participants_started: HashSet<String>,
}

pub struct Recordings {
    config: RecordingConfig,
    metrics: RecordingMetrics,
    signaling: OnceLock<Arc<Signaling>>,
    index: Mutex<BTreeMap<RecordingId, Entry>>,
    auto: Mutex<HashMap<String, Auto>>,
    recorded: watch::Sender<Arc<TapSet>>,
    data: DataSender,
    control: std::sync::mpsc::Sender<Control>,
    events: Mutex<Option<mpsc::UnboundedReceiver<Event>>>,
}

impl Recordings {
    /// Starts the writer thread; the manager runs once [`Recordings::start_tasks`] is called.
    pub fn new(config: RecordingConfig, metrics: RecordingMetrics) -> std::io::Result<Arc<Self>> {
        let (data, data_rx) = writer::data_queue(config.queue_frames);
        let (control, control_rx) = std::sync::mpsc::channel();
        let (events_tx, events) = mpsc::unbounded_channel();
        let writer = Writer::new(
            Duration::from_millis(u64::from(config.page_ms)),
            (config.fsync_interval_ms > 0).then(|| Duration::from_millis(config.fsync_interval_ms)),
            events_tx,
            metrics.bytes.clone(),
        );
        std::thread::Builder::new()
            .name("chorus-recorder".into())
            .spawn(move || writer.run(data_rx, control_rx))?;
        Ok(Arc::new(Recordings {
            config,
            metrics,
            signaling: OnceLock::new(),
            index: Mutex::new(BTreeMap::new()),
            auto: Mutex::new(HashMap::new()),
            recorded: watch::Sender::new(Arc::new(TapSet::default())),
            data,
            control,
            events: Mutex::new(Some(events)),
        }))
    }

    /// What the recorder taps, for the listener streams' tap set.
    pub fn recorded(&self) -> watch::Receiver<Arc<TapSet>> {
        self.recorded.subscribe()
    }

    /// Where a media worker puts what is tapped.
    pub fn sink(&self) -> RecordSink {
        RecordSink {
            data: self.data.clone(),
            recorded: self.recorded.subscribe(),
            dropped: self.metrics.frames_dropped.clone(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    fn index(&self) -> std::sync::MutexGuard<'_, BTreeMap<RecordingId, Entry>> {
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn auto(&self) -> std::sync::MutexGuard<'_, HashMap<String, Auto>> {
        self.auto.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn send(&self, c: Control) {
        // The writer lives as long as the process; it is woken to take the command at once.
        let _ = self.control.send(c);
        let _ = self.data.try_send(Data::Wake);
    }

    /// Reads the recordings already in `recording.dir` (blocking; at start). A recording still marked
    /// as running was cut by a crash: it is marked `interrupted`, its length read from its last page.
    pub fn load(&self) {
        let Ok(dir) = std::fs::read_dir(&self.config.dir) else {
            return;
        };
        let mut found = 0;
        for entry in dir.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(".json.tmp") {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let Some(id) = name
                .strip_suffix(".json")
                .and_then(|s| s.parse::<RecordingId>().ok())
            else {
                continue;
            };
            let meta = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<RecordingMeta>(&b).ok())
                .filter(|m| m.id == id);
            let Some(mut meta) = meta else {
                warn!(file = %path.display(), "recording side file unreadable: ignored");
                continue;
            };
            let (bytes, samples) = retention::ogg_extent(&self.audio_file(&id));
            meta.bytes = bytes;
            if meta.state == State::Recording {
                meta.state = State::Interrupted;
                meta.stop_reason = Some(StopReason::Crash);
                meta.duration_ms = samples / 48;
                meta.ended_at_ms = Some(meta.started_at_ms + meta.duration_ms);
                if let Err(e) = write_json(&path, &meta) {
                    warn!(recording = %id, error = %e, "cannot mark an interrupted recording");
                }
                info!(recording = %id, room = %meta.room, duration_ms = meta.duration_ms,
                    "recording interrupted by the last shutdown: kept up to its last page");
            }
            let participant = meta.participant.as_deref().and_then(|s| s.parse().ok());
            self.index().insert(
                id,
                Entry {
                    meta,
                    participant,
                    progress: Arc::default(),
                },
            );
            found += 1;
        }
        if found > 0 {
            info!(recordings = found, dir = %self.config.dir.display(), "recordings found");
        }
        self.enforce_retention_blocking();
    }

    /// Starts the manager: it ends recordings whose room or participant went, reports presence, applies
    /// `record` settings, takes the writer's failures and enforces retention.
    pub fn start_tasks(self: &Arc<Self>, signaling: Arc<Signaling>) {
        let _ = self.signaling.set(signaling);
        let Some(mut events) = self
            .events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            return;
        };
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut retention =
                tokio::time::interval(Duration::from_secs(me.config.retention_interval_secs));
            retention.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    Some(event) = events.recv() => me.event(event),
                    _ = tick.tick() => me.tick().await,
                    _ = retention.tick() => {
                        let me = me.clone();
                        let _ = tokio::task::spawn_blocking(move || me.enforce_retention_blocking()).await;
                    }
                }
            }
        });
    }

    /// Publish what is tapped: rooms with a running mix recording, participants with one of their own.
    fn update_taps(&self) {
        let mut taps = TapSet::default();
        let mut running = 0;
        for e in self.index().values().filter(|e| e.running()) {
            running += 1;
            match e.participant {
                Some(p) => taps.participants.insert(p),
                None => taps.rooms.insert(RoomId(e.meta.room.clone())),
            };
        }
        self.metrics.active.set(running);
        self.recorded.send_if_modified(|now| {
            let changed = **now != taps;
            if changed {
                *now = Arc::new(taps);
            }
            changed
        });
    }

    pub fn list(&self, room: Option<&str>) -> Vec<RecordingView> {
        self.index()
            .values()
            .filter(|e| room.is_none_or(|r| e.meta.room == r))
            .map(Entry::view)
            .collect()
    }

    pub fn get(&self, id: &RecordingId) -> Option<RecordingView> {
        self.index().get(id).map(Entry::view)
    }

    /// The Ogg file of a recording in the index.
    pub fn audio_path(&self, id: &RecordingId) -> Option<PathBuf> {
        self.index().contains_key(id).then(|| self.audio_file(id))
    }

    /// The side file of a recording in the index.
    pub fn meta_path(&self, id: &RecordingId) -> Option<PathBuf> {
        self.index().contains_key(id).then(|| self.json_file(id))
    }

    fn audio_file(&self, id: &RecordingId) -> PathBuf {
        self.config.dir.join(format!("{id}.opus"))
    }

    fn json_file(&self, id: &RecordingId) -> PathBuf {
        self.config.dir.join(format!("{id}.json"))
    }

    /// Record `room`'s mix, or the participant `sid`'s own stream.
    pub async fn start(&self, room: &str, sid: Option<&str>) -> Result<RecordingView, RecordError> {
        if !self.config.enabled {
            return Err(RecordError::Disabled);
        }
        let snapshot = self
            .signaling
            .get()
            .and_then(|s| s.room(room))
            .ok_or(RecordError::RoomNotFound)?;
        let participant = match sid {
            None => None,
            Some(sid) => {
                let id: ParticipantId =
                    sid.parse().map_err(|_| RecordError::ParticipantNotFound)?;
                if !snapshot.participants.iter().any(|p| p.sid == sid) {
                    return Err(RecordError::ParticipantNotFound);
                }
                Some(id)
            }
        };
        let started_at_ms = unix_ms();
        let id = RecordingId::new(started_at_ms);
        let mut meta = RecordingMeta {
            format: FORMAT.to_owned(),
            id: id.clone(),
            room: room.to_owned(),
            kind: if participant.is_some() {
                Kind::Participant
            } else {
                Kind::Mix
            },
            participant: participant.map(|p| p.to_string()),
            state: State::Recording,
            started_at_ms,
            started_at: rfc3339(started_at_ms),
            ended_at_ms: None,
            duration_ms: 0,
            bytes: 0,
            stop_reason: None,
            error: None,
            participants: people(&snapshot.participants),
            timeline: Vec::new(),
        };
        let progress = Arc::new(Progress::default());
        {
            let mut index = self.index();
            let running = index.values().filter(|e| e.running());
            if let Some(e) = running
                .clone()
                .find(|e| e.meta.room == room && e.participant == participant)
            {
                return Err(RecordError::AlreadyRecording(e.meta.id.clone()));
            }
            if running.count() >= self.config.max_active {
                return Err(RecordError::Capacity);
            }
            let entry = Entry {
                meta: meta.clone(),
                participant,
                progress: progress.clone(),
            };
            index.insert(id.clone(), entry);
        }
        let (audio, json) = (self.audio_file(&id), self.json_file(&id));
        let (dir, header_meta) = (self.config.dir.clone(), meta.clone());
        let made =
            tokio::task::spawn_blocking(move || create_files(&dir, &audio, &json, header_meta))
                .await
                .unwrap_or_else(|e| Err(WriteError::Io(e.to_string())));
        let (file, stream, header_bytes) = match made {
            Ok(made) => made,
            Err(e) => {
                self.index().remove(&id);
                self.metrics.errors.with_label_values(&[e.reason()]).inc();
                warn!(room, error = %e, dir = %self.config.dir.display(), "recording not started: its file cannot be written");
                return Err(e.into());
            }
        };
        meta.bytes = header_bytes;
        progress.bytes.store(header_bytes, Ordering::Relaxed);
        self.metrics.bytes.inc_by(header_bytes);
        let kind = meta.kind;
        self.send(Control::Start(Box::new(Start {
            id: id.clone(),
            room: RoomId(room.to_owned()),
            participant,
            file,
            stream,
            json_path: self.json_file(&id),
            meta,
            progress,
        })));
        self.metrics
            .started
            .with_label_values(&[if kind == Kind::Mix {
                "mix"
            } else {
                "participant"
            }])
            .inc();
        self.update_taps();
        info!(recording = %id, room, participant = ?sid, "recording started");
        self.get(&id).ok_or(RecordError::RoomNotFound)
    }

    /// End a running recording (its last page written, the file synced, the side file final). `None`
    /// if there is no such recording; an ended one is returned as it is.
    pub async fn stop(&self, id: &RecordingId, reason: StopReason) -> Option<RecordingView> {
        let ended_at_ms = unix_ms();
        {
            let mut index = self.index();
            let e = index.get_mut(id)?;
            if !e.running() {
                return Some(e.view());
            }
            e.meta.state = State::Stopped;
            e.meta.stop_reason = Some(reason);
            e.meta.ended_at_ms = Some(ended_at_ms);
        }
        self.update_taps();
        let (done, closed) = oneshot::channel();
        self.send(Control::Stop {
            id: id.clone(),
            reason,
            ended_at_ms,
            done,
        });
        if tokio::time::timeout(STOP_TIMEOUT, closed).await.is_err() {
            warn!(recording = %id, "the recording writer did not close the file in time");
        }
        self.metrics
            .stopped
            .with_label_values(&[reason.as_str()])
            .inc();
        let mut index = self.index();
        let e = index.get_mut(id)?;
        e.meta.bytes = e.bytes();
        e.meta.duration_ms = e.progress.duration_ms();
        info!(recording = %id, room = %e.meta.room, reason = reason.as_str(),
            duration_ms = e.meta.duration_ms, bytes = e.meta.bytes, "recording stopped");
        Some(e.view())
    }

    /// Stop every running recording of `room`; the ones stopped.
    pub async fn stop_room(&self, room: &str) -> Vec<RecordingView> {
        let ids: Vec<RecordingId> = self
            .index()
            .values()
            .filter(|e| e.running() && e.meta.room == room)
            .map(|e| e.meta.id.clone())
            .collect();
        let mut stopped = Vec::new();
        for id in ids {
            stopped.extend(self.stop(&id, StopReason::Request).await);
        }
        stopped
    }

    /// Stop (if running) and delete a recording's files. `false` if there is no such recording.
    pub async fn delete(&self, id: &RecordingId) -> bool {
        if self.stop(id, StopReason::Request).await.is_none() {
            return false;
        }
        let files = [self.audio_file(id), self.json_file(id)];
        let _ = tokio::task::spawn_blocking(move || remove_files(&files)).await;
        self.index().remove(id);
        self.metrics.deleted.with_label_values(&["request"]).inc();
        self.update_stored();
        info!(recording = %id, "recording deleted");
        true
    }

    /// Stop everything (the server is going).
    pub async fn shutdown(&self) {
        let ids: Vec<RecordingId> = self
            .index()
            .values()
            .filter(|e| e.running())
            .map(|e| e.meta.id.clone())
            .collect();
        for id in ids {
            self.stop(&id, StopReason::Shutdown).await;
        }
    }

    /// A room made with a `record` setting (the admin API): its mix is recorded from now on if asked,
    /// its participants as they come.
    pub async fn record_room(&self, room: &str, settings: RecordSettings) {
        self.auto().insert(
            room.to_owned(),
            Auto {
                settings,
                mix_started: false,
                participants_started: HashSet::new(),
            },
        );
        self.apply_auto().await;
    }

    /// A room's `record` setting.
    pub fn record_settings(&self, room: &str) -> Option<RecordSettings> {
        self.auto().get(room).map(|a| a.settings)
    }

    async fn apply_auto(&self) {
        let Some(signaling) = self.signaling.get() else {
            return;
        };
        let mut todo: Vec<(String, Option<String>)> = Vec::new();
        self.auto().retain(|room, auto| {
            let Some(snapshot) = signaling.room(room) else {
                return false; // the room went: its setting with it
            };
            if auto.settings.mix && !auto.mix_started {
                auto.mix_started = true;
                todo.push((room.clone(), None));
            }
            if auto.settings.participants {
                for p in snapshot.participants {
                    if auto.participants_started.insert(p.sid.clone()) {
                        todo.push((room.clone(), Some(p.sid)));
                    }
                }
            }
            true
        });
        for (room, sid) in todo {
            if let Err(e) = self.start(&room, sid.as_deref()).await {
                warn!(room, participant = ?sid, error = %e, "automatic recording not started");
            }
        }
    }

    async fn tick(&self) {
        let Some(signaling) = self.signaling.get().cloned() else {
            return;
        };
        let running: Vec<(RecordingId, String, Option<String>)> = self
            .index()
            .values()
            .filter(|e| e.running())
            .map(|e| {
                (
                    e.meta.id.clone(),
                    e.meta.room.clone(),
                    e.meta.participant.clone(),
                )
            })
            .collect();
        let mut rooms: HashMap<String, Vec<Person>> = HashMap::new();
        for (id, room, sid) in running {
            let Some(snapshot) = signaling.room(&room) else {
                self.stop(&id, StopReason::RoomClosed).await;
                continue;
            };
            if let Some(sid) = sid {
                if !snapshot.participants.iter().any(|p| p.sid == sid) {
                    self.stop(&id, StopReason::ParticipantLeft).await;
                    continue;
                }
            }
            rooms
                .entry(room)
                .or_insert_with(|| people(&snapshot.participants));
        }
        for (room, people) in rooms {
            self.send(Control::Presence { room, people });
        }
        self.apply_auto().await;
    }

    /// The writer could not write a recording: it has ended, failed.
    fn event(&self, event: Event) {
        let Event::Failed { id, error } = event;
        {
            let mut index = self.index();
            let Some(e) = index.get_mut(&id) else { return };
            let was_running = e.running();
            e.meta.state = State::Failed;
            e.meta.stop_reason = Some(StopReason::Error);
            e.meta.error = Some(error.to_string());
            e.meta.ended_at_ms.get_or_insert_with(unix_ms);
            e.meta.bytes = e.bytes();
            e.meta.duration_ms = e.progress.duration_ms();
            if was_running {
                self.metrics.stopped.with_label_values(&["error"]).inc();
            }
            warn!(recording = %id, room = %e.meta.room, error = %error, duration_ms = e.meta.duration_ms,
                "recording stopped: its file cannot be written (the room goes on)");
        }
        self.metrics
            .errors
            .with_label_values(&[error.reason()])
            .inc();
        self.update_taps();
    }

    /// Delete ended recordings past `recording.retention_max_age_secs`, then the oldest ended ones while
    /// all together exceed `recording.retention_max_total_bytes` (blocking: file removals).
    fn enforce_retention_blocking(&self) {
        let candidates: Vec<retention::Candidate> = self
            .index()
            .values()
            .map(|e| retention::Candidate {
                id: e.meta.id.clone(),
                ended_at_ms: if e.running() {
                    None
                } else {
                    e.meta.ended_at_ms.or(Some(e.meta.started_at_ms))
                },
                bytes: e.bytes(),
            })
            .collect();
        let doomed = retention::select(
            &candidates,
            unix_ms(),
            self.config.retention_max_age_secs.saturating_mul(1000),
            self.config.retention_max_total_bytes,
        );
        for (id, reason) in doomed {
            remove_files(&[self.audio_file(&id), self.json_file(&id)]);
            self.index().remove(&id);
            self.metrics.deleted.with_label_values(&[reason]).inc();
            info!(recording = %id, reason, "recording deleted by retention");
        }
        self.update_stored();
    }

    fn update_stored(&self) {
        let total: u64 = self.index().values().map(Entry::bytes).sum();
        self.metrics
            .stored_bytes
            .set(i64::try_from(total).unwrap_or(i64::MAX));
    }
}

fn people(participants: &[signaling::protocol::ParticipantInfo]) -> Vec<Person> {
    participants
        .iter()
        .map(|p| Person {
            sid: p.sid.clone(),
            name: p.name.clone(),
        })
        .collect()
}

/// The recording's Ogg file with its header pages (OpusTags carrying the metadata's static part), and its
/// side file. Blocking.
fn create_files(
    dir: &Path,
    audio: &Path,
    json: &Path,
    mut meta: RecordingMeta,
) -> Result<(File, OggStream, u64), WriteError> {
    std::fs::create_dir_all(dir)?;
    let mut file = File::options().write(true).create_new(true).open(audio)?;
    let mut serial = [0u8; 4];
    // A serial number only tells streams apart; a failed random source leaves it 0.
    let _ = aws_lc_rs::rand::fill(&mut serial);
    let mut stream = OggStream::new(u32::from_le_bytes(serial));
    let headers = stream.header_pages_with(
        concat!("chorus ", env!("CARGO_PKG_VERSION")),
        &meta.comments(),
    );
    let written = file.write_all(&headers).and_then(|()| file.flush());
    meta.bytes = headers.len() as u64;
    if let Err(e) = written
        .map_err(WriteError::from)
        .and_then(|()| write_json(json, &meta))
    {
        remove_files(&[audio.to_owned(), json.to_owned()]);
        return Err(e);
    }
    Ok((file, stream, meta.bytes))
}

/// Write a side file whole: to a temporary file, then renamed over the old one.
fn write_json(path: &Path, meta: &RecordingMeta) -> Result<(), WriteError> {
    let body = serde_json::to_vec_pretty(meta).map_err(|e| WriteError::Io(e.to_string()))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, body)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn remove_files(files: &[PathBuf]) {
    for f in files {
        if let Err(e) = std::fs::remove_file(f) {
            if e.kind() != std::io::ErrorKind::NotFound {
                warn!(file = %f.display(), error = %e, "cannot delete a recording file");
            }
        }
    }
}
