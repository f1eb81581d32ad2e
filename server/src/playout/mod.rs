//! Playout (docs/broadcast.md, "Playout"): files and playlists from the media directory played into rooms
//! as server-side source participants — on demand or at a time (`POST /admin/v1/rooms/{room}/playback`),
//! as hold music while a room has one person (the room's `hold_music` setting), and as announcements that
//! duck the room's other voices (`POST /admin/v1/rooms/{room}/announce`).
//!
//! Each playback is one task (`run.rs`) holding its source (the ingest's [`crate::ingest::Source`], kind
//! `playout`), its items decoded or passed through (`decode.rs`) and paced in real time by the ingest's
//! pacer. The admin API talks to it with values: [`Control`] in, a watch of its [`Status`] out. Hold music
//! is started and stopped by a small manager that looks at its rooms every [`HOLD_POLL`]; the exact
//! edge (a second person joining) is the media core's: hold music's packets enter the room only while it
//! has exactly one WebRTC participant, checked per packet.

mod config;
mod decode;
pub mod http;
mod media;
mod metrics;
mod run;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use signaling::media::SourceRole;
use tokio::sync::{mpsc, watch};

pub use config::{PlayoutConfig, MIN_DUCK_DB};
pub use media::{Format, MediaDir, MediaError};
pub use metrics::PlayoutMetrics;
pub use run::{Control, State, Status};

use crate::state::AppState;

/// How often the hold-music manager looks at its rooms (starting and stopping the source; the media
/// core gates its audio at once).
pub const HOLD_POLL: Duration = Duration::from_millis(200);

/// What a playback is for; one of each kind per room at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Playback,
    Hold,
    Announcement,
}

impl JobKind {
    pub const ALL: [JobKind; 3] = [JobKind::Playback, JobKind::Hold, JobKind::Announcement];

    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Playback => "playback",
            JobKind::Hold => "hold",
            JobKind::Announcement => "announcement",
        }
    }

    /// The participant identity it plays as (a second one of the kind in a room replaces the first).
    pub fn identity(self) -> &'static str {
        match self {
            JobKind::Playback => "chorus-playout:playback",
            JobKind::Hold => "chorus-playout:hold",
            JobKind::Announcement => "chorus-playout:announcement",
        }
    }

    fn default_name(self) -> &'static str {
        match self {
            JobKind::Playback => "Playback",
            JobKind::Hold => "Hold music",
            JobKind::Announcement => "Announcement",
        }
    }
}

/// Whether `identity` is one of playout's own participants (not a person in the room).
pub fn is_playout_identity(identity: &str) -> bool {
    JobKind::ALL.iter().any(|k| k.identity() == identity)
}

/// Why a playback cannot start.
#[derive(Debug, thiserror::Error)]
pub enum PlayoutError {
    #[error(transparent)]
    Media(#[from] MediaError),
    #[error("no room {0:?}")]
    RoomNotFound(String),
    #[error("an announcement is already playing in this room")]
    Busy,
    #[error("too many playbacks on this server ({0})")]
    Capacity(usize),
    #[error("nothing to play: the list is empty")]
    Empty,
}

/// A running (or finished) playback, as the admin API holds it.
struct Handle {
    control: mpsc::Sender<Control>,
    status: watch::Receiver<Status>,
}

impl Handle {
    fn running(&self) -> bool {
        self.status.borrow().state != State::Finished
    }
}

/// What playout shares: settings, metrics, the media directory, the playbacks and the rooms' hold music.
pub struct Playout {
    pub config: PlayoutConfig,
    pub metrics: PlayoutMetrics,
    media: MediaDir,
    jobs: Mutex<HashMap<(String, JobKind), Handle>>,
    /// Rooms' `hold_music` settings: room → file or playlist name.
    hold: Mutex<HashMap<String, String>>,
}

/// A playback asked for: what to play and how.
pub struct Request {
    pub room: String,
    pub kind: JobKind,
    /// Names in the media directory (an `.m3u` is expanded into its entries).
    pub names: Vec<String>,
    pub looping: bool,
    pub name: Option<String>,
    pub start_at_unix_ms: Option<u64>,
    pub role: SourceRole,
}

impl Playout {
    pub fn new(config: PlayoutConfig, metrics: PlayoutMetrics) -> std::io::Result<Self> {
        let media = MediaDir::new(&config.media_dir)?;
        Ok(Playout {
            config,
            metrics,
            media,
            jobs: Mutex::default(),
            hold: Mutex::default(),
        })
    }

    pub fn enabled(&self) -> bool {
        self.media.enabled()
    }

