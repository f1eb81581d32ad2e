//! Listener streams, Icecast-compatible: a room's mix served over HTTP as Ogg/Opus at `/live/{room}.opus`
//! (docs/broadcast.md).
//!
//! One encode per mount, shared by all its listeners. The media worker that owns a room taps its mixer
//! (the shared encode of the full mix, [`media_core::Output::Broadcast`]) while the mount has listeners;
//! the frames cross to the [`pager`] task over one bounded queue, which packs them into Ogg pages of
//! `broadcast.page_ms` and publishes each page once, as one shared [`Bytes`], on the mount's
//! ring ([`tokio::sync::broadcast`], `broadcast.listener_queue_pages` deep). Every listener reads the ring
//! at its own pace: the ring is its bounded queue. A listener the ring has overtaken — it did not take its
//! pages for that long — is dropped (its connection closed), counted and logged; the others never wait for
//! it. A new listener gets the two header pages, then the last page published (its first audio at once),
//! then live pages: no burst, and at most one page behind live.
//!
//! Which rooms are tapped reaches every worker through a [`watch`] channel of room names, so no command
//! needs to find the worker a room lives on (a room re-created on another worker is tapped there too).
//! The set is the rooms whose mounts have listeners and whatever the other tap users want ([`TapSet`]:
//! rooms and participants; the recorder, `crate::recording`, and HLS, `crate::hls`), published here as
//! one set.

mod fanout;
mod listener;
pub mod ogg;
pub mod ogg_reader;
mod raw;
mod relay;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use media_core::{BroadcastFrame, ParticipantId, RoomId};
use serde::Serialize;
use signaling::Signaling;
use tokio::sync::{broadcast, mpsc, watch};
use tracing::{info, warn};

use crate::config::BroadcastConfig;
use crate::metrics::BroadcastMetrics;
use ogg::{OggStream, PRE_SKIP};

pub(crate) use listener::authorized;
pub use listener::{router, ConnectionControl};
pub(crate) use raw::take as take_listener;

/// Frames waiting between the media workers and the pager (beyond this they are dropped and counted:
/// 2 s of 20 ms frames for 50 tapped rooms).
const FRAME_QUEUE: usize = 5_000;

/// How often listeners the ring has overtaken while their connection stopped asking for data (a client
/// that never reads) are looked for.
const SWEEP_INTERVAL: Duration = Duration::from_millis(500);

/// Samples in one 20 ms Opus frame at the granule rate.
const FRAME_SAMPLES: u64 = 960;

/// What the media workers read: the rooms and participants to tap.
pub type Taps = watch::Receiver<Arc<TapSet>>;

/// Rooms whose full mix, and participants whose microphone packets, the media workers hand out
/// ([`media_core::MediaCore::set_broadcast_rooms`], [`media_core::MediaCore::set_tapped_participants`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TapSet {
    pub rooms: HashSet<RoomId>,
    pub participants: HashSet<ParticipantId>,
}

/// One page as published: its number on the mount (to tell how far behind a listener is) and its bytes.
#[derive(Clone, Debug)]
struct Page {
    number: u64,
    bytes: Bytes,
}

/// What the admin API may set on a mount.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MountSettings {
    /// `None`: `broadcast.public`.
    pub public: Option<bool>,
    /// The ICY StreamTitle; `None`: who is speaking.
    pub title: Option<String>,
}

/// A listener's handle as the sweep sees it.
struct ListenerSlot {
    /// The number of the last page handed to its connection (+1; 0 before the first live page).
    taken: AtomicU64,
    kill: ConnectionControl,
    /// The page number when it started (a listener is not behind pages published before it came).
    joined: u64,
}

