use super::*;

#[test]
fn printed_configuration_has_no_secrets() {
    // Issue 10: --print-config printed the API secrets.
    let c = Config::from_toml(
        "[auth]\ndev_mode = false\n\
         api_keys = { prod = \"0123456789abcdef0123456789abcdef\" }\n\
         [webhooks]\nurls = [\"https://hook:s3cr3t@example.com/x?a=b\", \"http://example.com/y@z\"]\n\
         [turn]\nurls = [\"turn:turn.example.com\"]\nsecret = \"turn-secret-turn-secret\"\n",
    )
    .unwrap();
    c.validate().unwrap();
    let printed = toml::to_string_pretty(&c.redacted()).unwrap();
    assert!(!printed.contains("0123456789abcdef"), "{printed}");
    assert!(!printed.contains("turn-secret"), "{printed}");
    assert!(printed.contains("secret = \"<redacted>\""), "{printed}");
    assert_eq!(c.turn.secret, "turn-secret-turn-secret");
    assert!(!printed.contains("s3cr3t"), "{printed}");
    assert!(printed.contains("prod = \"<redacted>\""), "{printed}");
    assert!(
        printed.contains("https://<redacted>@example.com/x?a=b"),
        "{printed}"
    );
    assert!(printed.contains("http://example.com/y@z"), "{printed}");
    // The configuration itself keeps its secrets.
    assert_eq!(
        c.auth.signing_key().unwrap().1,
        "0123456789abcdef0123456789abcdef"
    );
}

#[test]
fn embedded_default_is_valid_loopback_dev_mode() {
    let c = Config::default();
    c.validate().unwrap();
    assert_eq!(c.http.listen.to_string(), "127.0.0.1:7880");
    assert!(c.auth.dev_mode);
    assert_eq!(c.auth.signing_key().unwrap().0, DEV_API_KEY);
}

#[test]
fn file_then_env_override() {
    let mut c = Config::from_toml(
        "[media]\nport_start = 9000\nworkers = 2\n[room]\nslots = 5\n[auth]\ndev_mode = false\n\
         api_keys = { prod = \"0123456789abcdef0123456789abcdef\" }\n",
    )
    .unwrap();
    assert_eq!(c.media.port_start, 9000);
    assert_eq!(c.room.slots, 5);
    c.validate().unwrap();
    let env = |k: &str| match k {
        "CHORUS_ROOM_SLOTS" => Some("4".to_owned()),
        "CHORUS_PUBLIC_IP" => Some("203.0.113.7".to_owned()),
        _ => None,
    };
    c.apply_env(env).unwrap();
    assert_eq!(c.room.slots, 4);
    assert_eq!(c.media.candidate_addr(1).to_string(), "203.0.113.7:9001");
    assert_eq!(c.auth.signing_key().unwrap().0, "prod");
    // A configured key wins over the development key, whatever the names' order.
    c.auth.dev_mode = true;
    assert_eq!(c.auth.signing_key().unwrap().0, "prod");
    // Issue 10: the published development key is never accepted next to real keys.
    assert!(!c.auth.dev_mode_active());
    assert!(!c.auth.effective_keys().contains_key(DEV_API_KEY));
    assert_eq!(c.auth.effective_keys().len(), 1);
}

#[test]
fn ice_tcp_is_on_by_default_on_the_udp_port_numbers() {
    let c = Config::default();
    assert!(c.media.tcp_enabled);
    assert_eq!(c.media.tcp_port(0), 7882);
    assert_eq!(c.media.tcp_port(3), 7885);
    let mut c = Config::from_toml(
        "[media]\nworkers = 2\ntcp_port_start = 8443\ntcp_stun_timeout_ms = 1000\n",
    )
    .unwrap();
    c.validate().unwrap();
    assert_eq!(c.media.tcp_port(1), 8444);
    c.apply_env(|k| (k == "CHORUS_MEDIA_TCP_ENABLED").then(|| "false".to_owned()))
        .unwrap();
    assert!(!c.media.tcp_enabled);
    c.media.tcp_port_start = Some(0);
    assert!(c.validate().is_err());
    c.media.tcp_port_start = Some(u16::MAX);
    assert!(
        c.validate().is_err(),
        "the second worker's port does not fit"
    );
    c.media.tcp_port_start = None;
    c.media.tcp_stun_timeout_ms = 0;
    assert!(c.validate().is_err());
}

