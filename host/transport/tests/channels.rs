//! Data channels over real QUIC on 127.0.0.1: batches round-trip byte for byte
//! on several channels at once, a receiver that does not read stops its
//! sender (credits), and the in-process transport behaves the same behind the trait.

mod common;

use std::time::Duration;

use common::*;
use flumen_transport::{
    ChannelReceiver, ChannelSender, ControlMessage, EndpointOptions, LocalNetwork, QuicTransport, Transport,
    TransportLimits,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_round_trip_on_several_channels_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    cluster(dir.path());
    let (_server, _client, server_conn, client_conn) = connected_pair(dir.path(), EndpointOptions::default()).await;
    assert_eq!(client_conn.peer(), &id("worker-1"));

    // The control stream carries typed messages both ways.
    let hello = ControlMessage::Hello { version: 1, node: id("coordinator") };
    client_conn.send_control(&hello).await.expect("control send");
    assert_eq!(server_conn.recv_control().await.expect("control recv"), hello);

    let channels: Vec<u64> = vec![7, 8, 9];
    let sent: Vec<Vec<_>> = channels
        .iter()
        .map(|c| (0..40).map(|i| batch(*c as i64 * 1000 + i, 1 + (i as usize * 37) % 3000)).collect())
        .collect();

    let senders = async {
        let mut tasks = Vec::new();
        for (c, batches) in channels.iter().zip(&sent) {
            let conn = client_conn.clone();
            tasks.push(async move {
                let mut tx = conn.open_channel(*c).await.expect("open");
                for b in batches {
                    tx.send(b).await.expect("send");
                }
                tx.finish().await.expect("finish");
            });
        }
        futures_join_all(tasks).await;
    };
    let receivers = async {
        let mut rxs = Vec::new();
        for _ in &channels {
            rxs.push(server_conn.accept_channel().await.expect("accept channel"));
        }
        let tasks = rxs.into_iter().map(|mut rx| async move {
            let mut got = Vec::new();
            while let Some(b) = rx.recv().await.expect("recv") {
                got.push(b);
            }
            (rx.channel(), got)
        });
        futures_join_all(tasks).await
    };
    let ((), mut received) = tokio::join!(senders, receivers);
    received.sort_by_key(|(c, _)| *c);
    assert_eq!(received.iter().map(|(c, _)| *c).collect::<Vec<_>>(), channels);
    for ((_, got), want) in received.iter().zip(&sent) {
        assert_eq!(got.len(), want.len());
        assert_eq!(ipc(got), ipc(want), "batches differ after the round trip");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_does_not_read_stops_its_sender() {
    let dir = tempfile::tempdir().expect("tempdir");
    cluster(dir.path());
    let limits = TransportLimits { credit_batches: 2, ..TransportLimits::default() };
    let options = EndpointOptions { limits, allowed_peers: None };
    let (_server, _client, server_conn, client_conn) = connected_pair(dir.path(), options).await;

    let mut tx = client_conn.open_channel(1).await.expect("open");
    let mut rx = server_conn.accept_channel().await.expect("accept");
    // The window is two batches: both go without the receiver reading.
    tx.send(&batch(0, 10)).await.expect("first");
    tx.send(&batch(1, 10)).await.expect("second");
    assert_eq!(tx.credit_batches(), 0);
    // The third waits for credit as long as nobody reads.
    let blocked = tokio::spawn(async move {
        tx.send(&batch(2, 10)).await.expect("third");
        tx
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!blocked.is_finished(), "send went ahead without credit");
    // Reading one batch returns credit; the blocked send completes.
    assert_eq!(ipc(&[rx.recv().await.expect("recv").expect("batch")]), ipc(&[batch(0, 10)]));
    let tx = blocked.await.expect("sender task");
    tx.finish().await.expect("finish");
    assert_eq!(ipc(&[rx.recv().await.expect("recv").expect("batch")]), ipc(&[batch(1, 10)]));
    assert_eq!(ipc(&[rx.recv().await.expect("recv").expect("batch")]), ipc(&[batch(2, 10)]));
    assert!(rx.recv().await.expect("end").is_none());
}

/// A batch larger than the frame limit is refused by the sender, naming the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_past_the_frame_limit_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    cluster(dir.path());
    let limits = TransportLimits { frame_bytes_max: 64 << 10, ..TransportLimits::default() };
    let options = EndpointOptions { limits, allowed_peers: None };
    let (_server, _client, _server_conn, client_conn) = connected_pair(dir.path(), options).await;
    let mut tx = client_conn.open_channel(1).await.expect("open");
    let err = tx.send(&batch(0, 20_000)).await.expect_err("too large");
    assert!(err.to_string().contains("65536"), "{err}");
}

/// Both transports, through the trait only.
async fn exchange<T: Transport>(a: &T, b: &T) -> Vec<arrow_array::RecordBatch> {
    let send = async {
        let mut tx = a.open_channel(b.node(), 42).await.expect("open");
        for i in 0..5 {
            tx.send(&batch(i, 100)).await.expect("send");
        }
        tx.finish().await.expect("finish");
    };
    let recv = async {
        let mut rx = b.accept_channel(a.node()).await.expect("accept");
        assert_eq!(rx.channel(), 42);
        let mut got = Vec::new();
        while let Some(x) = rx.recv().await.expect("recv") {
            got.push(x);
        }
        got
    };
    tokio::join!(send, recv).1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_process_and_quic_transports_agree() {
    let want: Vec<_> = (0..5).map(|i| batch(i, 100)).collect();
    let net = LocalNetwork::new(2);
    let got = exchange(&net.node(id("coordinator")), &net.node(id("worker-1"))).await;
    assert_eq!(ipc(&got), ipc(&want));

    let dir = tempfile::tempdir().expect("tempdir");
    cluster(dir.path());
    let (server, addr) = endpoint(&creds(dir.path(), "worker-1"), EndpointOptions::default());
    let (client, _) = endpoint(&creds(dir.path(), "coordinator"), EndpointOptions::default());
    let w1 = id("worker-1");
    let (accepted, connected) = tokio::join!(server.accept(), client.connect(addr, &w1));
    let (a, b) = (QuicTransport::new(client), QuicTransport::new(server));
    a.add_connection(connected.expect("connected"));
    b.add_connection(accepted.expect("accepted").1);
    let got = exchange(&a, &b).await;
    assert_eq!(ipc(&got), ipc(&want));
}

/// The in-process transport is bounded too: a receiver that does not read stops its sender.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_process_transport_backpressures() {
    let net = LocalNetwork::new(1);
    let (a, b) = (net.node(id("coordinator")), net.node(id("worker-1")));
    let mut tx = a.open_channel(b.node(), 1).await.expect("open");
    let mut rx = b.accept_channel(a.node()).await.expect("accept");
    tx.send(&batch(0, 1)).await.expect("first");
    let blocked = tokio::spawn(async move {
        tx.send(&batch(1, 1)).await.expect("second");
        tx
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!blocked.is_finished(), "send went ahead past the bound");
    assert!(rx.recv().await.expect("recv").is_some());
    let tx = blocked.await.expect("task");
    drop(tx);
    assert!(rx.recv().await.expect("recv").is_some());
    let err = rx.recv().await.expect_err("a sender that vanished is an error");
    assert!(err.to_string().contains("without finishing"), "{err}");
}

async fn futures_join_all<F: std::future::Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let handles: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut out = Vec::new();
    // Poll all concurrently by joining them pairwise through tokio's JoinSet-free select.
    let mut pending: Vec<_> = handles.into_iter().map(Some).collect();
    let mut results: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (slot, result) in pending.iter_mut().zip(results.iter_mut()) {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        *result = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => all = false,
                }
            }
        }
        if all { std::task::Poll::Ready(()) } else { std::task::Poll::Pending }
    })
    .await;
    for r in results {
        out.extend(r);
    }
    out
}