/// The paging state of a mount (the pager's, and a joining listener's under the same lock).
struct Pager {
    stream: OggStream,
    headers: Bytes,
    /// The pages last published, oldest first, at most `broadcast.pages_per_write()`: a new listener's
    /// first audio (the newest), and what a fan-out starting now writes it at once.
    recent: VecDeque<Page>,
    next_number: u64,
    /// Packets of the page being filled.
    packets: Vec<Arc<[u8]>>,
    /// Frames of the stream so far, skipped ticks included (the granule position), and the last tick seen.
    position: u64,
    last_tick: Option<u64>,
    /// The talkers of the page being filled, loudest first, and who spoke last (the title).
    talkers: Vec<ParticipantId>,
    speaker: Option<ParticipantId>,
}

/// One room's mount.
pub struct Mount {
    room: String,
    pages: broadcast::Sender<Page>,
    pager: Mutex<Pager>,
    settings: Mutex<MountSettings>,
    /// The ICY metadata block now (length byte and padded `StreamTitle='…';`), shared by all listeners.
    meta: Mutex<Bytes>,
    /// The listeners served by their HTTP connection (`listener.rs`), for the sweep.
    listeners: Mutex<HashMap<u64, Arc<ListenerSlot>>>,
    /// Where listeners taken before hyper go (`fanout.rs`); `None` while the mount has no fan-out running.
    fanout: Mutex<Option<mpsc::UnboundedSender<fanout::Arrival>>>,
    listeners_now: AtomicUsize,
    listeners_total: AtomicU64,
    listeners_dropped: AtomicU64,
    bytes_sent: AtomicU64,
    /// Fed by a relay of another node's mount (`relay.rs`), not by this node's workers: never tapped, and
    /// removed by its relay when it ends.
    relayed: AtomicBool,
}

impl Mount {
    fn lock_pager(&self) -> std::sync::MutexGuard<'_, Pager> {
        self.pager.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn settings(&self) -> MountSettings {
        self.settings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn meta(&self) -> Bytes {
        self.meta
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_meta(&self, title: &str) {
        *self.meta.lock().unwrap_or_else(PoisonError::into_inner) = icy_metadata(title);
    }

    /// Publishes `bytes` as the mount's next page. Under the pager's lock (`pager`): a listener joining
    /// sees the page either in `recent` (the last `recent_pages`) or on the ring.
    fn publish(&self, pager: &mut Pager, bytes: Bytes, recent_pages: u64) {
        let page = Page {
            number: pager.next_number,
            bytes,
        };
        pager.next_number += 1;
        if pager.recent.len() as u64 >= recent_pages {
            pager.recent.pop_front();
        }
        pager.recent.push_back(page.clone());
        let _ = self.pages.send(page);
    }

    /// The admin API's view.
    pub fn view(&self, config: &BroadcastConfig) -> MountView {
        let settings = self.settings();
        MountView {
            room: self.room.clone(),
            mount: format!("/live/{}.opus", self.room),
            public: settings.public.unwrap_or(config.public),
            title: settings.title,
            listeners: self.listeners_now.load(Ordering::Relaxed),
            listeners_total: self.listeners_total.load(Ordering::Relaxed),
            listeners_dropped: self.listeners_dropped.load(Ordering::Relaxed),
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
        }
    }
}

/// A mount as the admin API shows it (docs/openapi.json `Broadcast`).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct MountView {
    pub room: String,
    /// The listener URL's path.
    pub mount: String,
    /// Whether listeners need no token.
    pub public: bool,
    /// The StreamTitle set through the admin API; `null`: who is speaking.
    pub title: Option<String>,
    /// Listeners connected now.
    pub listeners: usize,
    pub listeners_total: u64,
    /// Listeners dropped for not reading their stream.
    pub listeners_dropped: u64,
    /// Bytes handed to listener connections (audio and ICY metadata).
    pub bytes_sent: u64,
}

impl MountView {
    /// The view of a room that has no mount yet: its defaults, nobody listening.
    pub fn unused(room: &str, config: &BroadcastConfig) -> MountView {
        MountView {
            room: room.to_owned(),
            mount: format!("/live/{room}.opus"),
            public: config.public,
            title: None,
            listeners: 0,
            listeners_total: 0,
            listeners_dropped: 0,
            bytes_sent: 0,
        }
    }
}

/// Every mount of the server, the tap set the workers follow, and the frames queue from the workers.
pub struct Broadcasts {
    config: BroadcastConfig,
    /// Set by [`Broadcasts::start`] (the workers, made before signaling, take the taps and frame sink).
    signaling: std::sync::OnceLock<Arc<Signaling>>,
    metrics: BroadcastMetrics,
    mounts: Mutex<HashMap<String, Arc<Mount>>>,
    taps: watch::Sender<Arc<TapSet>>,
    taps_update: Mutex<()>,
    /// What the other tap users (the recorder, HLS) tap; part of `taps`.
    others: Vec<watch::Receiver<Arc<TapSet>>>,
    frames: mpsc::Sender<BroadcastFrame>,
    frames_rx: Mutex<Option<mpsc::Receiver<BroadcastFrame>>>,
    next_listener: AtomicU64,
    listeners_now: AtomicUsize,
    /// Relays of other nodes' mounts start one at a time (`relay.rs`).
    relay_start: tokio::sync::Mutex<()>,
}

impl Broadcasts {
    /// `others`: what the other tap users (the recorder, HLS) tap, followed once [`Broadcasts::start`]ed.
    pub fn new(
        config: BroadcastConfig,
        metrics: BroadcastMetrics,
        others: Vec<watch::Receiver<Arc<TapSet>>>,
    ) -> Arc<Self> {
        let (frames, rx) = mpsc::channel(FRAME_QUEUE);
        Arc::new(Broadcasts {
            config,
            signaling: std::sync::OnceLock::new(),
            metrics,
            mounts: Mutex::new(HashMap::new()),
            taps: watch::Sender::new(Arc::new(TapSet::default())),
            taps_update: Mutex::new(()),
            others,
            frames,
            frames_rx: Mutex::new(Some(rx)),
            next_listener: AtomicU64::new(1),
            listeners_now: AtomicUsize::new(0),
            relay_start: tokio::sync::Mutex::new(()),
        })
    }

