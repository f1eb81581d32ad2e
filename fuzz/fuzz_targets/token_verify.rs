//! The token verifier with a fixed key: arbitrary token text into `verify_token` and `verify_admin_token`,
//! and, so the claim checks are reached too, arbitrary JSON claims signed with the real secret. Whatever
//! verifies must carry valid claims that are current at `now`.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use signaling::auth::{verify_admin_token, verify_token};
use signaling::ApiKeys;

const KEY: &str = "fuzzkey";
const SECRET: &str = "fuzz-secret-0123456789-0123456789-0123456789";

fn keys() -> &'static ApiKeys {
    static KEYS: OnceLock<ApiKeys> = OnceLock::new();
    KEYS.get_or_init(|| ApiKeys::new([(KEY, SECRET)]).expect("a non-empty key and secret"))
}

fn check(token: &str, now: u64) {
    if let Ok(claims) = verify_token(token, keys(), now) {
        claims.validate().expect("verified claims are valid");
        assert!(claims.exp > now, "an expired token verified");
    }
    if let Ok(claims) = verify_admin_token(token, keys(), now) {
        assert!(claims.admin, "an admin token without the grant verified");
        claims.validate().expect("verified admin claims are valid");
        assert!(claims.exp > now, "an expired admin token verified");
    }
}

fuzz_target!(|input: (bool, u32, &str)| {
    let (sign, now, text) = input;
    let now = 1_700_000_000 + u64::from(now);
    if !sign {
        check(text, now);
        return;
    }
    let Ok(claims) = serde_json::from_str::<serde_json::Value>(text) else {
        return;
    };
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("HS256 signs any JSON value");
    check(&token, now);
});
