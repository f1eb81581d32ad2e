//! The signaling thread: a tokio current-thread runtime running the typed WebSocket client. It joins,
//! negotiates media (then starts the network thread with the peer), turns server messages into events and
//! slot-map updates, and carries the game's commands (mute, leave) to the server.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use media_core::client::{ClientConfig, ClientPeer};
use rtrb::Producer;
use signaling::client::{join_message, Client, JoinedSession};
use signaling::protocol::{
    ClientMessage, Join, ModerateAction, Moved, Offer, ParticipantInfo, ServerMessage,
    SharedParticipant,
};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::watch;
use vocab::{Position, TalkTarget, Volume};

use crate::audio::{Sid, SlotUpdate};
use crate::client::Shared;
use crate::event::{ConnectionState, Event, Participant, SlotInfo, SpeakerPosition};
use crate::net::{bind_towards, Net, NetAudio};
use crate::pan::Panning;
use crate::position::PositionPacer;
use crate::talk::TalkState;
use crate::{Config, Error};

/// The server closes a session that sent nothing for 30 s; a ping every 10 s keeps it.
const PING_INTERVAL: Duration = Duration::from_secs(10);

/// Delays before the rejoin attempts after a lost connection (the browser SDK's): quickly first, then every
/// 2 s.
const RECONNECT_DELAYS: [Duration; 4] = [
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
];
/// How long a lost session keeps trying to rejoin before it fails.
const RECONNECT_WINDOW: Duration = Duration::from_secs(60);
/// Close codes after which a session rejoins (going away, abnormal, server errors, restarts, overload);
/// others (normal, policy: kicked, replaced, idle) end it.
const RECONNECT_CLOSE_CODES: [u16; 6] = [1001, 1006, 1011, 1012, 1013, 1014];

/// How a connection ended.
enum End {
    /// For good: left, closed by the game, or ended by the server.
    Done,
    /// Lost: rejoin.
    Lost(String),
    /// Moved to another room by a moderator: negotiate media there on the same socket.
    Moved(Moved),
    /// The node handed the room to another node of its cluster (a drain): rejoin at this URL at once.
    Migrated(String),
}

/// What the game asks of the session.
#[derive(Debug)]
pub(crate) enum Command {
    Mute(bool),
    Ptt(bool),
    PttKey(bool),
    Talk(TalkTarget<String>),
    Volume(String, Volume),
    /// A moderator's action on participant `sid`; `room`: the destination of a move.
    Moderate {
        action: ModerateAction,
        sid: String,
        room: Option<String>,
    },
    Leave,
    /// Close the socket and end (the client is being dropped).
    Close,
}

pub(crate) struct Session {
    /// The entry URL the game gave: every join goes through it.
    pub url: String,
    /// The node that admitted the current connection (the entry URL, or where a cluster redirected).
    pub server_url: String,
    /// Where the next connection joins instead of the entry URL (once): the node a draining node handed
    /// the room to.
    pub next_url: Option<String>,
    pub token: String,
    pub room: Option<String>,
    pub config: Config,
    pub shared: Arc<Shared>,
    pub events: Sender<Event>,
    pub commands: UnboundedReceiver<Command>,
    /// The network thread's ring ends, until it starts.
    pub audio: Option<NetAudio>,
    pub slot_updates: Producer<SlotUpdate>,
    /// The game's newest position.
    pub position: watch::Receiver<Option<Position>>,
    /// When to send it.
    pub pacer: PositionPacer,
    /// This session's participant id in its current room.
    pub own_sid: String,
    /// The talk target and volumes.
    pub talk: TalkState,
    /// Where the speakers this session hears are (stereo output in a forwarding room).
    pub panning: Panning,
}

impl Session {
    /// The thread's body: run the session to its end, then report `Closed`.
    pub(crate) fn run(self) {
        let events = self.events.clone();
        let shared = self.shared.clone();
        let result = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(Error::from)
            .and_then(|runtime| runtime.block_on(self.session()));
        if let Err(e) = result {
            let _ = events.send(Event::Error {
                code: None,
                message: e.to_string(),
            });
        }
        shared.stop.store(true, Ordering::Release);
        let _ = events.send(Event::ConnectionState(ConnectionState::Closed));
    }

