//! One soak participant's task.

use std::sync::Arc;
use std::time::Duration;

use signaling::client::Client;
use tokio::sync::{mpsc, oneshot};

use super::Event;
use crate::engine::{Engine, ParticipantSpec};
use crate::run::{self, JoinRecord, RunConfig, Target};

/// One participant: join, then stay (pinging) until told to leave — cleanly (`false`: `leave`, close
/// frame) or abruptly (`true`: the socket is dropped) — or until the server closes on it.
pub(super) async fn member(
    config: Arc<RunConfig>,
    engine: Engine,
    spec: ParticipantSpec,
    tx: mpsc::UnboundedSender<Event>,
) {
    let Target::Chorus {
        ws_urls,
        api_key,
        api_secret,
    } = &config.target
    else {
        return;
    };
    let index = spec.index;
    let ws_url = run::entry_url(ws_urls, index);
    let mut record = JoinRecord {
        index,
        room: spec.room,
        talker: spec.talk.is_some(),
        answer_ms: None,
        connect_ms: None,
        first_audio_ms: None,
        error: None,
    };
    let joined = run::chorus_join(
        &config,
        &engine,
        spec,
        ws_url,
        api_key,
        api_secret,
        &mut record,
    )
    .await;
    let mut ws: Client = match joined {
        Ok(ws) => ws,
        Err(e) => {
            record.error = Some(e);
            engine.retire(index);
            let _ = tx.send(Event::Failed { index, record });
            return;
        }
    };
    let (leave_tx, mut leave) = oneshot::channel();
    let _ = tx.send(Event::Joined {
        index,
        record,
        leave: leave_tx,
    });
    let mut ping = tokio::time::interval(Duration::from_secs(10));
    let mut id = 0u64;
    loop {
        tokio::select! {
            r = &mut leave => {
                engine.retire(index);
                if r != Ok(true) {
                    let bye = async {
                        let _ = ws.leave().await;
                        ws.close().await;
                    };
                    let _ = tokio::time::timeout(Duration::from_secs(2), bye).await;
                }
                return;
            }
            _ = ping.tick() => {
                id += 1;
                if ws.ping(id).await.is_err() {
                    engine.retire(index);
                    let _ = tx.send(Event::Closed { index });
                    return;
                }
            }
            m = ws.recv() => {
                if !matches!(m, Ok(Some(_))) {
                    engine.retire(index);
                    let _ = tx.send(Event::Closed { index });
                    return;
                }
            }
        }
    }
}
