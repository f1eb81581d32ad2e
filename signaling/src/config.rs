//! Signaling configuration: the settings of new rooms and the limits of sessions.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::media::{MixSettings, RoomMode, RoomSettings, SettingsError, SpatialSettings};
use crate::turn::{TurnConfig, TurnConfigError};
use vocab::MAX_SLOTS;
/// The longest any timeout may be set to (one day): larger values are surely typos.
const MAX_TIMEOUT_MS: u64 = 86_400_000;
/// The largest per-session queue: larger values are surely typos.
const MAX_QUEUE: usize = 65_536;
/// The most suspended sessions a server may be told to keep: larger values are surely typos.
const MAX_SUSPENDED: usize = 1_000_000;

/// Settings of the signaling layer. Every field has a default, so an empty config section is valid.
///
/// The frame size limit is fixed by the protocol ([`crate::protocol::MAX_FRAME_BYTES`]) and not
/// configurable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SignalingConfig {
    /// Audio slots per subscriber of a new room (1 to 16). Rooms take their settings when their first
    /// participant joins.
    pub default_slots: u8,
    /// Mode of a room created by a join (the admin API may choose another).
    pub default_mode: RoomMode,
    /// Encoder settings of a mixed room created by a join.
    pub default_mix: MixSettings,
    /// Positional voice in rooms created by a join (`None`: none).
    pub default_spatial: Option<SpatialSettings>,
    /// How long a room created through the admin API stays while empty, unless its request says otherwise.
    pub default_empty_timeout_secs: u64,
    /// Participants a new room admits before `room_full`.
    pub default_max_participants: usize,
    /// A session that sends nothing for this long is closed (protocol: 30 s).
    pub idle_timeout_ms: u64,
    /// How long the media worker has to take a command and answer an offer before `media_unavailable`.
    pub media_timeout_ms: u64,
    /// How long writing one frame to a client may take before the session is dropped as dead.
    pub send_timeout_ms: u64,
    /// Presence events queued per session; beyond that they are dropped (and counted).
    pub presence_queue: usize,
    /// Media events queued per session between the media worker and the session.
    pub media_event_queue: usize,
    /// A WebSocket must have joined this long after it opened, or it is closed (`join_timeout`). Not
    /// reset by pings or by anything else the client sends.
    pub join_deadline_ms: u64,
    /// A joined session must have sent its first `offer` this long after `joined`, or it is closed
    /// (`offer_timeout`). Not reset by pings.
    pub offer_deadline_ms: u64,
    /// A kicked identity may not rejoin the room for this long (0: no ban).
    pub kick_ban_secs: u64,
    /// A joined session whose WebSocket drops without `leave` is kept (suspended) this long for a `resume`
    /// on a new WebSocket; then it is removed (`participant_left`, reason `disconnected`). 0: never kept.
    pub resume_window_ms: u64,
    /// Suspended sessions this server keeps at most; a drop beyond that removes the participant at once.
    pub max_suspended: usize,
    /// TURN servers handed out in `joined` with time-limited credentials (off when it has no URLs).
    pub turn: TurnConfig,
}

