//! HLS of a room's mix for CDN-scale audiences (docs/broadcast.md, "HLS"): `/hls/{room}/index.m3u8`, a
//! live media playlist of fMP4 segments with Opus ([`fmp4`]), a sliding window in memory ([`segmenter`]).
//!
//! The tap is the listener mounts' one: the media worker that owns a room hands out its mix's shared
//! encode ([`media_core::Output::Broadcast`]) while the room is in the tap set; the rooms HLS wants join
//! that set ([`crate::broadcast::TapSet`], published to the listener streams like the recorder's). Frames
//! cross from the workers to the [`segmenter_task`] over one bounded queue; completed segments are
//! published to waiting requests through each stream's `watch` of its newest segment number.
//!
//! On demand: a room is segmented from the first request for its playlist until nobody asked for it for
//! `hls.idle_timeout_secs` (players reload it every segment; a CDN does for all its viewers). An encode
//! per room costs a core's fraction whether or not anyone watches, and HLS viewers are anonymous GETs:
//! the playlist requests are the only sign of an audience. The first viewer waits for the first segment
//! (one segment's time); the playlist is a live one from then on.

mod config;
mod fmp4;
mod http;
mod metrics;
mod playlist;
mod segmenter;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use media_core::{BroadcastFrame, RoomId};
use signaling::Signaling;
use tokio::sync::{mpsc, watch};
use tracing::info;

use crate::broadcast::TapSet;
use crate::recording::unix_ms;
pub use config::HlsConfig;
pub use http::router;
pub use metrics::HlsMetrics;
use segmenter::Segmenter;

/// Frames waiting between the media workers and the segmenter (2 s of 20 ms frames for 50 rooms).
const FRAME_QUEUE: usize = 5_000;

/// How often idle streams are looked for and open segments of rooms whose frames stopped are closed.
const SWEEP_INTERVAL: Duration = Duration::from_millis(250);

/// One room's HLS stream.
pub struct Stream {
    room: String,
    segmenter: Mutex<Segmenter>,
    /// How far the stream is: what a blocking reload, a preload-hinted part or a first viewer waits on.
    progress: watch::Sender<Progress>,
    /// The room's mix is tapped for it.
    tapped: AtomicBool,
    /// The last playlist request, Unix ms.
    last_request_ms: AtomicU64,
}

impl Stream {
    pub fn lock(&self) -> MutexGuard<'_, Segmenter> {
        self.segmenter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self) {
        let progress = {
            let s = self.lock();
            Progress {
                newest: s.newest(),
                position: s.position(),
            }
        };
        self.progress.send_if_modified(|p| {
            let changed = *p != progress;
            *p = progress;
            changed
        });
    }
}

/// A stream's progress ([`Segmenter::newest`], [`Segmenter::position`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub newest: Option<u64>,
    pub position: Option<(u64, u32)>,
}

/// Every room's HLS stream, the rooms tapped for them, the frames queue from the workers.
pub struct Hls {
    config: HlsConfig,
    metrics: HlsMetrics,
    signaling: std::sync::OnceLock<Arc<Signaling>>,
    streams: Mutex<HashMap<String, Arc<Stream>>>,
    /// The rooms tapped for HLS (a part of the listener streams' tap set).
    tapped: watch::Sender<Arc<TapSet>>,
    frames: mpsc::Sender<BroadcastFrame>,
    frames_rx: Mutex<Option<mpsc::Receiver<BroadcastFrame>>>,
    /// The init segment (`EXT-X-MAP`), the same for every stream.
    init: Bytes,
}

impl Hls {
    pub fn new(config: HlsConfig, metrics: HlsMetrics) -> Arc<Self> {
        let (frames, rx) = mpsc::channel(FRAME_QUEUE);
        Arc::new(Hls {
            config,
            metrics,
            signaling: std::sync::OnceLock::new(),
            streams: Mutex::new(HashMap::new()),
            tapped: watch::Sender::new(Arc::new(TapSet::default())),
            frames,
            frames_rx: Mutex::new(Some(rx)),
            init: fmp4::init_segment(),
        })
    }

