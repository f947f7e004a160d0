//! W5: transport throughput and control latency between two nodes in one
//! process over loopback (real UDP and TCP sockets on 127.0.0.1).
//!
//! ```sh
//! cargo bench -p flumen-transport --bench w5_transport
//! W5_MIB=256 W5_PINGS=500 cargo bench -p flumen-transport --bench w5_transport
//! ```
//!
//! Throughput: Arrow record batches (an int64 and a utf8 column) whose IPC
//! size is about 64 KiB, 1 MiB and 4 MiB, `W5_MIB` MiB of batch IPC bytes per
//! case (default 1024), through:
//!
//! 1. `quic`: flumen-transport itself, QUIC with mutual TLS (quinn, rustls on
//!    `ring`), `BatchSender::send` → `BatchReceiver::recv` with the default
//!    `TransportLimits` (credits included), on a 2-worker tokio runtime;
//! 2. `tcp+tls`: TCP with rustls TLS 1.3 and mutual TLS (the same certificates
//!    and `tls::server_config` / `tls::client_config`), `StreamOwned` in two
//!    blocking threads;
//! 3. `tcp`: plain TCP, two blocking threads.
//!
//! The TCP cases carry the same framing as the QUIC channel (a 5-byte header,
//! the schema message once, then one IPC message per batch), encoded per batch
//! with arrow's `StreamWriter` and decoded per batch with
//! `flumen_batch::ipc::decode` as the QUIC receiver does, so encoding and
//! decoding cost the same on every side; only the transport differs.
//!
//! Reported per case: GB/s (10^9 bytes of batch IPC payload per wall second),
//! the process CPU time (user + system, from `/proc/self/stat`, assuming
//! 100 ticks per second) per GB, and GB per CPU second. Checked: the receiver
//! gets as many batches, rows, int64 sum and string bytes as were sent, and
//! its first and last batches equal the one sent. Nothing asserts on timing.
//!
//! Latency: `W5_PINGS` (default 1000) round trips of a small control message
//! after 100 warm-up ones: over QUIC a `ControlMessage::Hello` (about 50 bytes
//! of JSON) on the connection's control stream, echoed by the peer; over TCP
//! and TCP+TLS a 64-byte message (`TCP_NODELAY`). p50 and p99 in µs.
//!
//! A delayed, lossy link: `W5_RTT_MS=10 [W5_LOSS_PCT=0.1]` puts a relay in the
//! same process between the two sides — a UDP relay for QUIC that holds every
//! datagram for half the round trip in each direction and drops `W5_LOSS_PCT`
//! percent of them (seeded, so runs repeat), and a TCP relay for the TCP cases
//! that holds every chunk it reads for half the round trip (a user-space relay
//! cannot drop TCP segments: the TCP rows are always loss-free, which favours
//! them). Worse, the TCP relay *terminates* TCP: each side's TCP sees a loopback
//! round trip to the relay, and only the relay's 16 MiB per direction bounds what
//! is in flight, so the TCP rows at a delay are not TCP at that round trip — a fair
//! comparison needs netem on both paths. The QUIC rows are QUIC at that round trip
//! (its packets, acknowledgements and congestion control all cross the delay).
//! `W5_RELAY=1` puts the relays in with no delay (to tell the relay's cost from the
//! delay's). The relays' own CPU is in the process CPU time of every row.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Int64Array, RecordBatch, StringArray};
use arrow_ipc::writer::StreamWriter;
use arrow_schema::{DataType, Field, Schema};
use flumen_transport::control::PROTOCOL_VERSION;
use flumen_transport::{
    ClusterCa, Connection, ControlMessage, Endpoint, EndpointOptions, NodeCredentials, NodeIdentity, tls,
};
use rustls::pki_types::ServerName;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
/// Bytes of one row in IPC: an int64, an i32 offset and a 20-byte string.
const ROW_BYTES: usize = 8 + 4 + 20;
const FRAME_SCHEMA: u8 = 1;
const FRAME_BATCH: u8 = 2;
const FRAME_END: u8 = 3;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Process CPU time (user + system), from `/proc/self/stat`, at 100 ticks per second.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // utime is field 14, stime field 15: indices 11 and 12 after the name.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

fn id(s: &str) -> NodeIdentity {
    NodeIdentity::new(s).expect("valid node id")
}