#[test]
fn connection_limits_are_validated() {
    let mut c = Config::from_toml(
        "[http]\nheader_timeout_ms = 500\nmax_connections = 100\nmax_connections_per_ip = 10\n",
    )
    .unwrap();
    c.validate().unwrap();
    assert_eq!(c.http.max_connections_per_ip, 10);
    c.http.max_connections_per_ip = 101;
    assert!(c
        .validate()
        .unwrap_err()
        .to_string()
        .contains("max_connections"));
    c.http.max_connections_per_ip = 0;
    assert!(c.validate().is_err());
    c.http.max_connections_per_ip = 10;
    c.http.header_timeout_ms = 0;
    assert!(c
        .validate()
        .unwrap_err()
        .to_string()
        .contains("header_timeout_ms"));
    c.http.header_timeout_ms = 500;
    c.http.listen_backlog = 0;
    assert!(c
        .validate()
        .unwrap_err()
        .to_string()
        .contains("listen_backlog"));
    let c = Config::default();
    assert_eq!(c.http.header_timeout_ms, 10_000);
    assert_eq!(c.http.listen_backlog, 4096);
    assert_eq!(c.session.join_deadline_ms, 10_000);
    assert_eq!(c.room.kick_ban_secs, 300);
}

#[test]
fn dev_mode_on_a_network_listener_needs_the_unsafe_flag() {
    let mut c = Config::default();
    c.http.listen = "0.0.0.0:7880".parse().unwrap();
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("refusing development mode"), "{e}");
    c.http.listen = "127.0.0.2:7880".parse().unwrap();
    c.validate().unwrap();
    c.http.listen = "[::1]:7880".parse().unwrap();
    c.validate().unwrap();
    c.http.listen = "0.0.0.0:7880".parse().unwrap();
    c.apply_env(|k| (k == "CHORUS_UNSAFE_DEV_MODE_ON_NETWORK").then(|| "true".into()))
        .unwrap();
    c.validate().unwrap();
    // Real keys turn development mode off, so a network listener is fine without the flag.
    let mut c = Config::default();
    c.http.listen = "0.0.0.0:7880".parse().unwrap();
    c.auth
        .api_keys
        .insert("prod".into(), "0123456789abcdef0123456789abcdef".into());
    c.validate().unwrap();
    assert!(!c.auth.dev_mode_active());
}

#[test]
fn room_modes_and_mix_settings() {
    let mut c = Config::from_toml(
        "[room]\ndefault_mode = \"mix\"\n[room.mix]\nbitrate_bps = 24000\ndtx = false\n",
    )
    .unwrap();
    c.validate().unwrap();
    assert_eq!(c.room.default_mode, RoomMode::Mix);
    assert_eq!(c.room.mix.bitrate_bps, 24_000);
    assert!(!c.room.mix.dtx);
    assert_eq!(c.room.mix.complexity, MixSettings::default().complexity);
    c.apply_env(|k| (k == "CHORUS_ROOM_MODE").then(|| "forward".into()))
        .unwrap();
    assert_eq!(c.room.default_mode, RoomMode::Forward);
    assert!(c
        .apply_env(|k| (k == "CHORUS_ROOM_MODE").then(|| "sfu".into()))
        .is_err());
    // The media core validates the mixer settings.
    c.room.mix.bitrate_bps = 1;
    assert!(c.validate().unwrap_err().to_string().contains("bitrate"));
}

