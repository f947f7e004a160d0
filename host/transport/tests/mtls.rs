//! The mutual-TLS refusal matrix over real QUIC: no client certificate, a
//! self-signed one, one from another CA, an expired one, and a valid
//! certificate for the wrong node (both directions) are each refused before any
//! application data: the server's accept never yields a connection for them,
//! the client's connect fails with a clear error, and the server goes on
//! accepting valid peers.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::*;
use flumen_transport::certs::{ClusterCa, NodeCredentials};
use flumen_transport::{Endpoint, EndpointOptions, TransportError};
use time::{Duration, OffsetDateTime};

/// Connects `client` to the server expecting `expected`; returns the client's
/// error and the server's, both of which must exist.
async fn refused(server: &Endpoint, client: &Endpoint, expected: &str) -> (TransportError, TransportError) {
    let addr = server.local_addr().expect("addr");
    let expected = id(expected);
    let (accepted, connected) = tokio::join!(server.accept_one(), client.connect(addr, &expected));
    let server_err = match accepted.expect("endpoint open") {
        Ok((peer, _)) => panic!("the server accepted {peer}"),
        Err(e) => e,
    };
    let client_err = match connected {
        Ok(c) => panic!("the client connected to {}", c.peer()),
        Err(e) => e,
    };
    (client_err, server_err)
}

/// A valid peer still gets through afterwards.
async fn still_serves(server: &Endpoint, dir: &std::path::Path) {
    let (client, _) = endpoint(&creds(dir, "coordinator"), EndpointOptions::default());
    let addr = server.local_addr().expect("addr");
    let (accepted, connected) = tokio::join!(server.accept_one(), client.connect(addr, server.node()));
    assert_eq!(accepted.expect("open").expect("accepted").0, id("coordinator"));
    connected.expect("connected");
}

fn with_cert(ca_pem: &str, node: &str, cert_pem: &str, key_pem: &str) -> NodeCredentials {
    NodeCredentials::from_pem(&id(node), ca_pem, cert_pem, key_pem).expect("credentials")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_without_a_valid_certificate_for_the_expected_node_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    cluster(dir.path());
    let ca_pem = std::fs::read_to_string(dir.path().join("ca.pem")).expect("ca");
    let (server, addr) = endpoint(&creds(dir.path(), "worker-1"), EndpointOptions::default());

    // 1. No client certificate at all (a plain quinn client that trusts the CA).
    {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(creds(dir.path(), "worker-1").ca).expect("root");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("tls13")
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"flumen/1".to_vec()];
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic tls");
        let mut raw = quinn::Endpoint::client(loopback()).expect("client");
        raw.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
        let attempt = async {
            let conn = raw.connect(addr, "worker-1.node.flumen").expect("connect").await?;
            // TLS 1.3 lets a client finish first; the server's refusal arrives next,
            // before the client could read anything from it.
            let mut recv = conn.accept_uni().await?;
            let _ = recv.read_to_end(1).await;
            Ok::<_, quinn::ConnectionError>(())
        };
        let (accepted, connected) = tokio::join!(server.accept_one(), attempt);
        let err = accepted.expect("open").expect_err("accepted a client without a certificate");
        assert!(err.to_string().contains("handshake"), "{err}");
        let client_err = connected.expect_err("no client certificate got through");
        assert!(client_err.to_string().to_lowercase().contains("certificate"), "{client_err}");
    }

    // 2. A self-signed certificate naming a real node.
    {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["coordinator.node.flumen".into()])
            .expect("params")
            .self_signed(&key)
            .expect("self-signed");
        let (client, _) =
            endpoint(&with_cert(&ca_pem, "coordinator", &cert.pem(), &key.serialize_pem()), EndpointOptions::default());
        let (client_err, server_err) = refused(&server, &client, "worker-1").await;
        assert!(server_err.to_string().contains("handshake"), "{server_err}");
        assert!(client_err.to_string().contains("worker-1"), "{client_err}");
    }

    // 3. A certificate from another cluster's CA.
    {
        let other = ClusterCa::generate().expect("other CA");
        let issued = other.issue_for_days(&id("coordinator"), 30).expect("issue");
        let (client, _) =
            endpoint(&with_cert(&ca_pem, "coordinator", &issued.cert_pem, &issued.key_pem), EndpointOptions::default());
        let (client_err, server_err) = refused(&server, &client, "worker-1").await;
        // Both CAs carry the same name: the signature is what tells them apart.
        assert!(server_err.to_string().contains("invalid peer certificate"), "{server_err}");
        assert!(client_err.to_string().contains("worker-1"), "{client_err}");
    }

    // 4. An expired certificate from the right CA.
    {
        let ca = ClusterCa::load(dir.path()).expect("load").expect("a CA");
        let now = OffsetDateTime::now_utc();
        let issued = ca.issue(&id("coordinator"), now - Duration::days(10), now - Duration::days(1)).expect("issue");
        let (client, _) =
            endpoint(&with_cert(&ca_pem, "coordinator", &issued.cert_pem, &issued.key_pem), EndpointOptions::default());
        let (_, server_err) = refused(&server, &client, "worker-1").await;
        assert!(server_err.to_string().to_lowercase().contains("expired"), "{server_err}");
    }

    // 5a. The client dials worker-2 but reaches worker-1: refused by the client.
    {
        let (client, _) = endpoint(&creds(dir.path(), "coordinator"), EndpointOptions::default());
        let (client_err, _) = refused(&server, &client, "worker-2").await;
        let text = client_err.to_string();
        assert!(text.contains("worker-2"), "{text}");
    }

    still_serves(&server, dir.path()).await;
}

