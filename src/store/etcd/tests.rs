//! Tests of the etcd backend against a real local etcd (skipped when none is installed).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use super::{EtcdBackend, EtcdOptions, EtcdTls};
use crate::store::{Backend, Event, EventKind, EventStream, KeyValue, Revision, StoreError};
use crate::testing::etcd_server::{etcd_available, EtcdServer};

/// Starts a member and connects a backend to it, or None when etcd is not installed.
async fn setup(opts: EtcdOptions) -> Option<(EtcdServer, EtcdBackend)> {
    if !etcd_available() {
        eprintln!("skipping: no etcd binary");
        return None;
    }
    let server = tokio::task::spawn_blocking(EtcdServer::start).await.unwrap().unwrap();
    let backend =
        EtcdBackend::connect_with(&server.endpoint_url(), EtcdTls::default(), opts).await.unwrap();
    Some((server, backend))
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

async fn raw_client(server: &EtcdServer) -> etcd_client::Client {
    etcd_client::Client::connect([server.client_url()], None).await.unwrap()
}

/// Reads batches until the stream has delivered `last`.
async fn collect_until(stream: &mut EventStream, last: Revision) -> Vec<Event> {
    let mut out: Vec<Event> = Vec::new();
    while out.last().is_none_or(|e| e.revision() < last) {
        let batch = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("events in time")
            .expect("stream open")
            .expect("no stream error");
        assert!(!batch.is_empty());
        out.extend(batch);
    }
    out
}

async fn assert_quiet(stream: &mut EventStream) {
    let next = tokio::time::timeout(Duration::from_millis(300), stream.next()).await;
    assert!(next.is_err(), "unexpected item {next:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn create_get_update_delete() {
    let Some((server, be)) = setup(EtcdOptions::default()).await else {
        return;
    };
    assert_eq!(be.name(), "etcd");
    let value = Bytes::from_static(b"\x00\xffbinary");
    let a = be.create("/registry/a", value.clone()).await.unwrap();
    assert_eq!(a.value, value);
    assert_eq!(a.create_revision, a.mod_revision);
    assert_eq!(be.current_revision().await.unwrap(), a.mod_revision);
    assert_eq!(be.get_at("/registry/a", 0).await.unwrap(), Some(a.clone()));
    assert_eq!(
        be.create("/registry/a", b("x")).await,
        Err(StoreError::AlreadyExists { key: "/registry/a".into() })
    );

    let a2 = be.update("/registry/a", b("v2"), Some(a.mod_revision)).await.unwrap();
    assert_eq!((a2.create_revision, a2.value.clone()), (a.create_revision, b("v2")));
    assert!(a2.mod_revision > a.mod_revision);
    assert_eq!(
        be.update("/registry/a", b("v3"), Some(a.mod_revision)).await,
        Err(StoreError::Conflict {
            key: "/registry/a".into(),
            expected: a.mod_revision,
            current: a2.mod_revision
        })
    );
    let a3 = be.update("/registry/a", b("v3"), None).await.unwrap();
    assert_eq!(a3.create_revision, a.create_revision);
    assert_eq!(be.get_at("/registry/a", a2.mod_revision).await.unwrap(), Some(a2.clone()));
    assert_eq!(be.get_at("/registry/a", a.mod_revision).await.unwrap(), Some(a.clone()));

    let missing = || Err(StoreError::NotFound { key: "/registry/none".into() });
    assert_eq!(be.update("/registry/none", b("x"), None).await, missing());
    assert_eq!(be.update("/registry/none", b("x"), Some(0)).await, missing());
    assert_eq!(be.update("/registry/none", b("x"), Some(a.mod_revision)).await, missing());
    assert_eq!(be.delete("/registry/none", None).await, missing());
    assert_eq!(be.get_at("/registry/none", 0).await.unwrap(), None);

    assert_eq!(
        be.delete("/registry/a", Some(a2.mod_revision)).await,
        Err(StoreError::Conflict {
            key: "/registry/a".into(),
            expected: a2.mod_revision,
            current: a3.mod_revision
        })
    );
    let gone = be.delete("/registry/a", Some(a3.mod_revision)).await.unwrap();
    let delete_rev = be.current_revision().await.unwrap();
    assert_eq!(gone, KeyValue { mod_revision: delete_rev, ..a3.clone() });
    assert_eq!(be.get_at("/registry/a", 0).await.unwrap(), None);
    assert_eq!(be.get_at("/registry/a", delete_rev - 1).await.unwrap(), Some(a3));
    // A new incarnation gets a new create revision.
    let again = be.create("/registry/a", b("again")).await.unwrap();
    assert!(again.create_revision > delete_rev);

    // Keys outside the prefix are invisible; ours carry it inside etcd.
    let mut raw = raw_client(&server).await;
    raw.put("/registry/foreign", "x", None).await.unwrap();
    let page = be.list_at("/registry/", None, 0, 0).await.unwrap();
    assert_eq!(page.items.iter().map(|kv| kv.key.as_str()).collect::<Vec<_>>(), ["/registry/a"]);
    let inside = raw.get("/skiff/registry/a", None).await.unwrap();
    assert_eq!(inside.kvs()[0].value(), b"again");

    let future = be.current_revision().await.unwrap() + 100;
    assert!(matches!(
        be.get_at("/registry/a", future).await,
        Err(StoreError::FutureRevision { requested, .. }) if requested == future
    ));
    assert!(matches!(be.get_at("/registry/a", -1).await, Err(StoreError::Invalid(_))));
}

#[tokio::test(flavor = "multi_thread")]
async fn cas_race_has_one_winner_per_round() {
    let Some((_server, be)) = setup(EtcdOptions::default()).await else {
        return;
    };
    let be = Arc::new(be);
    let mut current = be.create("/race", b("0")).await.unwrap();
    for round in 1..=3 {
        let expected = current.mod_revision;
        let tasks: Vec<_> = (0..32)
            .map(|i| {
                let be = be.clone();
                tokio::spawn(async move {
                    be.update("/race", b(&format!("{round}-{i}")), Some(expected)).await
                })
            })
            .collect();
        let mut winners = Vec::new();
        let mut conflicts = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                Ok(kv) => winners.push(kv),
                Err(StoreError::Conflict { current, expected: reported, .. }) => {
                    assert_eq!(reported, expected);
                    conflicts.push(current)
                }
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}");
        let winner = winners.pop().unwrap();
        assert!(conflicts.iter().all(|&c| c == winner.mod_revision));
        assert_eq!(be.get_at("/race", 0).await.unwrap(), Some(winner.clone()));
        current = winner;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn list_at_older_revision_with_limits() {
    let Some((_server, be)) = setup(EtcdOptions::default()).await else {
        return;
    };
    let a = be.create("/p/a", b("a1")).await.unwrap();
    let bb = be.create("/p/b", b("b1")).await.unwrap();
    let c = be.create("/p/c", b("c1")).await.unwrap();
    be.create("/q/x", b("other prefix")).await.unwrap();
    let r1 = be.current_revision().await.unwrap();
    be.delete("/p/b", None).await.unwrap();
    be.update("/p/a", b("a2"), None).await.unwrap();
    be.create("/p/d", b("d1")).await.unwrap();

    let old = be.list_at("/p/", None, 0, r1).await.unwrap();
    assert_eq!(old.items, vec![a.clone(), bb.clone(), c.clone()]);
    assert_eq!((old.revision, old.more), (r1, false));

    let first = be.list_at("/p/", None, 2, r1).await.unwrap();
    assert_eq!((first.items, first.more), (vec![a.clone(), bb.clone()], true));
    let rest = be.list_at("/p/", Some("/p/b"), 2, r1).await.unwrap();
    assert_eq!((rest.items, rest.more), (vec![c.clone()], false));
    // start_after is exclusive even for keys that do not exist.
    let from_bb = be.list_at("/p/", Some("/p/a0"), 0, r1).await.unwrap();
    assert_eq!(from_bb.items, vec![bb, c.clone()]);
    let after_all = be.list_at("/p/", Some("/p/z"), 0, r1).await.unwrap();
    assert!(after_all.items.is_empty() && !after_all.more);

    let now = be.list_at("/p/", None, 0, 0).await.unwrap();
    assert_eq!(now.revision, be.current_revision().await.unwrap());
    let keys: Vec<_> = now.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/p/a", "/p/c", "/p/d"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn pagination_at_fixed_revision_while_writing() {
    let opts = EtcdOptions { load_page_size: 7, ..EtcdOptions::default() };
    let Some((_server, be)) = setup(opts).await else {
        return;
    };
    let be = Arc::new(be);
    let mut expected = Vec::new();
    for i in 0..40 {
        expected.push(be.create(&format!("/pods/{i:03}"), b(&format!("v{i}"))).await.unwrap());
    }
    let revision = be.current_revision().await.unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (be, stop) = (be.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let key = format!("/pods/{:03}", n % 40);
                match be.update(&key, b("changed"), None).await {
                    Ok(_) | Err(StoreError::NotFound { .. }) => {}
                    Err(e) => panic!("update: {e}"),
                }
                be.create(&format!("/pods/{n:03}x"), b("new")).await.unwrap();
                match be.delete(&format!("/pods/{:03}", (n * 7) % 40), None).await {
                    Ok(_) | Err(StoreError::NotFound { .. }) => {}
                    Err(e) => panic!("delete: {e}"),
                }
                n += 1;
            }
            n
        })
    };
    let mut got = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = be.list_at("/pods/", after.as_deref(), 6, revision).await.unwrap();
        assert_eq!(page.revision, revision);
        assert!(page.items.len() <= 6);
        after = page.items.last().map(|kv| kv.key.clone());
        got.extend(page.items);
        if !page.more {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (loaded, load_rev) = be.load().await.unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(writer.await.unwrap() > 0);
    assert_eq!(got, expected);
    // load() pages (7 at a time) at one revision too: it matches a single list at that revision.
    assert_eq!(loaded, be.list_at("", None, 0, load_rev).await.unwrap().items);
}

#[tokio::test(flavor = "multi_thread")]
async fn events_from_several_revisions() {
    let Some((_server, be)) = setup(EtcdOptions::default()).await else {
        return;
    };
    let start = be.current_revision().await.unwrap();
    let mut expected = Vec::new();
    let x = be.create("/e/x", b("x1")).await.unwrap();
    expected.push(Event { kind: EventKind::Create, kv: x.clone(), prev: None });
    let y = be.create("/e/y", b("y1")).await.unwrap();
    expected.push(Event { kind: EventKind::Create, kv: y.clone(), prev: None });
    let x2 = be.update("/e/x", b("x2"), Some(x.mod_revision)).await.unwrap();
    expected.push(Event { kind: EventKind::Update, kv: x2.clone(), prev: Some(x.clone()) });
    let ygone = be.delete("/e/y", None).await.unwrap();
    expected.push(Event { kind: EventKind::Delete, kv: ygone, prev: Some(y) });
    let y2 = be.create("/e/y", b("y2")).await.unwrap();
    expected.push(Event { kind: EventKind::Create, kv: y2, prev: None });
    let last = be.current_revision().await.unwrap();

    for (i, after) in [start, x.mod_revision, x2.mod_revision, last - 1].into_iter().enumerate() {
        let mut stream = be.events(after).await.unwrap();
        let want: Vec<_> = expected.iter().filter(|e| e.revision() > after).cloned().collect();
        assert_eq!(collect_until(&mut stream, last).await, want, "after {after} (#{i})");
        assert_quiet(&mut stream).await;
    }

    // From the current revision: only later writes, live.
    let mut stream = be.events(last).await.unwrap();
    assert_quiet(&mut stream).await;
    let z = be.create("/e/z", b("z")).await.unwrap();
    let live = collect_until(&mut stream, z.mod_revision).await;
    assert_eq!(live, vec![Event { kind: EventKind::Create, kv: z, prev: None }]);
}

#[tokio::test(flavor = "multi_thread")]
async fn compaction_makes_old_revisions_too_old() {
    let Some((server, be)) = setup(EtcdOptions::default()).await else {
        return;
    };
    assert_eq!(be.compacted_revision().await.unwrap(), 0);
    let k1 = be.create("/c/k", b("1")).await.unwrap();
    let k2 = be.update("/c/k", b("2"), None).await.unwrap();
    let k3 = be.update("/c/k", b("3"), None).await.unwrap();
    be.compact(k2.mod_revision).await.unwrap();
    be.compact(k1.mod_revision).await.unwrap(); // older: a no-op
    assert_eq!(be.compacted_revision().await.unwrap(), k2.mod_revision);

    let too_old = |requested| StoreError::TooOld { requested, oldest: k2.mod_revision };
    assert_eq!(be.get_at("/c/k", k1.mod_revision).await, Err(too_old(k1.mod_revision)));
    assert_eq!(
        be.list_at("/c/", None, 0, k1.mod_revision).await.unwrap_err(),
        too_old(k1.mod_revision)
    );
    assert_eq!(be.events(k1.mod_revision).await.err(), Some(too_old(k1.mod_revision)));
    assert_eq!(be.get_at("/c/k", k2.mod_revision).await.unwrap(), Some(k2.clone()));
    let mut stream = be.events(k2.mod_revision).await.unwrap();
    let events = collect_until(&mut stream, k3.mod_revision).await;
    assert_eq!(events, vec![Event { kind: EventKind::Update, kv: k3.clone(), prev: Some(k2) }]);

    // Another client compacts further: a fresh backend and the old one both find it.
    let k4 = be.update("/c/k", b("4"), None).await.unwrap();
    raw_client(&server).await.compact(k4.mod_revision, None).await.unwrap();
    let fresh = EtcdBackend::connect(&server.endpoint_url(), EtcdTls::default()).await.unwrap();
    assert_eq!(fresh.compacted_revision().await.unwrap(), k4.mod_revision);
    assert_eq!(be.compacted_revision().await.unwrap(), k4.mod_revision);
    assert!(matches!(
        be.events(k3.mod_revision).await.err(),
        Some(StoreError::TooOld { oldest, .. }) if oldest == k4.mod_revision
    ));
    let future = be.current_revision().await.unwrap() + 10;
    assert!(matches!(be.compact(future).await, Err(StoreError::FutureRevision { .. })));
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_connection_is_unavailable() {
    let opts = EtcdOptions {
        request_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(1),
        ..EtcdOptions::default()
    };
    let Some((mut server, be)) = setup(opts.clone()).await else {
        return;
    };
    let mut stream = be.events(0).await.unwrap();
    be.create("/u/a", b("a")).await.unwrap();
    assert_eq!(stream.next().await.unwrap().unwrap().len(), 1);
    server.kill().unwrap();
    let next = tokio::time::timeout(Duration::from_secs(30), stream.next()).await.unwrap();
    assert!(matches!(next, Some(Err(StoreError::Unavailable(_)))), "{next:?}");
    assert!(stream.next().await.is_none(), "the stream ends after its error");
    assert!(matches!(be.get_at("/u/a", 0).await, Err(StoreError::Unavailable(_))));
    let url = server.endpoint_url();
    let refused = EtcdBackend::connect_with(&url, EtcdTls::default(), opts).await;
    assert!(matches!(refused, Err(StoreError::Unavailable(_))));
}

#[tokio::test(flavor = "multi_thread")]
async fn recovers_after_etcd_restarts() {
    let opts = EtcdOptions { request_timeout: Duration::from_secs(3), ..EtcdOptions::default() };
    let Some((mut server, be)) = setup(opts).await else {
        return;
    };
    let a = be.create("/r/a", b("1")).await.unwrap();
    let mut stream = be.events(a.mod_revision).await.unwrap();
    let server = tokio::task::spawn_blocking(move || server.restart().map(|()| server));
    let next = tokio::time::timeout(Duration::from_secs(30), stream.next()).await.unwrap();
    assert!(matches!(next, Some(Err(StoreError::Unavailable(_)))), "{next:?}");
    let _server = server.await.unwrap().unwrap();
    // The same backend works again once the channel has reconnected; the write was durable.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let got = loop {
        match be.get_at("/r/a", 0).await {
            Ok(v) => break v,
            Err(StoreError::Unavailable(_)) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("no recovery: {e}"),
        }
    };
    assert_eq!(got, Some(a.clone()));
    let mut stream = be.events(a.mod_revision).await.unwrap();
    let a2 = be.update("/r/a", b("2"), Some(a.mod_revision)).await.unwrap();
    let events = collect_until(&mut stream, a2.mod_revision).await;
    assert_eq!(events, vec![Event { kind: EventKind::Update, kv: a2, prev: Some(a) }]);
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_validates_urls_and_tls() {
    let invalid = |r: super::Result<EtcdBackend>| matches!(r, Err(StoreError::Invalid(_)));
    assert!(invalid(EtcdBackend::connect("etcd://", EtcdTls::default()).await));
    assert!(invalid(EtcdBackend::connect("http://127.0.0.1:2379", EtcdTls::default()).await));
    let no_files = EtcdBackend::connect("etcds://127.0.0.1:2379", EtcdTls::default()).await;
    assert!(matches!(&no_files, Err(StoreError::Invalid(m)) if m.contains("CA certificate")));
    let stray = EtcdTls { ca_file: Some("/tmp/ca.pem".into()), ..EtcdTls::default() };
    let plain = EtcdBackend::connect("etcd://127.0.0.1:2379", stray).await;
    assert!(matches!(&plain, Err(StoreError::Invalid(m)) if m.contains("etcds://")));
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_with_client_certificates() {
    if !etcd_available() {
        return;
    }
    let server = tokio::task::spawn_blocking(EtcdServer::start_tls).await.unwrap().unwrap();
    let url = server.endpoint_url();
    assert!(url.starts_with("etcds://"));
    let be = EtcdBackend::connect(&url, server.client_tls()).await.unwrap();
    let kv = be.create("/tls/a", b("secret")).await.unwrap();
    assert_eq!(be.get_at("/tls/a", 0).await.unwrap(), Some(kv));

    // A plain client cannot talk to it, and etcds:// without files is refused up front.
    let plain = url.replacen("etcds://", "etcd://", 1);
    let opts = EtcdOptions { request_timeout: Duration::from_secs(2), ..EtcdOptions::default() };
    let refused = EtcdBackend::connect_with(&plain, EtcdTls::default(), opts.clone()).await;
    assert!(matches!(refused, Err(StoreError::Unavailable(_))), "{:?}", refused.err());
    let no_files = EtcdBackend::connect(&url, EtcdTls::default()).await;
    assert!(matches!(no_files, Err(StoreError::Invalid(_))));
    // A CA that did not sign the server's certificate fails the handshake.
    let other = tokio::task::spawn_blocking(EtcdServer::start_tls).await.unwrap().unwrap();
    let wrong = EtcdTls { ca_file: other.client_tls().ca_file, ..server.client_tls() };
    let refused = EtcdBackend::connect_with(&url, wrong, opts).await;
    assert!(matches!(refused, Err(StoreError::Unavailable(_))), "{:?}", refused.err());
}

#[tokio::test(flavor = "multi_thread")]
async fn recovers_after_a_long_outage() {
    let opts = EtcdOptions { request_timeout: Duration::from_secs(3), ..EtcdOptions::default() };
    let Some((mut server, be)) = setup(opts).await else {
        return;
    };
    let a = be.create("/o/a", b("1")).await.unwrap();
    let mut server =
        tokio::task::spawn_blocking(move || server.kill().map(|()| server)).await.unwrap().unwrap();
    // Requests fail while the member is away (each one a reconnect attempt).
    for _ in 0..5 {
        assert!(matches!(be.get_at("/o/a", 0).await, Err(StoreError::Unavailable(_))));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let _server = tokio::task::spawn_blocking(move || server.restart().map(|()| server))
        .await
        .unwrap()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let got = loop {
        match be.get_at("/o/a", 0).await {
            Ok(v) => break v,
            Err(StoreError::Unavailable(_)) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => panic!("no recovery after the outage: {e}"),
        }
    };
    assert_eq!(got, Some(a));
}