#[test]
fn webhook_settings() {
    let mut c = Config::default();
    c.apply_env(|k| {
        (k == "CHORUS_WEBHOOK_URLS").then(|| "http://127.0.0.1:9/a, https://example.test/b".into())
    })
    .unwrap();
    assert_eq!(c.webhooks.urls.len(), 2);
    c.validate().unwrap();
    c.webhooks.urls.push("ftp://x".into());
    assert!(c.validate().is_err());
    let mut c = Config::default();
    c.webhooks.api_key = Some("nobody".into());
    assert!(c.validate().is_err());
}

#[test]
fn invalid_settings_are_refused_with_reasons() {
    let mut c = Config::default();
    c.room.slots = 17;
    assert!(c.validate().is_err());
    let mut c = Config::default();
    c.auth.dev_mode = false;
    assert!(c.validate().unwrap_err().to_string().contains("API keys"));
    assert!(Config::from_toml("[media]\nbogus = 1\n").is_err());
    let mut c = Config::default();
    assert!(c
        .apply_env(|k| (k == "CHORUS_WORKERS").then(|| "many".into()))
        .is_err());
    // A media setting out of range names itself in the error.
    let refused = |set: &dyn Fn(&mut MediaConfig), name: &str| {
        let mut c = Config::default();
        set(&mut c.media);
        let error = c
            .validate()
            .expect_err("an out-of-range setting is refused")
            .to_string();
        assert!(error.contains(name), "{error}");
    };
    for v in [0, 19, 10_001] {
        refused(&|m| m.stale_rtp_ms = v, "stale_rtp_ms");
    }
    for v in [1, 99, 100_001] {
        refused(&|m| m.worker_slice_us = v, "worker_slice_us");
    }
    for worker_slice_us in [0, 100, 100_000] {
        let mut c = Config::default();
        c.media.worker_slice_us = worker_slice_us;
        c.validate()
            .expect("0 (the kernel's default) and 0.1-100 ms are valid slices");
    }
    for v in [21, 100, 255] {
        refused(
            &|m| m.loss_feedback_max_percent = v,
            "loss_feedback_max_percent",
        );
    }
    for v in [0, 99, 10_001] {
        refused(&|m| m.speakers_interval_ms = v, "speakers_interval_ms");
    }
    for loss_feedback_max_percent in [0, 10, 20] {
        let mut c = Config::default();
        c.media.loss_feedback_max_percent = loss_feedback_max_percent;
        c.validate()
            .expect("0 (off) to 20 % are valid loss feedback caps");
    }
}

#[test]
fn development_mode_offers_a_lan_candidate_unless_turned_off() {
    let mut c = Config::default();
    assert!(c.media.dev_lan_candidate);
    c.apply_env(|k| (k == "CHORUS_MEDIA_DEV_LAN_CANDIDATE").then(|| "false".to_owned()))
        .unwrap();
    assert!(!c.media.dev_lan_candidate);
    let c = Config::from_toml("[media]\ndev_lan_candidate = false\n").unwrap();
    assert!(!c.media.dev_lan_candidate);
}

#[test]
fn turn_section_env_and_validation() {
    let mut c = Config::default();
    assert!(!c.turn.enabled());
    c.apply_env(|k| match k {
        "CHORUS_TURN_URLS" => {
            Some("turn:192.0.2.1:3478?transport=udp, turns:turn.example.com:443".into())
        }
        "CHORUS_TURN_SECRET" => Some("a-long-enough-turn-secret".into()),
        _ => None,
    })
    .unwrap();
    assert_eq!(
        c.turn.urls,
        [
            "turn:192.0.2.1:3478?transport=udp",
            "turns:turn.example.com:443"
        ]
    );
    c.validate().unwrap();
    c.turn.secret = "short-secret".into();
    let error = c.validate().unwrap_err().to_string();
    assert!(error.contains("turn.secret"), "{error}");
    assert!(!error.contains("short-secret"), "{error}");
    let bad = Config::from_toml(
        "[turn]\nurls = [\"stun:192.0.2.1\"]\nsecret = \"a-long-enough-turn-secret\"\n",
    )
    .unwrap();
    assert!(bad
        .validate()
        .unwrap_err()
        .to_string()
        .contains("turn.urls"));
    assert!(Config::from_toml("[turn]\nttl = 5\n").is_err());
}

