// @ts-check
// chorus.js — browser SDK for the Chorus voice media server (signaling protocol version 1).
//
// An ES module with no dependencies and no build step. Usage:
//
//   import { connect } from '/chorus.js';
//   const room = await connect('ws://127.0.0.1:7880/ws', token, { name: 'Ada' });
//   room.on('participants', ({ participants }) => render(participants));
//   room.on('speaking', ({ speakers }) => showLevels(speakers));
//   await room.publishMicrophone();
//   room.setMuted(true);
//   await room.leave();
//
// The protocol is described in docs/protocol.md: one WebSocket carrying JSON messages, one RTCPeerConnection
// with one microphone m-line followed by `room.slots` recvonly m-lines ("slots"), each of which carries
// whichever remote participant the server currently puts into it. There is no renegotiation.

/** The signaling protocol version this SDK speaks. */
export const PROTOCOL_VERSION = 1;

/**
 * The SDK sends at most one `position` this often: the server takes one per 100 ms (measured at arrival,
 * so 20 ms more leave room for network jitter), and the newest position replaces any not sent yet.
 */
const POSITION_INTERVAL_MS = 120;
/**
 * After the player stops moving, its last position is sent once more this long after it was, in case the
 * server dropped it (two positions brought closer together by jitter).
 */
const POSITION_SETTLE_MS = 1000;
/** The largest coordinate (absolute value) the server takes in a position (docs/protocol.md, `position`). */
const MAX_COORDINATE = 1e6;
/** How long to wait for ICE gathering to complete before sending the offer anyway. */
const ICE_GATHERING_TIMEOUT_MS = 2000;
/** Keepalive interval; the server drops sessions silent for 30 s. */
const PING_INTERVAL_MS = 10000;
/** How long `leave()` waits for the server's `left` before closing the socket itself. */
const LEAVE_TIMEOUT_MS = 1500;
/** Delays before the reconnect attempts after a lost session: the first quickly, then at most every 2 s. */
const RECONNECT_DELAYS_MS = [250, 500, 1000, 2000];
/** One reconnect attempt may take this long up to the answer before the next one starts. */
const RECONNECT_ATTEMPT_TIMEOUT_MS = 8000;
/** How long ICE may stay `disconnected` on a live session before the SDK restarts it. */
const ICE_RESTART_AFTER_MS = 3000;
/** How often the SDK checks that the media path still answers connectivity checks. */
const MEDIA_PATH_CHECK_MS = 1000;
/**
 * The media path counts as dead, and ICE is restarted, when the selected candidate pair's connectivity checks
 * have gone unanswered this long (at least {@link MEDIA_PATH_UNANSWERED_CHECKS} of them). Chromium keeps
 * `iceConnectionState` at `connected` for a long time when a path dies. Shorter outages (a 3 s blackout)
 * recover on the same pair by themselves; the server keeps a peer without checks for 15 s.
 */
const MEDIA_PATH_DEAD_MS = 5000;
const MEDIA_PATH_UNANSWERED_CHECKS = 3;
/** The most `redirect`s in a row a join follows (a cluster's nodes point to the room's owner). */
const MAX_REDIRECTS = 3;
/** How long the SDK keeps trying to rejoin a lost session by default. */
const RECONNECT_WINDOW_MS = 60000;
/**
 * WebSocket close codes after which the session is rejoined: the connection broke (1006: no close frame,
 * e.g. the server process died or the network dropped), the server went away or restarts (1001, 1011 to
 * 1014). Never after 1000 (left, kicked, replaced, room deleted), 1008 (a fatal error or a deadline) or
 * protocol violations.
 */
const RECONNECT_CLOSE_CODES = new Set([1001, 1006, 1011, 1012, 1013, 1014]);

// ---------------------------------------------------------------------------------------------
// Wire messages of signaling protocol version 1 (docs/protocol.md; signaling/src/protocol/ on the server),
// snake_case as on the wire. The server may add fields in a minor release, so the SDK reads only these.

// The `code` of a server `error` message: every code of the table in docs/protocol.md, in its order.
// signaling's unit test `protocol::error::tests::sdk_error_codes_match_the_server` reads the quoted codes
// between the two marker comments and fails unless they are exactly the server's ErrorCode::ALL.
// <error-codes>
/**
 * @typedef {'bad_json' | 'unknown_type' | 'bad_message' | 'binary_frame' | 'frame_too_large'
 *   | 'unsupported_protocol' | 'invalid_token' | 'token_expired' | 'room_mismatch' | 'not_joined'
 *   | 'already_joined' | 'forbidden' | 'room_full' | 'room_closed' | 'banned' | 'draining' | 'bad_sdp'
 *   | 'bad_room_settings' | 'room_settings_conflict' | 'bad_position' | 'media_unavailable'
 *   | 'cluster_unavailable' | 'resume_failed' | 'rate_limited' | 'server_muted' | 'participant_not_found'
 *   | 'bad_target' | 'internal'} ServerErrorCode
 */
// </error-codes>

/**
 * A participant as the server describes it (in `joined` and `participant_joined`).
 * @typedef {object} ParticipantInfo
 * @property {string} sid
 * @property {string} identity
 * @property {string} name
 * @property {boolean} muted
 * @property {boolean} can_publish
 * @property {boolean} can_subscribe
 * @property {boolean} [server_muted]   muted by a moderator or operator: it cannot unmute itself (absent: false)
 * @property {boolean} [deafened]       sent no audio (absent: false)
 * @property {boolean} [ptt]            push-to-talk: heard only while its key is down (absent: false)
 * @property {string} [team]            its team (absent: none)
 * @property {boolean} [shout]          the shout role: heard by everyone in the room at full level (absent: false)
 */

/**
 * The room as `joined` describes it.
 * @typedef {object} RoomInfo
 * @property {string} name
 * @property {'forward'|'mix'} mode   selective forwarding into `slots` slots, or one mix on the first slot
 * @property {number} slots           K, the number of recvonly slot m-lines the offer must carry (1 for `mix`)
 * @property {number} max_participants
 */

/**
 * Client → server `join`: the first message of a session.
 * @typedef {object} JoinMessage
 * @property {'join'} type
 * @property {number} protocol        the protocol version, {@link PROTOCOL_VERSION}
 * @property {string} token           the access token
 * @property {string} [room]          must equal the token's room when present
 * @property {string} [name]          display name, at most 64 characters
 * @property {string} [team]          the team to join when the token has no `team` claim
 * @property {boolean} [listen_only]  never publish
 */

/**
 * Client → server `offer`: one microphone m-line, then `room.slots` recvonly m-lines.
 * @typedef {object} OfferMessage
 * @property {'offer'} type
 * @property {string} sdp
 */

/**
 * Client → server `mute`.
 * @typedef {object} MuteMessage
 * @property {'mute'} type
 * @property {boolean} muted
 */

/**
 * Client → server `ping` (keepalive), answered by `pong` with the same `id`.
 * @typedef {object} PingMessage
 * @property {'ping'} type
 * @property {number} id
 */

/**
 * Client → server `leave`, answered by `left`.
 * @typedef {object} LeaveMessage
 * @property {'leave'} type
 */

/**
 * Client → server `resume`: instead of `join` on a new socket, take over the session whose socket dropped.
 * @typedef {object} ResumeMessage
 * @property {'resume'} type
 * @property {number} protocol
 * @property {string} resume_token    from the last `joined` or `resumed` (single-use)
 */

/**
 * Client → server `ptt`: push-to-talk on or off for this participant (the server gates its audio).
 * @typedef {object} PttMessage
 * @property {'ptt'} type
 * @property {boolean} enabled
 */

/**
 * Client → server `ptt_key`: the push-to-talk key went down or up (key-downs are rate-limited).
 * @typedef {object} PttKeyMessage
 * @property {'ptt_key'} type
 * @property {boolean} down
 */

/**
 * What a moderator does to a participant of its room.
 * @typedef {'mute'|'unmute'|'deafen'|'undeafen'|'kick'|'move'} ModerateAction
 */

/**
 * Client → server `moderate` (needs the token's `moderator` grant).
 * @typedef {object} ModerateMessage
 * @property {'moderate'} type
 * @property {ModerateAction} action
 * @property {string} sid
 * @property {string} [room]          the destination of `move`
 */

/**
 * Client → server `position` (spatial rooms only, at most every 100 ms): where the participant is, in
 * world units, and which way it faces (degrees clockwise from +y).
 * @typedef {object} PositionMessage
 * @property {'position'} type
 * @property {number} x
 * @property {number} y
 * @property {number} z
 * @property {number} [yaw_deg]
 */

/**
 * Whom this participant's voice is for.
 * @typedef {'room'|'team'|'whisper'} TalkTarget
 */

/**
 * Client → server `talk`: talk to the room (default), the team, or whisper to `to` (1 to 64 sids).
 * @typedef {object} TalkMessage
 * @property {'talk'} type
 * @property {TalkTarget} target
 * @property {string[]} [to]          the whisper's sids (only with `whisper`)
 */

/**
 * Client → server `volume`: how loud this participant hears `sid`, −50 (silent) .. +50, 0 unchanged.
 * @typedef {object} VolumeMessage
 * @property {'volume'} type
 * @property {string} sid
 * @property {number} volume
 */

/**
 * Every message the SDK sends.
 * @typedef {JoinMessage | OfferMessage | MuteMessage | PingMessage | LeaveMessage | ResumeMessage | PttMessage
 *   | PttKeyMessage | ModerateMessage | PositionMessage | TalkMessage | VolumeMessage} ClientMessage
 */

/**
 * Server → client `joined`: the answer to `join`.
 * @typedef {object} JoinedMessage
 * @property {'joined'} type
 * @property {number} protocol
 * @property {string} server_version
 * @property {ParticipantInfo} participant       this session's participant
 * @property {RoomInfo} room
 * @property {ParticipantInfo[]} participants    everyone else already in the room
 * @property {string} [resume_token]             resumes this session on a new socket if this one drops
 * @property {number} [resume_window_ms]         for how long after a drop
 * @property {IceServer[]} [ice_servers]         TURN servers with time-limited credentials; absent when the
 *                                               server has no TURN configured
 */

/**
 * Server → client `resumed`: the answer to `resume` (the same participant; the room as it is now).
 * @typedef {object} ResumedMessage
 * @property {'resumed'} type
 * @property {number} protocol
 * @property {string} server_version
 * @property {ParticipantInfo} participant
 * @property {RoomInfo} room
 * @property {ParticipantInfo[]} participants    everyone else in the room now
 * @property {string} resume_token               the next token (the one sent is spent)
 * @property {number} resume_window_ms
 * @property {boolean} media                     whether the server still has our media peer (else: offer again)
 * @property {IceServer[]} [ice_servers]         fresh TURN credentials, as in `joined`
 */

/**
 * A TURN server entry of `joined` (the shape of `RTCIceServer`, passed to `RTCPeerConnection` as it is).
 * @typedef {object} IceServer
 * @property {string[]} urls          `turn:` / `turns:` URIs
 * @property {string} username        `<unix expiry>:<participant sid>` (TURN REST API)
 * @property {string} credential      base64(HMAC-SHA1(shared secret, username))
 */

/**
 * Server → client `answer`: the answer to `offer` (ICE-lite, with the server's candidate).
 * @typedef {object} AnswerMessage
 * @property {'answer'} type
 * @property {string} sdp
 */

/**
 * Server → client `participant_joined`.
 * @typedef {object} ParticipantJoinedMessage
 * @property {'participant_joined'} type
 * @property {ParticipantInfo} participant
 */

