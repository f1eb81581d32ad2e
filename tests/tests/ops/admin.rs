//! The admin API over real HTTP: authorisation, rooms, participants, drain status.

use std::time::{Duration, Instant};

use chorus_tests::{AudioClient, Server};

use super::{join, json, SECONDS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_refuses_requests_without_an_admin_token() -> anyhow::Result<()> {
    let server = Server::start(&[]).await?;
    let (status, body) = server.admin("GET", "/admin/v1/rooms", None, None).await?;
    assert_eq!(status, 401, "{body}");
    assert_eq!(json(&body)["error"]["code"], "unauthorized");
    let (status, _) = server
        .admin("GET", "/admin/v1/rooms", Some("not-a-jwt"), None)
        .await?;
    assert_eq!(status, 401);
    // A valid access token (a room grant) is not an admin token.
    let access = server.token("lobby", "ada", &[])?;
    let (status, body) = server
        .admin("DELETE", "/admin/v1/rooms/lobby", Some(&access), None)
        .await?;
    assert_eq!(status, 403, "{body}");
    assert_eq!(json(&body)["error"]["code"], "forbidden");
    // An admin token signed with another secret.
    let forged = signaling::auth::create_admin_token(
        "devkey",
        "an-attacker-secret-an-attacker-secret",
        &signaling::auth::AdminClaims {
            iat: None,
            ..signaling::auth::AdminClaims::valid_for("mallory", 600)
        },
    )?;
    let (status, _) = server
        .admin("POST", "/admin/v1/drain", Some(&forged), None)
        .await?;
    assert_eq!(status, 401);
    // Every route of docs/openapi.json exists and refuses a request without a token (an unknown route
    // would be 404, a wrong method 405).
    let doc = json(&std::fs::read_to_string(
        super::root().join("docs/openapi.json"),
    )?);
    let mut refused = 0;
    for (path, item) in doc["paths"].as_object().cloned().unwrap_or_default() {
        let path = path
            .replace("{room}", "lobby")
            .replace("{sid}", "PA_000000000001")
            .replace("{id}", "0000000000000000beef");
        for method in ["get", "post", "put", "delete"] {
            if item.get(method).is_some() {
                let (status, body) = server
                    .admin(&method.to_uppercase(), &path, None, Some("{}"))
                    .await?;
                assert_eq!(status, 401, "{method} {path}: {body}");
                refused += 1;
            }
        }
    }
    assert_eq!(refused, 35, "every documented route and method");
    // Nothing happened, and every refusal was counted.
    assert_eq!(server.http_get("/readyz").await?.0, 200);
    assert!(
        server
            .metric("chorus_admin_requests_total{result=\"unauthorized\"}")
            .await?
            >= 12.0
    );
    assert_eq!(
        server
            .metric("chorus_admin_requests_total{result=\"forbidden\"}")
            .await?,
        1.0
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_manages_rooms_and_participants() -> anyhow::Result<()> {
    let server = Server::start(&[]).await?;
    let admin = server.admin_token()?;
    let token = Some(admin.as_str());

    // Create a mixed room with its own settings; bad requests are typed 400s.
    let create = r#"{"name": "standup", "mode": "mix", "max_participants": 5, "empty_timeout_secs": 1,
                     "mix": {"bitrate_bps": 24000, "dtx": false}}"#;
    let (status, body) = server
        .admin("POST", "/admin/v1/rooms", token, Some(create))
        .await?;
    assert_eq!(status, 201, "{body}");
    let room = json(&body);
    assert_eq!(room["mode"], "mix");
    assert_eq!(room["slots"], 1);
    assert_eq!(room["origin"], "admin");
    assert_eq!(room["mix"]["bitrate_bps"], 24000);
    assert_eq!(room["mix"]["dtx"], false);
    assert_eq!(
        room["mix"]["fec"], true,
        "unset fields take the server's defaults"
    );
    let (status, body) = server
        .admin("POST", "/admin/v1/rooms", token, Some(create))
        .await?;
    assert_eq!(
        (status, json(&body)["error"]["code"].clone()),
        (409, "room_exists".into())
    );
    // Issue 11: the same name with other settings is a different, clear refusal.
    let other = r#"{"name": "standup", "mode": "forward", "slots": 2}"#;
    let (status, body) = server
        .admin("POST", "/admin/v1/rooms", token, Some(other))
        .await?;
    assert_eq!(
        (status, json(&body)["error"]["code"].clone()),
        (409, "room_settings_conflict".into())
    );
    for bad in [
        r#"{"name": "x", "mode": "sfu"}"#,
        r#"{"name": "x", "mode": "mix", "mix": {"bitrate_bps": 1}}"#,
        r#"{"name": "x", "slots": 40}"#,
        r#"{"name": "x", "mix": {"dtx": true}}"#,
        r#"{"name": "bad name"}"#,
        r#"{"name": "x", "colour": "blue"}"#,
        r#"{"name": "#,
    ] {
        let (status, body) = server
            .admin("POST", "/admin/v1/rooms", token, Some(bad))
            .await?;
        assert_eq!(status, 400, "{bad} -> {body}");
        assert!(json(&body)["error"]["message"].is_string());
    }
    let (status, body) = server
        .admin(
            "POST",
            "/admin/v1/rooms",
            token,
            Some(r#"{"name": "big", "mode": "forward", "slots": 5}"#),
        )
        .await?;
    assert_eq!(status, 201, "{body}");
    assert_eq!(json(&body)["mode"], "forward");

    // Two participants with media join the mixed room; a third joins an auto-created room.
    let (mut ada, joined) = join(&server, "standup", "ada").await?;
    assert_eq!(joined["room"]["mode"], "mix");
    assert_eq!(joined["room"]["max_participants"], 5);
    let mut ada_media = AudioClient::start(&mut ada, 1, 440.0, 0.3).await?;
    let (mut bob, joined) = join(&server, "standup", "bob").await?;
    let bob_sid = joined["participant"]["sid"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut bob_media = AudioClient::start(&mut bob, 1, 660.0, 0.3).await?;
    ada_media.wait_connected(SECONDS).await?;
    bob_media.wait_connected(SECONDS).await?;
    // In a mixed room each participant receives the room's audio on its first (only) receive slot.
    let deadline = Instant::now() + SECONDS;
    loop {
        let on_slot0 = |c: &AudioClient| {
            c.heard
                .lock()
                .map(|h| h.packets_by_slot.get(&0).copied().unwrap_or(0))
                .unwrap_or(0)
        };
        if on_slot0(&ada_media) > 25 && on_slot0(&bob_media) > 25 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no audio on slot 0 in the mixed room"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Speaker events work in mixed rooms too.
    let speakers = ada.expect("speakers", SECONDS).await?;
    assert!(
        speakers["speakers"]
            .as_array()
            .is_some_and(|s| !s.is_empty()),
        "{speakers}"
    );
    // The mixer runs and is measured.
    let deadline = Instant::now() + SECONDS * 2;
    for sample in [
        "chorus_mixer_ticks_total",
        "chorus_mixer_frames_decoded_total",
        "chorus_mixer_frames_encoded_total",
        "chorus_mixer_packets_sent_total",
        "chorus_mixer_tick_duration_seconds_count",
        "chorus_jitter_buffer_delay_seconds_count",
    ] {
        while server.metric(sample).await? == 0.0 {
            assert!(
                Instant::now() < deadline,
                "{sample} stays 0 in a mixed room"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let (_carol, joined) = join(&server, "lobby", "carol").await?;
    assert_eq!(joined["room"]["mode"], "forward");

    let (status, body) = server.admin("GET", "/admin/v1/rooms", token, None).await?;
    assert_eq!(status, 200);
    let rooms = json(&body)["rooms"].as_array().cloned().unwrap_or_default();
    let names: Vec<&str> = rooms.iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(names, ["big", "lobby", "standup"]);
    assert_eq!(rooms[1]["origin"], "join");
    assert_eq!(rooms[2]["num_participants"], 2);
    let (status, body) = server
        .admin("GET", "/admin/v1/rooms/standup/participants", token, None)
        .await?;
    assert_eq!(status, 200);
    let identities: Vec<String> = json(&body)["participants"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|p| p["identity"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(identities, ["ada", "bob"]);
    assert_eq!(server.metric("chorus_rooms{mode=\"mix\"}").await?, 1.0);
    assert_eq!(
        server.metric("chorus_participants{mode=\"mix\"}").await?,
        2.0
    );
    assert_eq!(server.metric("chorus_rooms{mode=\"forward\"}").await?, 2.0);
    assert!(server.metric("chorus_join_latency_seconds_count").await? >= 2.0);

    // Mute bob: everyone is told, and the server stops forwarding his audio.
    let path = format!("/admin/v1/rooms/standup/participants/{bob_sid}/mute");
    let (status, body) = server
        .admin("POST", &path, token, Some(r#"{"muted": true}"#))
        .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["muted"], true);
    let muted = ada.expect("participant_muted", SECONDS).await?;
    assert_eq!(
        (muted["sid"].as_str(), muted["muted"].as_bool()),
        (Some(bob_sid.as_str()), Some(true))
    );
    let not_publishing = "chorus_packets_dropped_total{reason=\"not_publishing\"}";
    let deadline = Instant::now() + SECONDS * 2;
    while server.metric(not_publishing).await? < 10.0 {
        assert!(Instant::now() < deadline, "muted audio is not dropped");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Kick bob: he is told and disconnected, ada sees him leave.
    let path = format!("/admin/v1/rooms/standup/participants/{bob_sid}");
    let (status, _) = server.admin("DELETE", &path, token, None).await?;
    assert_eq!(status, 204);
    let left = bob.expect("left", SECONDS).await?;
    assert_eq!(left["reason"], "kicked");
    assert!(bob.recv(SECONDS).await?.is_none(), "bob's socket is closed");
    let gone = ada.expect("participant_left", SECONDS).await?;
    assert_eq!(
        (gone["sid"].as_str(), gone["reason"].as_str()),
        (Some(bob_sid.as_str()), Some("kicked"))
    );
    let (status, _) = server.admin("DELETE", &path, token, None).await?;
    assert_eq!(status, 404);
    let (status, body) = server
        .admin("DELETE", "/admin/v1/rooms/nowhere", token, None)
        .await?;
    assert_eq!(
        (status, json(&body)["error"]["code"].clone()),
        (404, "room_not_found".into())
    );

    // Delete a forward room that someone is in: they are told, the room goes.
    let (mut dave, _) = join(&server, "big", "dave").await?;
    let (status, _) = server
        .admin("DELETE", "/admin/v1/rooms/big", token, None)
        .await?;
    assert_eq!(status, 204);
    assert_eq!(
        dave.expect("left", SECONDS).await?["reason"],
        "room_deleted"
    );

    // The mixed room outlives its last participant until its empty timeout (1 s), then goes.
    ada.send(serde_json::json!({"type": "leave"})).await?;
    ada.expect("left", SECONDS).await?;
    let deadline = Instant::now() + SECONDS * 2;
    loop {
        let (status, _) = server
            .admin("GET", "/admin/v1/rooms/standup", token, None)
            .await?;
        if status == 404 {
            break;
        }
        assert_eq!(status, 200);
        assert!(Instant::now() < deadline, "the empty room never closed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = server.admin("GET", "/admin/v1/drain", token, None).await?;
    assert_eq!(status, 200);
    let drain = json(&body);
    assert_eq!(drain["draining"], false);
    assert_eq!(drain["participants"], 1, "carol is still in lobby");
    ada_media.stop().await?;
    let _ = bob_media.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_room_mode_from_the_command_line_and_json_logs() -> anyhow::Result<()> {
    let server = Server::start(&["--room-mode", "mix", "--log-json"]).await?;
    let (mut ada, joined) = join(&server, "auto", "ada").await?;
    assert_eq!(joined["room"]["mode"], "mix");
    assert_eq!(joined["room"]["slots"], 1);
    assert_eq!(server.metric("chorus_rooms{mode=\"mix\"}").await?, 1.0);
    assert_eq!(
        server.metric("chorus_participants{mode=\"mix\"}").await?,
        1.0
    );
    ada.send(serde_json::json!({"type": "leave"})).await?;
    ada.expect("left", SECONDS).await?;
    // A room created by a join goes with its last participant.
    let deadline = Instant::now() + SECONDS;
    while server.metric("chorus_rooms{mode=\"mix\"}").await? != 0.0 {
        assert!(Instant::now() < deadline, "the room stayed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every log line is one JSON object; room events name their room.
    let log = server.log_tail();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "room started" && l["fields"]["room"] == "auto"),
        "{log}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "room finished"),
        "{log}"
    );
    Ok(())
}

/// What schemathesis found against docs/openapi.json, one regression each: integer-valued floats are
/// integers, the cross-field rules of a room are 400s (and the jitter order a 422), `null` is not a value,
/// 405 and 404 carry the JSON error shape (405 with `Allow`), an oversized body is 413, a body that is not
/// JSON by its content type 415.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_answers_as_its_openapi_document_says() -> anyhow::Result<()> {
    let server = Server::start(&[]).await?;
    let admin = server.admin_token()?;
    let token = Some(admin.as_str());
    let post = |body: String| {
        let server = &server;
        async move {
            server
                .admin("POST", "/admin/v1/rooms", token, Some(&body))
                .await
        }
    };

    let (status, body) = post(
        r#"{"name": "f", "mode": "forward", "slots": 4.0, "max_participants": 20.0,
            "empty_timeout_secs": 15.0}"#
            .into(),
    )
    .await?;
    assert_eq!(status, 201, "{body}");
    let room = json(&body);
    assert_eq!(
        (room["slots"].as_u64(), room["empty_timeout_secs"].as_u64()),
        (Some(4), Some(15))
    );
    let (status, body) = post(
        r#"{"name": "m", "mode": "mix", "slots": 1.0, "mix": {"bitrate_bps": 24000.0,
            "jitter_min_ms": 40.0, "jitter_max_ms": 400}}"#
            .into(),
    )
    .await?;
    assert_eq!(status, 201, "{body}");
    assert_eq!(json(&body)["mix"]["jitter_min_ms"], 40);

    for (bad, status_code, code) in [
        (
            r#"{"name": "x", "mode": "forward", "slots": 4.5}"#,
            400,
            "bad_request",
        ),
        (
            r#"{"name": "x", "mode": "forward", "slots": -1.0}"#,
            400,
            "bad_request",
        ),
        (
            r#"{"name": "x", "mode": "forward", "slots": 1e300}"#,
            400,
            "bad_request",
        ),
        (r#"{"name": "x", "slots": 4}"#, 400, "bad_request"),
        (r#"{"name": "x", "mix": {"dtx": true}}"#, 400, "bad_request"),
        (
            r#"{"name": "x", "mode": "forward", "mix": {}}"#,
            400,
            "bad_request",
        ),
        (
            r#"{"name": "x", "mode": "mix", "slots": 2}"#,
            400,
            "bad_request",
        ),
        (r#"{"name": "x", "mode": null}"#, 400, "bad_request"),
        (
            r#"{"name": "x", "mode": "mix", "mix": {"jitter_max_ms": null}}"#,
            400,
            "bad_request",
        ),
        (
            r#"{"name": "x", "mode": "mix", "mix": {"jitter_min_ms": 1001}}"#,
            400,
            "bad_request",
        ),
        (
            r#"{"name": "x", "mode": "mix", "mix": {"jitter_min_ms": 300, "jitter_max_ms": 100}}"#,
            422,
            "invalid_settings",
        ),
        // The default jitter_max_ms is 200.
        (
            r#"{"name": "x", "mode": "mix", "mix": {"jitter_min_ms": 300}}"#,
            422,
            "invalid_settings",
        ),
    ] {
        let (status, body) = post(bad.into()).await?;
        assert_eq!(
            (status, json(&body)["error"]["code"].as_str()),
            (status_code, Some(code)),
            "{bad}: {body}"
        );
    }

    // 413 for a body over 64 KiB, with the JSON error shape.
    let big = format!(r#"{{"name": "{}"}}"#, "x".repeat(70_000));
    let (status, body) = post(big).await?;
    assert_eq!(
        (status, json(&body)["error"]["code"].as_str()),
        (413, Some("payload_too_large")),
        "{body}"
    );

    // 415 for a body without the JSON content type.
    let auth = format!("Bearer {admin}");
    let (status, body) = chorus_tests::http_request(
        server.http,
        "POST",
        "/admin/v1/rooms",
        &[
            ("Authorization", auth.as_str()),
            ("Content-Type", "text/plain"),
        ],
        None,
    )
    .await?;
    assert_eq!(
        (status, json(&body)["error"]["code"].as_str()),
        (415, Some("unsupported_media_type")),
        "{body}"
    );

    // 405 with the JSON error shape and Allow; 404 for an unknown path.
    let (status, body) = server
        .admin("PUT", "/admin/v1/rooms", token, Some("{}"))
        .await?;
    assert_eq!(
        (status, json(&body)["error"]["code"].as_str()),
        (405, Some("method_not_allowed")),
        "{body}"
    );
    let (status, body) = server
        .admin("GET", "/admin/v1/nowhere", token, None)
        .await?;
    assert_eq!(
        (status, json(&body)["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    Ok(())
}
