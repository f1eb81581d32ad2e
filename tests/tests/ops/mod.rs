//! Operators' features against the real binary: the admin API over HTTP, webhooks to a local receiver,
//! SIGTERM drain of a real process, and the metrics checked by the real `promtool` and scraped by a real
//! Prometheus server (Debian package `prometheus`; scripts/test.sh installs it), TURN credentials in
//! `joined`, and the media workers' scheduler slice and sockets as the kernel reports them.

mod admin;
mod api_spec;
mod deafen;
mod drain;
mod limits;
mod prom;
mod sched;
mod sockets;
mod turn;
mod webhooks;

use std::path::PathBuf;
use std::time::Duration;

use chorus_tests::{Server, Signal};
use serde_json::Value;

const SECONDS: Duration = Duration::from_secs(5);

/// The workspace root.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Join `room` as `identity` (signaling only) and return the socket and the `joined` message.
async fn join(server: &Server, room: &str, identity: &str) -> anyhow::Result<(Signal, Value)> {
    let token = server.token(room, identity, &[])?;
    let mut signal = Signal::connect(&server.ws_url()).await?;
    let joined = signal.join(&token, room).await?;
    Ok((signal, joined))
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}