fn credentials(ca: &ClusterCa, node: &NodeIdentity) -> NodeCredentials {
    let issued = ca.issue_for_days(node, 1).expect("issue");
    NodeCredentials::from_pem(node, ca.cert_pem(), &issued.cert_pem, &issued.key_pem).expect("credentials")
}

fn batch(rows: usize) -> RecordBatch {
    let schema =
        Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false), Field::new("s", DataType::Utf8, false)]));
    let n: Int64Array = (0..rows as i64).map(|i| i * 7 + 1).collect();
    let s: StringArray = (0..rows).map(|i| Some(format!("w5-{:017}", i * 13))).collect();
    RecordBatch::try_new(schema, vec![Arc::new(n), Arc::new(s)]).expect("batch")
}

/// The IPC size of one batch message (what a channel's batch frame carries).
fn ipc_size(batch: &RecordBatch) -> usize {
    let mut w = StreamWriter::try_new(Vec::new(), &batch.schema()).expect("writer");
    w.get_mut().clear();
    w.write(batch).expect("write");
    w.get_ref().len()
}

/// What the receiving side saw; equal to the sender's for a correct run.
#[derive(Debug, Default, PartialEq)]
struct Tally {
    batches: u64,
    rows: u64,
    n_sum: i64,
    string_bytes: u64,
}

impl Tally {
    fn add(&mut self, b: &RecordBatch) {
        self.batches += 1;
        self.rows += b.num_rows() as u64;
        let n = b.column(0).as_primitive::<Int64Type>();
        self.n_sum = n.values().iter().fold(self.n_sum, |a, v| a.wrapping_add(*v));
        self.string_bytes += b.column(1).as_string::<i32>().values().len() as u64;
    }

    fn expected(b: &RecordBatch, count: u64) -> Self {
        let mut one = Tally::default();
        one.add(b);
        Tally {
            batches: count,
            rows: one.rows * count,
            n_sum: one.n_sum.wrapping_mul(count as i64),
            string_bytes: one.string_bytes * count,
        }
    }
}

/// One case's outcome.
struct Measured {
    wall: Duration,
    cpu: Duration,
    tally: Tally,
    first_last_equal: bool,
}

// ---------------------------------------------------------------- QUIC

struct Quic {
    rt: tokio::runtime::Runtime,
    sender: Connection,
    receiver: Connection,
    // Kept open for the connections' lifetime.
    _endpoints: (Endpoint, Endpoint),
}

fn quic_setup(a: &NodeCredentials, b: &NodeCredentials, link: Link) -> Quic {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let loopback: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let (ea, eb, sender, receiver) = rt.block_on(async {
        let ea = Endpoint::bind(loopback, a, EndpointOptions::default()).expect("bind a");
        let eb = Endpoint::bind(loopback, b, EndpointOptions::default()).expect("bind b");
        let addr_b = eb.local_addr().expect("address");
        let addr_b = if link.delayed() { udp_relay(addr_b, link) } else { addr_b };
        let (sender, accepted) = tokio::join!(ea.connect(addr_b, &b.node), eb.accept());
        let (_, receiver) = accepted.expect("accept");
        (ea, eb, sender.expect("connect"), receiver)
    });
    Quic { rt, sender, receiver, _endpoints: (ea, eb) }
}

fn quic_throughput(q: &Quic, channel: u64, batch: &RecordBatch, count: u64) -> Measured {
    let (sender, receiver) = (q.sender.clone(), q.receiver.clone());
    let sent = batch.clone();
    let reference = batch.clone();
    let (cpu0, t0) = (cpu_time(), Instant::now());
    let (tally, first_last_equal) = q.rt.block_on(async move {
        let rx = tokio::spawn(async move {
            let mut rx = receiver.accept_channel().await.expect("accept channel");
            let mut tally = Tally::default();
            let mut equal = true;
            while let Some(b) = rx.recv().await.expect("recv") {
                if tally.batches == 0 || tally.batches + 1 == count {
                    equal &= b == reference;
                }
                tally.add(&b);
            }
            (tally, equal)
        });
        let tx = tokio::spawn(async move {
            let mut tx = sender.open_channel(channel).await.expect("open channel");
            for _ in 0..count {
                tx.send(&sent).await.expect("send");
            }
            tx.finish().await.expect("finish");
        });
        tx.await.expect("sender task");
        rx.await.expect("receiver task")
    });
    Measured { wall: t0.elapsed(), cpu: cpu_time() - cpu0, tally, first_last_equal }
}

