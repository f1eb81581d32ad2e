//! `GET /admin/v1/cluster/nodes`: every live node of the cluster with its load; any node answers for the
//! whole cluster (it reads the records from Redis). Admin requests about a room another node hosts are
//! forwarded to it ([`forward_room_requests`]).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use tracing::warn;

use super::{Cluster, NodeRecord};
use crate::admin::{ApiError, MAX_BODY_BYTES};
use crate::state::AppState;

#[derive(Debug, Serialize)]
pub struct NodesView {
    /// Whether this server is part of a cluster (without one the list is empty).
    pub enabled: bool,
    /// The id of the node that answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    pub nodes: Vec<NodeView>,
}

#[derive(Debug, Serialize)]
pub struct NodeView {
    #[serde(flatten)]
    pub record: NodeRecord,
    /// 0.0 idle .. 1.0 full: participants against capacity, or the workers' CPU if higher.
    pub load: f64,
    /// Rooms placed on the node since its last heartbeat (not yet in `rooms`).
    pub placed: u64,
}

pub async fn list_nodes(State(state): State<Arc<AppState>>) -> Result<Json<NodesView>, ApiError> {
    let Some(cluster) = &state.cluster else {
        return Ok(Json(NodesView {
            enabled: false,
            node_id: None,
            nodes: Vec::new(),
        }));
    };
    let nodes = cluster.nodes().await.map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "cluster_unavailable",
            "the cluster's shared state (Redis) does not answer",
        )
    })?;
    Ok(Json(NodesView {
        enabled: true,
        node_id: Some(cluster.id().to_owned()),
        nodes: nodes
            .into_iter()
            .map(|n| NodeView {
                load: n.record.load(),
                record: n.record,
                placed: n.placed,
            })
            .collect(),
    }))
}

/// Set on an admin request one node forwards to another (to the owner's id): a forwarded request is
/// answered where it lands, never forwarded again.
pub const FORWARDED_HEADER: &str = "chorus-forwarded-to";
/// On a forwarded request's response: the node that answered.
pub const NODE_HEADER: &str = "chorus-node";

/// The request headers a forwarded admin request keeps.
const REQUEST_HEADERS: [header::HeaderName; 4] = [
    header::AUTHORIZATION,
    header::CONTENT_TYPE,
    header::ACCEPT,
    header::IF_NONE_MATCH,
];
/// The response headers a forwarded admin request keeps.
const RESPONSE_HEADERS: [header::HeaderName; 4] = [
    header::CONTENT_TYPE,
    header::ETAG,
    header::CACHE_CONTROL,
    header::WWW_AUTHENTICATE,
];
/// How long the owner may take to answer a forwarded request.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// The segments of `/admin/v1/rooms/{room}` and the routes under it, from `{room}` on.
fn room_path(path: &str) -> Option<std::str::Split<'_, char>> {
    Some(path.strip_prefix("/admin/v1/rooms/")?.split('/'))
}

/// The `{room}` of `/admin/v1/rooms/{room}` and the routes under it.
fn room_segment(path: &str) -> Option<&str> {
    let room = room_path(path)?.next()?;
    (!room.is_empty()).then_some(room)
}

/// The `{room}` and `{sid}` of `/admin/v1/rooms/{room}/participants/{sid}` and the routes under it.
fn participant_segments(path: &str) -> Option<(&str, &str)> {
    let mut segments = room_path(path)?;
    match (segments.next(), segments.next(), segments.next()) {
        (Some(room), Some("participants"), Some(sid)) if !sid.is_empty() => Some((room, sid)),
        _ => None,
    }
}

