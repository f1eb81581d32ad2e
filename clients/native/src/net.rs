//! The network thread: one UDP socket and the sans-IO client peer, driven as media-core's peers are (one
//! input, then drain the outputs until a timeout). It also encodes the microphone frames the game pushed and
//! plays every slot out on a 20 ms grid into the output rings.

use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use media_core::audio::{audio_level_from_samples, FRAME_DURATION, SAMPLE_RATE};
use media_core::client::{ClientOutput, ClientPeer, Player};
use rtrb::{Consumer, Producer};

use crate::audio::{apply_gain, soft_clip, Encoded, MicEncoder, OpusFrame};
use crate::client::Shared;
use crate::drift::DriftCompensator;
use crate::event::{ConnectionState, Event};
use crate::pan::{pan_gains, SlotPan};
use crate::talk::slot_volume;
use crate::{Config, Error};

/// The longest the thread sleeps before it looks at the microphone ring again.
const MIC_POLL: Duration = Duration::from_millis(5);

/// ICE disconnected this long: the media path is lost (the session rejoins).
const MEDIA_LOST: Duration = Duration::from_secs(5);

/// The network thread's ends of the audio rings.
pub(crate) struct NetAudio {
    pub mic: Consumer<f32>,
    pub opus: Consumer<OpusFrame>,
    pub mixed: Option<Producer<f32>>,
    /// One per slot (up to `MAX_SLOTS`), when per-participant output is on.
    pub slots: Vec<Producer<f32>>,
}

pub(crate) struct Net {
    pub peer: ClientPeer,
    pub socket: UdpSocket,
    pub audio: NetAudio,
    pub config: Config,
    pub shared: Arc<Shared>,
    pub events: Sender<Event>,
    /// The room's slot count.
    pub slots: usize,
    /// The participant may publish (not listen-only): without it the microphone has no stream and what
    /// the game pushes is discarded.
    pub publish: bool,
    /// Set to end this connection (the session ends or rejoins); the thread sets it when it fails.
    pub leg_stop: Arc<AtomicBool>,
}

impl Net {
    /// Run until [`Shared::stop`] or `leg_stop` is set or the peer fails; the rings go back to the
    /// session (for the next connection after a rejoin).
    pub(crate) fn run(mut self) -> NetAudio {
        if let Err(e) = self.drive() {
            let _ = self.events.send(Event::Error {
                code: None,
                message: format!("media: {e}"),
            });
        }
        self.leg_stop.store(true, Ordering::Release);
        self.audio
    }

    fn stopped(&self) -> bool {
        self.shared.stop.load(Ordering::Acquire) || self.leg_stop.load(Ordering::Acquire)
    }