    /// Connections until the session ends: the first, then a rejoin after each loss (once media had
    /// connected), as the browser SDK does.
    async fn session(mut self) -> Result<(), Error> {
        self.event(Event::ConnectionState(ConnectionState::Connecting));
        let mut ever_connected = false;
        let mut lost_since: Option<Instant> = None;
        let mut attempt = 0u32;
        loop {
            let connections = self.shared.media_connections.load(Ordering::Acquire);
            let end = self.connection().await;
            if self.shared.media_connections.load(Ordering::Acquire) != connections {
                ever_connected = true;
                lost_since = None;
                attempt = 0;
            }
            let reason = match end {
                Ok(End::Done) => return Ok(()),
                Ok(End::Migrated(url)) => {
                    // Not a loss: straight to the new node, without a backoff.
                    self.next_url = Some(url);
                    self.event(Event::Reconnecting {
                        attempt: 1,
                        reason: "migrated".to_owned(),
                    });
                    self.event(Event::ConnectionState(ConnectionState::Reconnecting));
                    continue;
                }
                Ok(End::Lost(reason)) => reason,
                // `connection` renegotiates a move itself.
                Ok(End::Moved(_)) => "moved".to_owned(),
                Err(e) => e.to_string(),
            };
            if !ever_connected || self.shared.stop.load(Ordering::Acquire) {
                return Err(Error::Signaling(reason));
            }
            let since = *lost_since.get_or_insert_with(Instant::now);
            if since.elapsed() > RECONNECT_WINDOW {
                return Err(Error::Signaling(format!(
                    "connection lost for {RECONNECT_WINDOW:?}: {reason}"
                )));
            }
            attempt += 1;
            self.event(Event::Reconnecting {
                attempt,
                reason: reason.clone(),
            });
            self.event(Event::ConnectionState(ConnectionState::Reconnecting));
            let delay = RECONNECT_DELAYS[(attempt as usize - 1).min(RECONNECT_DELAYS.len() - 1)];
            let wait = tokio::time::sleep(delay);
            tokio::pin!(wait);
            // The game may leave (or drop the client) while we wait.
            loop {
                tokio::select! {
                    _ = &mut wait => break,
                    command = self.commands.recv() => match command {
                        // Sent with the rejoin.
                        Some(Command::Mute(_) | Command::Ptt(_)) => {}
                        Some(Command::PttKey(down)) => {
                            self.shared.key_down.store(down, Ordering::Release);
                        }
                        // Sent with the rejoin (the latest asked for).
                        Some(Command::Talk(target)) => self.talk.want(target),
                        Some(Command::Volume(sid, volume)) => {
                            self.talk.set_volume(&sid, volume, &self.shared);
                        }
                        // Its `sid` named a participant of the lost session's room: not sent.
                        Some(Command::Moderate { action, sid, .. }) => self.event(Event::Error {
                            code: None,
                            message: format!(
                                "moderate {} {sid}: not sent, the session was reconnecting",
                                action.as_str()
                            ),
                        }),
                        Some(Command::Leave) => {
                            self.event(Event::Left { reason: None });
                            return Ok(());
                        }
                        Some(Command::Close) | None => return Ok(()),
                    },
                }
            }
        }
    }

    /// One connection: join, negotiate media, serve until it ends (negotiating again after a move).
    async fn connection(&mut self) -> Result<End, Error> {
        let timeout = self.config.reply_timeout;
        // Through the entry URL every time, following a cluster's redirects: after a node died, its rooms
        // are found wherever they are placed again. After a migration, straight to the room's new node.
        let entry = self.next_url.take().unwrap_or_else(|| self.url.clone());
        let join = Join {
            team: self.config.team.clone(),
            listen_only: self.config.listen_only,
            ..join_message(
                &self.token,
                self.room.as_deref(),
                self.config.name.as_deref(),
            )
        };
        // Freeing the client while the server is slow (or never answers) ends the join at once.
        let JoinedSession {
            mut client,
            joined,
            url,
        } = tokio::select! {
            joined = Client::connect_and_join_as(&entry, &join, timeout) => joined?,
            () = stopped(&self.shared) => return Ok(End::Done),
        };
        self.server_url = url;
        let mut slots = usize::from(joined.room.slots);
        self.own_sid = joined.participant.sid.clone();
        self.event(Event::Joined {
            sid: joined.participant.sid.clone(),
            room: joined.room.name.clone(),
            slots,
        });
        self.event(Event::ConnectionState(ConnectionState::Joined));
        let present: Vec<String> = joined.participants.iter().map(|p| p.sid.clone()).collect();
        self.report_participants(joined.participants);
        let can_publish = joined.participant.can_publish;
        if self.shared.muted.load(Ordering::Acquire) {
            client.mute(true).await?;
        }
        self.restore_ptt(&mut client, &joined.participant).await?;
        self.talk.joined(joined.room.mode, &self.shared);
        self.panning.reset();
        self.publish_pans();
        self.talk.restore(&mut client, &present).await?;
        self.pacer.reset();
        self.send_position(&mut client).await?;
        loop {
            match self.media(&mut client, slots, can_publish).await? {
                End::Moved(moved) => {
                    slots = usize::from(moved.room.slots);
                    self.own_sid = moved.participant.sid.clone();
                    self.event(Event::Moved {
                        sid: moved.participant.sid.clone(),
                        room: moved.room.name.clone(),
                        slots,
                    });
                    self.event(Event::ConnectionState(ConnectionState::Joined));
                    self.report_participants(moved.participants);
                    // A new participant: unmuted, push-to-talk off unless the token forces it.
                    self.shared.muted.store(false, Ordering::Release);
                    self.shared.ptt.store(false, Ordering::Release);
                    self.restore_ptt(&mut client, &moved.participant).await?;
                    self.talk.moved(moved.room.mode, &self.shared);
                    self.panning.reset();
                    self.publish_pans();
                    self.pacer.reset();
                    self.send_position(&mut client).await?;
                }
                end => return Ok(end),
            }
        }
    }