    pub fn config(&self) -> &BroadcastConfig {
        &self.config
    }

    /// The tap set, for a media worker.
    pub fn taps(&self) -> Taps {
        self.taps.subscribe()
    }

    /// Where a media worker puts its broadcast frames.
    pub fn frame_sink(&self) -> FrameSink {
        FrameSink {
            frames: self.frames.clone(),
            dropped: self.metrics.frames_dropped.clone(),
        }
    }

    fn mounts(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Mount>>> {
        self.mounts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn mount(&self, room: &str) -> Option<Arc<Mount>> {
        self.mounts().get(room).cloned()
    }

    pub fn views(&self) -> Vec<MountView> {
        let mut views: Vec<MountView> = self
            .mounts()
            .values()
            .map(|m| m.view(&self.config))
            .collect();
        views.sort_by(|a, b| a.room.cmp(&b.room));
        views
    }

    /// The mount of `room`, made if there is none.
    fn mount_or_create(&self, room: &str) -> Arc<Mount> {
        self.mount_or_make(room, false).0
    }

    /// The mount of `room`, made if there is none (`relayed`: fed by a relay of another node's mount, its
    /// `public` flag the owner's); and whether it was made now.
    fn mount_or_make(&self, room: &str, relayed: bool) -> (Arc<Mount>, bool) {
        let mut mounts = self.mounts();
        if let Some(m) = mounts.get(room) {
            return (m.clone(), false);
        }
        let mut serial = [0u8; 4];
        // A serial number only tells streams apart; a failed random source leaves it 0.
        let _ = aws_lc_rs::rand::fill(&mut serial);
        let mut stream = OggStream::new(u32::from_le_bytes(serial));
        let headers = stream.header_pages(concat!("chorus ", env!("CARGO_PKG_VERSION")));
        let (pages, _) = broadcast::channel(self.config.listener_queue_pages);
        let mount = Arc::new(Mount {
            room: room.to_owned(),
            pages,
            pager: Mutex::new(Pager {
                stream,
                headers,
                recent: VecDeque::new(),
                next_number: 0,
                packets: Vec::new(),
                position: 0,
                last_tick: None,
                talkers: Vec::new(),
                speaker: None,
            }),
            settings: Mutex::new(MountSettings::default()),
            meta: Mutex::new(icy_metadata("")),
            listeners: Mutex::new(HashMap::new()),
            fanout: Mutex::new(None),
            listeners_now: AtomicUsize::new(0),
            listeners_total: AtomicU64::new(0),
            listeners_dropped: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            relayed: AtomicBool::new(relayed),
        });
        mounts.insert(room.to_owned(), mount.clone());
        (mount, true)
    }

    /// Removes `mount` from the mounts if it is still `room`'s (a relay that ended).
    fn remove_mount(&self, mount: &Arc<Mount>) {
        let mut mounts = self.mounts();
        if mounts
            .get(&mount.room)
            .is_some_and(|m| Arc::ptr_eq(m, mount))
        {
            mounts.remove(&mount.room);
        }
    }

    /// Set a mount's public flag and title (the admin API). The mount is made if the room has none yet.
    pub fn configure(
        &self,
        room: &str,
        public: Option<Option<bool>>,
        title: Option<Option<String>>,
    ) {
        let mount = self.mount_or_create(room);
        let mut settings = mount
            .settings
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(p) = public {
            settings.public = p;
        }
        if let Some(t) = title {
            settings.title = t;
            let shown = match &settings.title {
                Some(t) => t.clone(),
                None => {
                    let speaker = mount.lock_pager().speaker;
                    speaker
                        .map(|s| self.speaker_name(room, s))
                        .unwrap_or_default()
                }
            };
            drop(settings);
            mount.set_meta(&shown);
        }
    }

    /// Whether a mount needs no token.
    pub(crate) fn is_public(&self, room: &str) -> bool {
        self.mount(room)
            .and_then(|m| m.settings().public)
            .unwrap_or(self.config.public)
    }

    /// Publish the tap set: the rooms whose mounts have listeners, and what the others tap.
    fn update_taps(&self) {
        // One at a time: a join and a leave racing must not publish a set computed before the other.
        let _one = self
            .taps_update
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut rooms: HashSet<RoomId> = self
            .mounts()
            .values()
            .filter(|m| {
                m.listeners_now.load(Ordering::Relaxed) > 0 && !m.relayed.load(Ordering::Relaxed)
            })
            .map(|m| RoomId(m.room.clone()))
            .collect();
        self.metrics.mounts.set(rooms.len() as i64);
        let mut participants = HashSet::new();
        for other in &self.others {
            let set = other.borrow().clone();
            rooms.extend(set.rooms.iter().cloned());
            participants.extend(set.participants.iter().copied());
        }
        let taps = TapSet {
            rooms,
            participants,
        };
        self.taps.send_if_modified(|now| {
            if **now == taps {
                return false;
            }
            *now = Arc::new(taps);
            true
        });
    }

    /// A participant's display name (its sid if it has none or has left).
    fn speaker_name(&self, room: &str, id: ParticipantId) -> String {
        let sid = id.to_string();
        self.signaling
            .get()
            .and_then(|s| s.room(room))
            // A speaker on another node of a room spanning nodes has its name in the shared roster.
            .and_then(|r| {
                r.all_participants()
                    .find(|p| p.sid == sid)
                    .map(|p| p.name.clone())
            })
            .filter(|n| !n.is_empty())
            .unwrap_or(sid)
    }

    /// Starts the pager and the sweep of listeners that stopped reading; they run as long as the runtime.
    pub fn start(self: &Arc<Self>, signaling: Arc<Signaling>) {
        let _ = self.signaling.set(signaling);
        let Some(frames) = self
            .frames_rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            return;
        };
        tokio::spawn(pager(self.clone(), frames));
        self.update_taps();
        for other in &self.others {
            let me = self.clone();
            let mut other = other.clone();
            tokio::spawn(async move {
                while other.changed().await.is_ok() {
                    me.update_taps();
                }
            });
        }
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                me.sweep();
            }
        });
    }

    /// Drop the listeners the ring has overtaken while their connection asked for nothing (a client that
    /// does not read; one that reads late finds out itself, see `listener`).
    fn sweep(&self) {
        // A mount nobody listens to goes with its room (a relayed one with its relay).
        if let Some(signaling) = self.signaling.get() {
            self.mounts().retain(|room, m| {
                m.listeners_now.load(Ordering::Relaxed) > 0
                    || signaling.room(room).is_some()
                    || m.relayed.load(Ordering::Relaxed)
            });
        }
        let mounts: Vec<Arc<Mount>> = self.mounts().values().cloned().collect();
        for mount in mounts {
            let head = mount.lock_pager().next_number;
            let listeners: Vec<(u64, Arc<ListenerSlot>)> = mount
                .listeners
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .map(|(id, slot)| (*id, slot.clone()))
                .collect();
            for (id, slot) in listeners {
                let taken = slot.taken.load(Ordering::Relaxed).max(slot.joined);
                let behind = head.saturating_sub(taken);
                if behind > self.config.listener_queue_pages as u64 {
                    self.drop_slow(&mount, id, &slot.kill, behind);
                }
            }
        }
    }

    /// A listener of `mount` starts (either path): counted; the first one taps the room.
    fn listener_joined(&self, mount: &Mount) {
        mount.listeners_total.fetch_add(1, Ordering::Relaxed);
        self.listeners_now.fetch_add(1, Ordering::Relaxed);
        self.metrics.listeners.inc();
        if mount.listeners_now.fetch_add(1, Ordering::Relaxed) == 0 {
            self.update_taps();
        }
    }

    /// A listener of `mount` is gone (either path); the last one stops the tap.
    fn listener_left(&self, mount: &Mount) {
        self.listeners_now.fetch_sub(1, Ordering::Relaxed);
        self.metrics.listeners.dec();
        if mount.listeners_now.fetch_sub(1, Ordering::Relaxed) == 1 {
            // The tap stops: the next listener must not start on a page from before the pause.
            let mut pager = mount.lock_pager();
            pager.recent.clear();
            pager.packets.clear();
            drop(pager);
            self.update_taps();
        }
    }

    /// `n` bytes handed to listener connections of `mount`.
    fn count_sent(&self, mount: &Mount, n: usize) {
        mount.bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
        self.metrics.bytes.inc_by(n as u64);
    }

    /// Close a listener that fell `behind` pages behind: counted, logged once, its connection closed.
    fn drop_slow(&self, mount: &Mount, id: u64, kill: &ConnectionControl, behind: u64) {
        let removed = mount
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id)
            .is_some();
        if !removed {
            return; // already dropped
        }
        self.count_slow(mount, id, behind);
        kill.kill();
    }

    /// A listener `behind` pages behind live is dropped: counted and logged (the caller closes it).
    fn count_slow(&self, mount: &Mount, id: u64, behind: u64) {
        mount.listeners_dropped.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .listeners_dropped
            .with_label_values(&["slow"])
            .inc();
        warn!(
            room = %mount.room,
            listener = id,
            pages_behind = behind,
            "broadcast listener dropped: it did not read its stream (queue full)"
        );
    }
}

