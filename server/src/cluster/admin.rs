//! `GET /admin/v1/cluster/nodes`: every live node of the cluster with its load; any node answers for the
//! whole cluster (it reads the records from Redis).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;

use super::NodeRecord;
use crate::admin::ApiError;
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
