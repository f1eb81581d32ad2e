//! Access tokens: HS256 JWTs signed with an API secret (protocol.md, "Access tokens").
//!
//! The token's `iss` names the API key whose secret verifies the signature. Expiry is checked here against
//! a caller-supplied clock (`now`), not by the JWT library, so verification is deterministic.

use std::collections::HashMap;
use std::fmt;
use std::sync::Once;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Deserializer, Serialize};

use crate::protocol::ErrorCode;

/// Secrets shorter than this are accepted but reported as weak: HS256 wants at least 256 bits of key.
pub const MIN_SECRET_BYTES: usize = 32;

/// The longest identity (`sub`) and room name, in characters.
pub const MAX_ID_CHARS: usize = 128;

/// The longest display name a token may carry, in characters (the same bound as `join.name`).
pub const MAX_TOKEN_NAME_CHARS: usize = crate::protocol::MAX_NAME_CHARS;

/// Clock skew tolerated on `nbf`: a token minted on a host whose clock runs slightly ahead still works.
/// `exp` gets no leeway: the protocol says a token whose `exp` is past is expired.
pub const NBF_LEEWAY_SECS: u64 = 60;

/// The claims of a Chorus access token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The API key that signed the token.
    pub iss: String,
    /// The participant identity (1–128 characters).
    pub sub: String,
    /// The room the token admits to (1–128 characters of `[A-Za-z0-9_.-]`).
    pub room: String,
    /// Expiry, seconds since the Unix epoch.
    #[serde(deserialize_with = "numeric_date")]
    pub exp: u64,
    /// Not before, seconds since the Unix epoch.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "optional_numeric_date"
    )]
    pub nbf: Option<u64>,
    /// Issue time, seconds since the Unix epoch.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "optional_numeric_date"
    )]
    pub iat: Option<u64>,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// May send audio.
    #[serde(default = "yes")]
    pub can_publish: bool,
    /// May receive audio.
    #[serde(default = "yes")]
    pub can_subscribe: bool,
}

fn yes() -> bool {
    true
}

/// Seconds since the Unix epoch by the system clock (0 should it read before 1970): the one clock read
/// behind token times and event timestamps.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

impl Claims {
    /// The claims of a token for `identity` in `room`, issued now and valid for `ttl_secs`: no display
    /// name, may publish and subscribe. `iss` is left empty: [`create_token`] sets it to the signing key.
    pub fn valid_for(room: &str, identity: &str, ttl_secs: u64) -> Claims {
        let now = unix_now();
        Claims {
            iss: String::new(),
            sub: identity.to_owned(),
            room: room.to_owned(),
            exp: now.saturating_add(ttl_secs),
            nbf: None,
            iat: Some(now),
            name: None,
            can_publish: true,
            can_subscribe: true,
        }
    }
}

/// A JWT NumericDate: a non-negative JSON number of seconds; a fractional one is truncated.
fn numeric_date<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    let number = serde_json::Number::deserialize(deserializer)?;
    if let Some(secs) = number.as_u64() {
        return Ok(secs);
    }
    match number.as_f64() {
        Some(secs) if secs.is_finite() && secs >= 0.0 && secs < u64::MAX as f64 => Ok(secs as u64),
        _ => Err(serde::de::Error::custom(
            "a date must be a non-negative number of seconds",
        )),
    }
}

fn optional_numeric_date<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    struct Date(#[serde(deserialize_with = "numeric_date")] u64);
    Ok(Option::<Date>::deserialize(deserializer)?.map(|Date(secs)| secs))
}

/// Whether `c` may not appear in an identity or display name: control characters (C0, DEL, C1: a newline
/// forges log lines), line and paragraph separators, and the bidirectional formatting characters that
/// reorder how the rest of a line is displayed (overrides, embeddings, isolates and marks; "Trojan Source").
pub fn is_forbidden_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// Whether `text` has no [forbidden](is_forbidden_char) character.
pub fn is_safe_text(text: &str) -> bool {
    !text.chars().any(is_forbidden_char)
}

/// An identity (`sub`): 1–128 characters, none forbidden.
fn is_valid_identity(sub: &str) -> bool {
    (1..=MAX_ID_CHARS).contains(&sub.chars().count()) && is_safe_text(sub)
}