fn quic_latency(q: &Quic, warmup: usize, pings: usize) -> Vec<Duration> {
    let (sender, receiver) = (q.sender.clone(), q.receiver.clone());
    q.rt.block_on(async move {
        let total = warmup + pings;
        let echo = tokio::spawn(async move {
            for _ in 0..total {
                let m = receiver.recv_control().await.expect("recv ping");
                receiver.send_control(&m).await.expect("send pong");
            }
        });
        let ping = ControlMessage::Hello { version: PROTOCOL_VERSION, node: sender.local().clone() };
        let mut times = Vec::with_capacity(pings);
        for i in 0..total {
            let t = Instant::now();
            sender.send_control(&ping).await.expect("send ping");
            let pong = sender.recv_control().await.expect("recv pong");
            assert_eq!(pong, ping, "the echo differs from the ping");
            if i >= warmup {
                times.push(t.elapsed());
            }
        }
        echo.await.expect("echo task");
        times
    })
}

// ---------------------------------------------------------------- TCP (+ TLS)

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

struct Tls {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
}

/// A connected pair (client, server) on 127.0.0.1, TLS handshake done when `tls` is set.
fn tcp_pair(tls: Option<&Tls>, link: Link) -> (Box<dyn Stream>, Box<dyn Stream>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let addr = listener.local_addr().expect("address");
    let addr = if link.delayed() { tcp_relay(addr, link) } else { addr };
    let server_config = tls.map(|t| t.server.clone());
    let server = thread::spawn(move || {
        let (s, _) = listener.accept().expect("accept");
        s.set_nodelay(true).expect("nodelay");
        let mut s: Box<dyn Stream> = match server_config {
            Some(c) => Box::new(rustls::StreamOwned::new(rustls::ServerConnection::new(c).expect("server tls"), s)),
            None => Box::new(s),
        };
        let mut byte = [0u8; 1];
        s.read_exact(&mut byte).expect("setup read");
        s.write_all(&byte).expect("setup write");
        s.flush().expect("flush");
        s
    });
    let c = TcpStream::connect(addr).expect("connect");
    c.set_nodelay(true).expect("nodelay");
    let mut c: Box<dyn Stream> = match tls {
        Some(t) => Box::new(rustls::StreamOwned::new(
            rustls::ClientConnection::new(t.client.clone(), t.server_name.clone()).expect("client tls"),
            c,
        )),
        None => Box::new(c),
    };
    let mut byte = [7u8; 1];
    c.write_all(&byte).expect("setup write");
    c.flush().expect("flush");
    c.read_exact(&mut byte).expect("setup read");
    (c, server.join().expect("server thread"))
}

fn header(kind: u8, len: usize) -> [u8; 5] {
    let len = u32::try_from(len).expect("frame fits u32").to_be_bytes();
    [kind, len[0], len[1], len[2], len[3]]
}

fn tcp_send(mut s: Box<dyn Stream>, batch: &RecordBatch, count: u64) {
    let mut w = StreamWriter::try_new(Vec::new(), &batch.schema()).expect("writer");
    let schema = std::mem::take(w.get_mut());
    s.write_all(&header(FRAME_SCHEMA, schema.len())).expect("write");
    s.write_all(&schema).expect("write");
    for _ in 0..count {
        // Header and message in one buffer, one write: the header's room first.
        w.get_mut().extend_from_slice(&[0; 5]);
        w.write(batch).expect("encode");
        let frame = std::mem::take(w.get_mut());
        let mut frame = frame;
        let h = header(FRAME_BATCH, frame.len() - 5);
        frame[..5].copy_from_slice(&h);
        s.write_all(&frame).expect("write");
    }
    s.write_all(&header(FRAME_END, 0)).expect("write");
    s.flush().expect("flush");
    // Wait for the receiver's acknowledgement so a TLS close cannot cut the tail.
    let mut ack = [0u8; 1];
    s.read_exact(&mut ack).expect("ack");
}

fn read_frame(s: &mut dyn Stream) -> (u8, Vec<u8>) {
    let mut h = [0u8; 5];
    s.read_exact(&mut h).expect("read header");
    let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).expect("read payload");
    (h[0], payload)
}

