//! A node of a cluster: every `join` asks the locator where its room lives; another node's room is a
//! `redirect` (and a close), an unreachable shared state is `cluster_unavailable`, a room this node hosts
//! never waits for the locator's shared state.

use super::*;
use crate::locator::{LocateError, Locating, Location, RoomLocator};
use crate::metrics::LeaveReason;
use crate::protocol::{ParticipantLeftReason, Redirect};

/// Answers from a table: room → where; records what it was asked.
struct Table {
    answers: HashMap<&'static str, Result<Location, LocateError>>,
    asked: Mutex<Vec<(String, bool)>>,
}

impl RoomLocator for Table {
    fn locate<'a>(&'a self, room: &'a str, hosted_here: bool) -> Locating<'a> {
        self.asked
            .lock()
            .expect("test lock")
            .push((room.to_owned(), hosted_here));
        let answer = if hosted_here {
            Ok(Location::Here)
        } else {
            self.answers
                .get(room)
                .cloned()
                .unwrap_or(Ok(Location::Here))
        };
        Box::pin(async move { answer })
    }
}

fn clustered() -> (Arc<Signaling>, Arc<Table>) {
    let (ctx, _media) = setup(Mode::Answer);
    let table = Arc::new(Table {
        answers: HashMap::from([
            (
                "elsewhere",
                Ok(Location::Elsewhere {
                    url: "ws://node-b:7880/ws".into(),
                }),
            ),
            ("cut-off", Err(LocateError::Unreachable)),
        ]),
        asked: Mutex::new(Vec::new()),
    });
    assert!(ctx.set_locator(table.clone()));
    (ctx, table)
}

#[tokio::test(start_paused = true)]
async fn a_room_on_another_node_is_a_redirect_and_nothing_is_admitted() {
    let (ctx, table) = clustered();
    let mut ada = Client::open(&ctx);
    ada.json(json!({"type": "join", "protocol": 1, "token": token("elsewhere", "ada")}));
    assert_eq!(
        ada.message().await,
        ServerMessage::Redirect(Redirect {
            url: "ws://node-b:7880/ws".into(),
            room: "elsewhere".into(),
        })
    );
    assert_eq!(
        ada.frame().await,
        WsFrame::Close(Some((CLOSE_NORMAL, "redirect".into())))
    );
    assert!(ctx.room("elsewhere").is_none(), "nothing admitted here");
    assert_eq!(ctx.metrics().joins("redirect"), 1);
    assert_eq!(
        *table.asked.lock().expect("test lock"),
        vec![("elsewhere".to_owned(), false)]
    );
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_shared_state_refuses_new_rooms_but_not_hosted_ones() {
    let (ctx, table) = clustered();
    let mut ada = Client::open(&ctx);
    ada.json(json!({"type": "join", "protocol": 1, "token": token("cut-off", "ada")}));
    ada.error(ErrorCode::ClusterUnavailable).await;
    assert_eq!(ctx.metrics().joins("cluster_unavailable"), 1);
    assert!(ctx.room("cut-off").is_none());

    // A room this node hosts: the locator is told so, and the join is admitted.
    let mut bob = Client::open(&ctx);
    bob.join(&token("lobby", "bob")).await;
    let mut cy = Client::open(&ctx);
    cy.join(&token("lobby", "cy")).await;
    assert_eq!(
        table.asked.lock().expect("test lock")[1..],
        [("lobby".to_owned(), false), ("lobby".to_owned(), true)]
    );
}

#[tokio::test(start_paused = true)]
async fn a_bad_token_is_refused_before_the_locator_is_asked() {
    let (ctx, table) = clustered();
    let mut ada = Client::open(&ctx);
    ada.json(json!({"type": "join", "protocol": 1, "token": "not-a-token"}));
    ada.error(ErrorCode::InvalidToken).await;
    assert!(table.asked.lock().expect("test lock").is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_room_handed_to_another_node_redirects_its_sessions_and_later_joins() {
    let (ctx, table) = clustered();
    let mut ada = Client::open(&ctx);
    ada.join(&token("lobby", "ada")).await;
    let mut bob = Client::open(&ctx);
    bob.join(&token("lobby", "bob")).await;
    let _ = ada.message().await; // bob's participant_joined
    let mut other = Client::open(&ctx);
    other.join(&token("quiet", "cy")).await;

    assert!(ctx.migrate_room("lobby", "ws://node-c:7880/ws"));
    assert!(!ctx.migrate_room("lobby", "ws://node-d:7880/ws"), "one-way");
    assert!(ctx.is_migrated("lobby") && !ctx.is_migrated("quiet"));
    assert!(!ctx.hosts("lobby") && ctx.hosts("quiet"));
    for client in [&mut ada, &mut bob] {
        let mut redirect = None;
        // A `participant_left` of the other one may come first.
        while redirect.is_none() {
            match client.message().await {
                ServerMessage::Redirect(r) => redirect = Some(r),
                ServerMessage::ParticipantLeft(left) => {
                    assert_eq!(left.reason, ParticipantLeftReason::Left);
                }
                other => panic!("expected redirect, got {other:?}"),
            }
        }
        assert_eq!(
            redirect,
            Some(Redirect {
                url: "ws://node-c:7880/ws".into(),
                room: "lobby".into(),
            })
        );
    }
    ada.closed_with(CLOSE_SERVICE_RESTART).await;
    bob.closed_with(CLOSE_SERVICE_RESTART).await;
    assert_eq!(ctx.metrics().leaves(LeaveReason::Migrated), 2);
    // Another room's session goes on.
    other.ping(7).await;

    // A join of the handed-over room is located through the cluster again, not admitted as hosted.
    let mut dee = Client::open(&ctx);
    dee.json(json!({"type": "join", "protocol": 1, "token": token("lobby", "dee")}));
    let _ = dee.message().await;
    assert_eq!(
        table.asked.lock().expect("test lock").last(),
        Some(&("lobby".to_owned(), false))
    );
}
