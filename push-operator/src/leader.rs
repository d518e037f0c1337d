//! Leader election on a `coordination.k8s.io/v1` Lease, so two operator
//! replicas never reconcile at once. Optimistic concurrency does the
//! locking: every write carries the Lease's `resourceVersion`, and the API
//! server refuses (409) a write based on a stale read.
//!
//! The timing follows client-go's leaderelection, and for the same reason:
//! clocks of different nodes are not compared.
//!
//! * A candidate treats a Lease held by someone else as expired only after
//!   it has seen the same record (holder, renew time, resourceVersion) for a
//!   whole `lease_duration` on its own monotonic clock ([`Observed`]).
//! * The leader stops acting once `renew_deadline` (< `lease_duration`) has
//!   passed on its monotonic clock since its last successful renewal
//!   ([`RenewClock`]), even if a renewal is still in flight. So it has
//!   stopped before any candidate can consider the Lease expired.
//! * On shutdown the leader first stops reconciling, then [`LeaseLock::release`]s
//!   the Lease (no holder, 1 s duration) so another replica takes over at
//!   once instead of after `lease_duration`.
//!
//! A leader that loses the Lease exits (aborting its reconciles); Kubernetes
//! restarts it as a candidate. Exiting is simpler and safer than stopping
//! mid-reconcile and campaigning again.

use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::Client;
use tokio::time::Instant;

use crate::{Error, Result};

/// Durations of the election (client-go's defaults are 15 s / 10 s / 2 s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// How long a Lease stays valid without renewal, as candidates see it.
    pub lease_duration: Duration,
    /// The leader stops acting when it has not renewed for this long.
    pub renew_deadline: Duration,
    /// Pause between attempts to acquire or renew.
    pub retry_period: Duration,
}

impl Timing {
    /// Renew deadline 2/3 of the lease, retry every 2/15 (at least 1 s):
    /// several renewal attempts fit before the deadline, and the deadline
    /// leaves a third of the lease as margin before anyone may take over.
    pub fn from_lease(lease_duration: Duration) -> Self {
        Timing {
            lease_duration,
            renew_deadline: lease_duration * 2 / 3,
            retry_period: (lease_duration * 2 / 15).max(Duration::from_secs(1)),
        }
    }

    /// The rule that makes leaders not overlap.
    pub fn validate(&self) -> Result<()> {
        if self.renew_deadline >= self.lease_duration {
            return Err(Error::InvalidSpec(
                "leader election: renew deadline must be shorter than the lease duration".into(),
            ));
        }
        if self.retry_period >= self.renew_deadline {
            return Err(Error::InvalidSpec(
                "leader election: retry period must be shorter than the renew deadline".into(),
            ));
        }
        Ok(())
    }
}

/// The leader's side: when it last renewed, on the local monotonic clock.
#[derive(Clone, Copy, Debug)]
pub struct RenewClock {
    renewed_at: Instant,
    renew_deadline: Duration,
}

impl RenewClock {
    pub fn new(renewed_at: Instant, renew_deadline: Duration) -> Self {
        RenewClock {
            renewed_at,
            renew_deadline,
        }
    }
    pub fn renewed(&mut self, at: Instant) {
        self.renewed_at = self.renewed_at.max(at);
    }
    /// The instant after which this process must no longer act as leader.
    pub fn deadline(&self) -> Instant {
        self.renewed_at + self.renew_deadline
    }
    pub fn lost(&self, now: Instant) -> bool {
        now >= self.deadline()
    }
}

/// A candidate's side: the Lease record it last saw and since when, on the
/// local monotonic clock.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    record: Option<(String, Instant)>,
}

impl Observed {
    /// Records what was read; a changed record restarts the clock.
    pub fn see(&mut self, record: String, now: Instant) {
        match &self.record {
            Some((r, _)) if *r == record => {}
            _ => self.record = Some((record, now)),
        }
    }
    /// Whether the holder has had `lease_duration` to renew and has not.
    pub fn expired(&self, now: Instant, lease_duration: Duration) -> bool {
        match &self.record {
            Some((_, since)) => now.duration_since(*since) >= lease_duration,
            None => false,
        }
    }
}

/// What identifies one renewal of a Lease.
fn record_of(lease: &Lease) -> String {
    let spec = lease.spec.clone().unwrap_or_default();
    format!(
        "{}|{}|{}",
        spec.holder_identity.unwrap_or_default(),
        spec.renew_time.map(|t| t.0.to_string()).unwrap_or_default(),
        lease.metadata.resource_version.clone().unwrap_or_default()
    )
}

/// A Lease-based lock.
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    /// The election's durations.
    pub timing: Timing,
    observed: Mutex<Observed>,
    renewed_at: Mutex<Option<Instant>>,
}

