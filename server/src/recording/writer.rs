//! The recording writer: one thread that owns every running recording's file. Frames reach it from the
//! media workers over one bounded queue (`try_send`: a full queue is a counted drop, never a blocked
//! worker), commands from the manager over an unbounded one (a handful per recording). Each recording
//! packs its packets into Ogg pages (the listener streams' paging, [`OggStream`]) and writes every page
//! whole with one `write_all` as soon as it holds `recording.page_ms` of audio, or that long after its
//! first packet: a crash of the process loses at most that much, and the file stays a valid Ogg stream up
//! to its last page. fsync every `recording.fsync_interval_ms` and at the end.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use media_core::mixer::SILENT_LEVEL;
use media_core::{BroadcastFrame, MicPacket, ParticipantId, RoomId};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::debug;

use super::meta::{Person, RecordingId, RecordingMeta, State, StopReason, Timeline};
use crate::broadcast::ogg::{OggStream, PRE_SKIP};
use crate::broadcast::TapSet;

/// Samples per millisecond at the Ogg Opus granule rate.
const SAMPLES_PER_MS: u64 = 48;
/// A 20 ms frame.
const FRAME_SAMPLES: u32 = 960;
/// A 20 ms Opus packet that decodes to silence (CELT, full band, mono): fills ticks the mixer skipped
/// and a participant's pauses (DTX, mute), so the file keeps the room's timeline.
const SILENCE: [u8; 3] = [0xf8, 0xff, 0xfe];
/// A gap longer than the wall time since the previous packet plus this is not believed (a sender's
/// timestamp jump): it is filled only up to the wall time.
const GAP_SLACK_MS: u64 = 1000;
/// The side file is rewritten this often while recording (and at the end).
const META_INTERVAL: Duration = Duration::from_secs(5);
/// An Ogg page holds at most this many lacing values.
const MAX_SEGMENTS: usize = 255;

/// What the media workers send.
pub(super) enum Data {
    Room(BroadcastFrame),
    Mic(MicPacket),
    /// A command is waiting.
    Wake,
}

/// What the manager asks.
pub(super) enum Control {
    Start(Box<Start>),
    Stop {
        id: RecordingId,
        reason: StopReason,
        ended_at_ms: u64,
        done: oneshot::Sender<()>,
    },
    /// Who is in `room` now (names for the timeline and the participant list).
    Presence {
        room: String,
        people: Vec<Person>,
    },
}

/// A recording to run: its file already made, holding the header pages.
pub(super) struct Start {
    pub id: RecordingId,
    pub room: RoomId,
    /// `None`: the room's mix.
    pub participant: Option<ParticipantId>,
    pub file: File,
    pub stream: OggStream,
    pub json_path: PathBuf,
    pub meta: RecordingMeta,
    pub progress: Arc<Progress>,
}

/// What the writer tells the manager.
pub(super) enum Event {
    Failed { id: RecordingId, error: WriteError },
}

/// A running recording's size, shared with the manager (the admin API's view).
#[derive(Debug, Default)]
pub struct Progress {
    pub bytes: AtomicU64,
    pub samples: AtomicU64,
}

impl Progress {
    pub fn duration_ms(&self) -> u64 {
        self.samples.load(Ordering::Relaxed) / SAMPLES_PER_MS
    }
}

/// A file that could not be written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    #[error("disk full")]
    DiskFull,
    #[error("permission denied")]
    PermissionDenied,
    #[error("I/O error: {0}")]
    Io(String),
}

impl WriteError {
    /// The `reason` label of `chorus_recording_errors_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            WriteError::DiskFull => "disk_full",
            WriteError::PermissionDenied => "permission_denied",
            WriteError::Io(_) => "io",
        }
    }
}

impl From<std::io::Error> for WriteError {
    fn from(e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                WriteError::DiskFull
            }
            std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
                WriteError::PermissionDenied
            }
            kind => WriteError::Io(kind.to_string()),
        }
    }
}

/// The writer's data queue, bounded at `capacity` items (`recording.queue_frames`) by a count rather
/// than by an array allocated up front: std's `sync_channel` allocates its whole capacity when it is
/// made (10,000 × 80 bytes, 800 kB, in every process whether anything records or not), while this
/// one's blocks come and go with what is queued.
pub(super) fn data_queue(capacity: usize) -> (DataSender, DataReceiver) {
    let (tx, rx) = std::sync::mpsc::channel();
    let queued = Arc::new(AtomicUsize::new(0));
    (
        DataSender {
            tx,
            queued: queued.clone(),
            capacity,
        },
        DataReceiver { rx, queued },
    )
}

