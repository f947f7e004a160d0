//! Fuzz target: a cluster message as a coordinator, worker or client reads it off
//! a control stream (`flumen_transport::control::decode_message`), for each of the
//! cluster's message types. Any bytes give a message or an error, never a panic;
//! and whatever decodes encodes again and decodes to an equal message (nothing is
//! lost or changed on the way, so what a peer acted on is what was said).
#![no_main]

use std::fmt::Debug;

use flumen_cluster::protocol::{CoordinatorMessage, Hello, Request, Response, WorkerMessage};
use flumen_transport::control::{CONTROL_VERSION, decode_message, encode_message};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;

fn round_trip<M: Serialize + DeserializeOwned + PartialEq + Debug>(payload: &[u8]) {
    let Ok(message) = decode_message::<M>(payload) else { return };
    let encoded = encode_message(&message).expect("a decoded message encodes");
    let again = decode_message::<M>(&encoded).expect("an encoded message decodes");
    assert_eq!(again, message, "changed by a round trip");
    assert_eq!(encode_message(&again).expect("encodes"), encoded, "two encodings of one message differ");
}

fn all(payload: &[u8]) {
    round_trip::<Hello>(payload);
    round_trip::<CoordinatorMessage>(payload);
    round_trip::<WorkerMessage>(payload);
    round_trip::<Request>(payload);
    round_trip::<Response>(payload);
}

fuzz_target!(|data: &[u8]| {
    // The bytes as a whole payload (version byte first), and as the JSON after a
    // right version byte, so the fuzzer spends its time on the messages.
    all(data);
    let mut framed = Vec::with_capacity(data.len() + 1);
    framed.push(CONTROL_VERSION);
    framed.extend_from_slice(data);
    all(&framed);
});
