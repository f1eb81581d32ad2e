use super::*;

const NOW: u64 = 1_700_000_000;
const SECRET: &str = "0123456789abcdef0123456789abcdef";

fn keys() -> ApiKeys {
    ApiKeys::new([
        ("APIkey1", SECRET),
        ("APIkey2", "another-secret-that-is-long-enough!"),
    ])
    .expect("valid keys")
}

fn claims() -> Claims {
    Claims {
        iss: "APIkey1".into(),
        sub: "ada".into(),
        room: "lobby".into(),
        exp: NOW + 3600,
        nbf: None,
        iat: Some(NOW),
        name: Some("Ada".into()),
        can_publish: true,
        can_subscribe: true,
        moderator: false,
        ptt: false,
        team: None,
        shout: false,
    }
}

/// Unpadded base64url, as JWTs use it.
pub(crate) fn b64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
        }
    }
    out
}

/// A token with an arbitrary header and payload and a garbage signature.
pub(crate) fn forged(header: &str, payload: &serde_json::Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        b64(header.as_bytes()),
        b64(payload.to_string().as_bytes())
    )
}

#[test]
fn round_trips() {
    let token = create_token("APIkey1", SECRET.as_bytes(), &claims()).expect("signs");
    assert_eq!(verify_token(&token, &keys(), NOW), Ok(claims()));
    let via_keys = keys().sign("APIkey2", &claims()).expect("signs");
    let verified = verify_token(&via_keys, &keys(), NOW).expect("verifies");
    assert_eq!(verified.iss, "APIkey2");
}

#[test]
fn defaults_for_optional_claims() {
    let payload = serde_json::json!({"iss": "k", "sub": "ada", "room": "lobby", "exp": NOW + 5});
    let claims: Claims = serde_json::from_value(payload).expect("parses");
    assert!(claims.can_publish && claims.can_subscribe);
    assert_eq!((claims.nbf, claims.iat, claims.name), (None, None, None));
    let fractional: Claims = serde_json::from_value(
        serde_json::json!({"iss": "k", "sub": "a", "room": "r", "exp": 1.5e9, "nbf": 7.9}),
    )
    .expect("parses");
    assert_eq!((fractional.exp, fractional.nbf), (1_500_000_000, Some(7)));
    assert!(serde_json::from_value::<Claims>(
        serde_json::json!({"iss": "k", "sub": "a", "room": "r", "exp": -1})
    )
    .is_err());
}

#[test]
fn expiry_uses_the_given_clock() {
    let token = create_token("APIkey1", SECRET.as_bytes(), &claims()).expect("signs");
    assert!(verify_token(&token, &keys(), NOW + 3599).is_ok());
    assert_eq!(
        verify_token(&token, &keys(), NOW + 3600),
        Err(AuthError::Expired)
    );
    assert_eq!(AuthError::Expired.code(), ErrorCode::TokenExpired);
}

#[test]
fn not_before_with_leeway() {
    let c = Claims {
        nbf: Some(NOW + 100),
        ..claims()
    };
    let token = create_token("APIkey1", SECRET.as_bytes(), &c).expect("signs");
    assert_eq!(
        verify_token(&token, &keys(), NOW),
        Err(AuthError::NotYetValid)
    );
    assert!(verify_token(&token, &keys(), NOW + 100 - NBF_LEEWAY_SECS).is_ok());
    assert_eq!(AuthError::NotYetValid.code(), ErrorCode::InvalidToken);
}

#[test]
fn refuses_bad_signatures_and_unknown_keys() {
    let wrong = create_token(
        "APIkey1",
        b"not-the-right-secret-not-the-right-secret",
        &claims(),
    )
    .expect("signs");
    assert_eq!(
        verify_token(&wrong, &keys(), NOW),
        Err(AuthError::BadSignature)
    );
    let unknown = create_token("nobody", SECRET.as_bytes(), &claims()).expect("signs");
    assert_eq!(
        verify_token(&unknown, &keys(), NOW),
        Err(AuthError::UnknownKey)
    );
    assert_eq!(keys().sign("nobody", &claims()), Err(AuthError::UnknownKey));

    // A valid token with one payload byte changed.
    let good = create_token("APIkey1", SECRET.as_bytes(), &claims()).expect("signs");
    let parts: Vec<&str> = good.split('.').collect();
    let tampered_payload = b64(serde_json::to_string(&Claims {
        room: "other".into(),
        ..claims()
    })
    .expect("json")
    .as_bytes());
    let tampered = format!("{}.{}.{}", parts[0], tampered_payload, parts[2]);
    assert_eq!(
        verify_token(&tampered, &keys(), NOW),
        Err(AuthError::BadSignature)
    );
    for err in [AuthError::BadSignature, AuthError::UnknownKey] {
        assert_eq!(err.code(), ErrorCode::InvalidToken);
    }
}