    pub fn config(&self) -> &HlsConfig {
        &self.config
    }

    /// What HLS taps, for the listener streams' tap set.
    pub fn tapped(&self) -> watch::Receiver<Arc<TapSet>> {
        self.tapped.subscribe()
    }

    /// Where a media worker puts its mix frames.
    pub fn sink(&self) -> HlsSink {
        HlsSink {
            frames: self.frames.clone(),
            tapped: self.tapped.subscribe(),
            dropped: self.metrics.frames_dropped.clone(),
        }
    }

    fn streams(&self) -> MutexGuard<'_, HashMap<String, Arc<Stream>>> {
        self.streams.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn stream(&self, room: &str) -> Option<Arc<Stream>> {
        self.streams().get(room).cloned()
    }

    /// The stream of `room` for a playlist request, tapped from now on; `None` at `hls.max_streams`.
    fn watch(&self, room: &str) -> Option<Arc<Stream>> {
        let stream = {
            let mut streams = self.streams();
            let known = streams.get(room).cloned();
            if !known
                .as_ref()
                .is_some_and(|s| s.tapped.load(Ordering::Relaxed))
            {
                // Starting to segment a room: within the limit.
                let tapped = streams
                    .values()
                    .filter(|s| s.tapped.load(Ordering::Relaxed))
                    .count();
                if tapped >= self.config.max_streams {
                    return None;
                }
            }
            known.unwrap_or_else(|| {
                let s = Arc::new(Stream {
                    room: room.to_owned(),
                    segmenter: Mutex::new(Segmenter::new(
                        self.config.segment_frames(),
                        self.config.part_frames(),
                        self.config.window_segments,
                    )),
                    progress: watch::Sender::new(Progress::default()),
                    tapped: AtomicBool::new(false),
                    last_request_ms: AtomicU64::new(0),
                });
                streams.insert(room.to_owned(), s.clone());
                s
            })
        };
        stream.last_request_ms.store(unix_ms(), Ordering::Relaxed);
        if !stream.tapped.swap(true, Ordering::Relaxed) {
            info!(room, "HLS stream started");
            self.update_taps();
        }
        Some(stream)
    }

    /// Publish the rooms tapped for HLS.
    fn update_taps(&self) {
        let rooms: HashSet<RoomId> = self
            .streams()
            .values()
            .filter(|s| s.tapped.load(Ordering::Relaxed))
            .map(|s| RoomId(s.room.clone()))
            .collect();
        self.metrics.streams.set(rooms.len() as i64);
        self.tapped.send_if_modified(|now| {
            if now.rooms == rooms {
                return false;
            }
            *now = Arc::new(TapSet {
                rooms,
                participants: HashSet::new(),
            });
            true
        });
    }

    /// Starts the segmenter and the sweep; they run as long as the runtime.
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
        tokio::spawn(segmenter_task(self.clone(), frames));
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                me.sweep(unix_ms());
            }
        });
    }

    /// Close the open segments of rooms whose frames stopped; stop the streams nobody asked for lately
    /// (and forget those of rooms that are gone); estimate the viewers.
    fn sweep(&self, now_ms: u64) {
        let idle_ms = self.config.idle_timeout_secs * 1000;
        let streams: Vec<Arc<Stream>> = self.streams().values().cloned().collect();
        let mut changed = false;
        let mut viewers = 0;
        for stream in &streams {
            let completed = stream.lock().flush_idle(now_ms);
            self.metrics.segments.inc_by(completed as u64);
            let idle =
                now_ms.saturating_sub(stream.last_request_ms.load(Ordering::Relaxed)) > idle_ms;
            if idle && stream.tapped.swap(false, Ordering::Relaxed) {
                stream.lock().stop(now_ms);
                info!(room = %stream.room, "HLS stream stopped: no playlist request for a while");
                changed = true;
            }
            stream.publish();
            if stream.tapped.load(Ordering::Relaxed) {
                viewers += stream.lock().viewers();
            }
        }
        self.metrics.viewers.set(viewers as i64);
        if let Some(signaling) = self.signaling.get() {
            self.streams().retain(|room, s| {
                s.tapped.load(Ordering::Relaxed) || signaling.room(room).is_some()
            });
        }
        if changed {
            self.update_taps();
        }
    }
}