const SUB_RULE: &str =
    "sub must be 1 to 128 characters without control or bidi-override characters";

impl Claims {
    /// Checks the claims that do not depend on time: identity, room name and display name.
    pub fn validate(&self) -> Result<(), AuthError> {
        if !is_valid_identity(&self.sub) {
            return Err(AuthError::InvalidClaims(SUB_RULE));
        }
        if !is_valid_room_name(&self.room) {
            return Err(AuthError::InvalidClaims(
                "room must be 1 to 128 characters of [A-Za-z0-9_.-]",
            ));
        }
        if self
            .name
            .as_ref()
            .is_some_and(|n| n.chars().count() > MAX_TOKEN_NAME_CHARS || !is_safe_text(n))
        {
            return Err(AuthError::InvalidClaims(
                "name must be at most 64 characters without control or bidi-override characters",
            ));
        }
        Ok(())
    }
}

/// Whether `room` is 1–128 characters of `[A-Za-z0-9_.-]` and not only dots (`.` and `..` are path
/// segments in the admin API's URLs, `/admin/v1/rooms/{room}`).
pub fn is_valid_room_name(room: &str) -> bool {
    (1..=MAX_ID_CHARS).contains(&room.len())
        && !room.bytes().all(|b| b == b'.')
        && room
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Why a token was refused or could not be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the access token is malformed")]
    Malformed,
    #[error("the access token must be signed with HS256")]
    UnsupportedAlgorithm,
    #[error("the access token names an unknown API key")]
    UnknownKey,
    #[error("access token signature does not verify")]
    BadSignature,
    #[error("the access token has missing or invalid claims: {0}")]
    InvalidClaims(&'static str),
    #[error("the access token is not valid yet")]
    NotYetValid,
    #[error("the access token has expired")]
    Expired,
    #[error("the token carries no admin grant")]
    NotAdmin,
    #[error("the API secret must not be empty")]
    EmptySecret,
    #[error("the access token could not be signed: {0}")]
    Signing(String),
}

impl AuthError {
    /// The protocol error code a client receives for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            AuthError::Expired => ErrorCode::TokenExpired,
            AuthError::Signing(_) | AuthError::EmptySecret => ErrorCode::Internal,
            _ => ErrorCode::InvalidToken,
        }
    }
}

/// Why a set of API keys is unusable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApiKeyError {
    #[error("an API key name must not be empty")]
    EmptyKey,
    #[error("API key {0:?} has an empty secret")]
    EmptySecret(String),
    #[error("API key {0:?} is configured twice")]
    Duplicate(String),
}

struct Secret {
    bytes: Vec<u8>,
    decoding: DecodingKey,
}

/// API keys and their secrets: `iss` of a token → the secret that verifies it.
///
/// Secrets shorter than [`MIN_SECRET_BYTES`] are accepted (development setups use short ones) but logged
/// at warning level and listed by [`ApiKeys::weak_keys`], so a server can refuse them in production.
#[derive(Default)]
pub struct ApiKeys {
    keys: HashMap<String, Secret>,
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.key_ids().collect();
        names.sort_unstable();
        f.debug_struct("ApiKeys")
            .field("keys", &names)
            .finish_non_exhaustive()
    }
}

impl ApiKeys {
    /// Builds the key set from `(api key, secret)` pairs.
    pub fn new<I, K, S>(pairs: I) -> Result<Self, ApiKeyError>
    where
        I: IntoIterator<Item = (K, S)>,
        K: Into<String>,
        S: Into<Vec<u8>>,
    {
        ensure_crypto_provider();
        let mut keys = HashMap::new();
        for (key, secret) in pairs {
            let (key, secret) = (key.into(), secret.into());
            if key.is_empty() {
                return Err(ApiKeyError::EmptyKey);
            }
            if secret.is_empty() {
                return Err(ApiKeyError::EmptySecret(key));
            }
            if secret.len() < MIN_SECRET_BYTES {
                tracing::warn!(
                    api_key = %key,
                    bytes = secret.len(),
                    "API secret is shorter than {MIN_SECRET_BYTES} bytes; tokens signed with it are guessable"
                );
            }
            if keys.contains_key(&key) {
                return Err(ApiKeyError::Duplicate(key));
            }
            let decoding = DecodingKey::from_secret(&secret);
            keys.insert(
                key,
                Secret {
                    bytes: secret,
                    decoding,
                },
            );
        }
        Ok(Self { keys })
    }

