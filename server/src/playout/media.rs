//! The media directory: the only place files are played from. A name in a request or a playlist is a
//! relative path inside it; `..`, absolute paths and symlinks leading out of it are refused before
//! anything is opened. Playlists are `.m3u` files in it (one entry a line, `#` lines are comments,
//! entries relative to the playlist's own folder).

use std::path::{Component, Path, PathBuf};

/// What a file in the media directory holds, by its extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Ogg/Opus (`.opus`, `.ogg`): passed through without re-encoding.
    Ogg,
    /// Decoded, resampled to 48 kHz and encoded to Opus.
    Wav,
    Mp3,
    /// A playlist.
    M3u,
}

impl Format {
    fn of(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "opus" | "ogg" | "oga" => Some(Format::Ogg),
            "wav" => Some(Format::Wav),
            "mp3" => Some(Format::Mp3),
            "m3u" | "m3u8" => Some(Format::M3u),
            _ => None,
        }
    }

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Ogg => "ogg",
            Format::Wav => "wav",
            Format::Mp3 => "mp3",
            Format::M3u => "m3u",
        }
    }
}

/// Why a name cannot be played.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    #[error("playout is off: no [playout] media_dir is configured")]
    Disabled,
    #[error("{0:?} is not a relative path inside the media directory (no '..', no absolute path)")]
    BadName(String),
    #[error("{0:?} leads outside the media directory")]
    Outside(String),
    #[error("no file {0:?} in the media directory")]
    NotFound(String),
    #[error(
        "{0:?} is not a playable file: use .opus/.ogg (Ogg/Opus), .wav, .mp3 or an .m3u playlist"
    )]
    Unsupported(String),
    #[error("the playlist {0:?} has more than {1} entries")]
    TooLong(String, usize),
    #[error("the playlist {0:?} cannot be read: {1}")]
    Unreadable(String, String),
}

impl MediaError {
    /// The metric label (`chorus_playout_items_skipped_total`) and, with `media_`, the admin API's code.
    pub fn as_str(&self) -> &'static str {
        match self {
            MediaError::Disabled => "disabled",
            MediaError::BadName(_) => "bad_name",
            MediaError::Outside(_) => "outside",
            MediaError::NotFound(_) => "not_found",
            MediaError::Unsupported(_) => "unsupported",
            MediaError::TooLong(..) => "too_long",
            MediaError::Unreadable(..) => "unreadable",
        }
    }
}

/// A playable file, found inside the media directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaFile {
    /// As named (relative to the media directory), for status and logs.
    pub name: String,
    pub path: PathBuf,
    pub format: Format,
}

/// The media directory, resolved once (its canonical path is what every file must lie under).
#[derive(Clone, Debug)]
pub struct MediaDir {
    root: Option<PathBuf>,
}

impl MediaDir {
    /// `dir` empty: playout is off. A directory that cannot be resolved is an error at start.
    pub fn new(dir: &Path) -> std::io::Result<MediaDir> {
        if dir.as_os_str().is_empty() {
            return Ok(MediaDir { root: None });
        }
        Ok(MediaDir {
            root: Some(dir.canonicalize()?),
        })
    }

    pub fn enabled(&self) -> bool {
        self.root.is_some()
    }

    /// The file `name` (relative to the media directory), checked: a plain relative path, that exists
    /// as a regular file once symlinks are followed, still inside the directory, with a known format.
    pub fn resolve(&self, name: &str) -> Result<MediaFile, MediaError> {
        let root = self.root.as_ref().ok_or(MediaError::Disabled)?;
        self.resolve_in(root, Path::new(""), name)
    }