impl LeaseLock {
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        timing: Timing,
    ) -> Self {
        LeaseLock {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            timing,
            observed: Mutex::new(Observed::default()),
            renewed_at: Mutex::new(None),
        }
    }

    fn spec(&self, now: Timestamp, acquire: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.timing.lease_duration.as_secs().max(1) as i32),
            acquire_time: Some(acquire.unwrap_or(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// When this process last acquired or renewed the Lease.
    pub fn renewed_at(&self) -> Option<Instant> {
        self.renewed_at.lock().map(|r| *r).unwrap_or(None)
    }

    fn mark_renewed(&self, at: Instant) {
        if let Ok(mut r) = self.renewed_at.lock() {
            *r = Some(r.map_or(at, |prev| prev.max(at)));
        }
    }

    /// Acquires or renews; `Ok(true)` while we hold the lease.
    pub async fn try_acquire_or_renew(&self) -> Result<bool> {
        // Taken before the request: the renewal counts from when it was
        // sent, never later than the server's view.
        let started = Instant::now();
        let now = Timestamp::now();
        let current = match self.api.get_opt(&self.name).await? {
            Some(l) => l,
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(self.spec(now, None, 0)),
                };
                return match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => {
                        self.mark_renewed(started);
                        Ok(true)
                    }
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                    Err(e) => Err(e.into()),
                };
            }
        };
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let mine = holder == self.identity;
        if !mine && !holder.is_empty() {
            // Someone else's: expired only after a whole lease duration
            // (theirs, as written in the Lease) of seeing no renewal.
            let duration = spec
                .lease_duration_seconds
                .map(|s| Duration::from_secs(s.max(0) as u64))
                .unwrap_or(self.timing.lease_duration);
            let expired = match self.observed.lock() {
                Ok(mut o) => {
                    o.see(record_of(&current), started);
                    o.expired(started, duration)
                }
                Err(_) => false,
            };
            if !expired {
                return Ok(false);
            }
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!mine);
        let acquire = if mine {
            spec.acquire_time.clone()
        } else {
            None
        };
        let mut next = current.clone();
        next.spec = Some(self.spec(now, acquire, transitions));
        match self
            .api
            .replace(&self.name, &PostParams::default(), &next)
            .await
        {
            Ok(_) => {
                self.mark_renewed(started);
                Ok(true)
            }
            // Someone else wrote first.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Waits until this process holds the lease.
    pub async fn acquire(&self) -> Result<()> {
        self.timing.validate()?;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election"),
            }
            tokio::time::sleep(self.timing.retry_period).await;
        }
    }

    /// Renews every retry period; returns when leadership is lost: renewal
    /// refused, or no successful renewal within the renew deadline. A
    /// renewal still in flight at the deadline does not extend it.
    pub async fn hold(&self) -> Error {
        let mut clock = RenewClock::new(
            self.renewed_at().unwrap_or_else(Instant::now),
            self.timing.renew_deadline,
        );
        loop {
            let next = (Instant::now() + self.timing.retry_period).min(clock.deadline());
            tokio::time::sleep_until(next).await;
            if clock.lost(Instant::now()) {
                return Error::Timeout("could not renew the leader lease in time".into());
            }
            match tokio::time::timeout_at(clock.deadline(), self.try_acquire_or_renew()).await {
                Ok(Ok(true)) => {
                    if let Some(at) = self.renewed_at() {
                        clock.renewed(at);
                    }
                }
                Ok(Ok(false)) => {
                    return Error::Timeout("leader lease taken by another replica".into())
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "lease renewal failed"),
                Err(_) => return Error::Timeout("could not renew the leader lease in time".into()),
            }
        }
    }

    /// Gives the Lease up (no holder, 1 s duration) if we still hold it, so
    /// another replica takes over at once. Call after reconciling stopped.
    pub async fn release(&self) -> Result<()> {
        let Some(current) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let spec = current.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        let mut next = current.clone();
        next.spec = Some(LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            renew_time: Some(MicroTime(Timestamp::now())),
            ..spec
        });
        match self
            .api
            .replace(&self.name, &PostParams::default(), &next)
            .await
        {
            Ok(_) => Ok(()),
            // Changed since we read it: it is no longer ours to release.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_timing_never_overlaps() {
        let t = Timing::from_lease(Duration::from_secs(15));
        assert_eq!(t.renew_deadline, Duration::from_secs(10));
        assert_eq!(t.retry_period, Duration::from_secs(2));
        t.validate().expect("valid");
        let bad = Timing {
            renew_deadline: t.lease_duration,
            ..t
        };
        assert!(bad.validate().is_err());
        // Small leases still leave retries before the deadline.
        Timing::from_lease(Duration::from_secs(3))
            .validate()
            .expect("3 s lease");
    }

    #[tokio::test(start_paused = true)]
    async fn leader_stops_before_a_candidate_may_take_over() {
        let t = Timing::from_lease(Duration::from_secs(15));
        let start = Instant::now();
        // Leader renewed at `start`; a candidate read that record at the
        // same moment (the best case for the candidate).
        let mut leader = RenewClock::new(start, t.renew_deadline);
        let mut candidate = Observed::default();
        candidate.see("me|t0|1".into(), start);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(!leader.lost(Instant::now()));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(
            leader.lost(Instant::now()),
            "leader gives up at the renew deadline"
        );
        assert!(
            !candidate.expired(Instant::now(), t.lease_duration),
            "while the candidate still waits"
        );
        // The candidate re-reading the same record does not restart its clock.
        candidate.see("me|t0|1".into(), Instant::now());
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(candidate.expired(Instant::now(), t.lease_duration));
        // A renewal seen (new record) restarts it.
        candidate.see("me|t1|2".into(), Instant::now());
        assert!(!candidate.expired(Instant::now(), t.lease_duration));
        // A leader that renews keeps leading; an older renewal never moves
        // the deadline back.
        leader.renewed(Instant::now());
        leader.renewed(start);
        assert!(!leader.lost(Instant::now()));
    }
}