    /// The configured API key names.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// The API keys whose secret is shorter than [`MIN_SECRET_BYTES`], sorted.
    pub fn weak_keys(&self) -> Vec<&str> {
        let mut weak: Vec<&str> = self
            .keys
            .iter()
            .filter(|(_, s)| s.bytes.len() < MIN_SECRET_BYTES)
            .map(|(k, _)| k.as_str())
            .collect();
        weak.sort_unstable();
        weak
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Signs `claims` with the secret of `key` (see [`create_token`]).
    pub fn sign(&self, key: &str, claims: &Claims) -> Result<String, AuthError> {
        let secret = self.keys.get(key).ok_or(AuthError::UnknownKey)?;
        create_token(key, &secret.bytes, claims)
    }
}

/// Makes the process use aws-lc-rs for JWT signatures unless a provider was already chosen.
///
/// jsonwebtoken picks its provider from crate features, which would panic at first use should another
/// crate in the build enable a second backend; installing one explicitly makes the choice unambiguous.
fn ensure_crypto_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // Err means a provider is already installed for the process, which is just as good.
        let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
    });
}

/// Makes an HS256 access token for `claims`, signed with `secret` (the bytes of the configured secret
/// string); the token's `iss` is `key`, whatever `claims.iss` says.
pub fn create_token(
    key: &str,
    secret: impl AsRef<[u8]>,
    claims: &Claims,
) -> Result<String, AuthError> {
    ensure_crypto_provider();
    let secret = secret.as_ref();
    if secret.is_empty() {
        return Err(AuthError::EmptySecret);
    }
    claims.validate()?;
    let claims = Claims {
        iss: key.to_owned(),
        ..claims.clone()
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| AuthError::Signing(e.to_string()))
}

/// Verifies an access token at time `now` (seconds since the Unix epoch) and returns its claims.
pub fn verify_token(token: &str, keys: &ApiKeys, now: u64) -> Result<Claims, AuthError> {
    let claims: Claims = decode_verified(token, keys, "sub, room and exp are required")?;
    claims.validate()?;
    check_times(claims.nbf, claims.exp, now)?;
    Ok(claims)
}

/// The claims of an admin token: its bearer may use the admin API (docs/openapi.json). Signed like an
/// access token (HS256 with an API secret, `iss` names the key); `admin` must be `true`, and there is no
/// `room`, so an admin token cannot join a room and an access token cannot use the admin API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminClaims {
    /// The API key that signed the token.
    pub iss: String,
    /// Who the token was made for (an operator or a service), for logs.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    #[serde(deserialize_with = "numeric_date")]
    pub exp: u64,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "optional_numeric_date"
    )]
    pub nbf: Option<u64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "optional_numeric_date"
    )]
    pub iat: Option<u64>,
    /// The admin grant (absent in access tokens, which then fail with [`AuthError::NotAdmin`]).
    #[serde(default)]
    pub admin: bool,
}

impl AdminClaims {
    /// The claims of an admin token for `subject`, issued now and valid for `ttl_secs`. `iss` is left
    /// empty: [`create_admin_token`] sets it to the signing key.
    pub fn valid_for(subject: &str, ttl_secs: u64) -> AdminClaims {
        let now = unix_now();
        AdminClaims {
            iss: String::new(),
            sub: subject.to_owned(),
            exp: now.saturating_add(ttl_secs),
            nbf: None,
            iat: Some(now),
            admin: true,
        }
    }

    /// Checks the subject, which the admin API writes into its logs.
    pub fn validate(&self) -> Result<(), AuthError> {
        if !is_valid_identity(&self.sub) {
            return Err(AuthError::InvalidClaims(SUB_RULE));
        }
        Ok(())
    }
}

