//! Prometheus metrics of the signaling layer. No per-room or per-participant labels.

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::media::RoomMode;
use crate::protocol::ErrorCode;

/// Why a participant left its room: the `reason` label of `chorus_leaves_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LeaveReason {
    /// The client sent `leave`.
    Leave,
    /// The client closed the WebSocket.
    Closed,
    /// The WebSocket failed (read error, or a write failed or timed out).
    TransportError,
    /// The session sent nothing for the idle timeout.
    IdleTimeout,
    /// The media worker reported the connection lost.
    MediaDisconnected,
    /// A fatal protocol error ended the session.
    Error,
    /// The server closed every session.
    Shutdown,
    /// The session task was dropped without finishing (e.g. aborted).
    Aborted,
    /// An operator removed the participant or deleted its room (admin API).
    Kicked,
    /// A new session with the same identity took the participant's place.
    Replaced,
    /// The session did not send its first `offer` within the offer deadline.
    OfferTimeout,
    /// A moderator or operator moved the participant to another room.
    Moved,
    /// The node handed the participant's room to another node of its cluster (a drain): the client was
    /// sent `redirect` and rejoins there.
    Migrated,
}

impl LeaveReason {
    pub const ALL: [LeaveReason; 13] = [
        LeaveReason::Leave,
        LeaveReason::Closed,
        LeaveReason::TransportError,
        LeaveReason::IdleTimeout,
        LeaveReason::MediaDisconnected,
        LeaveReason::Error,
        LeaveReason::Shutdown,
        LeaveReason::Aborted,
        LeaveReason::Kicked,
        LeaveReason::Replaced,
        LeaveReason::OfferTimeout,
        LeaveReason::Moved,
        LeaveReason::Migrated,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            LeaveReason::Leave => "leave",
            LeaveReason::Closed => "closed",
            LeaveReason::TransportError => "transport_error",
            LeaveReason::IdleTimeout => "idle_timeout",
            LeaveReason::MediaDisconnected => "media_disconnected",
            LeaveReason::Error => "error",
            LeaveReason::Shutdown => "shutdown",
            LeaveReason::Aborted => "aborted",
            LeaveReason::Kicked => "kicked",
            LeaveReason::Replaced => "replaced",
            LeaveReason::OfferTimeout => "offer_timeout",
            LeaveReason::Moved => "moved",
            LeaveReason::Migrated => "migrated",
        }
    }
}

/// A limit a session hit: the `reason` label of `chorus_session_limits_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SessionLimit {
    /// The WebSocket did not send a valid `join` within the join deadline.
    JoinTimeout,
    /// The joined session did not send its first `offer` within the offer deadline.
    OfferTimeout,
    /// A new session with the same identity replaced a participant in its room.
    IdentityReplaced,
    /// A join was refused because the identity was kicked from the room less than the ban period ago.
    Banned,
    /// A `ptt_key` key-down or a `ptt` beyond the push-to-talk rate was refused with `rate_limited`.
    PttKeyFlood,
    /// A `talk` or `volume` beyond their rate was refused with `rate_limited`.
    TalkFlood,
}

impl SessionLimit {
    pub const ALL: [SessionLimit; 6] = [
        SessionLimit::JoinTimeout,
        SessionLimit::OfferTimeout,
        SessionLimit::IdentityReplaced,
        SessionLimit::Banned,
        SessionLimit::PttKeyFlood,
        SessionLimit::TalkFlood,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            SessionLimit::JoinTimeout => "join_timeout",
            SessionLimit::OfferTimeout => "offer_timeout",
            SessionLimit::IdentityReplaced => "identity_replaced",
            SessionLimit::Banned => "banned",
            SessionLimit::PttKeyFlood => "ptt_key_flood",
            SessionLimit::TalkFlood => "talk_flood",
        }
    }
}

/// The `result` label of `chorus_joins_total` for a successful join.
pub const JOIN_OK: &str = "ok";
/// The `result` label of `chorus_joins_total` for a join answered with `redirect` (cluster).
pub const JOIN_REDIRECT: &str = "redirect";

