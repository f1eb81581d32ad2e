//! Signaling: with Chorus through the typed client of its own protocol ([`signaling::client`]) with
//! locally minted tokens; with Janus (its JSON API, not ours) through [`Ws`].

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use signaling::client::ClientError;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Errors of a signaling session.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    #[error("websocket: {0}")]
    Ws(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("the server closed the socket while waiting for {0}")]
    Closed(&'static str),
    #[error("server error {code}: {message}")]
    Server { code: String, message: String },
    #[error("unexpected message: {0}")]
    Unexpected(String),
    #[error("token: {0}")]
    Token(String),
}

impl From<ClientError> for SignalError {
    fn from(e: ClientError) -> SignalError {
        match e {
            ClientError::WebSocket(e) => SignalError::Ws(e),
            ClientError::Timeout(what) => SignalError::Timeout(what),
            ClientError::Closed(what) => SignalError::Closed(what),
            ClientError::Server(e) => SignalError::Server {
                code: e.code.as_str().to_owned(),
                message: e.message,
            },
            // The load tester drives one node: a cluster's redirect is not followed.
            e @ (ClientError::Decode { .. }
            | ClientError::Redirected(_)
            | ClientError::RedirectLoop(..)) => SignalError::Unexpected(e.to_string()),
        }
    }
}

impl SignalError {
    /// The stable reason for failure tables, then `|` and the full message (an example for the report).
    pub fn detailed(&self) -> String {
        format!("{}|{self}", self.reason())
    }

    /// A short stable reason for failure tables.
    pub fn reason(&self) -> String {
        match self {
            SignalError::Ws(_) => "websocket".into(),
            SignalError::Timeout(what) => format!("timeout:{what}"),
            SignalError::Closed(what) => format!("closed:{what}"),
            SignalError::Server { code, .. } => format!("server:{code}"),
            SignalError::Unexpected(_) => "unexpected".into(),
            SignalError::Token(_) => "token".into(),
        }
    }
}

/// A JSON-over-WebSocket connection, for Janus' API.
pub struct Ws {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Ws {
    /// Connect, optionally asking for a WebSocket subprotocol (Janus needs "janus-protocol").
    pub async fn connect(url: &str, subprotocol: Option<&str>) -> Result<Ws, SignalError> {
        let mut req = url.into_client_request()?;
        if let Some(p) = subprotocol {
            let v = p
                .parse()
                .map_err(|_| SignalError::Unexpected(format!("bad subprotocol {p}")))?;
            req.headers_mut().insert("Sec-WebSocket-Protocol", v);
        }
        let (ws, _) = tokio_tungstenite::connect_async_with_config(
            req,
            Some(signaling::client::websocket_config()),
            false,
        )
        .await?;
        Ok(Ws { ws })
    }

    pub async fn send(&mut self, v: &Value) -> Result<(), SignalError> {
        self.ws.send(Message::text(v.to_string())).await?;
        Ok(())
    }

    /// The next JSON message; `None` once closed.
    pub async fn recv(&mut self) -> Result<Option<Value>, SignalError> {
        loop {
            match self.ws.next().await {
                None | Some(Ok(Message::Close(_))) => return Ok(None),
                Some(Ok(Message::Text(t))) => {
                    return serde_json::from_str(t.as_str())
                        .map(Some)
                        .map_err(|e| SignalError::Unexpected(e.to_string()))
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.into()),
            }
        }
    }

    /// Receive until `pick` accepts a message, within `timeout`.
    pub async fn wait_for(
        &mut self,
        what: &'static str,
        timeout: Duration,
        mut pick: impl FnMut(&Value) -> Result<bool, SignalError>,
    ) -> Result<Value, SignalError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let v = tokio::time::timeout_at(deadline, self.recv())
                .await
                .map_err(|_| SignalError::Timeout(what))??
                .ok_or(SignalError::Closed(what))?;
            if pick(&v)? {
                return Ok(v);
            }
        }
    }

    pub async fn close(&mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// Mint a Chorus access token (HS256) for `identity` in `room`.
pub fn chorus_token(
    api_key: &str,
    api_secret: &str,
    room: &str,
    identity: &str,
) -> Result<String, SignalError> {
    signaling::auth::mint_token(api_key, api_secret, room, identity, 6 * 3600)
        .map_err(|e| SignalError::Token(e.to_string()))
}
