//! The SDK's handles: [`Client`] for the game thread, [`Microphone`] and [`Speaker`] for its audio
//! callbacks.

use std::sync::atomic::{AtomicBool, AtomicI8, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use rtrb::{Consumer, Producer, RingBuffer};
use signaling::protocol::ModerateAction;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::watch;
use vocab::{Position, TalkTarget, Volume, MAX_SLOTS};

use crate::audio::{OpusFrame, Sid, SlotUpdate, MAX_OPUS_BYTES};
use crate::net::NetAudio;
use crate::pan::SlotPan;
use crate::signal::{Command, Session};
use crate::{Config, Error, Event};

/// State the game's handles and the SDK's threads share (atomics only).
#[derive(Default)]
pub(crate) struct Shared {
    pub muted: AtomicBool,
    /// Push-to-talk is on: the microphone is sent only while `key_down`.
    pub ptt: AtomicBool,
    /// The push-to-talk key is down (set by the signaling thread once the server has been told).
    pub key_down: AtomicBool,
    /// Set to end the network thread (and, seen by the signaling thread, the session).
    pub stop: AtomicBool,
    /// How many times media connected (the session sees whether a connection ever came up).
    pub media_connections: AtomicU64,
    /// Each slot's playout volume ([`Volume`]'s value; 0 unchanged): its participant's volume in a
    /// forwarding room (written by the signaling thread, read by the network thread every 20 ms).
    pub slot_volumes: [AtomicI8; MAX_SLOTS],
    /// Each slot's pan in stereo output ([`crate::pan`]: a forwarding room's speaker at its side; written
    /// by the signaling thread, read by the network thread every 20 ms).
    pub slot_pans: [SlotPan; MAX_SLOTS],
    pub stats: Counters,
}

impl Shared {
    /// Whether the microphone sends nothing now: muted, or push-to-talk with the key up.
    pub fn silent(&self) -> bool {
        self.muted.load(Ordering::Acquire)
            || (self.ptt.load(Ordering::Acquire) && !self.key_down.load(Ordering::Acquire))
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    pub mic_dropped: AtomicU64,
    pub output_dropped: AtomicU64,
    pub frames_sent: AtomicU64,
    pub packets_received: AtomicU64,
    pub expected_loss_percent: AtomicU32,
}

/// The SDK's counters, as of [`Client::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Microphone samples (or pre-encoded frames) dropped because the ring towards the network thread
    /// was full.
    pub mic_dropped: u64,
    /// Output samples dropped because the game did not pull them in time (mixed and per participant).
    pub output_dropped: u64,
    /// Opus frames sent.
    pub frames_sent: u64,
    /// RTP packets received in the slots.
    pub packets_received: u64,
    /// The packet loss the encoder's in-band FEC is tuned for now (0..=100 %; see
    /// [`Config::fec_follows_reports`](crate::Config::fec_follows_reports)).
    pub expected_loss_percent: u32,
}

/// A native Chorus client: one session in one room.
///
/// [`Client::new`] sets up the audio rings; [`Client::connect`] starts the SDK's threads and returns at
/// once (progress arrives as [`Event`]s). No call blocks on the network; dropping the client leaves
/// (closes the socket) and joins the SDK's threads.
pub struct Client {
    config: Config,
    shared: Arc<Shared>,
    events: Receiver<Event>,
    /// Until `connect`: what the session thread takes.
    pending: Option<Pending>,
    microphone: Option<Microphone>,
    speaker: Option<Speaker>,
    /// To the signaling thread (queued until `connect` starts it).
    commands: UnboundedSender<Command>,
    /// The game's newest position (the signaling thread sends it, paced; a newer one replaces it).
    position: watch::Sender<Option<Position>>,
    thread: Option<JoinHandle<()>>,
}

struct Pending {
    events: Sender<Event>,
    commands: UnboundedReceiver<Command>,
    audio: NetAudio,
    slot_updates: Producer<SlotUpdate>,
}

impl Client {
    /// A client with `config` (checked), not connected.
    pub fn new(config: Config) -> Result<Client, Error> {
        config.validate()?;
        let shared = Arc::new(Shared::default());
        shared.stats.expected_loss_percent.store(
            config.expected_loss_percent.unsigned_abs(),
            Ordering::Relaxed,
        );
        let (mic_tx, mic_rx) = RingBuffer::new(config.ring_samples(config.input_rate_hz));
        // Pre-encoded frames: as many 20 ms frames as the ring's length.
        let (opus_tx, opus_rx) = RingBuffer::new((config.buffer_ms as usize / 20).max(2));
        let out_len = config.output_ring_samples();
        let (mixed_tx, mixed_rx) = if config.mixed_output {
            let (tx, rx) = RingBuffer::new(out_len);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let (slot_txs, slot_rxs): (Vec<_>, Vec<_>) = if config.participant_output {
            (0..MAX_SLOTS).map(|_| RingBuffer::new(out_len)).unzip()
        } else {
            (Vec::new(), Vec::new())
        };
        let (updates_tx, updates_rx) = RingBuffer::new(MAX_SLOTS * 8);
        let (events_tx, events_rx) = std::sync::mpsc::channel();
        let (commands_tx, commands_rx) = tokio::sync::mpsc::unbounded_channel();
        Ok(Client {
            pending: Some(Pending {
                events: events_tx,
                commands: commands_rx,
                audio: NetAudio {
                    mic: mic_rx,
                    opus: opus_rx,
                    mixed: mixed_tx,
                    slots: slot_txs,
                },
                slot_updates: updates_tx,
            }),
            microphone: Some(Microphone {
                pcm: mic_tx,
                opus: opus_tx,
                shared: shared.clone(),
            }),
            speaker: Some(Speaker {
                channels: config.output_channels,
                mixed: mixed_rx,
                slots: slot_rxs,
                updates: updates_rx,
                occupants: [Sid::EMPTY; MAX_SLOTS],
            }),
            config,
            shared,
            events: events_rx,
            commands: commands_tx,
            position: watch::Sender::new(None),
            thread: None,
        })
    }

    /// Connect to `url` (`ws://host:port/ws` or `wss://…`) and join with `token`; `room`, if given, must be
    /// the token's. Returns at once: the SDK's threads join, negotiate media and report [`Event`]s.
    pub fn connect(&mut self, url: &str, token: &str, room: Option<&str>) -> Result<(), Error> {
        let pending = self.pending.take().ok_or(Error::AlreadyConnected)?;
        let session = Session {
            url: url.to_owned(),
            server_url: url.to_owned(),
            next_url: None,
            token: token.to_owned(),
            room: room.map(str::to_owned),
            config: self.config.clone(),
            shared: self.shared.clone(),
            events: pending.events,
            commands: pending.commands,
            audio: Some(pending.audio),
            slot_updates: pending.slot_updates,
            position: self.position.subscribe(),
            pacer: Default::default(),
            own_sid: String::new(),
            talk: Default::default(),
            panning: Default::default(),
        };
        let thread = std::thread::Builder::new()
            .name("chorus-signal".into())
            .spawn(move || session.run())?;
        self.thread = Some(thread);
        Ok(())
    }

    /// The microphone handle, for the game's capture callback (once).
    pub fn take_microphone(&mut self) -> Option<Microphone> {
        self.microphone.take()
    }

    /// The speaker handle, for the game's playback callback (once).
    pub fn take_speaker(&mut self) -> Option<Speaker> {
        self.speaker.take()
    }

    /// Mute or unmute: takes effect on the network thread at once (nothing more is sent) and tells the
    /// room. Before `connect`, the session joins muted.
    pub fn set_muted(&self, muted: bool) -> Result<(), Error> {
        self.shared.muted.store(muted, Ordering::Release);
        self.send_if_connected(Command::Mute(muted))
    }

    pub fn is_muted(&self) -> bool {
        self.shared.muted.load(Ordering::Acquire)
    }

    /// Turn push-to-talk on or off. With it on, the server forwards this client's audio only while its key
    /// is down ([`Client::set_ptt_key`]), and the SDK sends nothing while the key is up. It starts with the
    /// key up. A token with the `ptt` claim forces it on (the server refuses turning it off).
    pub fn set_ptt(&self, enabled: bool) -> Result<(), Error> {
        self.shared.ptt.store(enabled, Ordering::Release);
        self.shared.key_down.store(false, Ordering::Release);
        self.send_if_connected(Command::Ptt(enabled))
    }

    /// The push-to-talk key went down or up. Down: the server is told first, then the microphone sends
    /// (so its first frame is heard); up: the microphone stops at once and the server is told. Key-downs
    /// are rate-limited by the server (10 at once, 5 per second; beyond that an [`Event::Error`] with
    /// `rate_limited` and the key stays up).
    pub fn set_ptt_key(&self, down: bool) -> Result<(), Error> {
        if self.thread.is_none() {
            // Not connected: the state goes out with the join.
            self.shared.key_down.store(down, Ordering::Release);
            return Ok(());
        }
        if !down {
            self.shared.key_down.store(false, Ordering::Release);
        }
        self.send(Command::PttKey(down))
    }

    pub fn is_ptt(&self) -> bool {
        self.shared.ptt.load(Ordering::Acquire)
    }

    pub fn is_ptt_key_down(&self) -> bool {
        self.shared.key_down.load(Ordering::Acquire)
    }

    /// Where the player is (world units: `x` right, `y` ahead, `z` up) and which way it faces (`yaw_deg`
    /// clockwise from `+y`), in a spatial room. Call it whenever the player moves (every frame is fine): the
    /// newest position replaces any not sent yet, and the SDK sends at most one every ~120 ms (the server
    /// takes one per 100 ms), never a backlog. Refused with [`Error::BadPosition`] (nothing is sent) when
    /// a value is NaN or infinite or a coordinate is beyond ±1,000,000. Before `connect`, and after a
    /// rejoin or a move, the newest position goes out as soon as the session has joined. In a room without
    /// positional voice the server answers with an [`Event::Error`] (`bad_position`).
    pub fn set_position(&self, x: f64, y: f64, z: f64, yaw_deg: f64) -> Result<(), Error> {
        let position = Position::new(x, y, z, yaw_deg)?;
        self.position.send_replace(Some(position));
        Ok(())
    }

    /// The last position set with [`Client::set_position`].
    pub fn position(&self) -> Option<Position> {
        *self.position.borrow()
    }

    /// Leave the room; [`Event::Left`] and [`ConnectionState::Closed`](crate::ConnectionState::Closed)
    /// follow.
    pub fn leave(&self) -> Result<(), Error> {
        if self.thread.is_none() {
            return Err(Error::NotConnected);
        }
        self.send(Command::Leave)
    }

    /// Whom this client's voice is for: [`TalkTarget::Room`] (the default: whoever the room's rules let
    /// hear it), [`TalkTarget::Team`] (its team only, wherever they are: the team comes from the token's
    /// `team` claim) or [`TalkTarget::Whisper`] to 1 to 64 participant ids of this room. Checked here with
    /// the server's rules ([`Error::Talk`] with [`vocab::TalkError::WhisperTargets`], nothing sent); the
    /// room's own refusal (a whisper to someone not in the room or to oneself, team talk without a team)
    /// arrives as an [`Event::Error`] with code `bad_target`, and the previous target stays. Before
    /// `connect` it goes out once joined; after a rejoin it is sent again; a move to another room resets
    /// it to the room (as the server does). Never waits.
    pub fn talk_to(&self, target: TalkTarget<String>) -> Result<(), Error> {
        target.validate()?;
        self.send(Command::Talk(target))
    }

    /// How loud this client hears participant `sid`: −50 (silent) to +50, 0 unchanged, 0.5 dB per step
    /// (Vivox's scale, [`Volume`]). Out of range: [`Error::Talk`] with [`vocab::TalkError::BadVolume`],
    /// nothing sent. In a forwarding room the SDK scales that participant's decoded audio (louder too,
    /// soft-clipped) and the server ranks it for the slots at that level (−50: it takes none); in a mixed
    /// room the server applies it in this listener's mix. A `sid` not in the room: an [`Event::Error`]
    /// with code `participant_not_found`. Kept over rejoins for those still in the room, dropped on a move.
    /// Talk and volume changes together are limited by the server to 20 at once and 10 per second
    /// (`rate_limited`): a game should send a slider's final value, not every step. Never waits.
    pub fn set_volume(&self, sid: &str, volume: i32) -> Result<(), Error> {
        let volume = Volume::new(i64::from(volume))?;
        self.send(Command::Volume(sid.to_owned(), volume))
    }

    /// A moderator's action on participant `sid` of this room (the token needs the `moderator` grant):
    /// [`ModerateAction::Mute`]/`Unmute` (a server mute the participant cannot undo), `Deafen`/`Undeafen`
    /// (it is sent no audio), `Kick` (it leaves with reason `kicked`, banned for a while), `Move` to `room`
    /// (required for a move, ignored otherwise). Never waits; no reply on success: the effects arrive as
    /// events ([`Event::ParticipantMuted`], [`Event::ParticipantUpdated`], [`Event::ParticipantLeft`]). The
    /// server's refusals arrive as [`Event::Error`] with the protocol's code: `forbidden` (no moderator
    /// grant), `participant_not_found` (`sid` is not in the room), `bad_message` (a move without a room, to
    /// an invalid room name or to this room). [`Error::NotConnected`] before `connect`.
    pub fn moderate(
        &self,
        sid: &str,
        action: ModerateAction,
        room: Option<&str>,
    ) -> Result<(), Error> {
        if self.thread.is_none() {
            return Err(Error::NotConnected);
        }
        self.send(Command::Moderate {
            action,
            sid: sid.to_owned(),
            room: room.map(str::to_owned),
        })
    }

    /// A command to the signaling thread (queued until `connect`).
    fn send(&self, command: Command) -> Result<(), Error> {
        self.commands.send(command).map_err(|_| Error::Ended)
    }

    /// A command whose state also goes out with the join (`shared`): sent only once connected.
    fn send_if_connected(&self, command: Command) -> Result<(), Error> {
        if self.thread.is_none() {
            return Ok(());
        }
        self.send(command)
    }

    /// The next event, if any (never waits).
    pub fn poll_event(&self) -> Option<Event> {
        self.events.try_recv().ok()
    }

    /// The session's events, for a dispatcher of its own (the C ABI's `chorus-events` thread); from then on
    /// [`Client::poll_event`] has none. The channel ends once the client is dropped.
    pub(crate) fn take_events(&mut self) -> Receiver<Event> {
        std::mem::replace(&mut self.events, std::sync::mpsc::channel().1)
    }

    /// The next event, waiting up to `timeout` (for tools and tests; a game polls).
    pub fn wait_event(&self, timeout: std::time::Duration) -> Option<Event> {
        self.events.recv_timeout(timeout).ok()
    }

    pub fn stats(&self) -> Stats {
        let c = &self.shared.stats;
        Stats {
            mic_dropped: c.mic_dropped.load(Ordering::Relaxed),
            output_dropped: c.output_dropped.load(Ordering::Relaxed),
            frames_sent: c.frames_sent.load(Ordering::Relaxed),
            packets_received: c.packets_received.load(Ordering::Relaxed),
            expected_loss_percent: c.expected_loss_percent.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        let _ = self.commands.send(Command::Close);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The game's end of the microphone: push mono PCM at [`Config::input_rate_hz`] (or pre-encoded Opus)
/// from the capture callback. Lock-free and allocation-free; what does not fit is a counted drop.
pub struct Microphone {
    pcm: Producer<f32>,
    opus: Producer<OpusFrame>,
    shared: Arc<Shared>,
}

impl Microphone {
    /// Push samples in −1..=1; returns how many were taken (the rest are dropped and counted).
    pub fn push_f32(&mut self, pcm: &[f32]) -> usize {
        let (taken, dropped) = self.pcm.push_partial_slice(pcm);
        self.count_drops(dropped.len());
        taken.len()
    }

    /// Push 16-bit samples; returns how many were taken (the rest are dropped and counted).
    pub fn push_i16(&mut self, pcm: &[i16]) -> usize {
        let room = self.pcm.slots().min(pcm.len());
        let taken = match self.pcm.write_chunk_uninit(room) {
            Ok(chunk) => chunk.fill_from_iter(
                pcm[..room]
                    .iter()
                    .map(|s| media_core::audio::i16_to_f32(*s)),
            ),
            Err(_) => 0,
        };
        self.count_drops(pcm.len() - taken);
        taken
    }

    /// Push one pre-encoded Opus packet (mono, any duration Opus allows). Its audio level is measured on the
    /// network thread.
    pub fn push_opus(&mut self, packet: &[u8]) -> Result<(), Error> {
        if packet.is_empty() || packet.len() > MAX_OPUS_BYTES {
            return Err(Error::BadOpus(format!("{} bytes", packet.len())));
        }
        if media_core::mixer::opus_packet_info(packet).is_none() {
            return Err(Error::BadOpus("not a valid Opus packet".into()));
        }
        let mut frame = OpusFrame {
            len: packet.len() as u16,
            bytes: [0; MAX_OPUS_BYTES],
        };
        frame.bytes[..packet.len()].copy_from_slice(packet);
        if self.opus.push(frame).is_err() {
            self.count_drops(1);
        }
        Ok(())
    }

    fn count_drops(&self, n: usize) {
        if n > 0 {
            self.shared
                .stats
                .mic_dropped
                .fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

/// The game's end of the output: pull PCM at [`Config::output_rate_hz`] from the playback callback,
/// mixed or per participant, mono or interleaved L/R stereo ([`Config::output_channels`]). Lock-free and
/// allocation-free; what is not there yet is silence.
pub struct Speaker {
    /// [`Config::output_channels`]: every pull is a whole number of sample frames of this many samples.
    channels: u16,
    mixed: Option<Consumer<f32>>,
    slots: Vec<Consumer<f32>>,
    updates: Consumer<SlotUpdate>,
    /// Who is in each slot, from the `slots` messages.
    occupants: [Sid; MAX_SLOTS],
}

impl Speaker {
    /// Fill `out` with the mix of everyone (soft-clipped); returns how many samples were audio from the
    /// network, the rest is silence. `Err` if the mixed output is off ([`Config::mixed_output`]).
    ///
    /// With [`Config::output_channels`] 2, `out` is interleaved L/R: `out.len()` is `frames × 2` (an odd
    /// length is [`Error::BufferLength`] and nothing is pulled), and the count returned is in samples too.
    pub fn pull_mixed(&mut self, out: &mut [f32]) -> Result<usize, Error> {
        let channels = self.whole_frames(out)?;
        let ring = self
            .mixed
            .as_mut()
            .ok_or(Error::OutputOff("mixed_output"))?;
        Ok(pull(ring, out, channels))
    }

    /// Fill `out` with what participant `sid` says; returns how many samples were audio from the network,
    /// the rest is silence. `Err(UnknownParticipant)` if `sid` is in no slot (not speaking lately, or not in
    /// the room). Channels and `out`'s length as for [`Speaker::pull_mixed`].
    pub fn pull_participant(&mut self, sid: &str, out: &mut [f32]) -> Result<usize, Error> {
        let channels = self.whole_frames(out)?;
        while let Ok(update) = self.updates.pop() {
            if let Some(occupant) = self.occupants.get_mut(usize::from(update.slot)) {
                *occupant = update.sid;
            }
        }
        if self.slots.is_empty() {
            return Err(Error::OutputOff("participant_output"));
        }
        let slot = self
            .occupants
            .iter()
            .position(|o| o.as_bytes() == sid.as_bytes() && !sid.is_empty())
            .ok_or(Error::UnknownParticipant)?;
        Ok(pull(&mut self.slots[slot], out, channels))
    }

    /// The channel count, if `out` holds whole sample frames.
    fn whole_frames(&self, out: &[f32]) -> Result<usize, Error> {
        let channels = usize::from(self.channels);
        if !out.len().is_multiple_of(channels) {
            return Err(Error::BufferLength {
                len: out.len(),
                channels: self.channels,
            });
        }
        Ok(channels)
    }
}

/// Pop whole sample frames of `channels` into `out` (the network thread pushes whole ones, so the ring
/// always holds whole ones), pad with silence; how many samples came from the ring.
fn pull(ring: &mut Consumer<f32>, out: &mut [f32], channels: usize) -> usize {
    let n = (ring.slots() / channels * channels).min(out.len());
    let (filled, rest) = out.split_at_mut(n);
    let popped = ring.pop_partial_slice(filled).0.len();
    debug_assert_eq!(popped, n, "a single consumer: what was there stays there");
    rest.fill(0.0);
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushes_beyond_the_ring_are_counted_drops_and_pulls_pad_with_silence() {
        let mut client = Client::new(Config {
            buffer_ms: 40,
            ..Config::default()
        })
        .expect("valid config");
        let mut mic = client.take_microphone().expect("the microphone");
        assert!(client.take_microphone().is_none());
        // 40 ms at 48 kHz: 1920 samples fit.
        assert_eq!(mic.push_f32(&[0.1; 1_500]), 1_500);
        assert_eq!(mic.push_i16(&[100; 1_000]), 420);
        assert_eq!(client.stats().mic_dropped, 580);
        assert!(matches!(mic.push_opus(&[]), Err(Error::BadOpus(_))));
        let mut speaker = client.take_speaker().expect("the speaker");
        let mut out = [1.0f32; 64];
        assert_eq!(speaker.pull_mixed(&mut out).expect("mixed is on"), 0);
        assert!(out.iter().all(|s| *s == 0.0));
        assert!(matches!(
            speaker.pull_participant("PA_x", &mut out),
            Err(Error::UnknownParticipant)
        ));
        assert!(matches!(client.leave(), Err(Error::NotConnected)));
        // Stereo output: pulls take whole L/R sample frames.
        let mut stereo = Client::new(Config {
            output_channels: 2,
            ..Config::default()
        })
        .expect("valid config");
        let mut stereo_speaker = stereo.take_speaker().expect("the speaker");
        let mut odd = [1.0f32; 5];
        assert!(matches!(
            stereo_speaker.pull_mixed(&mut odd),
            Err(Error::BufferLength {
                len: 5,
                channels: 2
            })
        ));
        assert!(matches!(
            stereo_speaker.pull_participant("PA_x", &mut odd),
            Err(Error::BufferLength { .. })
        ));
        assert_eq!(odd, [1.0; 5], "nothing pulled");
        let mut even = [1.0f32; 6];
        assert_eq!(
            stereo_speaker.pull_mixed(&mut even).expect("whole frames"),
            0
        );
        assert_eq!(even, [0.0; 6]);
        assert!(client.set_muted(true).is_ok() && client.is_muted());
        assert!(client.poll_event().is_none());
        // Positions are checked before anything is sent; the last good one stays.
        assert!(client.set_position(1.0, 2.0, 3.0, 90.0).is_ok());
        for (x, y, z, yaw) in [
            (f64::NAN, 0.0, 0.0, 0.0),
            (0.0, f64::INFINITY, 0.0, 0.0),
            (0.0, 0.0, 0.0, f64::NEG_INFINITY),
            (2.0e6, 0.0, 0.0, 0.0),
        ] {
            assert!(
                matches!(
                    client.set_position(x, y, z, yaw),
                    Err(Error::BadPosition(_))
                ),
                "{x} {y} {z} {yaw}"
            );
        }
        assert_eq!(
            client.position(),
            Some(crate::Position::new(1.0, 2.0, 3.0, 90.0).expect("valid"))
        );
    }

    /// Dropping a client whose join is never answered (a listener that never accepts: the WebSocket
    /// upgrade hangs) does not wait for the reply timeout (10 s): a game thread never stalls on a free.
    #[test]
    fn a_client_joining_a_server_that_never_answers_is_dropped_at_once() {
        use std::time::{Duration, Instant};
        let black_hole = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let url = format!("ws://{}/ws", black_hole.local_addr().expect("bound"));
        let mut client = Client::new(Config::default()).expect("valid config");
        client
            .connect(&url, "token", None)
            .expect("connect returns at once");
        assert_eq!(
            client.wait_event(Duration::from_secs(5)),
            Some(Event::ConnectionState(crate::ConnectionState::Connecting))
        );
        std::thread::sleep(Duration::from_millis(300));
        let start = Instant::now();
        drop(client);
        // A hang check, not a performance figure.
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
    }
}