    fn jobs(&self) -> MutexGuard<'_, HashMap<(String, JobKind), Handle>> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn holds(&self) -> MutexGuard<'_, HashMap<String, String>> {
        self.hold.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The items of a request: each name resolved now (a bad one refuses the request), playlists
    /// expanded (their entries are resolved when played: a bad entry is skipped then).
    pub fn expand(&self, names: &[String]) -> Result<Vec<String>, MediaError> {
        let max = self.config.max_playlist_items;
        let mut items = Vec::new();
        for name in names {
            let file = self.media.resolve(name)?;
            if file.format == Format::M3u {
                items.extend(self.media.read_playlist(&file, max)?);
            } else {
                items.push(file.name);
            }
            if items.len() > max {
                return Err(MediaError::TooLong(name.clone(), max));
            }
        }
        Ok(items)
    }

    /// Starts a playback (replacing a playback or hold music of the same kind in the room; an
    /// announcement while another plays is refused).
    pub fn start(&self, state: &Arc<AppState>, req: Request) -> Result<Status, PlayoutError> {
        if !self.enabled() {
            return Err(MediaError::Disabled.into());
        }
        if !state.signaling.has_room(&req.room) {
            return Err(PlayoutError::RoomNotFound(req.room));
        }
        let items = self.expand(&req.names)?;
        if items.is_empty() {
            return Err(PlayoutError::Empty);
        }
        let mut jobs = self.jobs();
        let key = (req.room.clone(), req.kind);
        if req.kind == JobKind::Announcement && jobs.get(&key).is_some_and(Handle::running) {
            return Err(PlayoutError::Busy);
        }
        let running = jobs.values().filter(|h| h.running()).count();
        let replacing = jobs.get(&key).is_some_and(Handle::running);
        if running >= self.config.max_playbacks && !replacing {
            return Err(PlayoutError::Capacity(self.config.max_playbacks));
        }
        let start_at = req
            .start_at_unix_ms
            .and_then(|ms| SystemTime::UNIX_EPOCH.checked_add(Duration::from_millis(ms)))
            .filter(|at| *at > SystemTime::now());
        let status = Status {
            room: req.room.clone(),
            kind: req.kind,
            state: if start_at.is_some() {
                State::Scheduled
            } else {
                State::Playing
            },
            sid: None,
            name: req
                .name
                .unwrap_or_else(|| req.kind.default_name().to_owned()),
            items,
            looping: req.looping,
            index: None,
            current: None,
            position_ms: 0,
            played: 0,
            skipped: 0,
            start_at_unix_ms: start_at.and(req.start_at_unix_ms),
            error: None,
        };
        let (control, controls) = mpsc::channel(4);
        let (status_tx, status_rx) = watch::channel(status.clone());
        // Replacing: the old handle's control sender drops, which stops its task.
        jobs.insert(
            key,
            Handle {
                control,
                status: status_rx,
            },
        );
        let job = run::Job {
            status: status.clone(),
            role: req.role,
            start_at,
        };
        tokio::spawn(run::run(job, Arc::clone(state), controls, status_tx));
        Ok(status)
    }

    /// The playback of `kind` in `room`, running or finished.
    pub fn status(&self, room: &str, kind: JobKind) -> Option<Status> {
        let jobs = self.jobs();
        let handle = jobs.get(&(room.to_owned(), kind))?;
        let status = handle.status.borrow().clone();
        Some(status)
    }

    /// Sends `control` to the running playback of `kind` in `room`; false if none runs.
    pub fn control(&self, room: &str, kind: JobKind, control: Control) -> bool {
        let jobs = self.jobs();
        match jobs.get(&(room.to_owned(), kind)) {
            Some(h) if h.running() => h.control.try_send(control).is_ok(),
            _ => false,
        }
    }

    /// Sets (or clears) a room's hold music: checked now, played by the manager. Clearing stops it.
    pub fn set_hold_music(&self, room: &str, name: Option<String>) -> Result<(), MediaError> {
        match name {
            Some(name) => {
                if self.expand(std::slice::from_ref(&name))?.is_empty() {
                    return Err(MediaError::TooLong(name, 0));
                }
                self.holds().insert(room.to_owned(), name);
                // A new setting gets a fresh start (a failed one is retried).
                self.jobs().remove(&(room.to_owned(), JobKind::Hold));
            }
            None => {
                // Under the settings' lock, as the manager starts hold music (settings, then jobs): it
                // cannot start what was just cleared.
                let mut holds = self.holds();
                holds.remove(room);
                self.control(room, JobKind::Hold, Control::Stop);
            }
        }
        Ok(())
    }

    /// A room's `hold_music` setting.
    pub fn hold_music(&self, room: &str) -> Option<String> {
        self.holds().get(room).cloned()
    }

    /// Starts the hold-music manager.
    pub fn start_tasks(self: &Arc<Self>, state: Arc<AppState>) {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HOLD_POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                me.apply_hold(&state);
            }
        });
    }

    /// Hold music runs in each room with the setting while anyone (other than playout) is in it.
    fn apply_hold(&self, state: &Arc<AppState>) {
        let rooms: Vec<(String, String)> = {
            let mut holds = self.holds();
            // A room that went takes its setting with it.
            holds.retain(|room, _| state.signaling.has_room(room));
            holds.iter().map(|(r, n)| (r.clone(), n.clone())).collect()
        };
        for (room, name) in rooms {
            let Some(snapshot) = state.signaling.room(&room) else {
                continue;
            };
            // A room spanning nodes is not alone because this node holds one of its people.
            let people = snapshot
                .all_participants()
                .filter(|p| !is_playout_identity(&p.identity))
                .count();
            let (running, failed) = self
                .jobs()
                .get(&(room.clone(), JobKind::Hold))
                .map_or((false, false), |h| {
                    (h.running(), h.status.borrow().error.is_some())
                });
            // Hold music that failed (nothing in it plays, or the room refused it) is not retried
            // until the setting is made again.
            if people > 0 && !running && !failed {
                let holds = self.holds();
                if holds.get(&room) != Some(&name) {
                    continue; // cleared or changed since: the next round plays what is set
                }
                let req = Request {
                    room: room.clone(),
                    kind: JobKind::Hold,
                    names: vec![name],
                    looping: true,
                    name: None,
                    start_at_unix_ms: None,
                    role: SourceRole::Hold,
                };
                let started = self.start(state, req);
                drop(holds);
                if let Err(e) = started {
                    tracing::warn!(%room, error = %e, "hold music cannot start");
                }
            } else if people == 0 && running {
                self.control(&room, JobKind::Hold, Control::Stop);
            }
        }
    }
}