/// Where a media worker puts its mix frames: only those of rooms HLS taps, never blocking.
#[derive(Clone)]
pub struct HlsSink {
    frames: mpsc::Sender<BroadcastFrame>,
    tapped: watch::Receiver<Arc<TapSet>>,
    dropped: prometheus::IntCounter,
}

impl HlsSink {
    pub fn room_frame(&self, frame: &BroadcastFrame) {
        if self.tapped.borrow().rooms.contains(&frame.room)
            && self.frames.try_send(frame.clone()).is_err()
        {
            self.dropped.inc();
        }
    }
}

/// The segmenter: frames from every worker, cut per stream; completed segments published.
async fn segmenter_task(hls: Arc<Hls>, mut frames: mpsc::Receiver<BroadcastFrame>) {
    while let Some(frame) = frames.recv().await {
        let Some(stream) = hls.stream(&frame.room.0) else {
            continue;
        };
        if !stream.tapped.load(Ordering::Relaxed) {
            continue; // frames still queued when the stream stopped
        }
        let payload = Bytes::from_owner(frame.payload);
        let completed = stream.lock().push(frame.tick, &payload, unix_ms());
        hls.metrics.segments.inc_by(completed as u64);
        // Parts complete between segments: waiters are told of both.
        stream.publish();
    }
    info!("HLS segmenter stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hls(max_streams: usize) -> Arc<Hls> {
        let config = HlsConfig {
            max_streams,
            ..HlsConfig::default()
        };
        let metrics = HlsMetrics::new(&prometheus::Registry::new()).expect("a fresh registry");
        Hls::new(config, metrics)
    }

    fn tapped_rooms(hls: &Hls) -> Vec<String> {
        let mut rooms: Vec<String> = hls
            .tapped()
            .borrow()
            .rooms
            .iter()
            .map(|r| r.0.clone())
            .collect();
        rooms.sort();
        rooms
    }

    #[test]
    fn a_playlist_request_taps_the_room_until_idle_within_max_streams() {
        let hls = hls(1);
        assert!(hls.watch("a").is_some());
        assert_eq!(tapped_rooms(&hls), ["a"]);
        assert!(hls.watch("b").is_none(), "hls.max_streams is 1");
        assert!(
            hls.watch("a").is_some(),
            "a room already segmented is served"
        );
        assert_eq!(hls.metrics.streams.get(), 1);
        // Nobody asks for a's playlist for longer than the idle timeout: its tap stops.
        hls.sweep(unix_ms() + hls.config.idle_timeout_secs * 1000 + 1);
        assert!(tapped_rooms(&hls).is_empty());
        assert_eq!(hls.metrics.streams.get(), 0);
        assert!(hls.watch("b").is_some(), "room for another");
        assert!(
            hls.watch("a").is_none(),
            "re-tapping counts against the limit too"
        );
        assert_eq!(tapped_rooms(&hls), ["b"]);
    }

    #[test]
    fn the_sink_passes_only_frames_of_tapped_rooms() {
        let hls = hls(10);
        let sink = hls.sink();
        let frame = |room: &str| BroadcastFrame {
            room: RoomId(room.to_owned()),
            tick: 1,
            payload: Arc::from(&[0xf8u8, 0xff, 0xfe][..]),
            talkers: Vec::new(),
        };
        hls.watch("on");
        sink.room_frame(&frame("on"));
        sink.room_frame(&frame("off"));
        let mut rx = hls
            .frames_rx
            .lock()
            .expect("not poisoned")
            .take()
            .expect("not started");
        assert_eq!(rx.try_recv().expect("one frame").room.0, "on");
        assert!(rx.try_recv().is_err(), "the other room's frame stayed out");
    }
}