/// Any node answers for the cluster: an admin request about a room another live node hosts (get, delete,
/// participants, kick, mute, deafen, move, broadcast, recordings), or about a participant another live
/// node holds in a room spanning nodes (kick, mute, deafen, move), is forwarded to that node's admin API
/// with the same token (the nodes share their API keys) and its answer returned, marked with
/// [`NODE_HEADER`]. A room no node hosts is answered here (404). Runs after the token check.
pub async fn forward_room_requests(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(cluster) = state.cluster.clone() else {
        return next.run(request).await;
    };
    let path = request.uri().path();
    let Some(room) = room_segment(path).map(str::to_owned) else {
        return next.run(request).await;
    };
    if request.headers().contains_key(FORWARDED_HEADER) {
        return next.run(request).await;
    }
    let holder = participant_segments(path).and_then(|(_, sid)| {
        // Only a request about the participant itself: the room's list stays this node's view.
        state.signaling.remote_node(&room, sid)
    });
    let target = match holder {
        Some(node) => cluster.live_node(&node).await,
        None if state.signaling.hosts(&room) => return next.run(request).await,
        None => cluster.owner_elsewhere(&room).await,
    };
    let owner = match target {
        Ok(Some(owner)) if !owner.admin_url.is_empty() => owner,
        // Nobody else hosts it (or Redis cannot tell, or the owner is too old to be reached): this node
        // answers, which for a room it does not have is 404 (and for another node's participant, 404
        // with a message saying so).
        _ => return next.run(request).await,
    };
    match forward(&cluster, &owner, request).await {
        Ok(response) => {
            cluster.forwarded(true);
            response
        }
        Err(error) => {
            cluster.forwarded(false);
            warn!(%room, node = %owner.id, %error, "cluster: forwarding an admin request failed");
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "cluster_unavailable",
                format!(
                    "node {} hosts the room or participant and did not answer",
                    owner.id
                ),
            )
            .into_response()
        }
    }
}

/// Why a forwarded admin request failed.
#[derive(Debug, thiserror::Error)]
enum ForwardError {
    #[error("the request body could not be read: {0}")]
    Body(axum::Error),
    #[error("{0}")]
    Http(#[from] reqwest::Error),
}

async fn forward(
    cluster: &Cluster,
    owner: &NodeRecord,
    request: Request,
) -> Result<Response, ForwardError> {
    let (parts, body) = request.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |p| p.as_str());
    let body = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(ForwardError::Body)?;
    let mut outgoing = cluster
        .http()
        .request(parts.method, format!("{}{path}", owner.admin_url))
        .header(FORWARDED_HEADER, owner.id.as_str())
        .timeout(FORWARD_TIMEOUT)
        .body(body);
    for name in REQUEST_HEADERS {
        if let Some(value) = parts.headers.get(&name) {
            outgoing = outgoing.header(name, value);
        }
    }
    let answer = outgoing.send().await?;
    let status = answer.status();
    let mut headers = HeaderMap::new();
    for name in RESPONSE_HEADERS {
        if let Some(value) = answer.headers().get(&name) {
            headers.insert(name, value.clone());
        }
    }
    if let Ok(node) = HeaderValue::from_str(&owner.id) {
        headers.insert(NODE_HEADER, node);
    }
    let body = answer.bytes().await?;
    Ok((status, headers, body).into_response())
}

#[cfg(test)]
mod tests {
    use super::{participant_segments, room_segment};

    #[test]
    fn the_room_and_participant_of_participant_paths() {
        assert_eq!(
            participant_segments("/admin/v1/rooms/wide/participants/PA_1/mute"),
            Some(("wide", "PA_1"))
        );
        assert_eq!(
            participant_segments("/admin/v1/rooms/wide/participants/PA_1"),
            Some(("wide", "PA_1"))
        );
        assert_eq!(
            participant_segments("/admin/v1/rooms/wide/participants"),
            None
        );
        assert_eq!(
            participant_segments("/admin/v1/rooms/wide/participants/"),
            None
        );
        assert_eq!(participant_segments("/admin/v1/rooms/wide/broadcast"), None);
    }

    #[test]
    fn the_room_of_room_scoped_admin_paths() {
        assert_eq!(room_segment("/admin/v1/rooms/lobby"), Some("lobby"));
        assert_eq!(
            room_segment("/admin/v1/rooms/lobby/participants/PA_1/mute"),
            Some("lobby")
        );
        assert_eq!(room_segment("/admin/v1/rooms"), None);
        assert_eq!(room_segment("/admin/v1/rooms/"), None);
        assert_eq!(room_segment("/admin/v1/drain"), None);
        assert_eq!(room_segment("/admin/v1/recordings/r1"), None);
    }
}
