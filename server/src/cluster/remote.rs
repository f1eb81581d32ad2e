//! Moderations of participants other nodes hold (a room spanning nodes, docs/architecture.md "Rooms
//! larger than a node"): signaling hands each one over as a value ([`RemoteRequest`]); this task sends it
//! to the holding node's admin API — the route an operator would use there, with a short admin token
//! signed with the API keys the nodes share — and hands that node's answer back to the moderator's
//! session. The holding node acts exactly as on a local moderation, and its roster change comes back
//! through the roster channel like any other.

use std::sync::Arc;

use axum::http::{header, Method};
use futures_util::StreamExt;
use serde_json::json;
use signaling::protocol::ModerateAction;
use signaling::roster::{RemoteAction, RemoteRequest, REMOTE_ACTION_TIMEOUT};
use signaling::{AdminError, Signaling};
use tokio::sync::mpsc;
use tracing::warn;

use super::admin::FORWARDED_HEADER;
use super::Cluster;
use crate::admin::admin_error_status;

/// Moderations waiting for the task: a moderator's request finding it full is answered at once.
pub(super) const QUEUE: usize = 64;
/// Moderations sent at once (a node that does not answer holds one each for the timeout).
const IN_FLIGHT: usize = 16;
/// The life of the admin token a moderation carries: it is used at once, and nodes' clocks may differ
/// by a few seconds.
const TOKEN_TTL_SECS: u64 = 30;

/// Starts the task carrying `requests` to the nodes holding their participants.
pub(super) fn spawn(
    cluster: Arc<Cluster>,
    signaling: Arc<Signaling>,
    mut requests: mpsc::Receiver<RemoteRequest>,
) {
    tokio::spawn(async move {
        futures_util::stream::poll_fn(|cx| requests.poll_recv(cx))
            .for_each_concurrent(IN_FLIGHT, |request| {
                let (cluster, signaling) = (&cluster, &signaling);
                async move {
                    let result = carry(cluster, signaling, &request.action).await;
                    cluster.metrics.remote_action(result_label(&result));
                    if let Err(error) = &result {
                        warn!(room = %request.action.room, node = %request.action.node,
                            sid = %request.action.sid, action = request.action.action.as_str(),
                            %error, "cluster: a moderation on another node was not carried out");
                    }
                    // The moderator's session may have stopped waiting.
                    let _ = request.reply.send(result);
                }
            })
            .await;
    });
}

fn result_label(result: &Result<(), AdminError>) -> &'static str {
    match result {
        Ok(()) => "ok",
        Err(AdminError::ParticipantNotFound) => "not_found",
        Err(AdminError::NodeUnavailable) => "unavailable",
        Err(_) => "refused",
    }
}

/// Sends `action` to the admin API of the node holding its participant and reads the answer as the
/// [`AdminError`] a local target would have given.
async fn carry(
    cluster: &Cluster,
    signaling: &Signaling,
    action: &RemoteAction,
) -> Result<(), AdminError> {
    let node = match cluster.live_node(&action.node).await {
        Ok(Some(node)) if !node.admin_url.is_empty() => node,
        // Its record expired: its participants leave at this node's next heartbeat.
        Ok(None) => return Err(AdminError::ParticipantNotFound),
        // Redis does not answer, or the node is too old to publish its admin URL.
        Ok(Some(_)) | Err(_) => return Err(AdminError::NodeUnavailable),
    };
    let token = signaling
        .api_keys()
        .sign_admin(cluster.id(), TOKEN_TTL_SECS)
        .map_err(|error| {
            warn!(%error, "cluster: no admin token for a moderation on another node");
            AdminError::NodeUnavailable
        })?;
    let (method, route, body) = route(action);
    let mut url = reqwest::Url::parse(&node.admin_url).map_err(|_| AdminError::NodeUnavailable)?;
    url.path_segments_mut()
        .map_err(|_| AdminError::NodeUnavailable)?
        .pop_if_empty()
        .extend([
            "admin",
            "v1",
            "rooms",
            &action.room,
            "participants",
            &action.sid,
        ])
        .extend(route);
    let mut request = cluster
        .http()
        .request(method, url)
        .header(FORWARDED_HEADER, node.id.as_str())
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .timeout(REMOTE_ACTION_TIMEOUT);
    if let Some(body) = body {
        request = request
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
    }
    let answer = request
        .send()
        .await
        .map_err(|_| AdminError::NodeUnavailable)?;
    if answer.status().is_success() {
        return Ok(());
    }
    let status = answer.status();
    let body = answer.bytes().await.unwrap_or_default();
    Err(refusal(status.as_u16(), &body))
}