fn tcp_recv(mut s: Box<dyn Stream>, reference: &RecordBatch, count: u64) -> (Tally, bool) {
    let (kind, schema) = read_frame(&mut *s);
    assert_eq!(kind, FRAME_SCHEMA, "the first frame is the schema");
    let mut tally = Tally::default();
    let mut equal = true;
    loop {
        let (kind, payload) = read_frame(&mut *s);
        if kind == FRAME_END {
            break;
        }
        assert_eq!(kind, FRAME_BATCH, "a batch frame");
        // As the QUIC receiver decodes: schema and batch message as one IPC stream.
        let mut stream = Vec::with_capacity(schema.len() + payload.len());
        stream.extend_from_slice(&schema);
        stream.extend_from_slice(&payload);
        let mut batches = flumen_batch::ipc::decode(&stream).expect("decode");
        assert_eq!(batches.len(), 1, "one batch per frame");
        let b = batches.pop().expect("one batch");
        if tally.batches == 0 || tally.batches + 1 == count {
            equal &= b == *reference;
        }
        tally.add(&b);
    }
    s.write_all(&[1]).expect("ack");
    s.flush().expect("flush");
    (tally, equal)
}

fn tcp_throughput(tls: Option<&Tls>, link: Link, batch: &RecordBatch, count: u64) -> Measured {
    let (client, server) = tcp_pair(tls, link);
    let (sent, reference) = (batch.clone(), batch.clone());
    let (cpu0, t0) = (cpu_time(), Instant::now());
    let tx = thread::spawn(move || tcp_send(client, &sent, count));
    let rx = thread::spawn(move || tcp_recv(server, &reference, count));
    tx.join().expect("sender thread");
    let (tally, first_last_equal) = rx.join().expect("receiver thread");
    Measured { wall: t0.elapsed(), cpu: cpu_time() - cpu0, tally, first_last_equal }
}

fn tcp_latency(tls: Option<&Tls>, link: Link, warmup: usize, pings: usize) -> Vec<Duration> {
    let (mut client, mut server) = tcp_pair(tls, link);
    let total = warmup + pings;
    let echo = thread::spawn(move || {
        let mut buf = [0u8; 64];
        for _ in 0..total {
            server.read_exact(&mut buf).expect("read ping");
            server.write_all(&buf).expect("write pong");
            server.flush().expect("flush");
        }
    });
    let ping = [0x5au8; 64];
    let mut pong = [0u8; 64];
    let mut times = Vec::with_capacity(pings);
    for i in 0..total {
        let t = Instant::now();
        client.write_all(&ping).expect("write ping");
        client.flush().expect("flush");
        client.read_exact(&mut pong).expect("read pong");
        assert_eq!(pong, ping, "the echo differs from the ping");
        if i >= warmup {
            times.push(t.elapsed());
        }
    }
    echo.join().expect("echo thread");
    times
}

// ---------------------------------------------------------------- a delayed link

/// The link between the two sides: direct, or through a relay adding delay (and loss, for UDP).
#[derive(Clone, Copy, Debug)]
struct Link {
    rtt: Duration,
    loss: f64,
}

impl Link {
    fn delayed(self) -> bool {
        !self.rtt.is_zero() || self.loss > 0.0 || std::env::var_os("W5_RELAY").is_some()
    }
}

/// A thread that emits each item it is given once `delay` has passed since it was given
/// (constant delay: arrival order is kept). At most `bound` items wait.
fn delay_line<T: Send + 'static>(
    delay: Duration,
    bound: usize,
    mut emit: impl FnMut(T) -> bool + Send + 'static,
) -> std::sync::mpsc::SyncSender<(Instant, T)> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<(Instant, T)>(bound);
    thread::spawn(move || {
        while let Ok((at, item)) = rx.recv() {
            // A sleep costs tens of µs however short: items due within 200 µs go now, or
            // the relay, not the link, would bound a stream of small datagrams.
            let due = at + delay;
            let now = Instant::now();
            if due > now + Duration::from_micros(200) {
                thread::sleep(due - now);
            }
            if !emit(item) {
                return;
            }
        }
    });
    tx
}

