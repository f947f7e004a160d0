//! Malformed frames from an authenticated peer: garbage, an unknown frame
//! kind, an oversized length, a truncated IPC message, a cut header, seeded random bytes.
//! Each closes that peer's connection with a reason the peer can read; the
//! node goes on accepting other connections and moving batches.

mod common;

use common::*;
use flumen_transport::{Connection, Endpoint, EndpointOptions, ProtocolError, TransportError};

/// What a case expects of the server's error.
type Check = Box<dyn Fn(&ProtocolError) -> bool>;

struct Pair {
    server_conn: Connection,
    client_conn: Connection,
    _client: Endpoint,
}

async fn connect(server: &Endpoint, dir: &std::path::Path) -> Pair {
    let (client, _) = endpoint(&creds(dir, "coordinator"), EndpointOptions::default());
    let addr = server.local_addr().expect("addr");
    let w1 = id("worker-1");
    let (accepted, connected) = tokio::join!(server.accept(), client.connect(addr, &w1));
    Pair { server_conn: accepted.expect("accepted").1, client_conn: connected.expect("connected"), _client: client }
}

/// Writes `bytes` raw on a new stream, then reads the channel on the server
/// until it fails; returns the server's error and the reason the client got.
async fn send_raw(pair: &Pair, bytes: &[u8]) -> (TransportError, String) {
    let (mut send, _recv) = pair.client_conn.raw_stream_for_tests().await.expect("raw stream");
    send.write_all(bytes).await.expect("write");
    send.finish().expect("finish");
    let server_err = match pair.server_conn.accept_channel().await {
        Err(e) => e,
        Ok(mut rx) => loop {
            match rx.recv().await {
                Err(e) => break e,
                Ok(Some(_)) => continue,
                Ok(None) => panic!("a malformed stream ended cleanly"),
            }
        },
    };
    let client_saw = pair.client_conn.closed().await.to_string();
    (server_err, client_saw)
}

fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn open(channel: u64) -> Vec<u8> {
    frame(1, &channel.to_be_bytes())
}

/// The schema and first batch messages of `batch` as the sender frames them.
fn ipc_messages() -> (Vec<u8>, Vec<u8>) {
    let b = batch(3, 500);
    let mut w = arrow_ipc::writer::StreamWriter::try_new(Vec::new(), &b.schema()).expect("writer");
    let schema = std::mem::take(w.get_mut());
    w.write(&b).expect("write");
    (schema, std::mem::take(w.get_mut()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_close_the_connection_with_a_reason_and_the_node_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    cluster(dir.path());
    let (server, _) = endpoint(&creds(dir.path(), "worker-1"), EndpointOptions::default());
    let (schema, batch_msg) = ipc_messages();

    let mut cases: Vec<(&str, Vec<u8>, Check)> = vec![
        (
            "unknown kind first",
            frame(0x7f, b"hello"),
            Box::new(|e| matches!(e, ProtocolError::UnknownFrameKind { kind: 0x7f })),
        ),
        (
            "unknown kind after open",
            [open(1), frame(9, &[])].concat(),
            Box::new(|e| matches!(e, ProtocolError::UnknownFrameKind { kind: 9 })),
        ),
        (
            "oversized length",
            [open(1), vec![3, 0xff, 0xff, 0xff, 0xff]].concat(),
            Box::new(|e| matches!(e, ProtocolError::FrameTooLarge { max: 67_108_864, .. })),
        ),
        (
            "truncated IPC message",
            [open(1), frame(2, &schema), frame(3, &batch_msg[..batch_msg.len() / 2])].concat(),
            Box::new(|e| matches!(e, ProtocolError::Ipc { .. })),
        ),
        (
            "a batch before the schema",
            [open(1), frame(3, &batch_msg)].concat(),
            Box::new(|e| matches!(e, ProtocolError::UnexpectedFrame { .. })),
        ),
        ("a cut header", [open(1), vec![3, 0]].concat(), Box::new(|e| matches!(e, ProtocolError::Truncated))),
        (
            "garbage as schema",
            [open(1), frame(2, b"\xff\xff\xff\xff\x10\0\0\0garbage!garbage!")].concat(),
            Box::new(|e| matches!(e, ProtocolError::Ipc { .. })),
        ),
    ];
    // Fuzzed: seeded garbage after a valid channel opening, each a fresh connection.
    let mut state: u64 = 0x005e_edf1_u64;
    for n in 0..6 {
        let mut bytes = open(1);
        for _ in 0..(16 + n * 40) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            bytes.push(state as u8);
        }
        cases.push(("fuzzed", bytes, Box::new(|_| true)));
    }

    for (name, bytes, expected) in &cases {
        let pair = connect(&server, dir.path()).await;
        let (server_err, client_saw) = send_raw(&pair, bytes).await;
        let TransportError::Protocol { peer, error, .. } = &server_err else {
            panic!("{name}: not a protocol error: {server_err}");
        };
        assert_eq!(peer, &id("coordinator"), "{name}");
        assert!(expected(error), "{name}: {error}");
        // The peer learns why, in the close reason.
        assert!(client_saw.contains(&error.to_string()), "{name}: the client saw {client_saw:?}, the server {error}");
    }

    // The node still serves: a well-behaved peer moves a batch.
    let pair = connect(&server, dir.path()).await;
    let mut tx = pair.client_conn.open_channel(5).await.expect("open");
    // The first send waits for the credit the receiver grants when it accepts.
    let one = batch(1, 10);
    let (sent, accepted) = tokio::join!(tx.send(&one), pair.server_conn.accept_channel());
    sent.expect("send");
    tx.finish().await.expect("finish");
    let mut rx = accepted.expect("accept");
    assert_eq!(ipc(&[rx.recv().await.expect("recv").expect("batch")]), ipc(&[batch(1, 10)]));
    assert!(rx.recv().await.expect("end").is_none());
}