/// Where a media worker puts its broadcast frames: never blocks, counts what it cannot queue.
#[derive(Clone)]
pub struct FrameSink {
    frames: mpsc::Sender<BroadcastFrame>,
    dropped: prometheus::IntCounter,
}

impl FrameSink {
    pub fn push(&self, frame: BroadcastFrame) {
        if self.frames.try_send(frame).is_err() {
            self.dropped.inc();
        }
    }
}

/// The pager: frames from every worker, paged per mount and published.
async fn pager(broadcasts: Arc<Broadcasts>, mut frames: mpsc::Receiver<BroadcastFrame>) {
    let per_page = (broadcasts.config.page_ms / 20).max(1) as usize;
    let recent_pages = broadcasts.config.pages_per_write();
    while let Some(frame) = frames.recv().await {
        let Some(mount) = broadcasts
            .mount(&frame.room.0)
            .filter(|m| !m.relayed.load(Ordering::Relaxed))
        else {
            continue;
        };
        let mut pager = mount.lock_pager();
        // Ticks the mixer skipped leave a gap in the granule positions; a room re-made (its ticks count
        // anew) continues where the stream was.
        let gap = match pager.last_tick {
            Some(last) if frame.tick > last => frame.tick - last - 1,
            _ => 0,
        };
        pager.position += 1 + gap;
        pager.last_tick = Some(frame.tick);
        pager.packets.push(frame.payload);
        for t in frame.talkers {
            if !pager.talkers.contains(&t) {
                pager.talkers.push(t);
            }
        }
        // The first page after the tap starts goes out with the first frame: a listener waiting for
        // its first audio gets it within a tick rather than a page.
        if pager.packets.len() < per_page && !pager.recent.is_empty() {
            continue;
        }
        let granule = u64::from(PRE_SKIP) + pager.position * FRAME_SAMPLES;
        let packets = std::mem::take(&mut pager.packets);
        let refs: Vec<&[u8]> = packets.iter().map(|p| &p[..]).collect();
        let bytes = pager.stream.audio_page(granule, &refs);
        mount.publish(&mut pager, bytes, recent_pages);
        broadcasts.metrics.pages.inc();
        let loudest = pager.talkers.first().copied();
        pager.talkers.clear();
        let changed = loudest.is_some() && loudest != pager.speaker;
        if changed {
            pager.speaker = loudest;
        }
        drop(pager);
        if let (true, Some(speaker)) = (changed, loudest) {
            if mount.settings().title.is_none() {
                let name = broadcasts.speaker_name(&mount.room, speaker);
                mount.set_meta(&name);
            }
        }
    }
    info!("broadcast pager stopped");
}