/// The admin route of `action` under the participant's path: method, path segments, JSON body.
fn route(action: &RemoteAction) -> (Method, Option<&'static str>, Option<serde_json::Value>) {
    let yes = |on: ModerateAction| action.action == on;
    match action.action {
        ModerateAction::Mute | ModerateAction::Unmute => (
            Method::POST,
            Some("mute"),
            Some(json!({ "muted": yes(ModerateAction::Mute) })),
        ),
        ModerateAction::Deafen | ModerateAction::Undeafen => (
            Method::POST,
            Some("deafen"),
            Some(json!({ "deafened": yes(ModerateAction::Deafen) })),
        ),
        ModerateAction::Kick => (Method::DELETE, None, None),
        ModerateAction::Move => (
            Method::POST,
            Some("move"),
            Some(json!({ "room": action.to })),
        ),
    }
}

/// The holding node's refusal (an admin API error, `{"error": {"code": …}}`) as a local target's error.
fn refusal(status: u16, body: &[u8]) -> AdminError {
    let code = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned));
    // What a moderation there can answer, read back through the admin API's own codes; a room it does
    // not know holds no such participant either.
    let carried = [
        AdminError::ParticipantNotFound,
        AdminError::SameRoom,
        AdminError::InvalidRoomName,
        AdminError::MediaUnavailable,
        AdminError::Draining,
    ];
    let known = code.as_deref().and_then(|code| {
        if code == admin_error_status(&AdminError::RoomNotFound).1 {
            return Some(AdminError::ParticipantNotFound);
        }
        carried
            .into_iter()
            .find(|e| admin_error_status(e).1 == code)
    });
    known.unwrap_or_else(|| {
        warn!(status, code = ?code, "cluster: another node refused a moderation");
        AdminError::NodeUnavailable
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(action: ModerateAction, to: Option<&str>) -> RemoteAction {
        RemoteAction {
            room: "wide".into(),
            node: "node-b".into(),
            sid: "PA_9a0b1c2d3e4f".into(),
            action,
            to: to.map(str::to_owned),
        }
    }

    #[test]
    fn each_action_is_the_admin_route_an_operator_would_use() {
        let (method, route_, body) = route(&action(ModerateAction::Unmute, None));
        assert_eq!((method, route_), (Method::POST, Some("mute")));
        assert_eq!(body, Some(json!({"muted": false})));
        let (_, route_, body) = route(&action(ModerateAction::Deafen, None));
        assert_eq!(
            (route_, body),
            (Some("deafen"), Some(json!({"deafened": true})))
        );
        assert_eq!(
            route(&action(ModerateAction::Kick, None)),
            (Method::DELETE, None, None)
        );
        let (_, route_, body) = route(&action(ModerateAction::Move, Some("breakout")));
        assert_eq!(
            (route_, body),
            (Some("move"), Some(json!({"room": "breakout"})))
        );
    }

    #[test]
    fn the_holding_nodes_refusals_are_a_local_targets_errors() {
        let error = |code: &str| format!(r#"{{"error":{{"code":"{code}","message":"m"}}}}"#);
        assert_eq!(
            refusal(404, error("participant_not_found").as_bytes()),
            AdminError::ParticipantNotFound
        );
        assert_eq!(
            refusal(409, error("same_room").as_bytes()),
            AdminError::SameRoom
        );
        assert_eq!(
            refusal(503, error("media_unavailable").as_bytes()),
            AdminError::MediaUnavailable
        );
        // Keys that differ between the nodes, or anything unexpected: the node did not take it.
        assert_eq!(
            refusal(401, error("unauthorized").as_bytes()),
            AdminError::NodeUnavailable
        );
        assert_eq!(refusal(502, b"<html>"), AdminError::NodeUnavailable);
    }
}