    fn report_participants(&self, participants: Vec<SharedParticipant>) {
        for p in participants {
            // Parsed from the message: the only owner, nothing is copied.
            self.event(Event::ParticipantJoined(participant(p.into_info())));
        }
    }

    /// A new participant (join, rejoin, move) starts without push-to-talk on the server unless its token
    /// forces it: turn it on again if the game had it on, and press the key again if it is down.
    async fn restore_ptt(
        &mut self,
        client: &mut Client,
        me: &ParticipantInfo,
    ) -> Result<(), Error> {
        if me.ptt {
            self.shared.ptt.store(true, Ordering::Release);
        } else if self.shared.ptt.load(Ordering::Acquire) && me.can_publish {
            client.ptt(true).await?;
        }
        if self.shared.ptt.load(Ordering::Acquire) && self.shared.key_down.load(Ordering::Acquire) {
            client.ptt_key(true).await?;
        }
        Ok(())
    }

    /// The game's newest position, if the pacer says it is due now.
    async fn send_position(&mut self, client: &mut Client) -> Result<(), Error> {
        let latest = *self.position.borrow_and_update();
        if let Some(update) = self.pacer.poll(Instant::now(), latest) {
            client.send(&ClientMessage::Position(update)).await?;
        }
        Ok(())
    }

    /// Media in the current room: a UDP socket on the address that routes to the server, the peer's offer,
    /// the answer, the network thread; serve until the connection ends or the session is moved.
    async fn media(
        &mut self,
        client: &mut Client,
        slots: usize,
        can_publish: bool,
    ) -> Result<End, Error> {
        let timeout = self.config.reply_timeout;
        let socket = bind_towards(&self.server_url)?;
        let local_addr = socket.local_addr()?;
        let (mut peer, offer) = ClientPeer::new(
            Instant::now(),
            ClientConfig {
                local_addr,
                slots,
                publish: can_publish,
                red: self.config.red_depth,
            },
        )?;
        client
            .send(&ClientMessage::Offer(Offer { sdp: offer }))
            .await?;
        let deadline = tokio::time::Instant::now() + timeout;
        let answer = loop {
            let message = tokio::select! {
                message = tokio::time::timeout_at(deadline, client.recv()) => message,
                () = stopped(&self.shared) => return Ok(End::Done),
            };
            let message = message
                .map_err(|_| Error::Signaling("timed out waiting for the answer".into()))??
                .ok_or(Error::Signaling("closed before the answer".into()))?;
            match message {
                ServerMessage::Answer(answer) => break answer,
                ServerMessage::Error(e) => {
                    return Err(Error::Signaling(format!(
                        "{}: {}",
                        e.code.as_str(),
                        e.message
                    )))
                }
                other => self.server_message(other),
            }
        };
        peer.accept_answer(&answer.sdp)?;
        let leg_stop = Arc::new(AtomicBool::new(false));
        let net = Net {
            peer,
            socket,
            audio: self
                .audio
                .take()
                .expect("the rings are back from the previous network thread"),
            config: self.config.clone(),
            shared: self.shared.clone(),
            events: self.events.clone(),
            slots,
            publish: can_publish,
            leg_stop: leg_stop.clone(),
        };
        let net_thread = std::thread::Builder::new()
            .name("chorus-net".into())
            .spawn(move || net.run())?;

        let end = self.serve(client, &leg_stop).await;
        leg_stop.store(true, Ordering::Release);
        if !matches!(end, Ok(End::Lost(_) | End::Moved(_) | End::Migrated(_))) {
            client.close().await;
        }
        self.audio = Some(
            net_thread
                .join()
                .map_err(|_| Error::Media("the network thread panicked".into()))?,
        );
        end
    }

