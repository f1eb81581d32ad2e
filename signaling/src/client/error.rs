//! What can go wrong on the client side of a signaling session.

use crate::protocol::{ErrorMessage, Redirect};

/// Errors of a [`super::Client`].
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The WebSocket failed (connect, send or receive).
    #[error("websocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    /// A text frame from the server that is not a [`crate::protocol::ServerMessage`].
    #[error("not a server message ({reason}): {text}")]
    Decode { reason: String, text: String },
    /// Nothing awaited arrived in time.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// The server closed the socket while the client waited.
    #[error("the server closed the socket while waiting for {0}")]
    Closed(&'static str),
    /// The server answered with an `error` message.
    #[error("server error {}: {}", .0.code.as_str(), .0.message)]
    Server(ErrorMessage),
    /// The server answered `join` with `redirect`: the room lives on another node of its cluster.
    #[error("redirected to {}", .0.url)]
    Redirected(Redirect),
    /// More `redirect`s in a row than a client follows ([`super::MAX_REDIRECTS`]).
    #[error("redirect_loop: {0} redirects in a row, the last to {1}")]
    RedirectLoop(usize, String),
}
