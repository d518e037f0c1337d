//! Leader election against a mocked API server (tower-test), with tokio's
//! paused clock: the Lease is released on shutdown, a leader that cannot
//! renew stops at its renew deadline (before anyone may take over), and a
//! candidate waits a whole lease duration on its own clock before taking a
//! Lease over, whatever renew time (another node's clock) the Lease shows.

use std::time::Duration;

use http::{Method, StatusCode};
use push_operator::leader::{LeaseLock, Timing};
use serde_json::{json, Value};
use tokio::time::Instant;

mod mock_api;
use mock_api::{body_json, next_within, respond, ApiHandle};

/// The paused clock jumps ahead while every task waits: allow a long time.
const WAIT: Duration = Duration::from_secs(60);

const LEASE: &str =
    "/apis/coordination.k8s.io/v1/namespaces/push-system/leases/push-operator-leader";

fn lock(identity: &str) -> (LeaseLock, ApiHandle) {
    let (client, handle) = mock_api::client();
    let timing = Timing::from_lease(Duration::from_secs(15));
    (
        LeaseLock::new(
            client,
            "push-system",
            "push-operator-leader",
            identity,
            timing,
        ),
        handle,
    )
}

fn lease(holder: Option<&str>, renew: &str, rv: &str) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "push-operator-leader", "namespace": "push-system", "resourceVersion": rv},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                 "acquireTime": renew, "renewTime": renew, "leaseTransitions": 1},
    })
}

/// Expects a GET of the Lease and answers it with `body`.
async fn get(handle: &mut ApiHandle, body: &Value) {
    let (req, send) = next_within(handle, "GET lease", WAIT).await;
    assert_eq!((req.method(), req.uri().path()), (&Method::GET, LEASE));
    respond(send, StatusCode::OK, body);
}

#[tokio::test(start_paused = true)]
async fn release_clears_the_holder_so_another_replica_takes_over_at_once() {
    let (me, mut api) = lock("op-a");
    let server = tokio::spawn(async move {
        get(
            &mut api,
            &lease(Some("op-a"), "2026-01-01T00:00:00.000000Z", "7"),
        )
        .await;
        let (req, send) = next_within(&mut api, "PUT lease", WAIT).await;
        assert_eq!(req.method(), Method::PUT);
        let body = body_json(req).await;
        respond(send, StatusCode::OK, &body);
        body
    });
    me.release().await.expect("release");
    let written = server.await.expect("server");
    assert_eq!(
        written["metadata"]["resourceVersion"], "7",
        "optimistic lock"
    );
    assert!(written["spec"]["holderIdentity"].is_null(), "{written}");
    assert_eq!(written["spec"]["leaseDurationSeconds"], 1);

    // A candidate sees no holder and takes the Lease on its first try.
    let (other, mut api) = lock("op-b");
    let server = tokio::spawn(async move {
        get(&mut api, &written).await;
        let (req, send) = next_within(&mut api, "PUT lease", WAIT).await;
        let body = body_json(req).await;
        respond(send, StatusCode::OK, &body);
        body
    });
    assert!(other.try_acquire_or_renew().await.expect("acquire"));
    let taken = server.await.expect("server");
    assert_eq!(taken["spec"]["holderIdentity"], "op-b");
    assert_eq!(taken["spec"]["leaseDurationSeconds"], 15);
}

#[tokio::test(start_paused = true)]
async fn release_leaves_a_lease_held_by_someone_else() {
    let (me, mut api) = lock("op-a");
    let server = tokio::spawn(async move {
        get(
            &mut api,
            &lease(Some("op-b"), "2026-01-01T00:00:00.000000Z", "9"),
        )
        .await;
        // No write may follow.
        let after = tokio::time::timeout(Duration::from_secs(5), api.next_request()).await;
        !matches!(after, Ok(Some(_)))
    });
    me.release().await.expect("release");
    drop(me);
    assert!(
        server.await.expect("server"),
        "release wrote a Lease it does not hold"
    );
}

#[tokio::test(start_paused = true)]
async fn leader_that_cannot_renew_stops_at_the_renew_deadline() {
    let (me, mut api) = lock("op-a");
    let server = tokio::spawn(async move {
        // Acquire: no Lease yet, created.
        let (req, send) = next_within(&mut api, "GET lease", WAIT).await;
        assert_eq!(req.method(), Method::GET);
        respond(
            send,
            StatusCode::NOT_FOUND,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "reason": "NotFound", "code": 404}),
        );
        let (req, send) = next_within(&mut api, "POST lease", WAIT).await;
        assert_eq!(req.method(), Method::POST);
        let body = body_json(req).await;
        respond(send, StatusCode::CREATED, &body);
        // Then the API server stops answering (partition): requests hang.
        let mut pending = Vec::new();
        while let Some(r) = api.next_request().await {
            pending.push(r);
        }
    });
    me.acquire().await.expect("acquired");
    let renewed = me.renewed_at().expect("renewal time recorded");
    let lost = me.hold().await;
    let after = renewed.elapsed();
    assert!(lost.to_string().contains("in time"), "{lost}");
    assert!(
        after >= me.timing.renew_deadline
            && after < me.timing.renew_deadline + Duration::from_millis(100),
        "stopped {after:?} after the last renewal"
    );
    assert!(
        after < me.timing.lease_duration,
        "before a candidate may take over"
    );
    drop(me);
    server.abort();
}

#[tokio::test(start_paused = true)]
async fn candidate_waits_a_lease_duration_on_its_own_clock() {
    let (me, mut api) = lock("op-b");
    // The holder's renew time is a year old by this node's wall clock (clock
    // skew, or a stale read): it must not count as expired yet.
    let held = lease(Some("op-a"), "2025-01-01T00:00:00.000000Z", "3");
    let server = tokio::spawn(async move {
        get(&mut api, &held).await;
        get(&mut api, &held).await;
        get(&mut api, &held).await;
        let (req, send) = next_within(&mut api, "PUT lease", WAIT).await;
        let body = body_json(req).await;
        respond(send, StatusCode::OK, &body);
        body
    });
    let start = Instant::now();
    assert!(!me.try_acquire_or_renew().await.expect("first look"));
    tokio::time::advance(Duration::from_secs(14)).await;
    assert!(!me.try_acquire_or_renew().await.expect("14 s later"));
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(
        me.try_acquire_or_renew().await.expect("15 s later"),
        "taken after {:?} without a renewal",
        start.elapsed()
    );
    let taken = server.await.expect("server");
    assert_eq!(taken["spec"]["holderIdentity"], "op-b");
    assert_eq!(taken["spec"]["leaseTransitions"], 2);
}
