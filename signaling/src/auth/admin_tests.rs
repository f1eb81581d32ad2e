use super::*;

const NOW: u64 = 1_700_000_000;
const SECRET: &str = "0123456789abcdef0123456789abcdef";

fn keys() -> ApiKeys {
    ApiKeys::new([("ops", SECRET)]).expect("valid keys")
}

fn admin(exp: u64) -> AdminClaims {
    AdminClaims {
        iss: String::new(),
        sub: "operator".into(),
        exp,
        nbf: None,
        iat: Some(NOW),
        admin: true,
    }
}

#[test]
fn admin_tokens_verify_and_carry_the_grant() {
    let token = create_admin_token("ops", SECRET, &admin(NOW + 60)).expect("signs");
    let claims = verify_admin_token(&token, &keys(), NOW).expect("verifies");
    assert_eq!(claims.iss, "ops");
    assert!(claims.admin);
    assert_eq!(
        verify_admin_token(&token, &keys(), NOW + 60),
        Err(AuthError::Expired)
    );
    let forged = create_admin_token("ops", "x".repeat(32), &admin(NOW + 60)).expect("signs");
    assert_eq!(
        verify_admin_token(&forged, &keys(), NOW),
        Err(AuthError::BadSignature)
    );
}

#[test]
fn an_admin_subject_must_be_a_short_printable_identity() {
    // Issue 10: the admin API logs the subject; empty, 10,000 characters or a newline were accepted.
    let header = Header::new(Algorithm::HS256);
    for sub in [
        String::new(),
        "o".repeat(10_000),
        "ops\nadmin request subject=root".into(),
        "ops\u{202E}toor".into(),
    ] {
        let claims = serde_json::json!({"iss": "ops", "sub": sub, "exp": NOW + 60, "admin": true});
        let token =
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(SECRET.as_ref()))
                .expect("signs");
        assert!(
            matches!(
                verify_admin_token(&token, &keys(), NOW),
                Err(AuthError::InvalidClaims(_))
            ),
            "{sub:?}"
        );
        let claims = AdminClaims {
            sub,
            ..admin(NOW + 60)
        };
        assert!(create_admin_token("ops", SECRET, &claims).is_err());
    }
    let token = create_admin_token("ops", SECRET, &admin(NOW + 60)).expect("signs");
    assert!(verify_admin_token(&token, &keys(), NOW).is_ok());
}

#[test]
fn access_and_admin_tokens_are_not_interchangeable() {
    let access = Claims {
        iss: "ops".into(),
        sub: "ada".into(),
        room: "lobby".into(),
        exp: NOW + 60,
        nbf: None,
        iat: None,
        name: None,
        can_publish: true,
        can_subscribe: true,
        moderator: false,
        ptt: false,
        team: None,
        shout: false,
    };
    let access = create_token("ops", SECRET, &access).expect("signs");
    assert_eq!(
        verify_admin_token(&access, &keys(), NOW),
        Err(AuthError::NotAdmin)
    );
    let admin = create_admin_token("ops", SECRET, &admin(NOW + 60)).expect("signs");
    assert!(matches!(
        verify_token(&admin, &keys(), NOW),
        Err(AuthError::InvalidClaims(_))
    ));
    // A token that says admin: false is refused even with a valid signature.
    let header = Header::new(Algorithm::HS256);
    let claims = serde_json::json!({"iss": "ops", "sub": "x", "exp": NOW + 60, "admin": false});
    let token = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(SECRET.as_ref()))
        .expect("signs");
    assert_eq!(
        verify_admin_token(&token, &keys(), NOW),
        Err(AuthError::NotAdmin)
    );
}

#[test]
fn minted_tokens_verify_now_and_expire_after_their_ttl() {
    let now = unix_now();
    assert!(now > NOW, "the system clock reads after November 2023");
    let token = mint_token("ops", SECRET, "lobby", "ada", 600).expect("signs");
    let claims = verify_token(&token, &keys(), now).expect("verifies");
    assert_eq!(
        (claims.iss.as_str(), claims.room.as_str()),
        ("ops", "lobby")
    );
    assert_eq!((claims.sub.as_str(), claims.name), ("ada", None));
    assert!(claims.can_publish && claims.can_subscribe);
    let iat = claims.iat.expect("minted tokens carry iat");
    assert!(iat >= now && iat <= now + 5, "iat {iat} is now ({now})");
    assert_eq!(claims.exp, iat + 600);
    assert_eq!(
        verify_token(&token, &keys(), iat + 600),
        Err(AuthError::Expired)
    );

    let token = mint_admin_token("ops", SECRET, "operator", 60).expect("signs");
    let claims = verify_admin_token(&token, &keys(), now).expect("verifies");
    assert_eq!(
        (claims.iss.as_str(), claims.sub.as_str()),
        ("ops", "operator")
    );
    assert!(claims.admin);
    assert_eq!(
        claims.exp,
        claims.iat.expect("minted tokens carry iat") + 60
    );
}

#[test]
fn a_node_signs_short_admin_tokens_with_its_first_key() {
    let keys = ApiKeys::new([("zz", SECRET), ("ops", SECRET)]).expect("valid keys");
    let token = keys.sign_admin("node-a", 10).expect("signs");
    let claims = verify_admin_token(&token, &keys, unix_now()).expect("verifies");
    assert_eq!(
        (claims.iss.as_str(), claims.sub.as_str()),
        ("ops", "node-a")
    );
    assert_eq!(
        claims.exp,
        claims.iat.expect("minted tokens carry iat") + 10
    );
    assert_eq!(
        ApiKeys::default().sign_admin("node-a", 10),
        Err(AuthError::UnknownKey)
    );
}
