//! The C example (`examples/c/tone.c`), built with the system C compiler against the static library and
//! the header, joins a room where two `AudioClient`s send 440 and 660 Hz and sends 880 Hz: it must report
//! hearing 440 and 660 Hz (and not its own 880), and both others must hear 880 Hz from it. With `--ptt` the
//! example talks by push-to-talk through the C ABI (key up for the first half, down for the second): the
//! others hear it for the second half only.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use chorus_tests::{Server, SAMPLE_RATE};

use crate::{audio_client, tones_in, SECONDS};

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
            .args(["--ptt", &url, &token, room, "880", "4", "440", "880"])
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