#[test]
fn broadcast_settings_have_defaults_and_limits() {
    let c = Config::from_toml("[broadcast]\npage_ms = 60\npublic = true\n").expect("valid TOML");
    assert_eq!(c.broadcast.page_ms, 60);
    assert!(c.broadcast.public);
    assert_eq!(c.broadcast.listener_queue_pages, 30, "the default stays");
    assert_eq!(c.broadcast.pages_per_write(), 6, "400 ms of 60 ms pages");
    c.validate().expect("valid");
    let every_page = Config::from_toml(
        "[broadcast]
listeners_write_ms = 1
",
    );
    assert!(every_page.is_err(), "unknown fields are refused");
    let c = Config::from_toml(
        "[broadcast]
listener_write_ms = 20
",
    )
    .expect("valid TOML");
    assert_eq!(c.broadcast.pages_per_write(), 1, "never less than a page");
    for bad in [
        "listener_write_ms = 10",
        "listener_write_ms = 3000",
        "listener_queue_pages = 3",
        "page_ms = 50",
        "page_ms = 0",
        "page_ms = 1020",
        "listener_queue_pages = 1",
        "icy_metaint_bytes = 10",
        "max_listeners = 0",
        "listener_send_buffer_bytes = 100",
    ] {
        let c = Config::from_toml(&format!("[broadcast]\n{bad}\n")).expect("valid TOML");
        let err = c.validate().expect_err(bad).to_string();
        assert!(err.contains("broadcast."), "{bad}: {err}");
    }
}

#[test]
fn spatial_rooms_by_configuration() {
    assert_eq!(Config::default().room.spatial, None);
    let mut c = Config::from_toml(
        "[room.spatial]\naudible_distance = 50.0\nconversational_distance = 2.0\nfade_model = \"linear\"\nmax_audible = 12\n",
    )
    .unwrap();
    c.validate().unwrap();
    let spatial = c.room.spatial.expect("a spatial section");
    assert_eq!(spatial.audible_distance, 50.0);
    assert_eq!(spatial.fade_model, vocab::FadeModel::Linear);
    assert_eq!(spatial.max_audible, 12);
    assert_eq!(
        spatial.fade_intensity, 1.0,
        "absent fields take the defaults"
    );
    c.room.spatial = Some(signaling::media::SpatialSettings {
        max_audible: 0,
        ..spatial
    });
    assert!(c
        .validate()
        .unwrap_err()
        .to_string()
        .contains("max_audible"));
    assert!(Config::from_toml("[room.spatial]\nrange = 5\n").is_err());
}

/// The `chorus.toml` blocks of the Kubernetes ConfigMaps (`chorus.toml: |` then lines indented deeper).
fn configmap_tomls(manifest: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut lines = manifest.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(key_indent) = line.find("chorus.toml: |") else {
            continue;
        };
        let mut block = String::new();
        while let Some(next) = lines.peek() {
            let indent = next.len() - next.trim_start().len();
            if !next.trim().is_empty() && indent <= key_indent {
                break;
            }
            block.push_str(next.get(key_indent + 2..).unwrap_or(""));
            block.push('\n');
            lines.next();
        }
        blocks.push(block);
    }
    blocks
}