    fn drive(&mut self) -> Result<(), Error> {
        let mut encoder = MicEncoder::new(&self.config)?;
        let mut opus_decoder = opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono)?;
        // Stereo output decodes stereo: a spatial mixed room's stereo mix keeps its sides, a mono stream
        // comes out the same on both (then panned, in a spatial forwarding room).
        let mut players = (0..self.slots)
            .map(|_| Player::with_channels(self.config.output_rate_hz, self.config.opus_channels()))
            .collect::<Result<Vec<_>, _>>()?;
        let channels = self.config.channels();
        let frame_in = Config::frame_samples(self.config.input_rate_hz);
        let frame_out = self.config.output_frame_samples();
        let mut mic_frame = vec![0.0f32; frame_in];
        let mut slot_frame = vec![0.0f32; frame_out];
        let mut mix = vec![0.0f32; frame_out];
        let mut decoded = vec![0.0f32; SAMPLE_RATE as usize * 120 / 1000];
        let mut buf = vec![0u8; 2048];
        // Each output ring follows the game's device clock on its own (a ring the game never pulls just
        // stays full).
        let drift_for = |ring: &Producer<f32>| {
            DriftCompensator::new(
                self.config.output_rate_hz,
                channels,
                ring.buffer().capacity(),
                frame_out,
            )
        };
        let mut slot_drift: Vec<DriftCompensator> =
            self.audio.slots.iter().map(drift_for).collect();
        let mut mixed_drift = self.audio.mixed.as_ref().map(drift_for);
        // Each slot's gains (left, right; mono: the first) in its last frame: its participant's volume in
        // a forwarding room, times its pan in stereo.
        let mut gains = vec![[1.0f32; 2]; players.len()];
        let mut next_tick: Option<Instant> = None;
        let mut connected = false;
        let mut disconnected_since: Option<Instant> = None;
        let mut peer_timeout = self.drain(
            &mut players,
            &mut next_tick,
            &mut connected,
            &mut disconnected_since,
        )?;
        while !self.stopped() {
            let now = Instant::now();
            if disconnected_since.is_some_and(|t| now.duration_since(t) > MEDIA_LOST) {
                return Err(Error::Media(format!("ICE disconnected for {MEDIA_LOST:?}")));
            }
            // Microphone: every whole frame the game pushed. Before media is up and while muted it is
            // dropped (the RTP clock moves on while muted, as for DTX).
            // Push-to-talk with the key up sends nothing either (the server would not forward it).
            let muted = !self.publish || self.shared.silent();
            // The FEC follows the server's newest receiver report (the stats show it to a game that
            // pushes frames of its own encoder).
            if let Some(percent) = encoder.follow_reports(self.peer.reported_mic_loss_percent())? {
                self.shared
                    .stats
                    .expected_loss_percent
                    .store(percent.unsigned_abs(), Ordering::Relaxed);
            }
            while self.audio.mic.slots() >= frame_in {
                let (popped, _) = self.audio.mic.pop_partial_slice(&mut mic_frame);
                debug_assert_eq!(popped.len(), frame_in);
                if !connected {
                    continue;
                }
                if muted {
                    self.peer.skip_audio(FRAME_SAMPLES_48K);
                    continue;
                }
                match encoder.encode(&mic_frame)? {
                    Encoded::Packet { opus, level } => {
                        self.peer.send_audio(now, opus, FRAME_SAMPLES_48K, level)?;
                        self.shared
                            .stats
                            .frames_sent
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    Encoded::Dtx => self.peer.skip_audio(FRAME_SAMPLES_48K),
                }
            }
            while let Ok(frame) = self.audio.opus.pop() {
                let opus = &frame.bytes[..usize::from(frame.len)];
                let Some((samples, _)) = media_core::mixer::opus_packet_info(opus) else {
                    continue; // checked by push_opus
                };
                if !connected {
                    continue;
                }
                if muted {
                    self.peer.skip_audio(samples);
                    continue;
                }
                // The level the server ranks speakers by, from what the frame decodes to.
                let level = match opus_decoder.decode_float(opus, &mut decoded, false) {
                    Ok(n) => audio_level_from_samples(&decoded[..n]),
                    Err(_) => 127,
                };
                self.peer.send_audio(now, opus, samples, level)?;
                self.shared
                    .stats
                    .frames_sent
                    .fetch_add(1, Ordering::Relaxed);
            }
            // Playout: every 20 ms due by now, each as of its own deadline.
            while let Some(due) = next_tick.filter(|due| *due <= now) {
                next_tick = Some(due + FRAME_DURATION);
                mix.fill(0.0);
                for (slot, (player, gain)) in players.iter_mut().zip(&mut gains).enumerate() {
                    player.tick(due, &mut slot_frame);
                    let volume = slot_volume(&self.shared, slot).gain();
                    let pan = match channels {
                        2 => pan_gains(self.shared.slot_pans.get(slot).and_then(SlotPan::load)),
                        _ => [1.0, 1.0],
                    };
                    let target = pan.map(|side| side * volume);
                    apply_gain(&mut slot_frame, channels, *gain, target);
                    *gain = target;
                    for (m, s) in mix.iter_mut().zip(&slot_frame) {
                        *m += s;
                    }
                    if let (Some(ring), Some(drift)) =
                        (self.audio.slots.get_mut(slot), slot_drift.get_mut(slot))
                    {
                        let dropped = drift.push(&slot_frame, ring);
                        self.shared
                            .stats
                            .output_dropped
                            .fetch_add(dropped as u64, Ordering::Relaxed);
                    }
                }
                if let (Some(ring), Some(drift)) = (self.audio.mixed.as_mut(), mixed_drift.as_mut())
                {
                    for m in mix.iter_mut() {
                        *m = soft_clip(*m);
                    }
                    let dropped = drift.push(&mix, ring);
                    self.shared
                        .stats
                        .output_dropped
                        .fetch_add(dropped as u64, Ordering::Relaxed);
                }
            }
            // Wait for a datagram, the peer's timeout, the next tick or the next look at the microphone.
            if self.stopped() {
                break;
            }
            let mut wake = peer_timeout.min(now + MIC_POLL);
            if let Some(tick) = next_tick {
                wake = wake.min(tick);
            }
            let wait = wake
                .saturating_duration_since(Instant::now())
                .max(Duration::from_micros(500));
            self.socket.set_read_timeout(Some(wait))?;
            match self.socket.recv_from(&mut buf) {
                Ok((n, from)) => {
                    self.peer.handle_datagram(Instant::now(), from, &buf[..n])?;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                // An ICMP error of an earlier send (the server went away); ICE notices.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                Err(e) => return Err(e.into()),
            }
            let now = Instant::now();
            if now >= peer_timeout {
                self.peer.handle_timeout(now)?;
            }
            peer_timeout = self.drain(
                &mut players,
                &mut next_tick,
                &mut connected,
                &mut disconnected_since,
            )?;
        }
        Ok(())
    }

    /// Drain the peer until it asks for a timeout, which is returned.
    fn drain(
        &mut self,
        players: &mut [Player],
        next_tick: &mut Option<Instant>,
        connected: &mut bool,
        disconnected_since: &mut Option<Instant>,
    ) -> Result<Instant, Error> {
        loop {
            match self.peer.poll_output()? {
                ClientOutput::Timeout(t) => return Ok(t),
                ClientOutput::Transmit(t) => {
                    let _ = self.socket.send_to(&t.contents, t.destination);
                }
                ClientOutput::Connected => {
                    *connected = true;
                    *disconnected_since = None;
                    self.shared.media_connections.fetch_add(1, Ordering::AcqRel);
                    let _ = self
                        .events
                        .send(Event::ConnectionState(ConnectionState::Connected));
                }
                ClientOutput::Disconnected => {
                    disconnected_since.get_or_insert_with(Instant::now);
                    let _ = self
                        .events
                        .send(Event::ConnectionState(ConnectionState::Disconnected));
                }
                ClientOutput::Audio(a) => {
                    self.shared
                        .stats
                        .packets_received
                        .fetch_add(1, Ordering::Relaxed);
                    // Media flows again (str0m reports no ICE recovery to the client peer).
                    *disconnected_since = None;
                    if let Some(player) = players.get_mut(a.slot) {
                        player.receive(&a);
                        // The playout grid starts with the first packet of any slot.
                        next_tick.get_or_insert(a.arrival);
                    }
                }
            }
        }
    }
}

/// A UDP socket bound to the local address that routes to the signaling server's host (its ICE host
/// candidate); the port is the system's choice.
pub(crate) fn bind_towards(url: &str) -> Result<UdpSocket, Error> {
    let rest = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split(['/', '?'])
        .next()
        .unwrap_or_default();
    let secure = url.starts_with("wss://");
    let with_port = if rest
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        && !rest.ends_with(']')
    {
        rest.to_owned()
    } else {
        format!("{rest}:{}", if secure { 443 } else { 80 })
    };
    // IPv4 first: the server's media candidates are IPv4 unless it was configured otherwise, and a host
    // such as `localhost` often resolves to `::1` first. Each address in turn, so a family the machine
    // lacks (IPv6 disabled) or cannot route is passed over.
    let mut servers: Vec<SocketAddr> = with_port.to_socket_addrs()?.collect();
    servers.sort_by_key(|a| !a.is_ipv4());
    let mut last_error = None;
    for server in servers {
        let unspecified: SocketAddr = if server.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        }
        .parse()
        .expect("a literal socket address parses");
        let routed = UdpSocket::bind(unspecified).and_then(|probe| {
            probe.connect(server)?;
            UdpSocket::bind(SocketAddr::new(probe.local_addr()?.ip(), 0))
        });
        match routed {
            Ok(socket) => return Ok(socket),
            Err(e) => last_error = Some(e),
        }
    }
    Err(match last_error {
        Some(e) => e.into(),
        None => Error::Signaling(format!("{url}: no address for the host")),
    })
}

/// One 20 ms frame on the RTP clock (48 kHz for Opus whatever the codec's rate).
const FRAME_SAMPLES_48K: u32 = media_core::audio::FRAME_SAMPLES as u32;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_media_socket_binds_to_the_address_routing_to_the_server() {
        for url in ["ws://127.0.0.1:7880/ws", "ws://localhost:7880/ws?x=1"] {
            let socket = bind_towards(url).expect(url);
            let local = socket.local_addr().expect("bound");
            // IPv4 even where `localhost` resolves to `::1` first: the server's candidates are IPv4.
            assert!(
                local.ip().is_loopback() && local.is_ipv4(),
                "{url}: {local}"
            );
            assert_ne!(local.port(), 0);
        }
        assert!(bind_towards("ws://no-such-host.invalid/ws").is_err());
    }
}