/// The error codes a `join` can fail with (the other `result` values of `chorus_joins_total`).
const JOIN_FAILURES: [ErrorCode; 11] = [
    ErrorCode::AlreadyJoined,
    ErrorCode::UnsupportedProtocol,
    ErrorCode::InvalidToken,
    ErrorCode::TokenExpired,
    ErrorCode::RoomMismatch,
    ErrorCode::RoomFull,
    ErrorCode::RoomClosed,
    ErrorCode::Banned,
    ErrorCode::Draining,
    ErrorCode::ClusterUnavailable,
    ErrorCode::Internal,
];

/// The signaling metrics, registered into a Prometheus registry.
#[derive(Clone, Debug)]
pub struct SignalingMetrics {
    errors: IntCounterVec,
    joins: IntCounterVec,
    leaves: IntCounterVec,
    sessions: IntGauge,
    presence_dropped: IntCounter,
    join_duration: Histogram,
    join_latency: Histogram,
    rooms: IntGaugeVec,
    participants: IntGaugeVec,
    room_events_dropped: IntCounter,
    ws_violations: IntCounterVec,
    limits: IntCounterVec,
    turn_credentials: IntCounter,
    resumed: IntCounter,
    resume_failures: IntCounterVec,
    suspended: IntGauge,
    ice_restarts: IntCounter,
    positions: IntCounterVec,
    moderation: IntCounterVec,
}

/// What became of a client's `position` (the `result` label of `chorus_positions_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PositionResult {
    /// Passed on to the media worker.
    Accepted,
    /// Less than 100 ms after the previous accepted one: dropped.
    RateLimited,
    /// Not finite, outside the world, or the room is not spatial: `bad_position`.
    Refused,
    /// Accepted, but the media worker's command queue was full.
    Dropped,
}

impl PositionResult {
    pub const ALL: [PositionResult; 4] = [
        PositionResult::Accepted,
        PositionResult::RateLimited,
        PositionResult::Refused,
        PositionResult::Dropped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PositionResult::Accepted => "accepted",
            PositionResult::RateLimited => "rate_limited",
            PositionResult::Refused => "refused",
            PositionResult::Dropped => "dropped",
        }
    }
}

/// Why a `resume` failed (the `reason` label of `chorus_session_resume_failures_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResumeFailure {
    /// No session has this token: never issued, already used, or its window ended.
    Unknown,
    /// The session ended while it was being taken over.
    Ended,
    /// The `resume` named a protocol version this server does not speak.
    Protocol,
}

impl ResumeFailure {
    pub const ALL: [ResumeFailure; 3] = [
        ResumeFailure::Unknown,
        ResumeFailure::Ended,
        ResumeFailure::Protocol,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ResumeFailure::Unknown => "unknown",
            ResumeFailure::Ended => "ended",
            ResumeFailure::Protocol => "protocol",
        }
    }
}