/// A UDP relay in front of `upstream` for one peer: every datagram held for half the
/// round trip each way, `loss` of them dropped (seeded). Returns the relay's address.
fn udp_relay(upstream: SocketAddr, link: Link) -> SocketAddr {
    let front = std::net::UdpSocket::bind("127.0.0.1:0").expect("relay front");
    let back = std::net::UdpSocket::bind("127.0.0.1:0").expect("relay back");
    // A burst the relay's thread has not read yet waits in the socket, not dropped: the
    // largest buffers the kernel gives (net.core.rmem_max), as a router's queue would be.
    for s in [&front, &back] {
        let s = socket2::SockRef::from(s);
        let _ = s.set_recv_buffer_size(64 << 20);
        let _ = s.set_send_buffer_size(64 << 20);
    }
    back.connect(upstream).expect("relay connect");
    let addr = front.local_addr().expect("relay address");
    let half = link.rtt / 2;
    let peer: Arc<std::sync::Mutex<Option<SocketAddr>>> = Arc::default();
    // Up: peer → upstream.
    {
        let (front, back_out) = (front.try_clone().expect("clone"), back.try_clone().expect("clone"));
        let peer = peer.clone();
        let line = delay_line(half, 1 << 16, move |d: Vec<u8>| {
            let _ = back_out.send(&d);
            true
        });
        thread::spawn(move || {
            let mut rng = Lcg(0x5eed_0001);
            let mut buf = vec![0u8; 65536];
            while let Ok((n, from)) = front.recv_from(&mut buf) {
                *peer.lock().expect("peer") = Some(from);
                if rng.chance(link.loss) {
                    continue;
                }
                if line.send((Instant::now(), buf[..n].to_vec())).is_err() {
                    return;
                }
            }
        });
    }
    // Down: upstream → peer.
    {
        let front_out = front.try_clone().expect("clone");
        let line = delay_line(half, 1 << 16, move |(d, to): (Vec<u8>, SocketAddr)| {
            let _ = front_out.send_to(&d, to);
            true
        });
        thread::spawn(move || {
            let mut rng = Lcg(0x5eed_0002);
            let mut buf = vec![0u8; 65536];
            while let Ok(n) = back.recv(&mut buf) {
                if rng.chance(link.loss) {
                    continue;
                }
                let Some(to) = *peer.lock().expect("peer") else { continue };
                if line.send((Instant::now(), (buf[..n].to_vec(), to))).is_err() {
                    return;
                }
            }
        });
    }
    addr
}