    /// Resolves `name` relative to `base` (a folder inside the media directory, relative to it).
    fn resolve_in(&self, root: &Path, base: &Path, name: &str) -> Result<MediaFile, MediaError> {
        let bad = || MediaError::BadName(name.to_owned());
        if name.is_empty() || name.len() > 1024 || name.chars().any(char::is_control) {
            return Err(bad());
        }
        let relative = Path::new(name);
        if !relative
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(bad());
        }
        let joined = root.join(base).join(relative);
        let path = match joined.canonicalize() {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(MediaError::NotFound(name.to_owned()))
            }
            Err(_) => return Err(MediaError::NotFound(name.to_owned())),
        };
        if !path.starts_with(root) {
            return Err(MediaError::Outside(name.to_owned()));
        }
        if !path.is_file() {
            return Err(MediaError::NotFound(name.to_owned()));
        }
        // The format of the name asked for (a symlink's target may be named otherwise).
        let format =
            Format::of(relative).ok_or_else(|| MediaError::Unsupported(name.to_owned()))?;
        Ok(MediaFile {
            name: base.join(relative).to_string_lossy().into_owned(),
            path,
            format,
        })
    }

    /// The entries of the playlist `list` (already resolved), as names relative to the media directory.
    /// Entries are resolved when they are played: one that is bad then is skipped, not the playlist.
    pub fn read_playlist(&self, list: &MediaFile, max: usize) -> Result<Vec<String>, MediaError> {
        let root = self.root.as_ref().ok_or(MediaError::Disabled)?;
        let text = std::fs::read(&list.path)
            .map_err(|e| MediaError::Unreadable(list.name.clone(), e.to_string()))?;
        if text.len() > 1 << 20 {
            return Err(MediaError::TooLong(list.name.clone(), max));
        }
        let text = String::from_utf8_lossy(&text);
        let entries = parse_m3u(&text);
        if entries.len() > max {
            return Err(MediaError::TooLong(list.name.clone(), max));
        }
        // Entries are relative to the playlist's folder (inside the media directory).
        let folder = list
            .path
            .parent()
            .and_then(|p| p.strip_prefix(root).ok())
            .unwrap_or(Path::new(""))
            .to_path_buf();
        Ok(entries
            .into_iter()
            .map(|e| folder.join(e).to_string_lossy().into_owned())
            .collect())
    }
}

/// The entries of an M3U (or extended M3U) playlist: every line that is not empty and not a `#` line.
pub fn parse_m3u(text: &str) -> Vec<&str> {
    text.trim_start_matches('\u{feff}')
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn dir(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("chorus-playout-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("media/sub")).expect("a temporary directory");
        std::fs::write(d.join("secret.wav"), b"RIFF").expect("writes");
        std::fs::write(d.join("media/a.wav"), b"RIFF").expect("writes");
        std::fs::write(d.join("media/sub/b.opus"), b"OggS").expect("writes");
        std::fs::write(d.join("media/notes.txt"), b"hi").expect("writes");
        Dir(d)
    }

    #[test]
    fn names_stay_inside_the_media_directory() {
        let d = dir("confine");
        let media = MediaDir::new(&d.0.join("media")).expect("resolves");
        let a = media.resolve("a.wav").expect("a.wav is there");
        assert_eq!((a.name.as_str(), a.format), ("a.wav", Format::Wav));
        assert_eq!(media.resolve("./sub/b.opus").unwrap().format, Format::Ogg);
        for traversal in ["../secret.wav", "sub/../../secret.wav", "/etc/passwd", ""] {
            assert!(
                matches!(media.resolve(traversal), Err(MediaError::BadName(_))),
                "{traversal}"
            );
        }
        assert!(matches!(
            media.resolve("missing.mp3"),
            Err(MediaError::NotFound(_))
        ));
        assert!(matches!(media.resolve("sub"), Err(MediaError::NotFound(_))));
        assert!(matches!(
            media.resolve("notes.txt"),
            Err(MediaError::Unsupported(_))
        ));
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(d.0.join("secret.wav"), d.0.join("media/link.wav"))
                .expect("symlinks");
            std::os::unix::fs::symlink(d.0.join("media/a.wav"), d.0.join("media/sub/in.wav"))
                .expect("symlinks");
            assert!(matches!(
                media.resolve("link.wav"),
                Err(MediaError::Outside(_))
            ));
            assert!(media.resolve("sub/in.wav").is_ok(), "a link inside is fine");
        }
        let off = MediaDir::new(Path::new("")).expect("off");
        assert_eq!(off.resolve("a.wav"), Err(MediaError::Disabled));
    }

    #[test]
    fn playlists_list_entries_relative_to_their_folder() {
        assert_eq!(
            parse_m3u(
                "\u{feff}#EXTM3U\r\n#EXTINF:12,Intro\r\nintro.wav\r\n\r\n  sub/b.opus  \n# end\n"
            ),
            vec!["intro.wav", "sub/b.opus"]
        );
        let d = dir("m3u");
        std::fs::write(d.0.join("media/sub/list.m3u"), "b.opus\n../a.wav\n#x\n").expect("writes");
        let media = MediaDir::new(&d.0.join("media")).expect("resolves");
        let list = media.resolve("sub/list.m3u").expect("there");
        assert_eq!(list.format, Format::M3u);
        let entries = media.read_playlist(&list, 10).expect("reads");
        assert_eq!(entries, vec!["sub/b.opus", "sub/../a.wav"]);
        // Entries are checked when played: a `..` entry is refused then.
        assert!(matches!(
            media.resolve(&entries[1]),
            Err(MediaError::BadName(_))
        ));
        assert!(matches!(
            media.read_playlist(&list, 1),
            Err(MediaError::TooLong(..))
        ));
    }
}