    /// Events and commands until the connection ends.
    async fn serve(&mut self, client: &mut Client, leg_stop: &AtomicBool) -> Result<End, Error> {
        let mut ping = tokio::time::interval(PING_INTERVAL);
        ping.tick().await;
        let mut ping_id = 0u64;
        // The network thread sets `leg_stop` when it fails; look at it now and then.
        let mut watch = tokio::time::interval(Duration::from_millis(50));
        // Whether the game's end of the position channel is still there (the client is not dropped).
        let mut positions_open = true;
        loop {
            let position_due = self.pacer.wake(*self.position.borrow());
            tokio::select! {
                message = client.recv() => match message {
                    Err(e) => return Ok(End::Lost(e.to_string())),
                    Ok(None) => {
                        let close = client.close_frame(Duration::ZERO).await.ok().flatten();
                        // No close frame: the socket broke (1006).
                        let code = close.as_ref().map_or(1006, |c| c.code);
                        return Ok(if RECONNECT_CLOSE_CODES.contains(&code) {
                            End::Lost(format!("the signaling socket closed ({code})"))
                        } else {
                            self.event(Event::Error {
                                code: None,
                                message: format!(
                                    "the server closed the session ({code} {})",
                                    close.map(|c| c.reason).unwrap_or_default()
                                ),
                            });
                            End::Done
                        });
                    }
                    Ok(Some(ServerMessage::Moved(moved))) => return Ok(End::Moved(moved)),
                    Ok(Some(ServerMessage::Redirect(redirect))) => {
                        return Ok(End::Migrated(redirect.url))
                    }
                    Ok(Some(ServerMessage::Left(left))) => {
                        self.event(Event::Left {
                            reason: left.reason.map(|r| spelling(&r)),
                        });
                        return Ok(End::Done);
                    }
                    Ok(Some(other)) => self.server_message(other),
                },
                command = self.commands.recv() => match command {
                    Some(Command::Mute(muted)) => client.mute(muted).await?,
                    Some(Command::Ptt(enabled)) => client.ptt(enabled).await?,
                    Some(Command::PttKey(down)) => {
                        client.ptt_key(down).await?;
                        // Only now does the microphone send: the key-down is ahead of its first frame.
                        if down {
                            self.shared.key_down.store(true, Ordering::Release);
                        }
                    }
                    Some(Command::Talk(target)) => self.talk.send(client, target).await?,
                    Some(Command::Volume(sid, volume)) => {
                        if self.talk.set_volume(&sid, volume, &self.shared) {
                            client.volume(&sid, volume).await?;
                        }
                    }
                    Some(Command::Moderate { action, sid, room }) => {
                        client.moderate(action, &sid, room.as_deref()).await?;
                    }
                    Some(Command::Leave) => client.leave().await?,
                    Some(Command::Close) | None => return Ok(End::Done),
                },
                changed = self.position.changed(), if positions_open => match changed {
                    Ok(()) => {
                        self.send_position(client).await?;
                        self.publish_pans();
                    }
                    Err(_) => positions_open = false,
                },
                () = tokio::time::sleep_until(position_due.unwrap_or_else(Instant::now).into()),
                    if position_due.is_some() => self.send_position(client).await?,
                _ = ping.tick() => {
                    ping_id += 1;
                    client.ping(ping_id).await?;
                }
                _ = watch.tick() => {
                    if self.shared.stop.load(Ordering::Acquire) {
                        return Ok(End::Done);
                    }
                    if leg_stop.load(Ordering::Acquire) {
                        return Ok(End::Lost("the media path was lost".into()));
                    }
                }
            }
        }
    }

    fn event(&self, event: Event) {
        let _ = self.events.send(event);
    }

    /// Each slot's pan for stereo output, from who is in it, where they are and where the game is.
    fn publish_pans(&self) {
        if self.config.output_channels == 2 {
            let own = *self.position.borrow();
            self.panning
                .publish(own, self.talk.slots(), self.talk.mixed(), &self.shared);
        }
    }

