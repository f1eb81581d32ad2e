//! The `[playout]` section: files and playlists played into rooms, hold music, announcements
//! (docs/broadcast.md, "Playout").

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PlayoutConfig {
    /// The only directory files are played from (names in requests are relative to it; nothing outside
    /// it, through `..` or a symlink, is ever opened). Empty: playout is off.
    pub media_dir: PathBuf,
    /// Playbacks, hold music and announcements running at once, all rooms together.
    pub max_playbacks: usize,
    /// A file larger than this is skipped (it is read into memory to be played).
    pub max_file_bytes: u64,
    /// Items of one playlist (in a request or an .m3u file).
    pub max_playlist_items: usize,
    /// The Opus bitrate WAV and MP3 files are encoded at, bits per second (Ogg/Opus is passed through).
    pub bitrate_bps: u32,
    /// How much an announcement lowers the room's other voices when its request does not say, dB (≤ 0).
    pub duck_db: f32,
}

impl Default for PlayoutConfig {
    fn default() -> Self {
        PlayoutConfig {
            media_dir: PathBuf::new(),
            max_playbacks: 50,
            max_file_bytes: 256 << 20,
            max_playlist_items: 1000,
            bitrate_bps: 64_000,
            duck_db: DEFAULT_DUCK_DB,
        }
    }
}

/// The default duck of an announcement.
pub const DEFAULT_DUCK_DB: f32 = -12.0;
/// The deepest duck: −60 dB is silence for any listener.
pub const MIN_DUCK_DB: f32 = -60.0;

impl PlayoutConfig {
    /// Whether playout is on (a media directory is configured).
    pub fn enabled(&self) -> bool {
        !self.media_dir.as_os_str().is_empty()
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if self.enabled() && !self.media_dir.is_dir() {
            return Err(ConfigError::Invalid(format!(
                "playout.media_dir {} is not a directory",
                self.media_dir.display()
            )));
        }
        if !(1..=10_000).contains(&self.max_playbacks) {
            return invalid("playout.max_playbacks must be 1..=10000");
        }
        if !(4096..=(4 << 30)).contains(&self.max_file_bytes) {
            return invalid("playout.max_file_bytes must be 4096..=4294967296");
        }
        if !(1..=100_000).contains(&self.max_playlist_items) {
            return invalid("playout.max_playlist_items must be 1..=100000");
        }
        if !vocab::room::MIX_BITRATE_BPS.contains(&self.bitrate_bps) {
            return invalid("playout.bitrate_bps must be 6000..=128000");
        }
        if !(MIN_DUCK_DB..=0.0).contains(&self.duck_db) {
            return invalid("playout.duck_db must be -60..=0");
        }
        Ok(())
    }
}