/**
 * Server → client `participant_left`.
 * @typedef {object} ParticipantLeftMessage
 * @property {'participant_left'} type
 * @property {string} sid
 * @property {'left'|'disconnected'|'kicked'|'replaced'|'moved'} reason
 */

/**
 * Server → client `participant_muted` (also the acknowledgement of our own `mute`).
 * @typedef {object} ParticipantMutedMessage
 * @property {'participant_muted'} type
 * @property {string} sid
 * @property {boolean} muted
 * @property {boolean} [by_moderator]  a moderator's or operator's (server) mute; absent: false
 */

/**
 * Server → client `participant_updated`: a participant's deafen or push-to-talk state changed.
 * @typedef {object} ParticipantUpdatedMessage
 * @property {'participant_updated'} type
 * @property {ParticipantInfo} participant
 */

/**
 * Server → client `moved`: a moderator or operator moved this session to another room; the SDK re-offers.
 * @typedef {object} MovedMessage
 * @property {'moved'} type
 * @property {ParticipantInfo} participant   this session's participant in the new room (a new sid)
 * @property {RoomInfo} room
 * @property {ParticipantInfo[]} participants
 */

/**
 * Server → client `media_state`: our own media connection as the server sees it.
 * @typedef {object} MediaStateMessage
 * @property {'media_state'} type
 * @property {'connected'|'disconnected'} state
 */

/**
 * One entry of `speakers`.
 * @typedef {object} SpeakerLevel
 * @property {string} sid
 * @property {number} level           0.0 (silence) .. 1.0 (full scale)
 */

/**
 * Server → client `speakers`: everyone speaking now, loudest first (empty: nobody).
 * @typedef {object} SpeakersMessage
 * @property {'speakers'} type
 * @property {SpeakerLevel[]} speakers
 */

/**
 * Server → client `dominant_speaker`: who holds the floor now.
 * @typedef {object} DominantSpeakerMessage
 * @property {'dominant_speaker'} type
 * @property {string} sid
 */

/**
 * One slot of a `slots` message.
 * @typedef {object} SlotAssignment
 * @property {number} slot            slot index, 0 .. K-1
 * @property {string} mid             the slot's m-line mid in the negotiated SDP
 * @property {string|null} sid        the participant the slot carries, null when empty
 * @property {number|null} ssrc       that participant's original SSRC
 */

/**
 * Server → client `slots`: the full assignment of this subscriber's slots.
 * @typedef {object} SlotsMessage
 * @property {'slots'} type
 * @property {SlotAssignment[]} slots
 */

/**
 * Where one audible speaker is (an entry of `positions`).
 * @typedef {object} SpeakerPosition
 * @property {string} sid
 * @property {number} x
 * @property {number} y
 * @property {number} z
 * @property {number} yaw_deg
 */

/**
 * Server → client `positions` (spatial forwarding rooms): the speakers this participant hears, nearest
 * first, and where they are.
 * @typedef {object} PositionsMessage
 * @property {'positions'} type
 * @property {SpeakerPosition[]} positions
 */

/**
 * Server → client `pong`: the answer to `ping`.
 * @typedef {object} PongMessage
 * @property {'pong'} type
 * @property {number} id
 */

/**
 * Server → client `left`: the answer to `leave`, or (with a reason) the end of the session by an operator
 * or by a newer session of the same identity.
 * @typedef {object} LeftMessage
 * @property {'left'} type
 * @property {'kicked'|'room_deleted'|'replaced'} [reason]
 */

/**
 * Server → client `draining`: the server is shutting down.
 * @typedef {object} DrainingMessage
 * @property {'draining'} type
 * @property {number} grace_period_secs
 */

/**
 * Server → client `redirect`: the room lives on another node of the cluster; join there with the same token.
 * @typedef {object} RedirectMessage
 * @property {'redirect'} type
 * @property {string} url       the owner's signaling URL (`ws://…` or `wss://…`)
 * @property {string} room
 */

/**
 * Server → client `error`; fatal codes ({@link FATAL_CODES}) are followed by the server closing the socket.
 * @typedef {object} ErrorMessage
 * @property {'error'} type
 * @property {ServerErrorCode} code
 * @property {string} message         for humans; may change
 */

/**
 * Every message the server sends.
 * @typedef {JoinedMessage | ResumedMessage | AnswerMessage | ParticipantJoinedMessage | ParticipantLeftMessage
 *   | ParticipantMutedMessage | ParticipantUpdatedMessage | MovedMessage | MediaStateMessage | SpeakersMessage
 *   | DominantSpeakerMessage | SlotsMessage | PositionsMessage | PongMessage | LeftMessage | DrainingMessage
 *   | RedirectMessage | ErrorMessage} ServerMessage
 */

// ---------------------------------------------------------------------------------------------
// SDK types

/**
 * A participant as tracked by the SDK.
 * @typedef {object} Participant
 * @property {string} sid            server-assigned participant id
 * @property {string} identity       the token's identity
 * @property {string} name           display name
 * @property {boolean} muted
 * @property {boolean} canPublish
 * @property {boolean} canSubscribe
 * @property {boolean} serverMuted   muted by a moderator or operator (it cannot unmute itself)
 * @property {boolean} deafened      sent no audio by the server
 * @property {boolean} ptt           push-to-talk: heard only while its key is down
 * @property {string|null} team      its team, or null
 * @property {boolean} shout         the shout role: heard by everyone in the room at full level
 * @property {number} volume         how loud we hear it, −50 (silent) .. +50, 0 unchanged ({@link Room#setVolume})
 * @property {boolean} isLocal       true for this session's own participant
 * @property {number} level          last speaking level from `speakers`, 0.0 .. 1.0 (0 when not speaking)
 * @property {boolean} speaking      listed in the last `speakers` message
 * @property {number|null} slot      the slot index this participant currently occupies for us, or null
 */

/**
 * One of this subscriber's audio slots.
 * @typedef {object} Slot
 * @property {number} slot                     slot index, 0 .. K-1
 * @property {string|null} mid                 the slot's m-line mid
 * @property {string|null} sid                 the participant currently in the slot, or null when empty
 * @property {number|null} ssrc                that participant's original SSRC (the CSRC of the slot's packets)
 * @property {RTCRtpTransceiver|null} transceiver
 * @property {MediaStreamTrack|null} track     the slot's remote audio track
 * @property {MediaStream|null} stream         a stream holding only `track`
 * @property {HTMLAudioElement|null} element   the `<audio autoplay>` element playing the slot
 */

/**
 * Where a speaker we hear is (the `positions` event, {@link Room#positions}).
 * @typedef {object} SpeakerPositionInfo
 * @property {string} sid
 * @property {number} x
 * @property {number} y
 * @property {number} z
 * @property {number} yawDeg                 facing, degrees clockwise from +y
 * @property {Participant|null} participant
 */

/**
 * @typedef {'connecting'|'connected'|'disconnected'|'reconnecting'|'failed'|'closed'} ConnectionState
 */

/**
 * Options of {@link connect}.
 * @typedef {object} ConnectOptions
 * @property {string} [name]                       display name sent in `join` (defaults to the token's)
 * @property {string} [room]                       room name sent in `join` (must match the token's room)
 * @property {string} [team]                       team sent in `join` (a token's `team` claim wins)
 * @property {boolean} [listenOnly]                join as a listener only: never publish
 * @property {boolean|MediaTrackConstraints} [microphone]
 *   acquire the microphone before the offer is made (the track is then in the offer from the start).
 *   Without it, call {@link Room#publishMicrophone} later; no renegotiation is needed either way.
 * @property {MediaStreamTrack} [audioTrack]       publish this track instead of opening the microphone
 * @property {HTMLElement|null} [audioContainer]   where to append the slots' `<audio>` elements (default: none,
 *                                                  they play detached)
 * @property {number} [timeoutMs]                  how long `connect` may take up to the answer (default 15000)
 * @property {RTCConfiguration} [rtcConfig]        extra RTCPeerConnection configuration (default: the
 *                                                  TURN servers of `joined`, if any; the server is ICE-lite
 *                                                  with a host candidate, so no STUN is needed). Its
 *                                                  `iceServers` are added after the server's.
 * @property {RTCIceTransportPolicy} [iceTransportPolicy]  `all` (default) or `relay`: use only TURN relay
 *                                                  candidates (the server's `turn.urls` must be configured)
 * @property {boolean} [red]                       prefer RFC 2198 redundant audio (RED) over plain Opus when the
 *                                                 browser supports it (default true): each packet repeats the
 *                                                 previous frame, so a single lost packet costs nothing
 * @property {boolean} [reconnect]                 rejoin on its own when an established session is lost (the
 *                                                 signaling socket broke, the server restarted or shut down, or
 *                                                 the media path died): default true
 * @property {number} [reconnectWindowMs]          how long to keep trying before failing with `connection_lost`
 *                                                 (default 60000)
 * @property {() => (string|Promise<string>)} [getToken]  a fresh access token for each rejoin (default: the
 *                                                 token given to {@link connect}, which must then still be valid)
 * @property {typeof WebSocket} [WebSocket]        WebSocket implementation (for tests)
 */

/**
 * Error raised by the SDK, and carried by the Room's `error` event; `code` is the server's error code
 * (docs/protocol.md) or one of the SDK's own:
 * - `connection_failed`  the media connection never came up: ICE failed (no candidate pair worked), or the
 *                        server gave up waiting for this browser's media; also a WebSocket that could not open
 * - `connection_lost`    the media connection came up, then failed for good
 * - `redirect_loop`      a cluster's nodes redirected the join more than 3 times in a row
 * - `timeout`, `closed`, `no_microphone`, `forbidden`, `not_connected`, `protocol`
 * `message` is meant for people (e.g. "could not reach the media server at 192.0.2.7 UDP port 7882: ICE
 * failed (no candidate pair worked); a firewall may block UDP port 7882").
 */
export class ChorusError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {boolean} [fatal]
   */
  constructor(code, message, fatal = false) {
    super(message);
    this.name = 'ChorusError';
    /** @type {string} */
    this.code = code;
    /** @type {boolean} */
    this.fatal = fatal;
  }
}

/**
 * Server error codes after which the server closes the socket (the `fatal` column of docs/protocol.md).
 * signaling's unit test `protocol::error::tests::sdk_fatal_codes_match_the_server` reads the list between
 * the two marker comments and fails unless it is exactly the server's fatal codes: keep the markers and one
 * quoted code per entry.
 * @type {Set<ServerErrorCode>}
 */
const FATAL_CODES = new Set(/** @type {ServerErrorCode[]} */ ([
  // <fatal-codes>
  'frame_too_large', 'unsupported_protocol', 'invalid_token', 'token_expired', 'room_mismatch',
  'room_full', 'room_closed', 'banned', 'draining', 'media_unavailable', 'cluster_unavailable',
  'internal',
  // </fatal-codes>
]));

/**
 * @param {ParticipantInfo} info
 * @param {boolean} isLocal
 * @returns {Participant}
 */
function participantFrom(info, isLocal) {
  return {
    sid: info.sid,
    identity: info.identity,
    name: info.name || info.identity || info.sid,
    muted: !!info.muted,
    canPublish: info.can_publish !== false,
    canSubscribe: info.can_subscribe !== false,
    serverMuted: !!info.server_muted,
    deafened: !!info.deafened,
    ptt: !!info.ptt,
    team: typeof info.team === 'string' ? info.team : null,
    shout: !!info.shout,
    volume: 0,
    isLocal,
    level: 0,
    speaking: false,
    slot: null,
  };
}