/// The sending side of [`data_queue`]; never blocks.
#[derive(Clone)]
pub(super) struct DataSender {
    tx: Sender<Data>,
    queued: Arc<AtomicUsize>,
    capacity: usize,
}

/// Why [`DataSender::try_send`] did not queue.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum QueueError {
    /// `capacity` items are waiting already.
    Full,
    /// The writer has stopped.
    Closed,
}

impl DataSender {
    pub(super) fn try_send(&self, data: Data) -> Result<(), QueueError> {
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(QueueError::Full);
        }
        self.tx.send(data).map_err(|_| {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            QueueError::Closed
        })
    }
}

/// The writer's side of [`data_queue`].
pub(super) struct DataReceiver {
    rx: Receiver<Data>,
    queued: Arc<AtomicUsize>,
}

impl DataReceiver {
    fn recv_timeout(&self, timeout: Duration) -> Result<Data, RecvTimeoutError> {
        let data = self.rx.recv_timeout(timeout)?;
        self.queued.fetch_sub(1, Ordering::AcqRel);
        Ok(data)
    }
}

/// Where a media worker puts what the recorder taps: never blocks, counts what it cannot queue.
#[derive(Clone)]
pub struct RecordSink {
    pub(super) data: DataSender,
    /// What is recorded: a room's frames go to the writer only if its mix is.
    pub(super) recorded: watch::Receiver<Arc<TapSet>>,
    pub(super) dropped: prometheus::IntCounter,
}

impl RecordSink {
    pub fn room_frame(&self, frame: &BroadcastFrame) {
        if self.recorded.borrow().rooms.contains(&frame.room) {
            self.send(Data::Room(frame.clone()));
        }
    }

    pub fn microphone(&self, packet: MicPacket) {
        self.send(Data::Mic(packet));
    }

    fn send(&self, data: Data) {
        if let Err(QueueError::Full) = self.data.try_send(data) {
            self.dropped.inc();
        }
    }
}

/// One running recording.
struct Active {
    room: RoomId,
    participant: Option<ParticipantId>,
    file: File,
    stream: OggStream,
    json_path: PathBuf,
    meta: RecordingMeta,
    progress: Arc<Progress>,
    timeline: Timeline,
    /// Packets of the page being filled, their lacing values and samples, and when the first came.
    pending: Vec<Arc<[u8]>>,
    segments: usize,
    pending_samples: u64,
    pending_since: Option<Instant>,
    /// Samples in the stream so far, pending ones included (the granule position, less the pre-skip).
    samples: u64,
    bytes: u64,
    /// Mix: the last tick. Participant: where the last packet ended (RTP) and when it came.
    last_tick: Option<u64>,
    last_end: Option<(u32, Instant)>,
    synced: Instant,
    meta_written: Instant,
    /// `chorus_recording_bytes_total`.
    written: prometheus::IntCounter,
}

impl Active {
    fn push(
        &mut self,
        packet: Arc<[u8]>,
        samples: u32,
        page: Duration,
        now: Instant,
    ) -> Result<(), WriteError> {
        let segments = packet.len() / 255 + 1;
        if self.segments + segments > MAX_SEGMENTS {
            self.flush_page()?;
        }
        self.pending.push(packet);
        self.segments += segments;
        self.pending_samples += u64::from(samples);
        self.samples += u64::from(samples);
        self.pending_since.get_or_insert(now);
        if self.pending_samples >= page.as_millis() as u64 * SAMPLES_PER_MS {
            self.flush_page()?;
        }
        Ok(())
    }

    fn silence(&mut self, frames: u64, page: Duration, now: Instant) -> Result<(), WriteError> {
        let packet: Arc<[u8]> = Arc::from(&SILENCE[..]);
        for _ in 0..frames {
            self.push(packet.clone(), FRAME_SAMPLES, page, now)?;
        }
        Ok(())
    }

