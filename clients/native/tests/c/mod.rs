//! The C example (`examples/c/tone.c`), built with the system C compiler against the static library and
//! the header, joins a room where two `AudioClient`s send 440 and 660 Hz and sends 880 Hz: it must report
//! hearing 440 and 660 Hz (and not its own 880), and both others must hear 880 Hz from it. With `--ptt` the
//! example talks by push-to-talk through the C ABI (key up for the first half, down for the second): the
//! others hear it for the second half only. With `--team --whisper carl` it talks to its team (bob) for the
//! first half and whispers to carl, of the other team, for the second: each of the two SDK clients hears it
//! for its half only. The push-to-talk run also asks for stereo output (`--stereo`, `output_channels` 2):
//! it hears carol's 440 Hz on both sides alike (a room without positions).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chorus_native::{Client, Config};
use chorus_tests::{Server, SAMPLE_RATE};

use crate::{audio_client, loud_span, loudness, tones_in, wait_connected, SECONDS};

/// The example's path, built once per test process: both tests run concurrently, and one linking the
/// file while the other executes it fails with "Text file busy" (ETXTBSY).
fn build_example() -> anyhow::Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| link_example().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

/// Link the example against the library's staticlib; the example's path. `cargo test` writes the staticlib
/// beside this test's executable (`target/debug/deps/libchorus_native.a`; it is not copied up to
/// `target/debug` for tests), built from the same sources in the same run: link that one. (Running
/// `cargo build -p chorus-native` instead would resolve the dependencies' features for this crate alone
/// and recompile half of them: 2.5 min on CI.) The example is linked under a temporary name and renamed
/// into place, so a process still running an older copy never sees a half-written file.
fn link_example() -> anyhow::Result<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let exe_path = std::env::current_exe()?;
    let deps = exe_path
        .parent()
        .ok_or_else(|| anyhow::anyhow!("the test executable has a directory"))?;
    let target = deps
        .parent()
        .ok_or_else(|| anyhow::anyhow!("the test runs from target/<profile>/deps"))?;
    let mut lib = deps.join("libchorus_native.a");
    if !lib.exists() {
        // Not built by cargo test (e.g. a copied test binary): build it.
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "chorus-native", "--lib"])
            .current_dir(dir.join("../.."))
            .status()?;
        anyhow::ensure!(status.success(), "cargo build -p chorus-native failed");
        lib = target.join("libchorus_native.a");
    }
    let exe = target.join("chorus-tone-c");
    let partial = target.join(format!("chorus-tone-c.{}.partial", std::process::id()));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let out = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-O1", "-I"])
        .arg(dir.join("include"))
        .arg(dir.join("examples/c/tone.c"))
        .arg(&lib)
        // What the Rust standard library needs from the system (rustc --print native-static-libs).
        .args(["-lpthread", "-ldl", "-lm", "-lrt", "-lutil"])
        // Unreferenced sections out and no debug symbols: the static library is half a gigabyte.
        .args(["-Wl,--gc-sections", "-s", "-o"])
        .arg(&partial)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "{cc} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&partial, &exe)?;
    Ok(exe)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_c_example_hears_two_clients_and_is_heard() -> anyhow::Result<()> {
    let exe = tokio::task::spawn_blocking(build_example).await??;
    let server = Server::start(&[]).await?;
    let room = "c-example";
    let (_carol_signal, mut carol, _) = audio_client(&server, room, "carol", 440.0).await?;
    let (_dave_signal, mut dave, _) = audio_client(&server, room, "dave", 660.0).await?;
    carol.wait_connected(SECONDS).await?;
    dave.wait_connected(SECONDS).await?;

    let token = server.token(room, "c-example", &[])?;
    let url = server.ws_url();
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(&exe)
            .args([&url, &token, room, "880", "3", "440", "660", "880"])
            .output(),
    )
    .await??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = format!(
        "{stdout}\nstderr: {}\nserver: {}",
        String::from_utf8_lossy(&out.stderr),
        server.log_tail()
    );
    assert!(out.status.success(), "the example failed: {report}");
    println!("{stdout}");
    let heard: Vec<f32> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("heard "))
        .filter_map(|l| l.split(' ').next()?.parse().ok())
        .collect();
    assert_eq!(heard, vec![440.0, 660.0], "{report}");
    assert!(stdout.contains("participants 2"), "{report}");
    assert!(stdout.contains("event left"), "{report}");

    for (name, client) in [("carol", &carol), ("dave", &dave)] {
        let heard = client
            .heard
            .lock()
            .expect("no panic while holding the heard lock");
        let hears_880 = heard.pcm_by_csrc.values().any(|pcm| {
            pcm.len() > SAMPLE_RATE as usize && tones_in(pcm, SAMPLE_RATE).0 == vec![880.0]
        });
        assert!(
            hears_880,
            "{name} does not hear the C example's 880 Hz: {report}"
        );
    }
    carol.stop().await?;
    dave.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_c_example_with_push_to_talk_is_heard_only_while_its_key_is_down() -> anyhow::Result<()>
{
    let exe = tokio::task::spawn_blocking(build_example).await??;
    let server = Server::start(&[]).await?;
    let room = "c-ptt";
    let (_carol_signal, mut carol, _) = audio_client(&server, room, "carol", 440.0).await?;
    carol.wait_connected(SECONDS).await?;
    let token = server.token(room, "c-example", &[])?;
    let url = server.ws_url();
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(&exe)
            .args([
                "--ptt", "--stereo", &url, &token, room, "880", "4", "440", "880",
            ])
            .output(),
    )
    .await??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = format!(
        "{stdout}\nstderr: {}\nserver: {}",
        String::from_utf8_lossy(&out.stderr),
        server.log_tail()
    );
    assert!(out.status.success(), "the example failed: {report}");
    assert!(stdout.contains("ptt key down"), "{report}");
    // Stereo output through the C ABI: carol's tone, the same on both sides.
    assert!(stdout.contains("heard 440"), "{report}");
    let sides: Vec<f64> = stdout
        .lines()
        .find_map(|l| l.strip_prefix("stereo "))
        .map(|l| l.split(' ').filter_map(|w| w.parse().ok()).collect())
        .unwrap_or_default();
    assert_eq!(sides.len(), 2, "left and right: {report}");
    assert!(
        sides[0] > 1e-4 && (sides[0] / sides[1] - 1.0).abs() < 0.05,
        "both sides alike: {sides:?}: {report}"
    );
    assert!(
        stdout.contains("participant_updated") && stdout.contains("ptt 1"),
        "the server confirms push-to-talk: {report}"
    );
    {
        let heard = carol
            .heard
            .lock()
            .expect("no panic while holding the heard lock");
        // Only the 2 s with the key down reached carol (the first 2 s were neither sent nor forwarded).
        let samples: usize = heard.pcm_by_csrc.values().map(Vec::len).sum();
        let secs = samples as f64 / f64::from(SAMPLE_RATE);
        println!("carol heard {secs:.2} s of the C example's 4 s (key down for the last 2 s)");
        assert!(
            (1.3..2.6).contains(&secs),
            "carol heard {secs:.2} s of the C example's 4 s: {report}"
        );
        let pcm = heard.pcm_by_csrc.values().next().expect("one talker");
        assert_eq!(tones_in(pcm, SAMPLE_RATE).0, vec![880.0], "{report}");
    }
    carol.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_c_example_talks_to_its_team_then_whispers_and_only_they_hear_it() -> anyhow::Result<()>
{
    let exe = tokio::task::spawn_blocking(build_example).await??;
    let server = Server::start(&[]).await?;
    let room = "c-teams";
    let url = server.ws_url();
    // bob is of the C example's team (red), carl of the other (blue): SDK clients that listen.
    let mut bob = Client::new(Config::default())?;
    let mut carl = Client::new(Config::default())?;
    bob.connect(&url, &server.token(room, "bob", &["--team", "red"])?, None)?;
    carl.connect(
        &url,
        &server.token(room, "carl", &["--team", "blue"])?,
        None,
    )?;
    let (mut bob, mut carl) = tokio::task::spawn_blocking(move || {
        wait_connected(&bob, &mut Vec::new())?;
        wait_connected(&carl, &mut Vec::new())?;
        anyhow::Ok((bob, carl))
    })
    .await??;
    let stop = Arc::new(AtomicBool::new(false));
    let listen = |client: &mut Client| {
        let speaker = client.take_speaker().expect("a new client has its speaker");
        let stop = stop.clone();
        std::thread::spawn(move || loudness(speaker, stop))
    };
    let (bob_ear, carl_ear) = (listen(&mut bob), listen(&mut carl));

    let token = server.token(room, "c-example", &["--team", "red"])?;
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(&exe)
            .args([
                "--team",
                "--whisper",
                "carl",
                &url,
                &token,
                room,
                "880",
                "4",
                "440",
            ])
            .output(),
    )
    .await??;
    stop.store(true, Ordering::Relaxed);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = format!(
        "{stdout}\nstderr: {}\nserver: {}",
        String::from_utf8_lossy(&out.stderr),
        server.log_tail()
    );
    assert!(out.status.success(), "the example failed: {report}");
    assert!(stdout.contains("talk team"), "{report}");
    assert!(stdout.contains("whisper carl PA_"), "{report}");
    assert!(!stdout.contains("event error"), "{report}");
    let (bob_levels, bob_pcm) = bob_ear.join().expect("bob's playback does not panic");
    let (carl_levels, carl_pcm) = carl_ear.join().expect("carl's playback does not panic");
    let (bob_secs, bob_span) = loud_span(&bob_levels);
    let (carl_secs, carl_span) = loud_span(&carl_levels);
    println!("bob (team mate) heard {bob_secs:.2} s, carl (whispered to) {carl_secs:.2} s of 4 s");
    // Team talk for the first 2 s reaches bob only; the whisper for the last 2 s carl only.
    assert!(
        (1.3..2.6).contains(&bob_secs),
        "bob heard {bob_secs:.2} s: {report}"
    );
    assert!(
        (1.3..2.6).contains(&carl_secs),
        "carl heard {carl_secs:.2} s: {report}"
    );
    let ((_, bob_last), (carl_first, _)) = (
        bob_span.expect("bob heard the team talk"),
        carl_span.expect("carl heard the whisper"),
    );
    assert!(
        bob_last < carl_first + Duration::from_millis(300),
        "bob still heard the C example {:?} after carl started to: {report}",
        bob_last - carl_first
    );
    for (name, pcm) in [("bob", &bob_pcm), ("carl", &carl_pcm)] {
        let loud: Vec<f32> = pcm
            .chunks(480)
            .filter(|c| c.iter().map(|s| s * s).sum::<f32>() / 480.0 > 0.0025)
            .flatten()
            .copied()
            .collect();
        assert_eq!(
            tones_in(&loud, SAMPLE_RATE).0,
            vec![880.0],
            "{name}: {report}"
        );
    }
    drop((bob, carl));
    Ok(())
}