#[test]
fn refuses_other_algorithms() {
    let payload = serde_json::to_value(claims()).expect("json");
    let none = forged(r#"{"alg":"none","typ":"JWT"}"#, &payload, "");
    assert!(matches!(
        verify_token(&none, &keys(), NOW),
        Err(AuthError::Malformed | AuthError::UnsupportedAlgorithm)
    ));
    for alg in ["HS384", "HS512", "RS256", "ES256", "EdDSA"] {
        let token = forged(
            &format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#),
            &payload,
            "c2ln",
        );
        assert_eq!(
            verify_token(&token, &keys(), NOW),
            Err(AuthError::UnsupportedAlgorithm),
            "{alg}"
        );
    }
    // HS512 really signed with the right secret is still refused.
    let hs512 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS512),
        &claims(),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("signs");
    assert_eq!(
        verify_token(&hs512, &keys(), NOW),
        Err(AuthError::UnsupportedAlgorithm)
    );
}

#[test]
fn refuses_garbage() {
    for token in [
        "",
        "garbage",
        "a.b",
        "a.b.c",
        "a.b.c.d",
        "....",
        "eyJhbGciOiJIUzI1NiIs...",
    ] {
        let err = verify_token(token, &keys(), NOW).expect_err(token);
        assert_eq!(err.code(), ErrorCode::InvalidToken, "{token}: {err}");
    }
    let header = r#"{"alg":"HS256","typ":"JWT"}"#;
    let not_json = format!("{}.{}.c2ln", b64(header.as_bytes()), b64(b"not json"));
    assert_eq!(
        verify_token(&not_json, &keys(), NOW),
        Err(AuthError::Malformed)
    );
}

#[test]
fn refuses_missing_or_invalid_claims() {
    let sign = |payload: serde_json::Value| {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &payload,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("signs")
    };
    let full = serde_json::to_value(claims()).expect("json");
    for missing in ["sub", "room", "exp"] {
        let mut payload = full.clone();
        payload.as_object_mut().expect("object").remove(missing);
        assert!(
            matches!(
                verify_token(&sign(payload), &keys(), NOW),
                Err(AuthError::InvalidClaims(_))
            ),
            "{missing}"
        );
    }
    let mut no_iss = full.clone();
    no_iss.as_object_mut().expect("object").remove("iss");
    assert!(matches!(
        verify_token(&sign(no_iss), &keys(), NOW),
        Err(AuthError::InvalidClaims(_))
    ));
    for (field, value) in [
        ("exp", serde_json::json!("soon")),
        ("can_publish", serde_json::json!("yes")),
        ("iss", serde_json::json!(5)),
        ("room", serde_json::json!("has space")),
        ("room", serde_json::json!("")),
        ("room", serde_json::json!("r".repeat(129))),
        ("room", serde_json::json!("caf\u{e9}")),
        ("sub", serde_json::json!("")),
        ("sub", serde_json::json!("s".repeat(129))),
        ("name", serde_json::json!("n".repeat(65))),
        // Issue 10: control and bidi-override characters in identities and display names.
        ("sub", serde_json::json!("ada\n{\"level\":\"ERROR\"}")),
        ("sub", serde_json::json!("ada\u{202E}nimda")),
        ("sub", serde_json::json!("ada\u{0085}")),
        ("name", serde_json::json!("Ada\u{2066}x")),
        ("name", serde_json::json!("Ada\u{7}")),
        ("name", serde_json::json!("Ada\u{2028}Bob")),
    ] {
        let mut payload = full.clone();
        payload[field] = value;
        let err = verify_token(&sign(payload), &keys(), NOW).expect_err(field);
        assert!(
            matches!(err, AuthError::InvalidClaims(_)),
            "{field}: {err:?}"
        );
        assert_eq!(err.code(), ErrorCode::InvalidToken);
    }
}

#[test]
fn room_names() {
    for ok in ["lobby", "a", "A-b_c.9", &"r".repeat(128)] {
        assert!(is_valid_room_name(ok), "{ok}");
    }
    for bad in ["", "a b", "a/b", "é", &"r".repeat(129), ".", "..", "..."] {
        assert!(!is_valid_room_name(bad), "{bad}");
    }
    let invalid = Claims {
        room: "no spaces".into(),
        ..claims()
    };
    assert!(matches!(
        create_token("APIkey1", SECRET.as_bytes(), &invalid),
        Err(AuthError::InvalidClaims(_))
    ));
}

#[test]
fn api_key_validation() {
    assert_eq!(
        ApiKeys::new([("", SECRET)]).err(),
        Some(ApiKeyError::EmptyKey)
    );
    assert_eq!(
        ApiKeys::new([("k", "")]).err(),
        Some(ApiKeyError::EmptySecret("k".into()))
    );
    assert_eq!(
        ApiKeys::new([("k", SECRET), ("k", SECRET)]).err(),
        Some(ApiKeyError::Duplicate("k".into()))
    );
    let keys = ApiKeys::new([("short", "devsecret"), ("long", SECRET)])
        .expect("short secrets are allowed");
    assert_eq!(keys.weak_keys(), vec!["short"]);
    assert_eq!(keys.len(), 2);
    let debug = format!("{keys:?}");
    assert!(
        !debug.contains("devsecret") && !debug.contains(SECRET),
        "{debug}"
    );
    assert_eq!(
        create_token("k", b"", &claims()),
        Err(AuthError::EmptySecret)
    );
}