/// A TCP relay in front of `upstream` for one connection: every chunk held for half the
/// round trip each way, at most 16 MiB waiting per direction.
fn tcp_relay(upstream: SocketAddr, link: Link) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("relay listen");
    let addr = listener.local_addr().expect("relay address");
    let half = link.rtt / 2;
    thread::spawn(move || {
        let Ok((client, _)) = listener.accept() else { return };
        let Ok(server) = TcpStream::connect(upstream) else { return };
        for s in [&client, &server] {
            s.set_nodelay(true).expect("nodelay");
        }
        for (mut from, to) in
            [(client.try_clone().expect("clone"), server.try_clone().expect("clone")), (server, client)]
        {
            let mut out = to;
            // 256 chunks of at most 64 KiB: 16 MiB in flight inside the relay.
            let line = delay_line(half, 256, move |chunk: Vec<u8>| {
                if chunk.is_empty() {
                    let _ = out.shutdown(std::net::Shutdown::Write);
                    return false;
                }
                out.write_all(&chunk).is_ok()
            });
            thread::spawn(move || {
                let mut buf = vec![0u8; 64 * KIB];
                loop {
                    let n = from.read(&mut buf).unwrap_or(0);
                    if line.send((Instant::now(), buf[..n].to_vec())).is_err() || n == 0 {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A small seeded generator for the relay's drops (the same drops every run).
struct Lcg(u64);

impl Lcg {
    fn chance(&mut self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

// ---------------------------------------------------------------- report

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

fn main() {
    let mib = env_usize("W5_MIB", 1024);
    let pings = env_usize("W5_PINGS", 1000).max(1);
    let link = Link {
        rtt: Duration::from_millis(env_usize("W5_RTT_MS", 0) as u64),
        loss: std::env::var("W5_LOSS_PCT").ok().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 100.0,
    };
    let total_bytes = mib * MIB;

    let ca = ClusterCa::generate().expect("cluster CA");
    let (node_a, node_b) = (id("worker-1"), id("worker-2"));
    let (creds_a, creds_b) = (credentials(&ca, &node_a), credentials(&ca, &node_b));
    let quic = quic_setup(&creds_a, &creds_b, link);
    let tls = Tls {
        server: Arc::new(tls::server_config(&creds_b).expect("server config")),
        client: Arc::new(tls::client_config(&creds_a).expect("client config")),
        server_name: ServerName::try_from(node_b.dns_name()).expect("server name"),
    };

    let over = if link.delayed() {
        format!(
            "a relay adding {} ms of round trip ({}% datagram loss on QUIC's; none on TCP's)",
            link.rtt.as_millis(),
            link.loss * 100.0
        )
    } else {
        "loopback".to_owned()
    };
    println!("W5: transport over {over}, {mib} MiB of batch IPC bytes per case, {} CPUs", num_cpus());
    println!();
    println!("| batch IPC | transport | batches | seconds | GB/s | CPU s | CPU s/GB | GB per CPU s |");
    println!("|---:|---|---:|---:|---:|---:|---:|---:|");
    let mut ratios = Vec::new();
    let mut failures = Vec::new();
    for (label, target) in [("64 KiB", 64 * KIB), ("1 MiB", MIB), ("4 MiB", 4 * MIB)] {
        let b = batch(target / ROW_BYTES);
        let size = ipc_size(&b);
        let count = total_bytes.div_ceil(size) as u64;
        let expected = Tally::expected(&b, count);
        let gb = (size as u64 * count) as f64 / 1e9;
        let mut gbps = Vec::new();
        for transport in ["quic", "tcp+tls", "tcp"] {
            let m = match transport {
                "quic" => quic_throughput(&quic, size as u64, &b, count),
                "tcp+tls" => tcp_throughput(Some(&tls), link, &b, count),
                _ => tcp_throughput(None, link, &b, count),
            };
            if transport == "quic" && link.delayed() {
                let p = quic.sender.path_stats();
                eprintln!(
                    "  {label} quic path: rtt {:.1} ms, cwnd {} KB, {} packets sent, {} lost, {} congestion events",
                    p.rtt.as_secs_f64() * 1e3,
                    p.cwnd / 1000,
                    p.sent_packets,
                    p.lost_packets,
                    p.congestion_events
                );
            }
            if m.tally != expected || !m.first_last_equal {
                failures.push(format!(
                    "{label} {transport}: received {:?} (first/last equal: {}), sent {expected:?}",
                    m.tally, m.first_last_equal
                ));
            }
            let (secs, cpu) = (m.wall.as_secs_f64(), m.cpu.as_secs_f64());
            gbps.push(gb / secs);
            println!(
                "| {label} ({:.0} KiB) | {transport} | {count} | {secs:.2} | {:.2} | {cpu:.2} | {:.2} | {:.2} |",
                size as f64 / KIB as f64,
                gb / secs,
                cpu / gb,
                if cpu > 0.0 { gb / cpu } else { f64::NAN },
            );
        }
        ratios.push((label, gbps[0] / gbps[1], gbps[0] / gbps[2]));
    }
    println!();
    println!("| batch IPC | QUIC/TCP+TLS (GB/s) | QUIC/TCP (GB/s) |");
    println!("|---:|---:|---:|");
    for (label, tls_ratio, tcp_ratio) in &ratios {
        println!("| {label} | {tls_ratio:.2}× | {tcp_ratio:.2}× |");
    }

    let warmup = 100;
    println!();
    println!("Control round trip, {pings} pings after {warmup} warm-up ones:");
    println!();
    println!("| link | message | p50 µs | p99 µs |");
    println!("|---|---|---:|---:|");
    let mut rows = vec![("quic (control stream)", "`Hello`, ~50 B JSON", quic_latency(&quic, warmup, pings))];
    rows.push(("tcp+tls", "64 B", tcp_latency(Some(&tls), link, warmup, pings)));
    rows.push(("tcp", "64 B", tcp_latency(None, link, warmup, pings)));
    for (link, message, mut times) in rows {
        times.sort();
        println!("| {link} | {message} | {:.1} | {:.1} |", percentile(&times, 0.5), percentile(&times, 0.99));
    }

    quic.sender.close("done");
    if !failures.is_empty() {
        for f in &failures {
            eprintln!("MISMATCH: {f}");
        }
        std::process::exit(1);
    }
    println!();
    println!("Checked: every case received the batches, rows, int64 sum and string bytes sent.");
}

fn num_cpus() -> usize {
    thread::available_parallelism().map_or(1, usize::from)
}