    /// Write the page being filled, whole, with one `write_all`.
    fn flush_page(&mut self) -> Result<(), WriteError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let granule = u64::from(PRE_SKIP) + self.samples;
        let refs: Vec<&[u8]> = self.pending.iter().map(|p| &p[..]).collect();
        let page = self.stream.audio_page(granule, &refs);
        self.file.write_all(&page)?;
        self.file.flush()?;
        self.bytes += page.len() as u64;
        self.written.inc_by(page.len() as u64);
        self.pending.clear();
        self.segments = 0;
        self.pending_samples = 0;
        self.pending_since = None;
        self.progress.bytes.store(self.bytes, Ordering::Relaxed);
        self.progress.samples.store(self.samples, Ordering::Relaxed);
        Ok(())
    }

    fn ms(&self) -> u64 {
        self.samples / SAMPLES_PER_MS
    }

    fn write_meta(&mut self, names: &HashMap<ParticipantId, String>) -> Result<(), WriteError> {
        self.meta.duration_ms = self.ms();
        self.meta.bytes = self.bytes;
        self.meta.timeline = self.timeline.segments(names);
        super::write_json(&self.json_path, &self.meta)?;
        self.meta_written = Instant::now();
        Ok(())
    }
}

/// The writer thread's state.
pub(super) struct Writer {
    page: Duration,
    fsync_every: Option<Duration>,
    active: HashMap<RecordingId, Active>,
    /// Display names by room, from the manager's presence reports.
    names: HashMap<String, HashMap<ParticipantId, String>>,
    events: mpsc::UnboundedSender<Event>,
    bytes: prometheus::IntCounter,
}

impl Writer {
    pub(super) fn new(
        page: Duration,
        fsync_every: Option<Duration>,
        events: mpsc::UnboundedSender<Event>,
        bytes: prometheus::IntCounter,
    ) -> Self {
        Writer {
            page,
            fsync_every,
            active: HashMap::new(),
            names: HashMap::new(),
            events,
            bytes,
        }
    }