/**
 * The browser's audio codecs with RED (`audio/red`, RFC 2198) first and Opus next, or null when it has no
 * RED. Listing RED before Opus makes the browser offer it first, and send it when the server answers it.
 * @returns {RTCRtpCodec[]|null}
 */
function redFirstCodecs() {
  const caps = typeof RTCRtpReceiver !== 'undefined' && typeof RTCRtpReceiver.getCapabilities === 'function'
    ? RTCRtpReceiver.getCapabilities('audio')
    : null;
  const codecs = (caps && caps.codecs) || [];
  const isRed = (/** @type {RTCRtpCodec} */ c) => c.mimeType.toLowerCase() === 'audio/red';
  const isOpus = (/** @type {RTCRtpCodec} */ c) => c.mimeType.toLowerCase() === 'audio/opus';
  if (!codecs.some(isRed) || !codecs.some(isOpus)) return null;
  return [
    ...codecs.filter(isRed),
    ...codecs.filter(isOpus),
    ...codecs.filter((c) => !isRed(c) && !isOpus(c)),
  ];
}

/**
 * Apply a codec order to a transceiver where the browser allows it (a refusal keeps its default order).
 * @param {RTCRtpTransceiver} transceiver
 * @param {RTCRtpCodec[]|null} codecs
 */
function preferCodecs(transceiver, codecs) {
  if (!codecs || typeof transceiver.setCodecPreferences !== 'function') return;
  try {
    transceiver.setCodecPreferences(codecs);
  } catch (_) {
    // An older browser that validates preferences differently: plain Opus still works.
  }
}

/**
 * Connectivity-check responses received so far, per candidate pair id.
 * @param {RTCPeerConnection} pc
 * @returns {Promise<Map<string, number>>}
 */
async function pairResponses(pc) {
  /** @type {Map<string, number>} */
  const responses = new Map();
  (await pc.getStats()).forEach((/** @type {any} */ s) => {
    if (s.type === 'candidate-pair') responses.set(String(s.id), Number(s.responsesReceived) || 0);
  });
  return responses;
}

/**
 * Wait until ICE gathering is complete or `timeoutMs` has passed.
 * @param {RTCPeerConnection} pc
 * @param {number} timeoutMs
 * @returns {Promise<void>}
 */
function waitForIceGathering(pc, timeoutMs) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', onChange);
      resolve();
    };
    const onChange = () => { if (pc.iceGatheringState === 'complete') done(); };
    const timer = setTimeout(done, timeoutMs);
    pc.addEventListener('icegatheringstatechange', onChange);
  });
}

/**
 * A joined Chorus room. Events (all `CustomEvent`s; the payload is in `event.detail`, and {@link Room#on}
 * passes the detail straight to the handler):
 *
 * - `participants`      `{participants: Participant[]}` — the full list (local first) after any change
 * - `participantjoined` `{participant}`
 * - `participantleft`   `{participant, reason}`
 * - `participantmuted`  `{participant, muted, byModerator}` — `byModerator`: a moderator's or operator's (server)
 *                       mute, which the participant cannot undo (its unmute gets an `error` `server_muted`)
 * - `participantupdated` `{participant}` — its `deafened`, `serverMuted` or `ptt` changed
 * - `moved`             `{from, room, participant}` — a moderator or operator moved this session to `room`: the
 *                       SDK has dropped the old peer connection and re-offers there (a new sid; mute and
 *                       push-to-talk start afresh unless the token forces push-to-talk). A later rejoin after a
 *                       lost connection goes to the token's room.
 * - `speaking`          `{speakers: {sid, level, participant}[]}` — loudest first, empty when silence
 * - `draining`          `{gracePeriodSecs}` — the server is shutting down: calls continue for at most this long;
 *                       reconnect elsewhere (a new join to this server is refused)
 * - `dominantspeaker`   `{sid, participant}` — who holds the floor now (sustained speech, not every click);
 *                       also in {@link Room#dominantSpeaker}
 * - `slots`             `{slots: Slot[]}` — the full slot assignment after it changed
 * - `positions`         `{positions: SpeakerPositionInfo[]}` — in a spatial forwarding room: the speakers we hear
 *                       (in range, nearest first) and where they are, to render their slots (pan, attenuate);
 *                       empty when nobody is in range. Also in {@link Room#positions}
 * - `connectionstate`   `{state, previous}` — see {@link Room#connectionState}
 * - `mediastate`        `{state}` — the server's view of our media connection (`connected`/`disconnected`)
 * - `error`             `{code, message, fatal, error}` — `error` is a {@link ChorusError} with the same `code`
 *                       and `message`; `code` is the server's (docs/protocol.md) or the SDK's. A fatal error
 *                       (e.g. `connection_failed`: the media server could not be reached) is followed by
 *                       `connectionstate` → `failed` and `closed`.
 * - `reconnecting`      `{reason, attempt}` — the session was lost (see {@link ConnectOptions}.reconnect); the
 *                       SDK reconnects with backoff (0.25, 0.5, 1, then every 2 s) and keeps the microphone, the
 *                       mute state and the Room object; {@link Room#connectionState} is `reconnecting`. Within
 *                       the server's resume window (`joined.resume_window_ms`, 15 s by default) it first
 *                       resumes the same session on a new socket, keeping the peer connection (and restarting
 *                       ICE on it if the media path died too); otherwise, or if the server does not know the
 *                       session any more, it rejoins afresh
 * - `reconnected`       `{attempts, downtimeMs, how, iceRestarted}` — media flows again. `how` is `resumed`
 *                       (the same participant sid; the others saw nothing) or `rejoined` (a new session with a
 *                       new sid; `participantleft`/`participantjoined` fire only for real changes);
 *                       `iceRestarted` says whether the peer connection restarted ICE
 * - `closed`            `{reason, code}` — the session ended (left, socket closed, or failed); after a failure
 *                       {@link Room#connectionState} stays `failed`
 * - `autoplayblocked`   `{slot}` — an `<audio>` element could not start; call {@link Room#resumeAudio}
 *                       from a user gesture
 */
export class Room extends EventTarget {
  /**
   * @param {string} url
   * @param {string} token
   * @param {ConnectOptions} options
   */
  constructor(url, token, options = {}) {
    super();
    /** @private */ this._url = url;
    /** @private */ this._token = token;
    /** @private */ this._options = options;
    /** @type {WebSocket|null} @private */ this._ws = null;
    /**
     * @private @type {string|null} the node that holds this session, when a cluster redirected the join
     * elsewhere than `url` (a resume goes there; a fresh join goes through `url` again)
     */
    this._serverUrl = null;
    /** @private @type {string|null} where the next socket opens: a `redirect`'s target */
    this._redirectUrl = null;
    /** @private `redirect`s followed since the last join */ this._redirects = 0;
    /** @private the URL of the current socket */ this._socketUrl = url;
    /** @type {RTCPeerConnection|null} */ this.pc = null;
    /** @type {RTCRtpTransceiver|null} the microphone transceiver (first m-line) */
    this.micTransceiver = null;
    /** @type {MediaStreamTrack|null} the published microphone track */
    this.micTrack = null;
    /** @type {Participant|null} */
    this.localParticipant = null;
    /** @type {Map<string, Participant>} remote participants by sid */
    this.participants = new Map();
    /** @type {Slot[]} */
    this.slots = [];
    /** @type {RoomInfo|null} */
    this.roomInfo = null;
    /** @type {string|null} */
    this.serverVersion = null;
    /** @type {MediaStream} one stream holding every slot's remote track (for analysis, not for playback) */
    this.remoteStream = new MediaStream();
    /** @type {'connected'|'disconnected'|null} the server's last `media_state` */
    this.serverMediaState = null;
    /** @type {string|null} sid of the room's dominant speaker, from `dominant_speaker` */
    this.dominantSpeaker = null;
    /** @type {number|null} round-trip time of the last ping, in ms */
    this.signalingRttMs = null;
    /** @type {SpeakerPositionInfo[]} the speakers we hear in a spatial forwarding room, from `positions` */
    this.positions = [];
    /** @private @type {{x: number, y: number, z: number, yaw_deg: number}|null} our newest position */
    this._position = null;
    /**
     * @private @type {{x: number, y: number, z: number, yaw_deg: number, at: number, settle: boolean}|null}
     * the last position sent on this session, when, and whether it still gets its settling repeat
     */
    this._positionSent = null;
    /** @private @type {ReturnType<typeof setTimeout>|null} */ this._positionTimer = null;
    /** @private @type {ConnectionState} */ this._state = 'connecting';
    /** @private */ this._closed = false;
    /** @private */ this._failed = false;
    /** @private */ this._everConnected = false;
    /**
     * @private @type {{ip: string, port: number, protocol: string}|null} the server's media candidate, from
     * the answer
     */
    this._mediaCandidate = null;
    /** @private @type {IceServer[]} the TURN servers of `joined` */
    this._iceServers = [];
    /**
     * @private @type {{url: string, errorCode: number, errorText: string}[]} TURN servers' refusals
     * (`icecandidateerror`), for the explanation of a failed connection
     */
    this._turnErrors = [];
    /** @private */ this._muted = false;
    /** @private push-to-talk on (`setPtt`) */ this._ptt = false;
    /** @private @type {Map<string, number>} the volumes set with `setVolume`, by sid */ this._volumes = new Map();
    /** @private @type {{target: TalkTarget, to: string[]}} the last `talkTo`, sent again after a rejoin */
    this._talk = { target: 'room', to: [] };
    /** @private the push-to-talk key is down (`keyDown`) */ this._keyDown = false;
    /** @private */ this._pingId = 0;
    /** @private @type {Map<number, number>} */ this._pingSent = new Map();
    /** @private @type {ReturnType<typeof setInterval>|null} */ this._pingTimer = null;
    /** @private @type {(() => void)|null} */ this._onLeft = null;
    /** @private @type {{resolve: (v: Room) => void, reject: (e: Error) => void}|null} */
    this._pending = null;
    /** @private */ this._ownsMicTrack = false;
    /** @private @type {Promise<void>} */ this._queue = Promise.resolve();
    /**
     * @private @type {{since: number, attempt: number, reason: string,
     *   timer: ReturnType<typeof setTimeout>|null, attemptTimer: ReturnType<typeof setTimeout>|null,
     *   resume: boolean, fresh: boolean, ready: boolean, how: 'resumed'|'rejoined', iceRestarted: boolean}|null}
     * set while a lost session is being resumed or rejoined
     */
    this._reconnect = null;
    /** @private @type {string|null} resumes the session on a new socket (from `joined`/`resumed`) */
    this._resumeToken = null;
    /** @private */ this._resumeWindowMs = 0;
    /** @private */ this._iceRestarting = false;
    /** @private */ this._iceRestartedAt = -Infinity;
    /** @private @type {ReturnType<typeof setTimeout>|null} */ this._iceRestartTimer = null;
    /** @private @type {ReturnType<typeof setInterval>|null} */ this._pathTimer = null;
    /**
     * @private @type {{pair: string, requests: number, responses: number, at: number}|null}
     * the selected pair's counters when a check was last answered
     */
    this._pathBaseline = null;
    /** @private after an ICE restart's answer: until a connectivity check is answered again */
    this._awaitingPath = false;
    /** @private @type {Map<string, number>} responses per candidate pair when the ICE restart was answered */
    this._pathResponses = new Map();
  }

  // ---------------------------------------------------------------------------------------------
  // Public API