/// An ICY metadata block: one length byte (in 16-byte units) and `StreamTitle='…';` padded with zeros.
/// Quotes in the title become `’` (ICY has no escaping); it is cut to fit the 4,080 bytes a block holds.
pub fn icy_metadata(title: &str) -> Bytes {
    const MAX_TITLE: usize = 255 * 16 - "StreamTitle='';".len();
    let mut clean: String = title
        .chars()
        .map(|c| if c == '\'' { '’' } else { c })
        .filter(|c| !c.is_control())
        .collect();
    if clean.len() > MAX_TITLE {
        let mut cut = MAX_TITLE;
        while !clean.is_char_boundary(cut) {
            cut -= 1;
        }
        clean.truncate(cut);
    }
    let text = format!("StreamTitle='{clean}';");
    let blocks = text.len().div_ceil(16);
    let mut out = Vec::with_capacity(1 + blocks * 16);
    out.push(blocks as u8);
    out.extend_from_slice(text.as_bytes());
    out.resize(1 + blocks * 16, 0);
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icy_blocks_are_length_prefixed_padded_and_quote_safe() {
        let m = icy_metadata("Alice");
        assert_eq!(m[0], 2, "StreamTitle='Alice'; is 20 bytes: two blocks");
        assert_eq!(m.len(), 33);
        assert_eq!(&m[1..21], b"StreamTitle='Alice';");
        assert!(m[21..].iter().all(|b| *b == 0));
        let q = icy_metadata("O'Neil");
        assert!(std::str::from_utf8(&q[1..])
            .expect("UTF-8")
            .contains("O’Neil"));
        let long = icy_metadata(&"é".repeat(5000));
        assert_eq!(long.len(), 1 + long[0] as usize * 16);
        assert!(long.len() <= 1 + 255 * 16);
    }
}