/// 5b. A valid worker-2 connecting to a node that admits only the coordinator:
/// refused by the server, and the error names both identities.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_certificate_for_a_node_not_admitted_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    cluster(dir.path());
    let options = EndpointOptions { allowed_peers: Some(BTreeSet::from([id("coordinator")])), ..Default::default() };
    let (server, _) = endpoint(&creds(dir.path(), "worker-1"), options);
    let (client, _) = endpoint(&creds(dir.path(), "worker-2"), EndpointOptions::default());
    let (client_err, server_err) = refused(&server, &client, "worker-1").await;
    for text in [server_err.to_string(), client_err.to_string()] {
        assert!(text.contains("worker-2") && text.contains("coordinator"), "{text}");
    }
    still_serves(&server, dir.path()).await;
}

#[test]
fn keys_are_private_and_the_ca_is_reused() {
    let dir = tempfile::tempdir().expect("tempdir");
    cluster(dir.path());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for key in ["ca.key", "worker-1.key"] {
            let mode = std::fs::metadata(dir.path().join(key)).expect("key").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
    }
    let ca = std::fs::read(dir.path().join("ca.pem")).expect("ca");
    let created = flumen_transport::certs::write_cluster_dir(dir.path(), &[id("worker-3")], 10).expect("again");
    assert!(!created, "the CA was replaced");
    assert_eq!(std::fs::read(dir.path().join("ca.pem")).expect("ca"), ca);
    creds(dir.path(), "worker-3");
}

/// A peer that completes TLS but never sends `Hello` holds up no other peer:
/// every incoming attempt is set up in its own task. The handshake timeout is
/// an hour here, so a node that set attempts up one at a time would never get
/// to the second peer (the test's own minute-long guard then fails it).
#[tokio::test]
async fn a_peer_that_never_says_hello_holds_up_no_other() {
    let dir = tempfile::tempdir().expect("dir");
    cluster(dir.path());
    let mut options = EndpointOptions::default();
    options.limits.handshake_timeout = std::time::Duration::from_secs(3600);
    let (server, addr) = endpoint(&creds(dir.path(), "worker-1"), options);

    // A raw QUIC client with a genuine certificate: TLS completes, then silence.
    let tls = flumen_transport::tls::client_config(&creds(dir.path(), "coordinator")).expect("client config");
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic client config");
    let mut raw = quinn::Endpoint::client(loopback()).expect("raw endpoint");
    raw.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let stalled = raw.connect(addr, &id("worker-1").dns_name()).expect("connect").await.expect("TLS completes");

    let (good, _) = endpoint(&creds(dir.path(), "worker-2"), EndpointOptions::default());
    let w1 = id("worker-1");
    let both = async { tokio::join!(server.accept_one(), good.connect(addr, &w1)) };
    let (accepted, connected) = tokio::time::timeout(std::time::Duration::from_secs(60), both)
        .await
        .expect("the good peer must be set up while the silent one is still pending");
    let (peer, _conn) = accepted.expect("an attempt finished").expect("the good peer is accepted");
    assert_eq!(peer, id("worker-2"));
    connected.expect("the good peer connects");
    drop(stalled);
}