  /**
   * Combined WebSocket + RTCPeerConnection + server `media_state`: `connecting` until the peer connection is
   * connected; `connected`; `disconnected` while the peer connection or the server reports the media path
   * down (it may recover); `failed` after a fatal server error, a failed peer connection (ICE failed), the
   * server ending the session because our media never connected or was lost, or a failed connect, always
   * after an `error` event explaining why; `reconnecting` while a lost session is being rejoined (then
   * `connected` again, or `failed` with `connection_lost` after `reconnectWindowMs`); `closed` once the socket
   * is closed or `leave()` was called.
   * `failed` and `closed` are final: a failed room never becomes `closed` (its `closed` event still fires).
   * @returns {ConnectionState}
   */
  get connectionState() { return this._state; }

  /** @returns {boolean} whether the local microphone is muted */
  get muted() { return this._muted; }

  /** @returns {string|null} the room's name */
  get name() { return this.roomInfo ? this.roomInfo.name : null; }

  /**
   * Subscribe to an event; the handler receives the event's `detail`. Returns an unsubscribe function.
   * @param {string} type
   * @param {(detail: any) => void} handler
   * @returns {() => void}
   */
  on(type, handler) {
    /** @param {Event} ev */
    const listener = (ev) => handler(/** @type {CustomEvent} */ (ev).detail);
    this.addEventListener(type, listener);
    return () => this.removeEventListener(type, listener);
  }

  /**
   * All participants, local first.
   * @returns {Participant[]}
   */
  allParticipants() {
    const list = this.localParticipant ? [this.localParticipant] : [];
    return list.concat([...this.participants.values()]);
  }

  /**
   * @param {string|null|undefined} sid
   * @returns {Participant|undefined}
   */
  participant(sid) {
    if (!sid) return undefined;
    if (this.localParticipant && this.localParticipant.sid === sid) return this.localParticipant;
    return this.participants.get(sid);
  }

  /**
   * The remote audio track of a slot.
   * @param {number} index
   * @returns {MediaStreamTrack|null}
   */
  slotTrack(index) { return this.slots[index] ? this.slots[index].track : null; }

  /**
   * The `<audio>` element playing a slot.
   * @param {number} index
   * @returns {HTMLAudioElement|null}
   */
  slotElement(index) { return this.slots[index] ? this.slots[index].element : null; }

  /**
   * Open the microphone and start sending it. `constraints` are merged into the `audio` constraints of
   * getUserMedia, so e.g. `{echoCancellation: false, noiseSuppression: false, autoGainControl: false}`
   * turns the browser's voice processing off. Alternatively pass a `MediaStreamTrack` to publish it.
   * Calling it again replaces the published track.
   * @param {MediaTrackConstraints|MediaStreamTrack} [constraints]
   * @returns {Promise<MediaStreamTrack>}
   */
  async publishMicrophone(constraints = {}) {
    if (this._closed) throw new ChorusError('closed', 'the room is closed');
    if (this.localParticipant && !this.localParticipant.canPublish) {
      throw new ChorusError('forbidden', 'this token may not publish audio');
    }
    let track;
    let owned = false;
    if (typeof MediaStreamTrack !== 'undefined' && constraints instanceof MediaStreamTrack) {
      track = constraints;
    } else {
      track = await openMicrophone(/** @type {MediaTrackConstraints} */ (constraints));
      owned = true;
    }
    if (this._closed) {
      if (owned) track.stop();
      throw new ChorusError('closed', 'the room closed while the microphone was opening');
    }
    const previous = this.micTrack;
    const previousOwned = this._ownsMicTrack;
    this.micTrack = track;
    this._ownsMicTrack = owned;
    this._applyTrackEnabled();
    if (this.micTransceiver) await this.micTransceiver.sender.replaceTrack(track);
    if (previous && previous !== track && previousOwned) previous.stop();
    return track;
  }

  /**
   * Stop sending the microphone (the m-line stays; nothing is renegotiated).
   * @returns {Promise<void>}
   */
  async unpublishMicrophone() {
    const track = this.micTrack;
    this.micTrack = null;
    if (this.micTransceiver && this.pc && this.pc.signalingState !== 'closed') {
      await this.micTransceiver.sender.replaceTrack(null);
    }
    if (track && this._ownsMicTrack) track.stop();
  }

  /**
   * Mute or unmute the microphone: disables the local track and tells the server, which stops forwarding
   * our audio and tells everyone.
   * @param {boolean} muted
   */
  setMuted(muted) {
    muted = !!muted;
    if (this.localParticipant && !this.localParticipant.canPublish) {
      throw new ChorusError('forbidden', 'this token may not publish audio');
    }
    this._muted = muted;
    this._applyTrackEnabled();
    if (this._isOpen()) this._send({ type: 'mute', muted });
    if (this.localParticipant) this._applyMute(this.localParticipant, muted);
  }

  /** @returns {boolean} whether push-to-talk is on */
  get ptt() { return this._ptt; }

  /** @returns {boolean} whether the push-to-talk key is down */
  get keyIsDown() { return this._keyDown; }

  /**
   * Turn push-to-talk on or off. With it on, the server forwards our audio only while the key is down
   * ({@link Room#keyDown} / {@link Room#keyUp}), and the SDK also disables the microphone track while the key
   * is up. A token with the `ptt` claim forces it on (turning it off is then refused with `forbidden`).
   * @param {boolean} enabled
   */
  setPtt(enabled) {
    enabled = !!enabled;
    if (this.localParticipant && !this.localParticipant.canPublish) {
      throw new ChorusError('forbidden', 'this token may not publish audio');
    }
    this._ptt = enabled;
    this._keyDown = false;
    this._applyTrackEnabled();
    if (this._isOpen()) this._send({ type: 'ptt', enabled });
  }

  /**
   * The push-to-talk key went down: the server is told first, then the microphone track is enabled, so the
   * first frame is heard. Call it from the key's `keydown` (repeats are ignored).
   */
  keyDown() { this._setKey(true); }

  /** The push-to-talk key went up: nothing more of ours is forwarded. */
  keyUp() { this._setKey(false); }

  /**
   * A moderator's action on another participant of the room (the token needs the `moderator` grant, else
   * the server answers with a `forbidden` error event). Its effects arrive as events (`participantmuted`,
   * `participantupdated`, `participantleft`).
   * @param {string} sid
   * @param {ModerateAction} action
   * @param {{room?: string}} [options]   `room`: the destination of `move`
   */
  moderate(sid, action, options = {}) {
    if (!this._isOpen()) throw new ChorusError('not_connected', 'the signaling socket is not open');
    /** @type {ModerateMessage} */
    const msg = { type: 'moderate', action, sid };
    if (options.room) msg.room = options.room;
    this._send(msg);
  }

  /**
   * Where we are in a spatial room (world units: `x` right, `y` ahead, `z` up) and which way we face (`yawDeg`,
   * degrees clockwise from +y). Call it whenever the player moves (every animation frame is fine): the newest
   * position replaces any not sent yet, and the SDK sends at most one every 120 ms (the server takes one per
   * 100 ms), never a backlog. It is kept across reconnects and sent again to a new session (a rejoin, a move).
   * Throws a {@link ChorusError} `bad_position` (nothing is sent) when a value is not a finite number or a
   * coordinate is beyond ±1,000,000. In a room without positional voice the server answers with an `error`
   * event `bad_position`.
   * @param {number} x
   * @param {number} y
   * @param {number} z
   * @param {number} [yawDeg]
   */
  setPosition(x, y, z, yawDeg = 0) {
    if (![x, y, z, yawDeg].every((v) => typeof v === 'number' && Number.isFinite(v))) {
      throw new ChorusError('bad_position', 'x, y, z and yawDeg must be finite numbers');
    }
    if ([x, y, z].some((v) => Math.abs(v) > MAX_COORDINATE)) {
      throw new ChorusError('bad_position', `coordinates must be within ±${MAX_COORDINATE}`);
    }
    this._position = { x, y, z, yaw_deg: yawDeg };
    this._pacePosition();
  }

  /**
   * Send our newest position if it is due, else schedule it (or its one settling repeat).
   * @private
   */
  _pacePosition() {
    if (this._positionTimer) clearTimeout(this._positionTimer);
    this._positionTimer = null;
    const p = this._position;
    if (!p || !this._isOpen() || !this.localParticipant) return;
    const now = performance.now();
    const sent = this._positionSent;
    const same = !!sent && sent.x === p.x && sent.y === p.y && sent.z === p.z && sent.yaw_deg === p.yaw_deg;
    let due = now;
    if (sent && !same) due = sent.at + POSITION_INTERVAL_MS;
    else if (sent && sent.settle) due = sent.at + POSITION_SETTLE_MS;
    else if (sent) return;
    if (due <= now) {
      this._send({ type: 'position', ...p });
      // A new position gets one settling repeat; the repeat itself does not.
      this._positionSent = { ...p, at: now, settle: !same };
      this._pacePosition();
      return;
    }
    this._positionTimer = setTimeout(() => this._pacePosition(), due - now);
  }

  /**
   * Whom our voice is for: `'room'` (the default), `'team'` (our team only; needs a team), or `'whisper'`
   * to the participants `sids` (1 to 64 of this room). The server enforces it; a bad target arrives as an
   * `error` event `bad_target`.
   * @param {TalkTarget} target
   * @param {string[]} [sids]   the whisper's participants
   */
  talkTo(target, sids = []) {
    if (!this._isOpen()) throw new ChorusError('not_connected', 'the signaling socket is not open');
    /** @type {TalkMessage} */
    const msg = { type: 'talk', target };
    if (target === 'whisper') {
      if (sids.length < 1 || sids.length > 64) {
        throw new ChorusError('bad_target', 'a whisper names 1 to 64 participants');
      }
      msg.to = sids.map(String);
    }
    this._send(msg);
    this._talk = { target, to: msg.to || [] };
  }

  /**
   * How loud we hear participant `sid`: −50 (silent) .. +50, 0 unchanged, 0.5 dB per step (Vivox's scale).
   * A mixed room applies it on the server; in a forwarding room the SDK applies it to the slot that carries
   * the participant (an `<audio>` element cannot amplify: above 0 it plays at full volume), and the server
   * ranks our slots by it (−50: the participant takes none).
   * @param {string} sid
   * @param {number} volume   a whole number, −50 .. 50
   */
  setVolume(sid, volume) {
    if (!Number.isInteger(volume) || volume < -50 || volume > 50) {
      throw new ChorusError('bad_message', 'a volume is a whole number from -50 to 50');
    }
    if (volume === 0) this._volumes.delete(sid);
    else this._volumes.set(sid, volume);
    const p = this.participant(sid);
    if (p) p.volume = volume;
    this._applyVolumes();
    if (this._isOpen()) this._send({ type: 'volume', sid, volume });
  }

  /**
   * A rejoined session is a new participant on the server, talking to the room at volume 0 for everyone:
   * send our talk target and volumes again, for the participants still here (a whisper whose participants
   * all left goes back to the room).
   * @private
   */
  _restoreTalk() {
    for (const [sid, volume] of [...this._volumes]) {
      if (this.participants.has(sid)) this._send({ type: 'volume', sid, volume });
      else this._volumes.delete(sid);
    }
    const { target } = this._talk;
    const to = this._talk.to.filter((sid) => this.participants.has(sid));
    if (target === 'whisper' && to.length === 0) this._talk = { target: 'room', to: [] };
    else if (target === 'whisper') {
      this._talk = { target, to };
      this._send({ type: 'talk', target, to });
    } else if (target === 'team') this._send({ type: 'talk', target });
  }