    /// An event from the server, as an [`Event`] (and slot-map updates for the speaker).
    fn server_message(&mut self, message: ServerMessage) {
        let event = match message {
            ServerMessage::ParticipantJoined(j) => Event::ParticipantJoined(participant(j.participant)),
            ServerMessage::ParticipantLeft(l) => Event::ParticipantLeft {
                sid: l.sid,
                reason: spelling(&l.reason),
            },
            ServerMessage::ParticipantMuted(m) => {
                if m.by_moderator && m.sid == self.own_sid {
                    // A moderator's mute holds for us too: the microphone stops (or may send again).
                    self.shared.muted.store(m.muted, Ordering::Release);
                }
                Event::ParticipantMuted {
                    sid: m.sid,
                    muted: m.muted,
                }
            }
            ServerMessage::ParticipantUpdated(u) => {
                let p = u.participant;
                if p.sid == self.own_sid && p.ptt != self.shared.ptt.load(Ordering::Acquire) {
                    self.shared.ptt.store(p.ptt, Ordering::Release);
                    self.shared.key_down.store(false, Ordering::Release);
                }
                Event::ParticipantUpdated {
                    sid: p.sid,
                    server_muted: p.server_muted,
                    deafened: p.deafened,
                    ptt: p.ptt,
                }
            }
            ServerMessage::Speakers(s) => {
                Event::Speaking(s.speakers.into_iter().map(|s| (s.sid, s.level)).collect())
            }
            ServerMessage::DominantSpeaker(d) => Event::DominantSpeaker { sid: d.sid },
            ServerMessage::Slots(s) => {
                for slot in &s.slots {
                    self.talk.slot(slot.slot, slot.sid.as_deref(), &self.shared);
                    let sid = slot.sid.as_deref().and_then(Sid::new).unwrap_or(Sid::EMPTY);
                    // A full ring (the game never pulls per participant) only delays the map.
                    let _ = self.slot_updates.push(SlotUpdate {
                        slot: slot.slot,
                        sid,
                    });
                }
                self.publish_pans();
                Event::Slots(
                    s.slots
                        .into_iter()
                        .map(|s| SlotInfo {
                            slot: s.slot,
                            sid: s.sid,
                        })
                        .collect(),
                )
            }
            ServerMessage::Positions(p) => {
                let positions: Vec<SpeakerPosition> = p
                    .positions
                    .into_iter()
                    .map(|s| SpeakerPosition {
                        sid: s.sid,
                        position: Position {
                            x: s.x,
                            y: s.y,
                            z: s.z,
                            yaw_deg: s.yaw_deg,
                        },
                    })
                    .collect();
                self.panning.positions(&positions);
                self.publish_pans();
                Event::Positions(positions)
            }
            ServerMessage::Draining(_) => Event::Draining,
            ServerMessage::Error(e) => {
                self.talk.error();
                Event::Error {
                code: Some(e.code.as_str().to_owned()),
                message: format!("{}: {}", e.code.as_str(), e.message),
            }
            }
            ServerMessage::Left(l) => Event::Left {
                reason: l.reason.map(|r| spelling(&r)),
            },
            // Replies this session does not wait for, and state it does not track (it rejoins rather
            // than resumes, so `resumed` never comes).
            ServerMessage::Joined(_)
            | ServerMessage::Resumed(_)
            | ServerMessage::Answer(_)
            | ServerMessage::MediaState(_)
            // Handled by `serve` (the room moved to another node).
            | ServerMessage::Redirect(_)
            // Handled by `serve` (a move renegotiates media).
            | ServerMessage::Moved(_) => return,
            ServerMessage::Pong(p) => {
                if let Some(id) = p.id.as_u64() {
                    self.talk.pong(id);
                }
                return;
            }
        };
        self.event(event);
    }
}

/// How often a wait for the server looks whether the client is being dropped.
const STOP_CHECK_INTERVAL: Duration = Duration::from_millis(20);

/// Resolves once the client is being dropped (`Shared::stop`): raced against the waits for the server
/// that come before `serve` (which watches the command channel), so a drop never waits for a reply.
async fn stopped(shared: &Shared) {
    let mut check = tokio::time::interval(STOP_CHECK_INTERVAL);
    while !shared.stop.load(Ordering::Acquire) {
        check.tick().await;
    }
}

/// A participant object of the protocol, as the game sees it.
fn participant(p: ParticipantInfo) -> Participant {
    Participant {
        sid: p.sid,
        identity: p.identity,
        name: p.name,
        muted: p.muted,
        team: p.team,
        shout: p.shout,
    }
}

/// How the protocol spells a reason (its serde name).
fn spelling<T: serde::Serialize>(reason: &T) -> String {
    match serde_json::to_value(reason) {
        Ok(serde_json::Value::String(s)) => s,
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_spelled_as_on_the_wire() {
        use signaling::protocol::ParticipantLeftReason;
        assert_eq!(
            spelling(&ParticipantLeftReason::Disconnected),
            "disconnected"
        );
    }
}