impl SignalingMetrics {
    /// Creates the metrics and registers them into `registry`. Every label value is created up front so
    /// that series exist (at zero) before their first event.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let errors = IntCounterVec::new(
            Opts::new(
                "chorus_signaling_errors_total",
                "Protocol errors sent to clients, by error code.",
            ),
            &["code"],
        )?;
        let joins = IntCounterVec::new(
            Opts::new(
                "chorus_joins_total",
                "Join requests, by result: ok or the error code.",
            ),
            &["result"],
        )?;
        let leaves = IntCounterVec::new(
            Opts::new(
                "chorus_leaves_total",
                "Participants that left their room, by reason.",
            ),
            &["reason"],
        )?;
        let sessions = IntGauge::new(
            "chorus_signaling_sessions",
            "Open signaling WebSocket sessions.",
        )?;
        let presence_dropped = IntCounter::new(
            "chorus_presence_events_dropped_total",
            "Presence events dropped because a session's queue was full.",
        )?;
        let join_duration = Histogram::with_opts(
            HistogramOpts::new(
                "chorus_join_duration_seconds",
                "Time from receiving join to sending joined, in seconds.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            ]),
        )?;
        let join_latency = Histogram::with_opts(
            HistogramOpts::new(
                "chorus_join_latency_seconds",
                "Time from the WebSocket opening to the participant's media connecting (DTLS-SRTP up), in seconds.",
            )
            .buckets(vec![
                0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0,
            ]),
        )?;
        let rooms = IntGaugeVec::new(
            Opts::new("chorus_rooms", "Rooms on this server, by mode."),
            &["mode"],
        )?;
        let participants = IntGaugeVec::new(
            Opts::new(
                "chorus_participants",
                "Participants admitted to rooms on this server, by room mode.",
            ),
            &["mode"],
        )?;
        let room_events_dropped = IntCounter::new(
            "chorus_room_events_dropped_total",
            "Room lifecycle events (for webhooks) dropped because their queue was full or closed at exit.",
        )?;
        let ws_violations = IntCounterVec::new(
            Opts::new(
                "chorus_websocket_violations_total",
                "WebSocket sessions ended for a protocol violation by the client, by kind.",
            ),
            &["kind"],
        )?;
        let limits = IntCounterVec::new(
            Opts::new(
                "chorus_session_limits_total",
                "Signaling session limits hit, by reason: join_timeout, offer_timeout, identity_replaced, banned, ptt_key_flood.",
            ),
            &["reason"],
        )?;
        let resumed = IntCounter::new(
            "chorus_sessions_resumed_total",
            "Signaling sessions taken over by a new WebSocket with a resume token.",
        )?;
        let resume_failures = IntCounterVec::new(
            Opts::new(
                "chorus_session_resume_failures_total",
                "resume requests refused with resume_failed, by reason: unknown, ended, protocol.",
            ),
            &["reason"],
        )?;
        let suspended = IntGauge::new(
            "chorus_sessions_suspended",
            "Joined sessions whose WebSocket dropped, kept for a resume.",
        )?;
        let ice_restarts = IntCounter::new(
            "chorus_ice_restarts_total",
            "ICE restart offers answered on a participant's existing media peer.",
        )?;
        let positions = IntCounterVec::new(
            Opts::new(
                "chorus_positions_total",
                "Client position messages in spatial rooms, by result (accepted, rate_limited, refused, dropped).",
            ),
            &["result"],
        )?;
        for result in PositionResult::ALL {
            positions.with_label_values(&[result.as_str()]);
        }
        let moderation = IntCounterVec::new(
            Opts::new(
                "chorus_moderation_actions_total",
                "Moderation actions carried out, by action (mute, unmute, deafen, undeafen, kick, move) and by whom: admin (the admin API) or moderator (a participant's moderate).",
            ),
            &["action", "by"],
        )?;
        for action in crate::protocol::ModerateAction::ALL {
            for by in ["admin", "moderator"] {
                moderation.with_label_values(&[action.as_str(), by]);
            }
        }
        registry.register(Box::new(moderation.clone()))?;
        for reason in ResumeFailure::ALL {
            resume_failures.with_label_values(&[reason.as_str()]);
        }
        let turn_credentials = IntCounter::new(
            "chorus_turn_credentials_issued_total",
            "TURN credentials handed out in joined and resumed messages (zero while TURN is not configured).",
        )?;
        for limit in SessionLimit::ALL {
            limits.with_label_values(&[limit.as_str()]);
        }
        for kind in crate::session::ProtocolViolation::ALL {
            ws_violations.with_label_values(&[kind.as_str()]);
        }
        for mode in RoomMode::ALL {
            rooms.with_label_values(&[mode.as_str()]);
            participants.with_label_values(&[mode.as_str()]);
        }

        for code in ErrorCode::ALL {
            errors.with_label_values(&[code.as_str()]);
        }
        joins.with_label_values(&[JOIN_OK]);
        joins.with_label_values(&[JOIN_REDIRECT]);
        for code in JOIN_FAILURES {
            joins.with_label_values(&[code.as_str()]);
        }
        for reason in LeaveReason::ALL {
            leaves.with_label_values(&[reason.as_str()]);
        }

        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(joins.clone()))?;
        registry.register(Box::new(leaves.clone()))?;
        registry.register(Box::new(sessions.clone()))?;
        registry.register(Box::new(presence_dropped.clone()))?;
        registry.register(Box::new(join_duration.clone()))?;
        registry.register(Box::new(join_latency.clone()))?;
        registry.register(Box::new(rooms.clone()))?;
        registry.register(Box::new(participants.clone()))?;
        registry.register(Box::new(room_events_dropped.clone()))?;
        registry.register(Box::new(ws_violations.clone()))?;
        registry.register(Box::new(limits.clone()))?;
        registry.register(Box::new(resumed.clone()))?;
        registry.register(Box::new(resume_failures.clone()))?;
        registry.register(Box::new(suspended.clone()))?;
        registry.register(Box::new(ice_restarts.clone()))?;
        registry.register(Box::new(turn_credentials.clone()))?;
        registry.register(Box::new(positions.clone()))?;
        Ok(Self {
            errors,
            joins,
            leaves,
            sessions,
            presence_dropped,
            join_duration,
            join_latency,
            rooms,
            participants,
            room_events_dropped,
            ws_violations,
            limits,
            resumed,
            resume_failures,
            suspended,
            ice_restarts,
            turn_credentials,
            positions,
            moderation,
        })
    }

    pub(crate) fn position(&self, result: PositionResult) {
        self.positions.with_label_values(&[result.as_str()]).inc();
    }

    /// Client positions with `result` so far.
    pub fn positions(&self, result: PositionResult) -> u64 {
        self.positions.with_label_values(&[result.as_str()]).get()
    }

    pub(crate) fn session_resumed(&self) {
        self.resumed.inc();
    }

    pub(crate) fn resume_failed(&self, reason: ResumeFailure) {
        self.resume_failures
            .with_label_values(&[reason.as_str()])
            .inc();
    }

    pub(crate) fn suspended_changed(&self, delta: i64) {
        self.suspended.add(delta);
    }

    pub(crate) fn ice_restarted(&self) {
        self.ice_restarts.inc();
    }

    /// A moderation action was carried out; `by_admin`: through the admin API, else by a moderator.
    pub fn moderated(&self, action: crate::protocol::ModerateAction, by_admin: bool) {
        let by = if by_admin { "admin" } else { "moderator" };
        self.moderation
            .with_label_values(&[action.as_str(), by])
            .inc();
    }

    /// ICE restart offers answered so far.
    pub fn ice_restarts(&self) -> u64 {
        self.ice_restarts.get()
    }

    /// Sessions resumed so far.
    pub fn resumes(&self) -> u64 {
        self.resumed.get()
    }

    /// Resumes refused for `reason` so far.
    pub fn resume_failures(&self, reason: ResumeFailure) -> u64 {
        self.resume_failures
            .with_label_values(&[reason.as_str()])
            .get()
    }

    /// Sessions suspended now.
    pub fn suspended(&self) -> i64 {
        self.suspended.get()
    }

    /// A `joined` carried a TURN credential.
    pub(crate) fn turn_credential_issued(&self) {
        self.turn_credentials.inc();
    }

    /// TURN credentials handed out so far.
    pub fn turn_credentials_issued(&self) -> u64 {
        self.turn_credentials.get()
    }

    pub(crate) fn limit_hit(&self, limit: SessionLimit) {
        self.limits.with_label_values(&[limit.as_str()]).inc();
    }

    /// How often `limit` was hit.
    pub fn limit_hits(&self, limit: SessionLimit) -> u64 {
        self.limits.with_label_values(&[limit.as_str()]).get()
    }

    /// A session's media connected `seconds` after its WebSocket opened.
    pub(crate) fn media_connected(&self, seconds: f64) {
        self.join_latency.observe(seconds);
    }

    pub(crate) fn room_opened(&self, mode: RoomMode) {
        self.rooms.with_label_values(&[mode.as_str()]).inc();
    }

    pub(crate) fn room_closed(&self, mode: RoomMode) {
        self.rooms.with_label_values(&[mode.as_str()]).dec();
    }

    pub(crate) fn participant_joined(&self, mode: RoomMode) {
        self.participants.with_label_values(&[mode.as_str()]).inc();
    }

    pub(crate) fn participant_left(&self, mode: RoomMode) {
        self.participants.with_label_values(&[mode.as_str()]).dec();
    }

    pub(crate) fn ws_violation(&self, kind: crate::session::ProtocolViolation) {
        self.ws_violations.with_label_values(&[kind.as_str()]).inc();
    }

    /// Sessions ended for a WebSocket protocol violation of `kind`.
    pub fn ws_violations(&self, kind: crate::session::ProtocolViolation) -> u64 {
        self.ws_violations.with_label_values(&[kind.as_str()]).get()
    }

    pub(crate) fn room_event_dropped(&self) {
        self.room_events_dropped.inc();
    }

    /// Rooms of `mode` now.
    pub fn rooms(&self, mode: RoomMode) -> i64 {
        self.rooms.with_label_values(&[mode.as_str()]).get()
    }

    /// Participants in rooms of `mode` now.
    pub fn participants(&self, mode: RoomMode) -> i64 {
        self.participants.with_label_values(&[mode.as_str()]).get()
    }

    /// An `error` message with `code` was sent.
    pub(crate) fn error_sent(&self, code: ErrorCode) {
        self.errors.with_label_values(&[code.as_str()]).inc();
    }

    /// A join succeeded after `seconds`.
    pub(crate) fn join_ok(&self, seconds: f64) {
        self.joins.with_label_values(&[JOIN_OK]).inc();
        self.join_duration.observe(seconds);
    }

    /// A join was answered with `redirect`: the room lives on another node.
    pub(crate) fn join_redirected(&self) {
        self.joins.with_label_values(&[JOIN_REDIRECT]).inc();
    }

    /// A join failed with `code`.
    pub(crate) fn join_failed(&self, code: ErrorCode) {
        self.joins.with_label_values(&[code.as_str()]).inc();
    }

    pub(crate) fn left(&self, reason: LeaveReason) {
        self.leaves.with_label_values(&[reason.as_str()]).inc();
    }

    pub(crate) fn session_opened(&self) {
        self.sessions.inc();
    }

    pub(crate) fn session_closed(&self) {
        self.sessions.dec();
    }

    pub(crate) fn presence_dropped(&self) {
        self.presence_dropped.inc();
    }

    #[cfg(test)]
    pub(crate) fn errors(&self, code: ErrorCode) -> u64 {
        self.errors.with_label_values(&[code.as_str()]).get()
    }

    #[cfg(test)]
    pub(crate) fn joins(&self, result: &str) -> u64 {
        self.joins.with_label_values(&[result]).get()
    }

    #[cfg(test)]
    pub(crate) fn leaves(&self, reason: LeaveReason) -> u64 {
        self.leaves.with_label_values(&[reason.as_str()]).get()
    }

    #[cfg(test)]
    pub(crate) fn sessions(&self) -> i64 {
        self.sessions.get()
    }

    #[cfg(test)]
    pub(crate) fn presence_drops(&self) -> u64 {
        self.presence_dropped.get()
    }

    #[cfg(test)]
    pub(crate) fn join_count(&self) -> u64 {
        self.join_duration.get_sample_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_all_series() {
        let registry = Registry::new();
        let metrics = SignalingMetrics::new(&registry).expect("registers");
        metrics.error_sent(ErrorCode::BadJson);
        metrics.join_ok(0.002);
        metrics.join_failed(ErrorCode::RoomFull);
        metrics.left(LeaveReason::Leave);
        metrics.session_opened();
        metrics.presence_dropped();

        let families = registry.gather();
        let names: Vec<&str> = families.iter().map(|f| f.name()).collect();
        for name in [
            "chorus_signaling_errors_total",
            "chorus_joins_total",
            "chorus_leaves_total",
            "chorus_signaling_sessions",
            "chorus_presence_events_dropped_total",
            "chorus_join_duration_seconds",
            "chorus_join_latency_seconds",
            "chorus_rooms",
            "chorus_participants",
            "chorus_room_events_dropped_total",
            "chorus_session_limits_total",
            "chorus_sessions_resumed_total",
            "chorus_session_resume_failures_total",
            "chorus_sessions_suspended",
            "chorus_ice_restarts_total",
            "chorus_turn_credentials_issued_total",
            "chorus_positions_total",
        ] {
            assert!(names.contains(&name), "{name} in {names:?}");
        }
        let errors = families
            .iter()
            .find(|f| f.name() == "chorus_signaling_errors_total")
            .expect("errors");
        assert_eq!(
            errors.get_metric().len(),
            ErrorCode::ALL.len(),
            "every code pre-created"
        );
        assert_eq!(metrics.errors(ErrorCode::BadJson), 1);
        assert_eq!(metrics.joins(JOIN_OK), 1);
        assert_eq!(metrics.joins("room_full"), 1);
        assert_eq!(metrics.leaves(LeaveReason::Leave), 1);
        assert_eq!(metrics.sessions(), 1);
        assert_eq!(metrics.presence_drops(), 1);
        assert_eq!(metrics.join_count(), 1);
    }

    #[test]
    fn registering_twice_is_an_error_not_a_panic() {
        let registry = Registry::new();
        SignalingMetrics::new(&registry).expect("first registration");
        assert!(SignalingMetrics::new(&registry).is_err());
    }
}