  /** @private forwarding rooms: each slot's element plays at its participant's volume (at most 1) */
  _applyVolumes() {
    const mixed = this.roomInfo && this.roomInfo.mode === 'mix';
    for (const s of this.slots) {
      if (!s.element) continue;
      const v = (!mixed && s.sid !== null && this._volumes.get(s.sid)) || 0;
      s.element.volume = v <= -50 ? 0 : Math.min(1, Math.pow(10, (v * 0.5) / 20));
    }
  }

  /**
   * @private
   * @param {boolean} down
   */
  _setKey(down) {
    if (this._keyDown === down) return;
    this._keyDown = down;
    // The key-down reaches the server before the first frame of the enabled track leaves.
    if (this._isOpen()) this._send({ type: 'ptt_key', down });
    this._applyTrackEnabled();
  }

  /** @private the microphone track sends while not muted and, with push-to-talk, while the key is down */
  _applyTrackEnabled() {
    if (this.micTrack) this.micTrack.enabled = !this._muted && (!this._ptt || this._keyDown);
  }

  /**
   * Try to (re)start playback of every slot's `<audio>` element; call from a user gesture after
   * `autoplayblocked`.
   * @returns {Promise<void>}
   */
  async resumeAudio() {
    await Promise.all(this.slots.map((s) => (s.element ? s.element.play().catch(() => {}) : undefined)));
  }

  /**
   * Leave the room: sends `leave`, waits briefly for `left`, then closes the socket and the peer connection.
   * @returns {Promise<void>}
   */
  async leave() {
    if (this._closed) return;
    if (this._isOpen()) {
      const left = new Promise((resolve) => { this._onLeft = () => resolve(undefined); });
      this._send({ type: 'leave' });
      await Promise.race([left, new Promise((r) => setTimeout(r, LEAVE_TIMEOUT_MS))]);
    }
    this._close('closed', 'left');
  }

  /**
   * `getStats()` of the peer connection (empty when there is none).
   * @returns {Promise<RTCStatsReport|Map<string, any>>}
   */
  async getStats() {
    return this.pc ? this.pc.getStats() : new Map();
  }

  // ---------------------------------------------------------------------------------------------
  // Connection flow

