//! Real speech for the tests, and its objective score: an English passage spoken by `espeak-ng` (several
//! sentences with real pauses), resampled to 48 kHz by `sox` and cached under the target directory; WAV
//! writing; and PESQ wide-band (ITU-T P.862.2) through `scripts/pesq_score.py` in the repository's `.venv`.
//!
//! Everything here needs only `std`, so the end-to-end tests (crates `chorus-tests` and `chorus-native`)
//! include this file too.
//! Missing tools are a test failure naming `scripts/test.sh` (which installs them), never a silent skip.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

/// The sample rate of the speech (Opus' native rate, the project's one audio clock).
pub const SPEECH_RATE: u32 = media_core::audio::SAMPLE_RATE;

/// Bumped whenever the passage or its processing changes, so a stale cache is never used.
const PASSAGE_VERSION: u32 = 2;

/// The repository root: the nearest directory above the crate that holds `scripts/speech-passage.sh`
/// (the crates that use this file live one or two levels below it).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|dir| dir.join("scripts/speech-passage.sh").is_file())
        .expect("the crate lives inside the repository, which holds scripts/speech-passage.sh")
        .to_path_buf()
}

/// Where the speech cache and scored WAV files go (the test target's scratch directory).
pub fn scratch_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("speech");
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

fn run(cmd: &mut Command, tool: &str) {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {tool} ({e}): run scripts/test.sh, which installs it (Debian package {tool})")
    });
    assert!(
        out.status.success(),
        "{tool} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The spoken passage at 48 kHz mono, peak-normalised to −3 dBFS, with 0.5 s of silence at each end
/// (≈ 11 s). Generated once per target directory; later calls (and tests in parallel) share the cache.
pub fn passage_48k() -> Arc<[f32]> {
    static CACHE: Mutex<Option<Arc<[f32]>>> = Mutex::new(None);
    let mut cache = CACHE
        .lock()
        .expect("the speech cache lock is never poisoned: nothing panics while holding it");
    if let Some(s) = cache.as_ref() {
        return s.clone();
    }
    let dir = scratch_dir();
    let raw = dir.join(format!("passage-v{PASSAGE_VERSION}-48k-s16le.raw"));
    if !raw.is_file() {
        // Unique names, then an atomic rename: test binaries running at once never see half a file.
        let tag = format!("{}-{:?}", std::process::id(), std::thread::current().id());
        let tag: String = tag.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
        let partial = dir.join(format!("passage-{tag}.raw"));
        run(
            Command::new(repo_root().join("scripts/speech-passage.sh")).arg(&partial),
            "scripts/speech-passage.sh (espeak-ng, sox)",
        );
        std::fs::rename(&partial, &raw)
            .unwrap_or_else(|e| panic!("cannot move {} into place: {e}", partial.display()));
    }
    let bytes =
        std::fs::read(&raw).unwrap_or_else(|e| panic!("cannot read {}: {e}", raw.display()));
    let samples: Arc<[f32]> = bytes
        .chunks_exact(2)
        .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
        .collect();
    assert!(
        samples.len() > SPEECH_RATE as usize * 5,
        "{} holds only {} samples: delete it and rerun",
        raw.display(),
        samples.len()
    );
    *cache = Some(samples.clone());
    samples
}

/// Writes 48 kHz mono 16-bit PCM WAV (samples clamped to full scale).
pub fn write_wav(path: &Path, samples: &[f32]) {
    let data_len = u32::try_from(samples.len() * 2).expect("a test WAV is far below 4 GiB");
    let mut out = Vec::with_capacity(44 + samples.len() * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&SPEECH_RATE.to_le_bytes());
    out.extend_from_slice(&(SPEECH_RATE * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for &s in samples {
        let v = (s * 32768.0).round().clamp(-32768.0, 32767.0) as i16;
        out.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, out).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// A PESQ-WB result from `scripts/pesq_score.py`.
#[derive(Clone, Copy, Debug)]
pub struct Pesq {
    /// MOS-LQO, 1.0 (bad) ..= 4.64 (transparent).
    pub mos_lqo: f64,
    /// How much later the degraded signal starts than the reference (found by cross-correlation).
    pub delay_ms: f64,
}

impl fmt::Display for Pesq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PESQ-WB {:.2} (aligned by {:.1} ms)",
            self.mos_lqo, self.delay_ms
        )
    }
}

fn json_number(json: &str, key: &str) -> f64 {
    let pattern = format!("\"{key}\": ");
    let start = json
        .find(&pattern)
        .unwrap_or_else(|| panic!("pesq_score.py printed no {key}: {json}"))
        + pattern.len();
    let rest = &json[start..];
    let end = rest
        .find([',', '}'])
        .unwrap_or_else(|| panic!("pesq_score.py printed malformed JSON: {json}"));
    rest[..end]
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("pesq_score.py printed a bad {key} ({e}): {json}"))
}

/// Scores `degraded` against `reference` (both 48 kHz mono); the WAVs stay in the scratch directory as
/// `<name>-reference.wav` and `<name>-degraded.wav` for listening.
pub fn pesq_wb(name: &str, reference: &[f32], degraded: &[f32]) -> Pesq {
    let dir = scratch_dir();
    let ref_path = dir.join(format!("{name}-reference.wav"));
    let deg_path = dir.join(format!("{name}-degraded.wav"));
    write_wav(&ref_path, reference);
    write_wav(&deg_path, degraded);
    let root = repo_root();
    let python = root.join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run scripts/test.sh, which creates the .venv with PyPI pesq, numpy and scipy",
        python.display()
    );
    let out = Command::new(&python)
        .arg(root.join("scripts/pesq_score.py"))
        .arg(&ref_path)
        .arg(&deg_path)
        .arg("--json")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} ({e}): run scripts/test.sh", python.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pesq_score.py failed ({}) on {}: {}{} (run scripts/test.sh if the .venv is incomplete)",
        out.status,
        deg_path.display(),
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    Pesq {
        mos_lqo: json_number(&stdout, "mos_lqo"),
        delay_ms: json_number(&stdout, "delay_ms"),
    }
}