impl Default for SignalingConfig {
    fn default() -> Self {
        Self {
            default_slots: 3,
            default_mode: RoomMode::Forward,
            default_mix: MixSettings::default(),
            default_spatial: None,
            default_empty_timeout_secs: 300,
            default_max_participants: 100,
            idle_timeout_ms: 30_000,
            media_timeout_ms: 5_000,
            send_timeout_ms: 10_000,
            presence_queue: 256,
            media_event_queue: 64,
            join_deadline_ms: 10_000,
            offer_deadline_ms: 30_000,
            kick_ban_secs: 300,
            resume_window_ms: 15_000,
            max_suspended: 10_000,
            turn: TurnConfig::default(),
        }
    }
}

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("default_slots must be 1 to {MAX_SLOTS}, not {0}")]
    Slots(u8),
    #[error("default_{0}")]
    Mix(SettingsError),
    #[error("default_empty_timeout_secs must be at most one day, not {0}")]
    EmptyTimeout(u64),
    #[error("default_max_participants must be at least 1")]
    MaxParticipants,
    #[error("{0} must be 1 to {MAX_TIMEOUT_MS} ms, not {1}")]
    Timeout(&'static str, u64),
    #[error("{0} must be 1 to {MAX_QUEUE}, not {1}")]
    Queue(&'static str, usize),
    #[error("kick_ban_secs must be at most one day, not {0}")]
    KickBan(u64),
    #[error("resume_window_ms must be at most one day, not {0}")]
    ResumeWindow(u64),
    #[error("max_suspended must be at most {MAX_SUSPENDED}, not {0}")]
    MaxSuspended(usize),
    #[error(transparent)]
    Turn(#[from] TurnConfigError),
    #[error("cannot register the signaling metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

impl SignalingConfig {
    /// Checks every bound; a config that passes cannot make a session misbehave.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Err(SettingsError::Slots(slots)) =
            RoomSettings::forward(self.default_slots).validate()
        {
            return Err(ConfigError::Slots(slots));
        }
        self.default_mix.validate().map_err(ConfigError::Mix)?;
        if let Some(spatial) = &self.default_spatial {
            spatial
                .validate()
                .map_err(|e| ConfigError::Mix(SettingsError::Spatial(e)))?;
        }
        if self.default_max_participants == 0 {
            return Err(ConfigError::MaxParticipants);
        }
        if self.default_empty_timeout_secs > MAX_TIMEOUT_MS / 1000 {
            return Err(ConfigError::EmptyTimeout(self.default_empty_timeout_secs));
        }
        for (name, ms) in [
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("media_timeout_ms", self.media_timeout_ms),
            ("send_timeout_ms", self.send_timeout_ms),
            ("join_deadline_ms", self.join_deadline_ms),
            ("offer_deadline_ms", self.offer_deadline_ms),
        ] {
            if !(1..=MAX_TIMEOUT_MS).contains(&ms) {
                return Err(ConfigError::Timeout(name, ms));
            }
        }
        if self.kick_ban_secs > MAX_TIMEOUT_MS / 1000 {
            return Err(ConfigError::KickBan(self.kick_ban_secs));
        }
        if self.resume_window_ms > MAX_TIMEOUT_MS {
            return Err(ConfigError::ResumeWindow(self.resume_window_ms));
        }
        if self.max_suspended > MAX_SUSPENDED {
            return Err(ConfigError::MaxSuspended(self.max_suspended));
        }
        for (name, capacity) in [
            ("presence_queue", self.presence_queue),
            ("media_event_queue", self.media_event_queue),
        ] {
            if !(1..=MAX_QUEUE).contains(&capacity) {
                return Err(ConfigError::Queue(name, capacity));
            }
        }
        self.turn.validate()?;
        Ok(())
    }

    /// The media settings of a room created by a join.
    pub fn room_settings(&self) -> RoomSettings {
        let settings = match self.default_mode {
            RoomMode::Forward => RoomSettings::forward(self.default_slots),
            RoomMode::Mix => RoomSettings::mix(self.default_mix),
        };
        RoomSettings {
            spatial: self.default_spatial,
            ..settings
        }
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    pub fn media_timeout(&self) -> Duration {
        Duration::from_millis(self.media_timeout_ms)
    }

    pub fn send_timeout(&self) -> Duration {
        Duration::from_millis(self.send_timeout_ms)
    }

    pub fn join_deadline(&self) -> Duration {
        Duration::from_millis(self.join_deadline_ms)
    }

    pub fn offer_deadline(&self) -> Duration {
        Duration::from_millis(self.offer_deadline_ms)
    }

    pub fn kick_ban(&self) -> Duration {
        Duration::from_secs(self.kick_ban_secs)
    }

    pub fn resume_window(&self) -> Duration {
        Duration::from_millis(self.resume_window_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_protocol() {
        let config = SignalingConfig::default();
        config.validate().expect("defaults are valid");
        assert_eq!(config.room_settings(), RoomSettings::forward(3));
        let mix = SignalingConfig {
            default_mode: RoomMode::Mix,
            ..SignalingConfig::default()
        };
        assert_eq!(mix.room_settings().mode, RoomMode::Mix);
        assert_eq!(mix.room_settings().slots, 1);
        assert_eq!(config.default_max_participants, 100);
        assert_eq!(config.idle_timeout(), Duration::from_secs(30));
        assert_eq!(config.media_timeout(), Duration::from_secs(5));
        assert_eq!(config.send_timeout(), Duration::from_secs(10));
        assert_eq!(config.resume_window(), Duration::from_secs(15));
    }

    #[test]
    fn missing_fields_take_defaults() {
        let config: SignalingConfig =
            serde_json::from_str(r#"{"default_slots": 5}"#).expect("parses");
        assert_eq!(config.default_slots, 5);
        assert_eq!(config.default_max_participants, 100);
        let empty: SignalingConfig = serde_json::from_str("{}").expect("parses");
        assert_eq!(empty, SignalingConfig::default());
        assert!(serde_json::from_str::<SignalingConfig>(r#"{"slots": 5}"#).is_err());
    }

    #[test]
    fn validation_rejects_out_of_range_values() {
        let with = |f: &dyn Fn(&mut SignalingConfig)| {
            let mut config = SignalingConfig::default();
            f(&mut config);
            config.validate()
        };
        assert!(matches!(
            with(&|c| c.default_slots = 0),
            Err(ConfigError::Slots(0))
        ));
        assert!(matches!(
            with(&|c| c.default_slots = 17),
            Err(ConfigError::Slots(17))
        ));
        assert!(with(&|c| c.default_slots = 16).is_ok());
        assert!(with(&|c| c.default_slots = 1).is_ok());
        assert!(matches!(
            with(&|c| c.default_max_participants = 0),
            Err(ConfigError::MaxParticipants)
        ));
        assert!(matches!(
            with(&|c| c.idle_timeout_ms = 0),
            Err(ConfigError::Timeout("idle_timeout_ms", 0))
        ));
        assert!(matches!(
            with(&|c| c.send_timeout_ms = u64::MAX),
            Err(ConfigError::Timeout("send_timeout_ms", _))
        ));
        assert!(matches!(
            with(&|c| c.join_deadline_ms = 0),
            Err(ConfigError::Timeout("join_deadline_ms", 0))
        ));
        assert!(matches!(
            with(&|c| c.offer_deadline_ms = 0),
            Err(ConfigError::Timeout("offer_deadline_ms", 0))
        ));
        assert!(matches!(
            with(&|c| c.kick_ban_secs = 86_401),
            Err(ConfigError::KickBan(86_401))
        ));
        assert!(with(&|c| c.kick_ban_secs = 0).is_ok());
        assert!(with(&|c| c.resume_window_ms = 0).is_ok());
        assert!(matches!(
            with(&|c| c.resume_window_ms = 86_400_001),
            Err(ConfigError::ResumeWindow(86_400_001))
        ));
        assert!(matches!(
            with(&|c| c.max_suspended = 1_000_001),
            Err(ConfigError::MaxSuspended(1_000_001))
        ));
        assert!(matches!(
            with(&|c| c.turn.urls = vec!["stun:turn.example.com".into()]),
            Err(ConfigError::Turn(TurnConfigError::Url(_)))
        ));
        assert!(matches!(
            with(&|c| c.presence_queue = 0),
            Err(ConfigError::Queue("presence_queue", 0))
        ));
        assert!(matches!(
            with(&|c| c.media_event_queue = usize::MAX),
            Err(ConfigError::Queue("media_event_queue", _))
        ));
    }
}