  /**
   * @internal
   * @returns {Promise<Room>}
   */
  _start() {
    const timeoutMs = this._options.timeoutMs ?? 15000;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._fail(new ChorusError('timeout', `no answer from the server within ${timeoutMs} ms`));
      }, timeoutMs);
      this._pending = {
        resolve: (v) => { clearTimeout(timer); resolve(v); },
        reject: (e) => { clearTimeout(timer); reject(e); },
      };
      this._openSocket().catch((e) => this._fail(e instanceof ChorusError ? e
        : new ChorusError('connection_failed', String(e && e.message || e))));
    });
  }

  /** @private */
  async _openSocket() {
    const opts = this._options;
    if (this.micTrack) {
      // A rejoin: the published track carries on.
    } else if (opts.microphone && !opts.audioTrack) {
      this.micTrack = await openMicrophone(opts.microphone === true ? {} : opts.microphone);
      this._ownsMicTrack = true;
    } else if (opts.audioTrack) {
      this.micTrack = opts.audioTrack;
    }
    const WS = opts.WebSocket || WebSocket;
    const resuming = !!(this._reconnect && this._reconnect.resume && this._resumeToken);
    const url = this._redirectUrl || (resuming && this._serverUrl) || this._url;
    this._redirectUrl = null;
    const ws = new WS(url);
    this._ws = ws;
    this._socketUrl = url;
    const socket = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      const r = this._reconnect;
      if (r && r.resume && this._resumeToken) {
        /** @type {ResumeMessage} */
        const resume = { type: 'resume', protocol: PROTOCOL_VERSION, resume_token: this._resumeToken };
        // Single-use: a second attempt with it would only be refused.
        this._resumeToken = null;
        this._send(resume);
      } else {
        if (r) r.resume = false;
        this._sendJoin();
      }
      this._pingTimer = setInterval(() => this._ping(), PING_INTERVAL_MS);
    };
    ws.onmessage = (ev) => {
      if (typeof ev.data !== 'string') return;
      let msg;
      try { msg = JSON.parse(ev.data); } catch (e) {
        this._emitError('protocol', 'the server sent a frame that is not JSON', false);
        return;
      }
      // Handle messages strictly in order: some handlers await WebRTC calls.
      // A message of a socket given up on (a lost session being rejoined) is not handled.
      this._queue = this._queue.then(() => (this._ws === socket ? this._handle(msg) : undefined)).catch((e) => this._fail(e instanceof ChorusError
        ? e : new ChorusError('connection_failed', String(e && e.message || e))));
    };
    ws.onerror = () => {
      if (this._pending) this._fail(new ChorusError('connection_failed', `WebSocket error on ${url}`));
    };
    ws.onclose = (ev) => {
      // Behind the queued messages, so that an `error` sent just before the close is reported first.
      this._queue = this._queue.then(() => {
        if (this._closed || this._ws !== socket) return;
        const why = `WebSocket closed (code ${ev.code}${ev.reason ? ', ' + ev.reason : ''})`;
        if (!opened && resuming && url !== this._url) {
          // The node a cluster redirected us to is unreachable (it died): its session is gone with it, so
          // the next attempt joins afresh through the entry URL, which finds where the room lives now.
          this._resumeToken = null;
          this._serverUrl = null;
        }
        if (!this._failed && this._reconnect) {
          this._scheduleReconnect(why); // this attempt did not get through: the next one
          return;
        }
        const lostMedia = ev.reason === 'media_disconnected';
        // Only a socket that dropped (1006: no close frame) leaves a session on the server to resume; a
        // close frame from the server means it ended the session.
        if (ev.code !== 1006) this._resumeToken = null;
        if (!this._failed && this._mayReconnect() && (RECONNECT_CLOSE_CODES.has(ev.code) || lostMedia)) {
          this._startReconnect(lostMedia ? 'the server lost our media' : why);
          return;
        }
        if (this._pending) {
          this._pending.reject(new ChorusError('closed', why));
          this._pending = null;
        }
        if (!this._failed && ev.reason === 'media_disconnected') {
          // The server ended the session because our media never connected (its connect timeout) or went
          // silent: that is a failure to explain, not a normal close.
          this._fail(this._mediaError('server'));
          return;
        }
        this._close(this._failed ? 'failed' : 'closed', why, ev.code);
      });
    };
  }

  /** @private */
  _sendJoin() {
    const opts = this._options;
    /** @type {JoinMessage} */
    const join = { type: 'join', protocol: PROTOCOL_VERSION, token: this._token };
    if (opts.room) join.room = opts.room;
    if (opts.name) join.name = String(opts.name).slice(0, 64);
    if (opts.team) join.team = String(opts.team);
    if (opts.listenOnly) join.listen_only = true;
    this._send(join);
  }

  /**
   * @private
   * @param {unknown} frame   one parsed JSON frame from the server
   */
  async _handle(frame) {
    // Trusted to follow the protocol once it has a string `type`; the handlers still read defensively.
    const msg = /** @type {ServerMessage} */ (frame);
    if (!msg || typeof msg.type !== 'string') return;
    switch (msg.type) {
      case 'joined': return this._onJoined(msg);
      case 'resumed': return this._onResumed(msg);
      case 'answer': return this._onAnswer(msg);
      case 'participant_joined': return this._onParticipantJoined(msg);
      case 'participant_left': return this._onParticipantLeft(msg);
      case 'participant_muted': return this._onParticipantMuted(msg);
      case 'participant_updated': return this._onParticipantUpdated(msg);
      case 'moved': return this._onMoved(msg);
      case 'media_state': return this._onMediaState(msg);
      case 'speakers': return this._onSpeakers(msg);
      case 'dominant_speaker': return this._onDominantSpeaker(msg);
      case 'draining':
        this._emit('draining', { gracePeriodSecs: Number(msg.grace_period_secs) || 0 });
        return undefined;
      case 'slots': return this._onSlots(msg);
      case 'positions': return this._onPositions(msg);
      case 'pong': return this._onPong(msg);
      case 'left':
        if (this._onLeft) this._onLeft();
        return undefined;
      case 'redirect': return this._onRedirect(msg);
      case 'error': return this._onError(msg);
      default:
        // A newer server may add message types; ignore them.
        return undefined;
    }
  }

  /**
   * @private
   * @param {JoinedMessage} msg
   */
  async _onJoined(msg) {
    this._serverUrl = this._socketUrl === this._url ? null : this._socketUrl;
    this._redirects = 0;
    this._resumeToken = typeof msg.resume_token === 'string' ? msg.resume_token : null;
    this._resumeWindowMs = Number(msg.resume_window_ms) || 0;
    if (this._reconnect) this._reconnect.how = 'rejoined';
    this._iceServers = Array.isArray(msg.ice_servers) ? msg.ice_servers : [];
    this.serverVersion = msg.server_version ?? null;
    this.roomInfo = msg.room;
    this.localParticipant = participantFrom(msg.participant, true);
    if (this._muted) this.localParticipant.muted = true;
    const before = this._reconnect ? new Map(this.participants) : null;
    this.participants = new Map();
    for (const p of msg.participants || []) this.participants.set(p.sid, participantFrom(p, false));
    if (before) this._reconcileParticipants(before);
    this._emit('participants', { participants: this.allParticipants() });
    // A rejoined session starts unmuted on the server, without push-to-talk unless the token forces it.
    if (this._muted && this.localParticipant.canPublish) this._send({ type: 'mute', muted: true });
    if (this.localParticipant.ptt) this._ptt = true;
    if (this._ptt && this.localParticipant.canPublish) {
      if (!this.localParticipant.ptt) this._send({ type: 'ptt', enabled: true });
      if (this._keyDown) this._send({ type: 'ptt_key', down: true });
    }
    if (before) this._restoreTalk();
    // A new participant on the server has no position: ours goes out now (it takes effect with the answer).
    this._positionSent = null;
    this.positions = [];
    this._pacePosition();
    await this._negotiate();
  }

  /**
   * A new peer connection and its offer, on the session {@link Room#roomInfo} describes, with the TURN
   * servers of its last `joined` or `resumed`.
   * @private
   */
  async _negotiate() {
    const k = Math.max(0, Number(this.roomInfo && this.roomInfo.slots) || 0);
    // A rejoin (reconnect) gets fresh credentials and a new peer connection: forget the old one's refusals.
    this._turnErrors = [];
    const rtcConfig = this._options.rtcConfig || {};
    const pc = new RTCPeerConnection({
      iceTransportPolicy: this._options.iceTransportPolicy || 'all',
      ...rtcConfig,
      iceServers: [...this._iceServers, ...(rtcConfig.iceServers || [])],
    });
    this.pc = pc;
    pc.addEventListener('icecandidateerror', (ev) => {
      const e = /** @type {RTCPeerConnectionIceErrorEvent} */ (ev);
      if (this.pc === pc && /^turns?:/.test(e.url || '') && this._turnErrors.length < 16) {
        this._turnErrors.push({ url: e.url, errorCode: e.errorCode, errorText: e.errorText || '' });
      }
    });
    pc.addEventListener('connectionstatechange', () => this._updateState());
    pc.addEventListener('iceconnectionstatechange', () => this._updateState());

    const canPublish = !!this.localParticipant && this.localParticipant.canPublish;
    // RED first on the microphone (the server then receives it) and on the slots (it forwards RED there).
    const codecs = this._options.red === false ? null : redFirstCodecs();
    if (canPublish) {
      const track = this.micTrack;
      this.micTransceiver = track
        ? pc.addTransceiver(track, { direction: 'sendonly', streams: [new MediaStream([track])] })
        : pc.addTransceiver('audio', { direction: 'sendonly' });
      preferCodecs(this.micTransceiver, codecs);
      if (track) this._applyTrackEnabled();
    } else {
      this.micTransceiver = pc.addTransceiver('audio', { direction: 'inactive' });
      if (this.micTrack && this._ownsMicTrack) this.micTrack.stop();
      this.micTrack = null;
    }
    this.slots = [];
    for (let i = 0; i < k; i++) {
      const transceiver = pc.addTransceiver('audio', { direction: 'recvonly' });
      preferCodecs(transceiver, codecs);
      this.slots.push({
        slot: i, mid: null, sid: null, ssrc: null, transceiver,
        track: null, stream: null, element: null,
      });
    }

    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    for (const s of this.slots) s.mid = s.transceiver ? s.transceiver.mid : null;
    await waitForIceGathering(pc, ICE_GATHERING_TIMEOUT_MS);
    if (this._closed) return;
    // createOffer always fills in `sdp` (the DOM type only marks it optional).
    const sdp = pc.localDescription ? pc.localDescription.sdp : /** @type {string} */ (offer.sdp);
    this._send({ type: 'offer', sdp });
  }

  /**
   * The answer to `resume`: the same session on this socket. The peer connection stays when the server
   * still has its peer: as it is if it still works, with an ICE restart if the media path died too.
   * @private
   * @param {ResumedMessage} msg
   */
  async _onResumed(msg) {
    const r = this._reconnect;
    this._resumeToken = typeof msg.resume_token === 'string' ? msg.resume_token : null;
    this._resumeWindowMs = Number(msg.resume_window_ms) || 0;
    this.serverVersion = msg.server_version ?? this.serverVersion;
    this.roomInfo = msg.room;
    this.localParticipant = participantFrom(msg.participant, true);
    if (this.localParticipant.muted !== this._muted && this.localParticipant.canPublish) {
      // Muted or unmuted here while the socket was away: the server learns it now.
      this._send({ type: 'mute', muted: this._muted });
    }
    this.localParticipant.muted = this._muted;
    const before = new Map(this.participants);
    this.participants = new Map();
    for (const p of msg.participants || []) this.participants.set(p.sid, participantFrom(p, false));
    this._reconcileParticipants(before);
    for (const p of this.participants.values()) {
      const was = before.get(p.sid);
      if (was && was.muted !== p.muted) this._emit('participantmuted', { participant: p, muted: p.muted });
    }
    this._emit('participants', { participants: this.allParticipants() });
    // The same participant: the server kept its position; one set while the socket was away goes out now.
    this._pacePosition();
    if (r) {
      r.how = 'resumed';
      if (r.attemptTimer) clearTimeout(r.attemptTimer);
      r.attemptTimer = null;
    }
    if (Array.isArray(msg.ice_servers) && msg.ice_servers.length > 0) {
      // Fresh TURN credentials: an ICE restart (or a new peer connection) uses them.
      this._iceServers = msg.ice_servers;
      if (this.pc && this.pc.signalingState !== 'closed') {
        const rtcConfig = this._options.rtcConfig || {};
        try {
          this.pc.setConfiguration({ ...this.pc.getConfiguration(),
            iceServers: [...this._iceServers, ...(rtcConfig.iceServers || [])] });
        } catch (e) { /* keeps the previous servers */ }
      }
    }
    const pc = this.pc;
    if (!msg.media || !pc || pc.signalingState === 'closed') {
      // The server has no media peer for us (never answered, or refused meanwhile): offer afresh.
      this._dropMedia();
      await this._negotiate();
      return;
    }
    const ice = pc.iceConnectionState;
    if (ice === 'failed' || ice === 'disconnected' || pc.connectionState === 'failed') {
      await this._restartIce();
      return;
    }
    if (r) r.ready = true;
    this._updateState();
  }

  /**
   * Restart ICE on the peer connection (new credentials, the same m-lines) through an `offer` on the
   * session; the server answers it on the same peer.
   * @private
   */
  async _restartIce() {
    const pc = this.pc;
    if (!pc || this._iceRestarting || !this._isOpen()) return;
    this._iceRestarting = true;
    if (this._reconnect) this._reconnect.iceRestarted = true;
    const offer = await pc.createOffer({ iceRestart: true });
    await pc.setLocalDescription(offer);
    await waitForIceGathering(pc, ICE_GATHERING_TIMEOUT_MS);
    if (this._closed || this.pc !== pc) return;
    const sdp = pc.localDescription ? pc.localDescription.sdp : /** @type {string} */ (offer.sdp);
    this._send({ type: 'offer', sdp });
  }

  /**
   * @private
   * @param {AnswerMessage} msg
   */
  async _onAnswer(msg) {
    const pc = this.pc;
    if (!pc) throw new ChorusError('protocol', 'answer before joined');
    if (this._iceRestarting) {
      // Checks answered so far, per candidate pair: after the restart only more of them show a live path.
      this._pathResponses = await pairResponses(pc);
    }
    await pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
    this._mediaCandidate = serverCandidate(msg.sdp);
    if (this._reconnect && this._reconnect.attemptTimer) {
      clearTimeout(this._reconnect.attemptTimer);
      this._reconnect.attemptTimer = null;
    }
    if (this._reconnect) this._reconnect.ready = true;
    if (this._iceRestarting) {
      // The same transceivers and tracks: only the ICE credentials changed. ICE may still report the old
      // failure for a moment: a failure is only believed again a while after the restart.
      this._iceRestarting = false;
      this._iceRestartedAt = performance.now();
      // The browser may say `connected` all along: media flows again once a check is answered.
      this._awaitingPath = true;
      this._pathBaseline = null;
      this._updateState();
      return;
    }
    for (const s of this.slots) {
      if (!s.transceiver) continue;
      s.mid = s.transceiver.mid;
      const track = s.transceiver.receiver.track;
      s.track = track;
      s.stream = new MediaStream([track]);
      if (!this.remoteStream.getTrackById(track.id)) this.remoteStream.addTrack(track);
      // Chrome only lets remote WebRTC audio flow (also into WebAudio) while a media element plays it.
      const el = document.createElement('audio');
      el.autoplay = true;
      el.muted = false;
      el.volume = 1;
      el.dataset.chorusSlot = String(s.slot);
      el.srcObject = s.stream;
      s.element = el;
      if (this._options.audioContainer) this._options.audioContainer.appendChild(el);
      el.play().catch(() => this._emit('autoplayblocked', { slot: s.slot }));
    }
    this._updateState();
    this._emit('slots', { slots: this.slots });
    if (this._pending) {
      const p = this._pending;
      this._pending = null;
      p.resolve(this);
    }
  }

  /** @private @param {ParticipantJoinedMessage} msg */
  _onParticipantJoined(msg) {
    const p = participantFrom(msg.participant, false);
    if (this.localParticipant && p.sid === this.localParticipant.sid) return;
    this.participants.set(p.sid, p);
    this._emit('participantjoined', { participant: p });
    this._emit('participants', { participants: this.allParticipants() });
  }

  /** @private @param {ParticipantLeftMessage} msg */
  _onParticipantLeft(msg) {
    const p = this.participants.get(msg.sid);
    if (!p) return;
    this.participants.delete(msg.sid);
    this._emit('participantleft', { participant: p, reason: msg.reason || 'left' });
    this._emit('participants', { participants: this.allParticipants() });
  }

  /** @private @param {ParticipantMutedMessage} msg */
  _onParticipantMuted(msg) {
    const p = this.participant(msg.sid);
    if (!p) return;
    if (msg.by_moderator) p.serverMuted = !!msg.muted;
    if (p.isLocal && msg.by_moderator) {
      // The server's mute is ours too: the track follows it.
      this._muted = !!msg.muted;
      this._applyTrackEnabled();
    }
    this._applyMute(p, !!msg.muted, !!msg.by_moderator);
  }

  /** @private @param {ParticipantUpdatedMessage} msg */
  _onParticipantUpdated(msg) {
    const info = msg.participant;
    const p = info && this.participant(info.sid);
    if (!p) return;
    p.serverMuted = !!info.server_muted;
    p.deafened = !!info.deafened;
    p.ptt = !!info.ptt;
    if (p.isLocal && p.ptt !== this._ptt) {
      // Forced by the token, or turned off: the server starts the key up.
      this._ptt = p.ptt;
      this._keyDown = false;
      this._applyTrackEnabled();
    }
    this._emit('participantupdated', { participant: p });
    this._emit('participants', { participants: this.allParticipants() });
  }

  /**
   * A moderator or operator moved this session to another room: a new participant there, a new peer
   * connection and offer (protocol.md, `moved`). The microphone track carries on.
   * @private
   * @param {MovedMessage} msg
   */
  async _onMoved(msg) {
    const from = this.roomInfo ? this.roomInfo.name : null;
    this._dropMedia();
    this.roomInfo = msg.room;
    this.localParticipant = participantFrom(msg.participant, true);
    this.participants = new Map();
    for (const p of msg.participants || []) this.participants.set(p.sid, participantFrom(p, false));
    this._muted = false;
    this._ptt = this.localParticipant.ptt;
    this._keyDown = false;
    this._positionSent = null;
    this.positions = [];
    this._pacePosition();
    this._emit('moved', { from, room: msg.room, participant: this.localParticipant });
    this._emit('participants', { participants: this.allParticipants() });
    this._updateState();
    await this._negotiate();
  }

  /**
   * @private
   * @param {Participant} p
   * @param {boolean} muted
   * @param {boolean} [byModerator]
   */
  _applyMute(p, muted, byModerator = false) {
    if (p.muted === muted) return;
    p.muted = muted;
    if (muted) { p.level = 0; p.speaking = false; }
    this._emit('participantmuted', { participant: p, muted, byModerator });
    this._emit('participants', { participants: this.allParticipants() });
  }

  /** @private @param {MediaStateMessage} msg */
  _onMediaState(msg) {
    this.serverMediaState = msg.state === 'connected' ? 'connected' : 'disconnected';
    this._emit('mediastate', { state: this.serverMediaState });
    this._updateState();
  }

  /** @private @param {SpeakersMessage} msg */
  _onSpeakers(msg) {
    const list = Array.isArray(msg.speakers) ? msg.speakers : [];
    const levels = new Map(list.map((/** @type {SpeakerLevel} */ s) => [s.sid, Number(s.level) || 0]));
    for (const p of this.allParticipants()) {
      const level = levels.get(p.sid);
      p.speaking = level !== undefined;
      p.level = level ?? 0;
    }
    const speakers = list.map((/** @type {SpeakerLevel} */ s) => ({
      sid: s.sid, level: Number(s.level) || 0, participant: this.participant(s.sid) || null,
    }));
    this._emit('speaking', { speakers });
  }

  /** @private @param {DominantSpeakerMessage} msg */
  _onDominantSpeaker(msg) {
    if (typeof msg.sid !== 'string') return;
    this.dominantSpeaker = msg.sid;
    this._emit('dominantspeaker', { sid: msg.sid, participant: this.participant(msg.sid) || null });
  }

  /** @private @param {SlotsMessage} msg */
  _onSlots(msg) {
    for (const a of Array.isArray(msg.slots) ? msg.slots : []) {
      let s = this.slots.find((x) => x.mid !== null && x.mid === a.mid);
      if (!s && typeof a.slot === 'number') s = this.slots[a.slot];
      if (!s) continue;
      s.sid = a.sid ?? null;
      s.ssrc = a.ssrc ?? null;
    }
    for (const p of this.allParticipants()) p.slot = null;
    for (const s of this.slots) {
      const p = this.participant(s.sid);
      if (p) p.slot = s.slot;
    }
    this._applyVolumes();
    this._emit('slots', { slots: this.slots });
  }

  /** @private @param {PositionsMessage} msg */
  _onPositions(msg) {
    const list = Array.isArray(msg.positions) ? msg.positions : [];
    this.positions = list.map((/** @type {SpeakerPosition} */ p) => ({
      sid: p.sid,
      x: Number(p.x) || 0,
      y: Number(p.y) || 0,
      z: Number(p.z) || 0,
      yawDeg: Number(p.yaw_deg) || 0,
      participant: this.participant(p.sid) || null,
    }));
    this._emit('positions', { positions: this.positions });
  }

  /**
   * The answer to `join` on a node of a cluster that does not host the room: join at the owner's URL with
   * the same token, on a new socket (the server closes this one). During a call: a draining node handed the
   * room to another node; rejoin there at once (a new session: it cannot be resumed on the old node).
   * @private
   * @param {RedirectMessage} msg
   */
  _onRedirect(msg) {
    const url = typeof msg.url === 'string' ? msg.url : '';
    if (this._everConnected && !this._pending && !this._reconnect && /^wss?:\/\//.test(url)) {
      this._resumeToken = null;
      this._redirectUrl = url;
      this._rejoinAfresh('the room moved to another server');
      return;
    }
    this._redirects += 1;
    if (!/^wss?:\/\//.test(url) || this._redirects > MAX_REDIRECTS) {
      const message = `the cluster redirected the join ${this._redirects} times (last to ${url || 'no URL'})`;
      this._redirects = 0;
      if (this._reconnect) this._scheduleReconnect(message);
      else this._fail(new ChorusError('redirect_loop', message, true));
      return;
    }
    this._redirectUrl = url;
    this._closeSocket();
    this._openSocket().catch((e) => this._fail(e instanceof ChorusError ? e
      : new ChorusError('connection_failed', String(e && e.message || e))));
  }

  /** @private @param {PongMessage} msg */
  _onPong(msg) {
    const sent = this._pingSent.get(msg.id);
    if (sent !== undefined) {
      this.signalingRttMs = performance.now() - sent;
      this._pingSent.delete(msg.id);
    }
  }

  /** @private @param {ErrorMessage} msg */
  _onError(msg) {
    const code = String(msg.code || 'unknown');
    const message = String(msg.message || code);
    if (code === 'resume_failed' && this._reconnect) {
      // The server does not know the session any more: a fresh join on this socket.
      this._reconnect.resume = false;
      this._dropMedia();
      this._sendJoin();
      return;
    }
    if (this._iceRestarting && code === 'bad_sdp') {
      // The server would not restart ICE on our peer: rejoin afresh.
      this._iceRestarting = false;
      this._rejoinAfresh('the server refused the ICE restart');
      return;
    }
    if (code === 'server_muted' && this.localParticipant) {
      // Our unmute was refused: a moderator's mute holds.
      this._muted = true;
      this._applyTrackEnabled();
      this._applyMute(this.localParticipant, true);
    }
    // A code newer than this SDK is not in the set, so it counts as not fatal.
    const fatal = FATAL_CODES.has(/** @type {ServerErrorCode} */ (code));
    if (this._pending) {
      // Any error before the answer (e.g. bad_sdp) means this session will not get media: give up now
      // rather than at the connect timeout.
      this._fail(new ChorusError(code, message, fatal));
      return;
    }
    if (fatal) this._failed = true;
    this._emitError(code, message, fatal);
    if (fatal) this._updateState();
  }

  /** @private */
  _ping() {
    if (!this._isOpen()) return;
    const id = ++this._pingId;
    this._pingSent.set(id, performance.now());
    if (this._pingSent.size > 8) this._pingSent.delete(id - 8);
    this._send({ type: 'ping', id });
  }

  // ---------------------------------------------------------------------------------------------
  // State

  /** @private */
  _updateState() {
    if (this._closed) return;
    /** @type {ConnectionState} */
    let next;
    const pcState = this.pc ? this.pc.connectionState : 'new';
    const ice = this.pc ? this.pc.iceConnectionState : 'new';
    const restarting = this._iceRestarting || performance.now() - this._iceRestartedAt < ICE_RESTART_AFTER_MS;
    if (!this._failed && (pcState === 'failed' || ice === 'failed') && !restarting) {
      // A failed peer connection ends the session; one that had worked is restarted or rejoined.
      if (this._reconnect && this._reconnect.ready) this._rejoinAfresh('ICE failed');
      else if (this._reconnect) { /* a resume under way restarts ICE once the session is back */ }
      else if (this._mayReconnect() && this._isOpen()) this._startReconnect('ICE failed after the call had connected', true);
      else if (this._mayReconnect()) this._startReconnect('ICE failed after the call had connected');
      else this._fail(this._mediaError('ice'));
      return;
    }
    if (ice === 'disconnected' && this._everConnected && !this._reconnect && !this._iceRestarting
      && !this._iceRestartTimer && this._isOpen()) {
      // Often transient; if it lasts, the path died (a network change): restart ICE before the server gives
      // the peer up (15 s without connectivity checks).
      this._iceRestartTimer = setTimeout(() => {
        this._iceRestartTimer = null;
        if (this.pc && this.pc.iceConnectionState === 'disconnected' && !this._reconnect && this._isOpen()) {
          this._startReconnect('the media path is lost (ICE disconnected)', true);
        }
      }, ICE_RESTART_AFTER_MS);
    }
    if (this._failed) next = 'failed';
    else if (this._reconnect) {
      const r = this._reconnect;
      if (pcState !== 'connected' || !r.ready || this._iceRestarting || this._awaitingPath) {
        this._setState('reconnecting');
        return;
      }
      this._reconnect = null;
      this._setState('connected');
      this._emit('reconnected', {
        attempts: r.attempt, downtimeMs: Math.round(performance.now() - r.since),
        how: r.how, iceRestarted: r.iceRestarted,
      });
      return;
    }
    else if (pcState === 'disconnected' || this.serverMediaState === 'disconnected') next = 'disconnected';
    else if (pcState === 'connected') next = 'connected';
    else next = 'connecting';
    this._setState(next);
  }

  /**
   * @private
   * @param {ConnectionState} next
   */
  _setState(next) {
    if (next === this._state) return;
    if (this._state === 'failed' || this._state === 'closed') return; // final
    if (next === 'connected') {
      this._everConnected = true;
      if (!this._pathTimer) this._pathTimer = setInterval(() => { this._checkMediaPath().catch(() => {}); }, MEDIA_PATH_CHECK_MS);
    }
    const previous = this._state;
    this._state = next;
    this._emit('connectionstate', { state: next, previous });
  }

  /**
   * @private
   * @param {ChorusError} err
   */
  _fail(err) {
    if (this._closed) return;
    this._failed = true;
    if (this._pending) {
      const p = this._pending;
      this._pending = null;
      p.reject(err);
    }
    this._emitError(err.code, err.message, true);
    this._close('failed', err.message);
  }

  /**
   * Tear everything down.
   * @private
   * @param {ConnectionState} state
   * @param {string} reason
   * @param {number} [code]
   */
  _close(state, reason, code) {
    if (this._closed) return;
    this._setState(state);
    this._closed = true;
    this._stopReconnecting();
    if (this._iceRestartTimer) clearTimeout(this._iceRestartTimer);
    this._iceRestartTimer = null;
    if (this._positionTimer) clearTimeout(this._positionTimer);
    this._positionTimer = null;
    if (this._pathTimer) clearInterval(this._pathTimer);
    this._pathTimer = null;
    if (this._pingTimer) clearInterval(this._pingTimer);
    this._pingTimer = null;
    if (this._ws) {
      this._ws.onopen = this._ws.onmessage = this._ws.onerror = this._ws.onclose = null;
      try { this._ws.close(1000); } catch (e) { /* already closed */ }
    }
    for (const s of this.slots) {
      if (s.element) {
        s.element.pause();
        s.element.srcObject = null;
        s.element.remove();
      }
    }
    if (this.pc) this.pc.close();
    if (this.micTrack && this._ownsMicTrack) this.micTrack.stop();
    if (this._pending) {
      const p = this._pending;
      this._pending = null;
      p.reject(new ChorusError('closed', reason));
    }
    this._emit('closed', { reason, code: code ?? null });
  }

  /**
   * Restart ICE when the selected candidate pair's connectivity checks stop being answered while the session
   * is up: the media path died (a network change) though the browser may not say so for a long time.
   * @private
   */
  async _checkMediaPath() {
    const pc = this.pc;
    if (!pc || this._closed || this._iceRestarting || !this._isOpen() || (this._reconnect && !this._awaitingPath)) {
      this._pathBaseline = null;
      return;
    }
    /** @type {Map<string, any>} */
    const byId = new Map();
    (await pc.getStats()).forEach((/** @type {any} */ s) => byId.set(s.id, s));
    const transport = [...byId.values()].find((s) => s.type === 'transport' && s.selectedCandidatePairId);
    const pair = transport ? byId.get(transport.selectedCandidatePairId) : null;
    if (!pair || this.pc !== pc || this._iceRestarting) {
      this._pathBaseline = null;
      return;
    }
    const now = { pair: String(pair.id), requests: Number(pair.requestsSent) || 0,
      responses: Number(pair.responsesReceived) || 0, at: performance.now() };
    const base = this._pathBaseline;
    if (this._awaitingPath) {
      // After an ICE restart: a check answered on the selected pair since the restart's answer (browsers keep
      // the counters of pairs they had before).
      if (now.responses > (this._pathResponses.get(now.pair) ?? 0)) {
        this._awaitingPath = false;
        this._pathBaseline = now;
        this._updateState();
      }
      return;
    }
    if (this._reconnect) return;
    if (!base || base.pair !== now.pair || now.responses > base.responses) {
      this._pathBaseline = now;
      return;
    }
    if (now.at - base.at >= MEDIA_PATH_DEAD_MS && now.requests - base.requests >= MEDIA_PATH_UNANSWERED_CHECKS
      && this._mayReconnect()) {
      this._pathBaseline = null;
      this._startReconnect('the media path is lost (connectivity checks unanswered)', true);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Reconnect

  /** @private @returns {boolean} whether a lost session may be rejoined */
  _mayReconnect() {
    return this._options.reconnect !== false && this._everConnected && !this._closed && !this._failed;
  }

  /**
   * The session was lost: drop the socket and the peer connection (keeping the microphone, the mute state
   * and the participant list) and start rejoining.
   * @private
   * @param {string} reason
   */
  _startReconnect(reason, iceOnly = false) {
    if (this._reconnect) return;
    this._reconnect = {
      since: performance.now(), attempt: 0, reason, timer: null, attemptTimer: null,
      resume: false, fresh: false, ready: false, how: 'rejoined', iceRestarted: false,
    };
    this._setState('reconnecting');
    if (iceOnly) {
      // The socket is fine, the media path is not: restart ICE on this session first.
      const r = this._reconnect;
      r.how = 'resumed';
      r.ready = true;
      this._emit('reconnecting', { reason, attempt: 1 });
      r.attempt = 1;
      r.attemptTimer = setTimeout(() => {
        if (this._reconnect === r) this._rejoinAfresh('no ICE restart in time');
      }, RECONNECT_ATTEMPT_TIMEOUT_MS);
      this._restartIce().catch(() => this._rejoinAfresh('ICE restart failed'));
      return;
    }
    this._scheduleReconnect(reason);
  }

  /**
   * Give up on the session (resumed or not) and rejoin with a new one.
   * @private
   * @param {string} reason
   */
  _rejoinAfresh(reason) {
    if (this._closed || this._failed) return;
    if (!this._reconnect) {
      if (!this._mayReconnect()) {
        this._fail(this._mediaError('ice'));
        return;
      }
      this._startReconnect(reason);
    }
    const r = this._reconnect;
    if (!r) return;
    r.fresh = true;
    this._iceRestarting = false;
    if (this._isOpen()) this._send({ type: 'leave' });
    this._scheduleReconnect(reason);
  }

  /**
   * Tear down the lost attempt and schedule the next one, or fail once the window has passed.
   * @private
   * @param {string} reason
   */
  _scheduleReconnect(reason) {
    const r = this._reconnect;
    if (!r || this._closed) return;
    const waited = performance.now() - r.since;
    // Within the server's window the session is resumed and the peer connection kept; else a fresh join.
    r.resume = !r.fresh && !!this._resumeToken && waited < this._resumeWindowMs;
    r.ready = false;
    this._iceRestarting = false;
    if (r.resume) this._dropSocket();
    else this._dropSession();
    r.reason = reason;
    const windowMs = this._options.reconnectWindowMs ?? RECONNECT_WINDOW_MS;
    if (waited >= windowMs) {
      this._reconnect = null;
      this._fail(new ChorusError('connection_lost', `lost the connection to the server and could not rejoin `
        + `within ${Math.round(waited / 1000)} s (${r.attempt} attempts; last: ${reason})`, true));
      return;
    }
    const delay = RECONNECT_DELAYS_MS[Math.min(r.attempt, RECONNECT_DELAYS_MS.length - 1)];
    this._emit('reconnecting', { reason, attempt: r.attempt + 1 });
    r.timer = setTimeout(() => { this._attemptReconnect().catch(() => this._scheduleReconnect('rejoin failed')); },
      Math.min(delay, Math.max(0, windowMs - waited)));
  }

  /** @private */
  async _attemptReconnect() {
    const r = this._reconnect;
    if (!r || this._closed) return;
    r.timer = null;
    r.attempt += 1;
    if (this._options.getToken) this._token = await this._options.getToken();
    if (this._reconnect !== r || this._closed) return;
    r.attemptTimer = setTimeout(() => {
      if (this._reconnect === r) this._scheduleReconnect('no answer to the rejoin in time');
    }, RECONNECT_ATTEMPT_TIMEOUT_MS);
    await this._openSocket();
  }

  /**
   * Close the socket and the peer connection of a lost session (not the microphone).
   * @private
   */
  _dropSession() {
    this._dropSocket();
    this._dropMedia();
  }

  /**
   * Close the socket of a lost session (usually already closed: a close frame that still reaches the
   * server ends the session there, and the next attempt joins afresh).
   * @private
   */
  _dropSocket() {
    const r = this._reconnect;
    if (r && r.attemptTimer) clearTimeout(r.attemptTimer);
    if (r) r.attemptTimer = null;
    if (this._iceRestartTimer) clearTimeout(this._iceRestartTimer);
    this._iceRestartTimer = null;
    if (this._positionTimer) clearTimeout(this._positionTimer);
    this._positionTimer = null;
    this._closeSocket();
  }

  /**
   * Close the current socket without handling its close (and stop its pings).
   * @private
   */
  _closeSocket() {
    if (this._pingTimer) clearInterval(this._pingTimer);
    this._pingTimer = null;
    if (this._ws) {
      const ws = this._ws;
      this._ws = null;
      ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
      try { ws.close(1000); } catch (e) { /* already closed */ }
    }
    this._pingSent.clear();
  }

  /**
   * Close the peer connection and the slots' audio of a lost session (not the microphone).
   * @private
   */
  _dropMedia() {
    this._iceRestarting = false;
    this._awaitingPath = false;
    this._pathBaseline = null;
    for (const s of this.slots) {
      if (s.element) {
        s.element.pause();
        s.element.srcObject = null;
        s.element.remove();
      }
      if (s.track) this.remoteStream.removeTrack(s.track);
    }
    this.slots = [];
    if (this.micTransceiver) this.micTransceiver = null;
    if (this.pc) {
      const pc = this.pc;
      this.pc = null;
      pc.close();
    }
    this.serverMediaState = null;
  }

  /** @private */
  _stopReconnecting() {
    const r = this._reconnect;
    if (!r) return;
    if (r.timer) clearTimeout(r.timer);
    if (r.attemptTimer) clearTimeout(r.attemptTimer);
    this._reconnect = null;
  }

  /**
   * After a rejoin: tell the application only about participants who really left or joined meanwhile
   * (matched by identity: every session has a new sid).
   * @private
   * @param {Map<string, Participant>} before
   */
  _reconcileParticipants(before) {
    const now = new Map([...this.participants.values()].map((p) => [p.identity, p]));
    const was = new Map([...before.values()].map((p) => [p.identity, p]));
    for (const [identity, p] of was) {
      if (!now.has(identity)) this._emit('participantleft', { participant: p, reason: 'disconnected' });
    }
    for (const [identity, p] of now) {
      if (!was.has(identity)) this._emit('participantjoined', { participant: p });
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Helpers

  /** @private @returns {boolean} */
  _isOpen() {
    return !!this._ws && this._ws.readyState === 1 && !this._closed;
  }

  /**
   * @private
   * @param {ClientMessage} msg
   */
  _send(msg) {
    if (this._ws && this._ws.readyState === 1) this._ws.send(JSON.stringify(msg));
  }

  /**
   * @private
   * @param {string} type
   * @param {object} detail
   */
  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  /**
   * @private
   * @param {string} code
   * @param {string} message
   * @param {boolean} fatal
   */
  _emitError(code, message, fatal) {
    this._emit('error', { code, message, fatal, error: new ChorusError(code, message, fatal) });
  }

  /**
   * The error explaining why the media connection failed: `connection_failed` when it never came up,
   * `connection_lost` when it did; the message names the server's media address and what to check.
   * @private
   * @param {'ice'|'server'} how  our peer connection's ICE failed, or the server ended the session
   * @returns {ChorusError}
   */
  _mediaError(how) {
    const c = this._mediaCandidate;
    const where = c ? `the media server at ${c.ip} ${c.protocol.toUpperCase()} port ${c.port}` : 'the media server';
    if (this._everConnected) {
      const why = how === 'ice'
        ? 'ICE failed after the call had connected (no more answers to connectivity checks)'
        : 'the server stopped receiving our media';
      return new ChorusError('connection_lost', `lost the connection to ${where}: ${why}; the network may have `
        + 'changed or the server may be unreachable now', true);
    }
    const why = how === 'ice'
      ? 'ICE failed (no candidate pair worked)'
      : 'the server never received our media and gave up (ICE did not complete)';
    const turn = this._turnHint();
    if (turn) return new ChorusError('connection_failed', `could not reach ${where}: ${why}; ${turn}`, true);
    let hint = c ? `a firewall may block UDP port ${c.port}` : 'a firewall may block UDP';
    if (c && isLoopback(c.ip)) {
      hint += `; the server advertises the loopback address ${c.ip}, which some browsers (Firefox) never `
        + 'use: start it with --media-bind-ip and --public-ip set to a non-loopback address of this machine';
    } else if (c) {
      hint += `, or ${c.ip} is not reachable from this device (the server's --public-ip)`;
    }
    return new ChorusError('connection_failed', `could not reach ${where}: ${why}; ${hint}`, true);
  }

  /**
   * What went wrong with TURN, when the connection depended on it (relay only) or a TURN server refused us.
   * @private
   * @returns {string|null}
   */
  _turnHint() {
    const relayOnly = (this.pc && this.pc.getConfiguration().iceTransportPolicy === 'relay')
      || this._options.iceTransportPolicy === 'relay';
    const refused = this._turnErrors.find((e) => e.errorCode === 401 || e.errorCode === 403);
    if (refused) {
      return `the TURN server ${refused.url} refused the relay allocation (${refused.errorCode}`
        + `${refused.errorText ? ' ' + refused.errorText : ''}): the TURN server's static-auth-secret differs from `
        + 'the server\'s turn.secret, or the credential expired';
    }
    if (!relayOnly) return null;
    if (this._iceServers.length === 0 && !(this._options.rtcConfig && this._options.rtcConfig.iceServers)) {
      return 'only TURN relays may be used (iceTransportPolicy "relay") but the server hands out no TURN servers '
        + '(configure turn.urls and turn.secret)';
    }
    const other = this._turnErrors[0];
    const urls = this._iceServers.flatMap((s) => s.urls).join(', ');
    return `only TURN relays may be used (iceTransportPolicy "relay") and none worked (${urls})`
      + (other ? `: ${other.url} answered ${other.errorCode}${other.errorText ? ' ' + other.errorText : ''}`
        : ': the TURN servers may be unreachable, or unable to reach the media server from their relay address');
  }
}

/**
 * The server's first ICE candidate in an SDP (the server is ICE-lite with one host candidate per worker).
 * @param {string} sdp
 * @returns {{ip: string, port: number, protocol: string}|null}
 */
export function serverCandidate(sdp) {
  // a=candidate:<foundation> <component> <protocol> <priority> <address> <port> typ <type> ...
  const m = /^a=candidate:\S+ \d+ (\S+) \d+ (\S+) (\d+) typ /m.exec(sdp || '');
  return m ? { protocol: m[1].toLowerCase(), ip: m[2], port: Number(m[3]) } : null;
}

/**
 * @param {string} ip
 * @returns {boolean}
 */
function isLoopback(ip) {
  return /^127\./.test(ip) || ip === '::1' || ip === '[::1]';
}

/**
 * Open the microphone. `constraints` are merged over `{channelCount: 1}`.
 * @param {MediaTrackConstraints} [constraints]
 * @returns {Promise<MediaStreamTrack>}
 */
export async function openMicrophone(constraints = {}) {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new ChorusError('no_microphone', 'getUserMedia is not available (a secure context is required)');
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, ...constraints }, video: false });
  } catch (e) {
    const err = /** @type {Error} */ (e);
    throw new ChorusError('no_microphone', `${err.name || 'Error'}: ${err.message}`);
  }
  const track = stream.getAudioTracks()[0];
  if (!track) throw new ChorusError('no_microphone', 'getUserMedia returned no audio track');
  return track;
}

/**
 * Join a room: opens the WebSocket, sends `join`, builds the RTCPeerConnection (one microphone m-line plus
 * one recvonly m-line per slot), sends the offer and applies the answer. Resolves once the answer is
 * applied (media may still be connecting: watch `connectionstate`); rejects with a {@link ChorusError}.
 * @param {string} url         WebSocket URL of the server, e.g. `ws://127.0.0.1:7880/ws`
 * @param {string} token       access token
 * @param {ConnectOptions} [options]
 * @returns {Promise<Room>}
 */
export function connect(url, token, options = {}) {
  const room = new Room(url, token, options);
  return room._start();
}

/**
 * The WebSocket URL of the server that served the current page (`/ws` on the same origin).
 * @returns {string}
 */
export function sameOriginWsUrl() {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${proto}//${location.host}/ws`;
}
