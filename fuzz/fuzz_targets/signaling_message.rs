//! Every client signaling message: `signaling::protocol::parse_client` on arbitrary text. What parses must
//! serialise and parse back to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signaling::protocol::parse_client;

fuzz_target!(|text: &str| {
    let Ok(message) = parse_client(text) else {
        return;
    };
    let json = serde_json::to_string(&message).expect("a parsed client message serialises");
    let again = parse_client(&json).expect("a serialised client message parses");
    assert_eq!(again, message, "round trip of {json}");
});