    /// Runs until the data queue's senders are all gone.
    pub(super) fn run(mut self, data: DataReceiver, control: Receiver<Control>) {
        loop {
            let got = data.recv_timeout(self.page.min(Duration::from_millis(250)));
            while let Ok(c) = control.try_recv() {
                self.control(c);
            }
            match got {
                Ok(d) => self.data(d),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.service(Instant::now());
        }
        debug!("recording writer stopped");
    }

    fn control(&mut self, c: Control) {
        match c {
            Control::Start(s) => {
                let now = Instant::now();
                let Start {
                    id,
                    room,
                    participant,
                    file,
                    stream,
                    json_path,
                    meta,
                    progress,
                } = *s;
                self.active.insert(
                    id,
                    Active {
                        room,
                        participant,
                        file,
                        stream,
                        json_path,
                        bytes: meta.bytes,
                        meta,
                        progress,
                        timeline: Timeline::default(),
                        pending: Vec::new(),
                        segments: 0,
                        pending_samples: 0,
                        pending_since: None,
                        samples: 0,
                        last_tick: None,
                        last_end: None,
                        synced: now,
                        meta_written: now,
                        written: self.bytes.clone(),
                    },
                );
            }
            Control::Stop {
                id,
                reason,
                ended_at_ms,
                done,
            } => {
                if let Some(mut a) = self.active.remove(&id) {
                    a.meta.state = State::Stopped;
                    a.meta.stop_reason = Some(reason);
                    a.meta.ended_at_ms = Some(ended_at_ms);
                    let names = self.names.get(&a.room.0).cloned().unwrap_or_default();
                    let ended = a
                        .flush_page()
                        .and_then(|()| a.file.sync_all().map_err(WriteError::from))
                        .and_then(|()| a.write_meta(&names));
                    if let Err(error) = ended {
                        let _ = self.events.send(Event::Failed { id, error });
                    }
                }
                let _ = done.send(());
            }
            Control::Presence { room, people } => {
                let names = self.names.entry(room.clone()).or_default();
                for p in &people {
                    if let Ok(id) = p.sid.parse::<ParticipantId>() {
                        names.insert(id, p.name.clone());
                    }
                }
                for a in self.active.values_mut().filter(|a| a.room.0 == room) {
                    a.meta.saw(&people);
                }
            }
        }
    }

    fn data(&mut self, d: Data) {
        let now = Instant::now();
        let page = self.page;
        let mut failed = Vec::new();
        match d {
            Data::Wake => {}
            Data::Room(frame) => {
                for (id, a) in self.active.iter_mut() {
                    if a.participant.is_some() || a.room != frame.room {
                        continue;
                    }
                    // Ticks the mixer skipped are silence; a room re-made (its ticks count anew) goes on.
                    let gap = match a.last_tick {
                        Some(last) if frame.tick > last => {
                            (frame.tick - last - 1).min(GAP_SLACK_MS / 20)
                        }
                        _ => 0,
                    };
                    a.last_tick = Some(frame.tick);
                    let from = a.ms() + gap * 20;
                    let written = a
                        .silence(gap, page, now)
                        .and_then(|()| a.push(frame.payload.clone(), FRAME_SAMPLES, page, now));
                    a.timeline.talk(&frame.talkers, from, from + 20);
                    if let Err(e) = written {
                        failed.push((id.clone(), e));
                    }
                }
            }
            Data::Mic(packet) => {
                let Some(samples) = packet.samples else {
                    return; // not Opus: nothing a decoder could play
                };
                for (id, a) in self.active.iter_mut() {
                    if a.participant != Some(packet.participant) {
                        continue;
                    }
                    let gap = match a.last_end {
                        None => 0,
                        Some((end, at)) => {
                            let delta = packet.timestamp.wrapping_sub(end) as i32;
                            if delta < 0 {
                                continue; // late or repeated: the file is in order
                            }
                            let wall = now.duration_since(at).as_millis() as u64 + GAP_SLACK_MS;
                            (delta as u64).min(wall * SAMPLES_PER_MS) / u64::from(FRAME_SAMPLES)
                        }
                    };
                    a.last_end = Some((packet.timestamp.wrapping_add(samples), now));
                    let from = a.ms() + gap * 20;
                    let to = from + u64::from(samples) / SAMPLES_PER_MS;
                    let written = a
                        .silence(gap, page, now)
                        .and_then(|()| a.push(packet.payload.clone(), samples, page, now));
                    let talking = packet.level.is_some_and(|l| l < SILENT_LEVEL)
                        && packet.payload.len() > SILENCE.len();
                    let who: &[ParticipantId] = if talking { &[packet.participant] } else { &[] };
                    a.timeline.talk(who, from, to);
                    if let Err(e) = written {
                        failed.push((id.clone(), e));
                    }
                }
            }
        }
        for (id, e) in failed {
            self.fail(id, e);
        }
    }

    /// Pages due by time, fsyncs and side files.
    fn service(&mut self, now: Instant) {
        let mut failed = Vec::new();
        for (id, a) in self.active.iter_mut() {
            let mut result = Ok(());
            if a.pending_since
                .is_some_and(|t| now.duration_since(t) >= self.page)
            {
                result = a.flush_page();
            }
            if let (Ok(()), Some(every)) = (&result, self.fsync_every) {
                if now.duration_since(a.synced) >= every {
                    result = a.file.sync_data().map_err(WriteError::from);
                    a.synced = now;
                }
            }
            if result.is_ok() && now.duration_since(a.meta_written) >= META_INTERVAL {
                let names = self.names.get(&a.room.0).cloned().unwrap_or_default();
                result = a.write_meta(&names);
            }
            if let Err(e) = result {
                failed.push((id.clone(), e));
            }
        }
        for (id, e) in failed {
            self.fail(id, e);
        }
    }

    /// A recording that could not be written ends: its side file says so if it can be written.
    fn fail(&mut self, id: RecordingId, error: WriteError) {
        if let Some(mut a) = self.active.remove(&id) {
            a.meta.state = State::Failed;
            a.meta.stop_reason = Some(StopReason::Error);
            a.meta.error = Some(error.to_string());
            a.meta.ended_at_ms = Some(super::meta::unix_ms());
            let names = self.names.get(&a.room.0).cloned().unwrap_or_default();
            let _ = a.write_meta(&names);
        }
        let _ = self.events.send(Event::Failed { id, error });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_queue_holds_its_capacity_and_frees_a_place_per_item_taken() {
        let (tx, rx) = data_queue(2);
        assert_eq!(tx.try_send(Data::Wake), Ok(()));
        assert_eq!(tx.clone().try_send(Data::Wake), Ok(()));
        assert_eq!(tx.try_send(Data::Wake), Err(QueueError::Full));
        assert!(rx.recv_timeout(Duration::ZERO).is_ok());
        assert_eq!(tx.try_send(Data::Wake), Ok(()));
        assert_eq!(tx.try_send(Data::Wake), Err(QueueError::Full));
        assert!(rx.recv_timeout(Duration::ZERO).is_ok());
        assert!(rx.recv_timeout(Duration::ZERO).is_ok());
        assert!(matches!(
            rx.recv_timeout(Duration::ZERO),
            Err(RecvTimeoutError::Timeout)
        ));
        drop(rx);
        assert_eq!(tx.try_send(Data::Wake), Err(QueueError::Closed));
        // A refused item leaves no place taken.
        assert_eq!(tx.queued.load(Ordering::Acquire), 0);
    }
}