/// Makes an HS256 admin token (see [`AdminClaims`]); its `iss` is `key` and `admin` is true.
pub fn create_admin_token(
    key: &str,
    secret: impl AsRef<[u8]>,
    claims: &AdminClaims,
) -> Result<String, AuthError> {
    ensure_crypto_provider();
    let secret = secret.as_ref();
    if secret.is_empty() {
        return Err(AuthError::EmptySecret);
    }
    claims.validate()?;
    let claims = AdminClaims {
        iss: key.to_owned(),
        admin: true,
        ..claims.clone()
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| AuthError::Signing(e.to_string()))
}

/// Mints an admin token for `subject`, valid for `ttl_secs` from now, signed with `key` and its `secret`.
pub fn mint_admin_token(
    key: &str,
    secret: impl AsRef<[u8]>,
    subject: &str,
    ttl_secs: u64,
) -> Result<String, AuthError> {
    create_admin_token(key, secret, &AdminClaims::valid_for(subject, ttl_secs))
}

/// Mints an access token for `identity` in `room` (no display name, may publish and subscribe), valid for
/// `ttl_secs` from now, signed with `key` and its `secret`. For other grants, build [`Claims::valid_for`],
/// change it, and call [`create_token`].
pub fn mint_token(
    key: &str,
    secret: impl AsRef<[u8]>,
    room: &str,
    identity: &str,
    ttl_secs: u64,
) -> Result<String, AuthError> {
    create_token(key, secret, &Claims::valid_for(room, identity, ttl_secs))
}

/// Verifies an admin token at time `now`: signature, times, and the `admin: true` grant.
pub fn verify_admin_token(token: &str, keys: &ApiKeys, now: u64) -> Result<AdminClaims, AuthError> {
    let claims: AdminClaims = decode_verified(token, keys, "sub, exp and admin are required")?;
    if !claims.admin {
        return Err(AuthError::NotAdmin);
    }
    claims.validate()?;
    check_times(claims.nbf, claims.exp, now)?;
    Ok(claims)
}

fn check_times(nbf: Option<u64>, exp: u64, now: u64) -> Result<(), AuthError> {
    if nbf.is_some_and(|nbf| nbf > now.saturating_add(NBF_LEEWAY_SECS)) {
        return Err(AuthError::NotYetValid);
    }
    if exp <= now {
        return Err(AuthError::Expired);
    }
    Ok(())
}

/// Checks the header and signature of `token` (the key named by `iss`) and decodes its claims as `C`.
fn decode_verified<C: serde::de::DeserializeOwned>(
    token: &str,
    keys: &ApiKeys,
    required: &'static str,
) -> Result<C, AuthError> {
    ensure_crypto_provider();
    let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
    if header.alg != Algorithm::HS256 {
        return Err(AuthError::UnsupportedAlgorithm);
    }

    #[derive(Deserialize)]
    struct Issuer {
        iss: Option<serde_json::Value>,
    }
    let issuer: Issuer =
        jsonwebtoken::dangerous::insecure_decode_claims(token).map_err(|_| AuthError::Malformed)?;
    let iss = match issuer.iss {
        Some(serde_json::Value::String(iss)) => iss,
        _ => return Err(AuthError::InvalidClaims("iss must be the API key")),
    };
    let secret = keys.keys.get(&iss).ok_or(AuthError::UnknownKey)?;

    let mut validation = Validation::new(Algorithm::HS256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let claims: C = jsonwebtoken::decode::<C>(token, &secret.decoding, &validation)
        .map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => AuthError::BadSignature,
            ErrorKind::InvalidAlgorithm => AuthError::UnsupportedAlgorithm,
            ErrorKind::Json(_)
            | ErrorKind::InvalidClaimFormat(_)
            | ErrorKind::MissingRequiredClaim(_) => AuthError::InvalidClaims(required),
            _ => AuthError::Malformed,
        })?
        .claims;
    Ok(claims)
}

#[cfg(test)]
pub(crate) mod tests {
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
        }
    }

    /// Unpadded base64url, as JWTs use it.
    pub(crate) fn b64(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
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
        let payload =
            serde_json::json!({"iss": "k", "sub": "ada", "room": "lobby", "exp": NOW + 5});
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
}

#[cfg(test)]
mod admin_tests {
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
            let claims =
                serde_json::json!({"iss": "ops", "sub": sub, "exp": NOW + 60, "admin": true});
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
        let token =
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(SECRET.as_ref()))
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
}