#[test]
fn the_shipped_deploy_configurations_are_valid() {
    let deploy = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");
    // What the manifests and the systemd unit's environment file provide.
    let env = |k: &str| match k {
        "CHORUS_API_KEY" => Some("prod".to_owned()),
        "CHORUS_API_SECRET" => Some("0123456789abcdef0123456789abcdef0123456789abcdef".to_owned()),
        "CHORUS_PUBLIC_IP" => Some("203.0.113.7".to_owned()),
        "CHORUS_TURN_SECRET" => Some("0123456789abcdef0123456789abcdef".to_owned()),
        "CHORUS_CLUSTER_NODE_ID" => Some("chorus-7d9f8-abcde".to_owned()),
        "CHORUS_CLUSTER_PUBLIC_URL" => Some("ws://203.0.113.7:7880/ws".to_owned()),
        "CHORUS_CLUSTER_ADMIN_URL" => Some("http://203.0.113.7:7880".to_owned()),
        "CHORUS_CLUSTER_REDIS_URL" => {
            Some("redis://chorus-redis.chorus.svc.cluster.local:6379/0".to_owned())
        }
        "CHORUS_CLUSTER_TRUNK_LISTEN" => Some("0.0.0.0:7881".to_owned()),
        "CHORUS_CLUSTER_TRUNK_PUBLIC_ADDR" => Some("203.0.113.7:7881".to_owned()),
        "CHORUS_CLUSTER_TRUNK_SECRET" => Some("0123456789abcdef".repeat(4)),
        _ => None,
    };
    let mut configs = vec![(
        "chorus.toml".to_owned(),
        std::fs::read_to_string(format!("{deploy}/chorus.toml"))
            .expect("deploy/chorus.toml exists"),
    )];
    for manifest in ["chorus.yaml", "cluster.yaml"] {
        let text = std::fs::read_to_string(format!("{deploy}/kubernetes/{manifest}"))
            .expect("the Kubernetes manifests exist");
        let blocks = configmap_tomls(&text);
        assert_eq!(blocks.len(), 1, "{manifest}: one chorus.toml ConfigMap");
        configs.extend(blocks.into_iter().map(|b| (manifest.to_owned(), b)));
    }
    for (name, text) in configs {
        let mut c = Config::from_toml(&text).unwrap_or_else(|e| panic!("{name}: {e}\n{text}"));
        c.apply_env(env).unwrap_or_else(|e| panic!("{name}: {e}"));
        c.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            !c.auth.dev_mode_active(),
            "{name}: production configs have no dev mode"
        );
    }
    let cluster = std::fs::read_to_string(format!("{deploy}/kubernetes/cluster.yaml"))
        .expect("the cluster manifest exists");
    let block = &configmap_tomls(&cluster)[0];
    assert!(
        block.contains("\n[cluster]\n") && block.ends_with("json = true\n"),
        "{block}"
    );
    let mut c = Config::from_toml(block).expect("parsed above");
    c.apply_env(env).expect("applied above");
    assert!(c.cluster.enabled(), "cluster.yaml's nodes join the cluster");
    for var in [
        "CHORUS_CLUSTER_TRUNK_LISTEN",
        "CHORUS_CLUSTER_TRUNK_PUBLIC_ADDR",
        "CHORUS_CLUSTER_TRUNK_SECRET",
    ] {
        assert!(
            cluster.contains(&format!("- name: {var}\n")),
            "cluster.yaml sets {var}: rooms may span its nodes"
        );
    }
    assert!(c.cluster.room_node_participants < c.cluster.capacity_participants as usize);
}

#[test]
fn the_cluster_timings_come_from_the_environment_and_are_checked() {
    let env = |k: &str| match k {
        "CHORUS_CLUSTER_REDIS_URL" => Some("redis://127.0.0.1:6379/".to_owned()),
        "CHORUS_CLUSTER_HEARTBEAT_MS" => Some("500".to_owned()),
        "CHORUS_CLUSTER_NODE_TTL_MS" => Some("1500".to_owned()),
        _ => None,
    };
    let mut c = Config::from_toml("").expect("an empty config");
    c.apply_env(env).expect("applied");
    assert_eq!((c.cluster.heartbeat_ms, c.cluster.node_ttl_ms), (500, 1500));
    c.validate().expect("a TTL of three heartbeats is valid");
    let short = |k: &str| match k {
        "CHORUS_CLUSTER_NODE_TTL_MS" => Some("700".to_owned()),
        _ => env(k),
    };
    let mut c = Config::from_toml("").expect("an empty config");
    c.apply_env(short).expect("applied");
    assert!(c.validate().is_err(), "a TTL under two heartbeats");
}