/// Watermarks and barriers arrive in order with the batches around them; a channel read
/// for batches only refuses a marker as a protocol error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn markers_arrive_in_order_with_the_batches() {
    use flumen_transport::{Item, Marker};
    let dir = tempfile::tempdir().expect("tempdir");
    cluster(dir.path());
    let (_server, _client, server_conn, client_conn) = connected_pair(dir.path(), EndpointOptions::default()).await;

    let sent = vec![
        Item::Marker(Marker::Barrier(1)),
        Item::Batch(batch(1, 10)),
        Item::Marker(Marker::Watermark(-3)),
        Item::Batch(batch(2, 5)),
        Item::Marker(Marker::Barrier(2)),
        Item::Marker(Marker::Watermark(i64::MAX)),
    ];
    let sending = async {
        let mut tx = client_conn.open_channel(1).await.expect("open");
        for item in &sent {
            match item {
                Item::Batch(b) => tx.send(b).await.expect("send"),
                Item::Marker(m) => tx.send_marker(*m).await.expect("marker"),
            }
        }
        tx.finish().await.expect("finish");
        // A second channel whose reader expects batches only.
        let mut tx = client_conn.open_channel(2).await.expect("open");
        tx.send_marker(Marker::Barrier(9)).await.expect("marker");
        tx
    };
    let receiving = async {
        let mut rx = server_conn.accept_channel().await.expect("accept");
        let mut got = Vec::new();
        while let Some(item) = rx.recv_item().await.expect("item") {
            got.push(item);
        }
        let mut plain = server_conn.accept_channel().await.expect("accept");
        (got, plain.recv().await)
    };
    let (_keep_open, (got, plain)) = tokio::join!(sending, receiving);
    assert_eq!(got, sent);
    let err = plain.expect_err("a marker on a batch-only read is refused");
    assert!(err.to_string().contains("Marker"), "{err}");
}
