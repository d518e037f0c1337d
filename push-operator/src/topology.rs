//! The Redis topology decision: which pod is master and what every other pod
//! follows. One side-effect-free function, [`decide`], used in two places:
//!
//! * at pod start, by the `redis-boot` init container of every Redis pod
//!   (what goes into its `replicaof` line, or whether to wait) and every
//!   Sentinel pod (which master to `monitor`);
//! * in every reconcile, by the controller (which pod the master Service selects,
//!   which stray master must become a replica, whether to ask Sentinel to
//!   fail over).
//!
//! Invariants, each a failure story of other Redis operators, each covered
//! by a table test below and the failover part by `tests/sentinel.rs`
//! against real processes:
//!
//! 1. Sentinel owns failover. When a quorum of Sentinels names a master, that
//!    is the master; the operator never promotes a pod itself and never
//!    points a pod Sentinel knows at another master.
//! 2. The ordinal decides only a brand-new cluster (no Sentinel opinion, no
//!    pod holds data). A restarted pod-0 after a failover follows the master
//!    Sentinel names instead of coming back as a second master
//!    ("split brain after rollout").
//! 3. A pod that Sentinel still names master but restarts with no data while
//!    other pods hold data waits until Sentinel has failed over, then joins
//!    as a replica. Starting it would make every replica resync from an
//!    empty master and drop its data ("empty master resynced to replicas").
//!    Likewise a pod that boots with data never replicates from a master
//!    that runs with an empty dataset: it waits (the chart's
//!    `redis-boot.sh` applies the same rule).
//!    A pod that Sentinel names master and that restarts *with* data while a
//!    replica holding data is up waits for the failover too: its volume may
//!    be behind them, and replicas rejoining a restarted master resync from
//!    it in full, dropping what only they had ("restarted master resynced
//!    to replicas", seen on the e2e cluster).
//! 4. The master Service follows the real master: Sentinel's choice when it is
//!    up and acting as master, nobody while a failover is pending
//!    ("stale master Service", "no master after failover").
//! 5. While a Sentinel reports a failover in progress, the operator changes
//!    nothing and booting pods wait: the replica being promoted reports role
//!    master before Sentinel names it ("operator demotes the replica Sentinel
//!    is promoting", seen on the e2e cluster).

/// What one Redis pod looks like right now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodState {
    /// Not reachable (not scheduled, crashed, being replaced).
    Down,
    /// Its init container is deciding how to start; `has_data` is whether
    /// its volume holds an RDB/AOF from an earlier life.
    Booting { has_data: bool },
    /// Running and answering `INFO`.
    Up(Running),
}

/// `INFO replication` / `INFO keyspace` of a running pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Running {
    /// Its role.
    pub role: Role,
    /// `master_repl_offset`: how much replication stream it has seen.
    pub offset: u64,
    /// Keys in its dataset; an empty restarted master has 0.
    pub keys: u64,
}

/// Replication role as reported by the pod itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    Master,
    /// Following `master` (an ordinal, or `None` for an address that is not
    /// one of our pods); `link_up` is `master_link_status:up`.
    Replica {
        master: Option<usize>,
        link_up: bool,
    },
}

/// Everything [`decide`] looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    /// Indexed by StatefulSet ordinal.
    pub pods: Vec<PodState>,
    /// The master a quorum of reachable Sentinels names, as an ordinal;
    /// `None` when no Sentinel answers or they do not agree or do not yet
    /// monitor anything.
    pub sentinel_master: Option<usize>,
    /// A reachable Sentinel reports a failover of the group in progress
    /// (`failover_in_progress` in `SENTINEL MASTER`'s flags). Its promoted
    /// replica reports role master before Sentinel names it, so until the
    /// failover ends nothing may be changed: a "stray master" then is the
    /// one being promoted.
    pub failover_in_progress: bool,
}

/// What a pod should be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Serve as master (no `replicaof`).
    Master,
    /// Replicate from this ordinal.
    Follow(usize),
    /// Do not start yet (boot) / leave alone (running); the reason is logged.
    Wait(&'static str),
}

/// A change the controller should make to a running pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// `REPLICAOF <master>` on `pod`: a stray master or a replica stuck on a
    /// dead master that Sentinel does not know about.
    ReplicaOf { pod: usize, master: usize },
    /// `SENTINEL FAILOVER`: the named master came back empty while replicas
    /// still hold data; Sentinel picks the replica.
    SentinelFailover,
}

/// The decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The pod that is master now (the master Service selects it); `None` while there
    /// is none, e.g. during a failover.
    pub master: Option<usize>,
    /// Per ordinal, what that pod should be.
    pub targets: Vec<Target>,
    /// Changes to make to running pods.
    pub actions: Vec<Action>,
    /// One line for status messages and logs.
    pub summary: String,
}

fn has_data(p: &PodState) -> bool {
    match p {
        PodState::Down => false,
        PodState::Booting { has_data } => *has_data,
        PodState::Up(r) => r.keys > 0,
    }
}

fn is_up_master(p: &PodState) -> bool {
    matches!(
        p,
        PodState::Up(Running {
            role: Role::Master,
            ..
        })
    )
}

/// Ordering for "which pod holds the most": keys, then replication offset,
/// then the lower ordinal (so ties are deterministic).
fn best_by_data(pods: &[PodState], candidates: impl Iterator<Item = usize>) -> Option<usize> {
    candidates.max_by(|&a, &b| {
        let key = |i: usize| match &pods[i] {
            PodState::Up(r) => (r.keys, r.offset),
            PodState::Booting { has_data } => (u64::from(*has_data), 0),
            PodState::Down => (0, 0),
        };
        key(a).cmp(&key(b)).then(b.cmp(&a))
    })
}

/// Decides the topology. Pure: same observation, same plan.
pub fn decide(obs: &Observation) -> Plan {
    let pods = &obs.pods;
    let n = pods.len();
    let mut draft = match obs.sentinel_master.filter(|&m| m < n) {
        Some(m) => with_sentinel(pods, m),
        None => without_sentinel(pods),
    };
    if obs.failover_in_progress {
        // Sentinel is moving the master: no command of ours may cross it
        // (on a real cluster a REPLICAOF sent to the replica it had just
        // promoted aborted the failover), and a booting pod waits for the
        // outcome instead of following the master being replaced.
        draft.actions.clear();
        for (i, t) in draft.targets.iter_mut().enumerate() {
            if matches!(pods.get(i), Some(PodState::Booting { .. })) {
                *t = Some(Target::Wait(
                    "Sentinel is failing over; waiting for its choice",
                ));
            }
        }
        draft
            .summary
            .push_str("; Sentinel is failing over, no changes until it ends");
    }
    draft.finish(n)
}

/// Intermediate result; [`Draft::finish`] fills the defaults.
struct Draft {
    master: Option<usize>,
    targets: Vec<Option<Target>>,
    actions: Vec<Action>,
    summary: String,
}

impl Draft {
    fn finish(self, n: usize) -> Plan {
        let targets = (0..n)
            .map(|i| {
                self.targets
                    .get(i)
                    .cloned()
                    .flatten()
                    .unwrap_or(match self.master {
                        Some(m) if m == i => Target::Master,
                        Some(m) => Target::Follow(m),
                        None => Target::Wait("no master"),
                    })
            })
            .collect();
        Plan {
            master: self.master,
            targets,
            actions: self.actions,
            summary: self.summary,
        }
    }
}

fn with_sentinel(pods: &[PodState], m: usize) -> Draft {
    let n = pods.len();
    let others_hold_data = (0..n).any(|i| i != m && has_data(&pods[i]));
    let mut targets: Vec<Option<Target>> = vec![None; n];
    let mut actions = Vec::new();

    let (master, summary) = match &pods[m] {
        PodState::Up(Running {
            role: Role::Master,
            keys,
            ..
        }) => {
            // Sentinel's master is up and acting as master. If it came back
            // empty (no persistence, lost volume) while replicas still hold
            // data, hand the choice back to Sentinel rather than let the
            // replicas resync from nothing.
            let replica_with_data = (0..n).any(|i| {
                i != m
                    && matches!(&pods[i], PodState::Up(r) if r.keys > 0
                        && matches!(r.role, Role::Replica { .. }))
            });
            if *keys == 0 && replica_with_data {
                actions.push(Action::SentinelFailover);
                (
                    None,
                    format!("master pod {m} restarted empty while replicas hold data; asking Sentinel to fail over"),
                )
            } else {
                (Some(m), format!("master is pod {m} (Sentinel)"))
            }
        }
        PodState::Booting { has_data } => {
            let replica_with_data = (0..n).any(|i| {
                i != m
                    && matches!(&pods[i], PodState::Up(r) if r.keys > 0
                        && matches!(r.role, Role::Replica { .. }))
            });
            if !has_data && others_hold_data {
                targets[m] = Some(Target::Wait(
                    "Sentinel still names this empty pod master while others hold data; waiting for failover",
                ));
                (
                    None,
                    format!("pod {m} restarting empty; waiting for Sentinel to fail over"),
                )
            } else if replica_with_data {
                // Its volume may be behind its replicas (the AOF is synced
                // once a second; an RDB is older), and replicas that rejoin
                // a restarted master resync in full from it, dropping what
                // only they had. Sentinel promotes the replica with the
                // highest offset instead; this pod then boots as a replica.
                targets[m] = Some(Target::Wait(
                    "Sentinel still names this restarted pod master while replicas hold data; waiting for failover",
                ));
                (
                    None,
                    format!("pod {m} restarting while replicas hold data; waiting for Sentinel to fail over"),
                )
            } else {
                // Its own data (or nobody has any): it may start as master.
                targets[m] = Some(Target::Master);
                (None, format!("pod {m} (Sentinel's master) is starting"))
            }
        }
        PodState::Down => (
            None,
            format!("master pod {m} is down; Sentinel will fail over"),
        ),
        PodState::Up(Running {
            role: Role::Replica { .. },
            ..
        }) => (
            None,
            format!("Sentinel names pod {m} but it reports role replica; waiting for Sentinel"),
        ),
    };

    // Whatever its state, Sentinel's pick is the one to be master.
    if targets[m].is_none() {
        targets[m] = Some(Target::Master);
    }
    for i in (0..n).filter(|&i| i != m) {
        match &pods[i] {
            // A second master is split brain: Sentinel only reconfigures
            // instances it already knows as replicas, so a pod that came back
            // as master (old config, operator restart) stays split forever
            // unless told. This follows Sentinel's choice, it does not fight it.
            PodState::Up(Running {
                role: Role::Master, ..
            }) => {
                targets[i] = Some(Target::Follow(m));
                if master == Some(m) {
                    actions.push(Action::ReplicaOf { pod: i, master: m });
                }
            }
            // A replica following a pod that is not Sentinel's master with
            // its link down is stuck (its master is gone and Sentinel did not
            // know it). With the link up, Sentinel may be mid-reconfiguration:
            // leave it.
            PodState::Up(Running {
                role:
                    Role::Replica {
                        master: following,
                        link_up,
                    },
                ..
            }) => {
                targets[i] = Some(Target::Follow(m));
                if *following != Some(m) && !link_up && master == Some(m) {
                    actions.push(Action::ReplicaOf { pod: i, master: m });
                }
            }
            PodState::Booting { has_data: true } if matches!(&pods[m], PodState::Up(r) if r.keys == 0 && r.role == Role::Master) =>
            {
                targets[i] = Some(Target::Wait(
                    "Sentinel's master is empty while this pod holds data; waiting",
                ));
            }
            PodState::Booting { .. } | PodState::Down => targets[i] = Some(Target::Follow(m)),
        }
    }
    Draft {
        master,
        targets,
        actions,
        summary,
    }
}

fn without_sentinel(pods: &[PodState]) -> Draft {
    let n = pods.len();
    let mut targets: Vec<Option<Target>> = vec![None; n];
    let mut actions = Vec::new();

    let masters: Vec<usize> = (0..n).filter(|&i| is_up_master(&pods[i])).collect();
    // A running master that has data, or that replicas follow, is the
    // master; among several, the one holding the most.
    let followed = |m: usize| {
        (0..n).any(|i| {
            matches!(&pods[i], PodState::Up(Running { role: Role::Replica { master: Some(x), .. }, .. }) if *x == m)
        })
    };
    let established: Vec<usize> = masters
        .iter()
        .copied()
        .filter(|&m| has_data(&pods[m]) || followed(m))
        .collect();
    if let Some(m) = best_by_data(pods, established.into_iter()) {
        for &other in masters.iter().filter(|&&o| o != m) {
            // Without Sentinel, only an empty stray master is turned into a
            // replica; one holding data is left for a human (or Sentinel).
            if !has_data(&pods[other]) {
                actions.push(Action::ReplicaOf {
                    pod: other,
                    master: m,
                });
            } else {
                targets[other] = Some(Target::Wait(
                    "second master holding data; not touched without Sentinel",
                ));
            }
        }
        return Draft {
            master: Some(m),
            targets,
            actions,
            summary: format!("master is pod {m} (no Sentinel opinion)"),
        };
    }

    // No established master. If data exists anywhere outside a fresh empty
    // master, a failover is what is missing: wait for Sentinel rather than
    // crown a pod on our own.
    let replicas_with_data = (0..n).any(|i| {
        matches!(&pods[i], PodState::Up(r) if r.keys > 0 && matches!(r.role, Role::Replica { .. }))
    });
    if replicas_with_data {
        return Draft {
            master: None,
            targets: (0..n)
                .map(|_| {
                    Some(Target::Wait(
                        "replicas hold data but no master; waiting for Sentinel",
                    ))
                })
                .collect(),
            actions,
            summary: "no master and no Sentinel opinion while replicas hold data; waiting".into(),
        };
    }

    // Bootstrap: the pod holding the most data (the whole set restarted),
    // else pod 0. Pod 0 even when it is not up yet: pods boot in parallel and
    // cannot see each other booting, so only a rule that needs no
    // observation lets them agree.
    let chosen = best_by_data(pods, (0..n).filter(|&i| has_data(&pods[i]))).unwrap_or(0);
    for &other in masters.iter().filter(|&&o| o != chosen) {
        actions.push(Action::ReplicaOf {
            pod: other,
            master: chosen,
        });
    }
    let master = pods.get(chosen).filter(|p| is_up_master(p)).map(|_| chosen);
    for (i, t) in targets.iter_mut().enumerate() {
        *t = Some(if i == chosen {
            Target::Master
        } else {
            Target::Follow(chosen)
        });
    }
    Draft {
        master,
        targets,
        actions,
        summary: format!("bootstrap: pod {chosen} is master"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PodState::*;

    fn master(keys: u64, offset: u64) -> PodState {
        Up(Running {
            role: Role::Master,
            offset,
            keys,
        })
    }
    fn replica(of: usize, keys: u64, offset: u64, link_up: bool) -> PodState {
        Up(Running {
            role: Role::Replica {
                master: Some(of),
                link_up,
            },
            offset,
            keys,
        })
    }
    fn obs(pods: Vec<PodState>, sentinel_master: Option<usize>) -> Observation {
        Observation {
            pods,
            sentinel_master,
            failover_in_progress: false,
        }
    }
    fn failing_over(mut o: Observation) -> Observation {
        o.failover_in_progress = true;
        o
    }

    /// One row: a story, the observation, and what must come out.
    struct Case {
        story: &'static str,
        obs: Observation,
        master: Option<usize>,
        targets: Vec<Target>,
        actions: Vec<Action>,
    }

    fn check(cases: Vec<Case>) {
        for c in cases {
            let plan = decide(&c.obs);
            assert_eq!(
                plan.master, c.master,
                "{}: master ({})",
                c.story, plan.summary
            );
            assert_eq!(
                plan.targets, c.targets,
                "{}: targets ({})",
                c.story, plan.summary
            );
            assert_eq!(
                plan.actions, c.actions,
                "{}: actions ({})",
                c.story, plan.summary
            );
        }
    }

    #[test]
    fn bootstrap() {
        check(vec![
            Case {
                story: "fresh cluster, every pod booting empty: pod 0 is master",
                obs: obs(vec![Booting { has_data: false }; 3], None),
                master: None,
                targets: vec![Target::Master, Target::Follow(0), Target::Follow(0)],
                actions: vec![],
            },
            Case {
                story: "fresh cluster, pod 0 not up yet: pod 1 still follows 0 (concurrent boots agree)",
                obs: obs(vec![Down, Booting { has_data: false }, Down], None),
                master: None,
                targets: vec![Target::Master, Target::Follow(0), Target::Follow(0)],
                actions: vec![],
            },
            Case {
                story: "whole set restarted, only pod 2 has data: pod 2 is master",
                obs: obs(
                    vec![Booting { has_data: false }, Booting { has_data: false }, Booting { has_data: true }],
                    None,
                ),
                master: None,
                targets: vec![Target::Follow(2), Target::Follow(2), Target::Master],
                actions: vec![],
            },
            Case {
                story: "pod 0 already master with replicas, pod 2 booting",
                obs: obs(vec![master(5, 100), replica(0, 5, 100, true), Booting { has_data: false }], None),
                master: Some(0),
                targets: vec![Target::Master, Target::Follow(0), Target::Follow(0)],
                actions: vec![],
            },
            Case {
                story: "two fresh empty masters without Sentinel: lower ordinal wins",
                obs: obs(vec![master(0, 0), master(0, 0)], None),
                master: Some(0),
                targets: vec![Target::Master, Target::Follow(0)],
                actions: vec![Action::ReplicaOf { pod: 1, master: 0 }],
            },
        ]);
    }

    #[test]
    fn split_brain_after_rollout() {
        check(vec![
            Case {
                story: "after a failover to pod 2, the rollout restarts pod 0: it must follow 2, not be master by ordinal",
                obs: obs(vec![Booting { has_data: true }, replica(2, 10, 500, true), master(10, 500)], Some(2)),
                master: Some(2),
                targets: vec![Target::Follow(2), Target::Follow(2), Target::Master],
                actions: vec![],
            },
            Case {
                story: "pod 0 came back as a second master anyway: it is made a replica of Sentinel's master",
                obs: obs(vec![master(3, 40), replica(2, 10, 500, true), master(10, 500)], Some(2)),
                master: Some(2),
                targets: vec![Target::Follow(2), Target::Follow(2), Target::Master],
                actions: vec![Action::ReplicaOf { pod: 0, master: 2 }],
            },
        ]);
    }

    #[test]
    fn no_master_after_failover() {
        check(vec![
            Case {
                story: "master down, Sentinel has not failed over yet: no master, nobody is promoted by us",
                obs: obs(vec![Down, replica(0, 10, 500, false), replica(0, 10, 500, false)], Some(0)),
                master: None,
                targets: vec![Target::Master, Target::Follow(0), Target::Follow(0)],
                actions: vec![],
            },
            Case {
                story: "Sentinel promoted pod 1: pod 1 is master and the other replica is left to Sentinel",
                obs: obs(vec![Down, master(10, 510), replica(0, 10, 500, false)], Some(1)),
                master: Some(1),
                targets: vec![Target::Follow(1), Target::Master, Target::Follow(1)],
                actions: vec![Action::ReplicaOf { pod: 2, master: 1 }],
            },
            Case {
                story: "Sentinel promoted pod 1 and already repointed pod 2: nothing to do",
                obs: obs(vec![Down, master(10, 510), replica(1, 10, 510, true)], Some(1)),
                master: Some(1),
                targets: vec![Target::Follow(1), Target::Master, Target::Follow(1)],
                actions: vec![],
            },
            Case {
                story: "Sentinel unreachable and replicas hold data with no master: wait, never crown a replica",
                obs: obs(vec![Down, replica(0, 10, 500, false), replica(0, 10, 500, false)], None),
                master: None,
                targets: vec![Target::Wait("replicas hold data but no master; waiting for Sentinel"); 3],
                actions: vec![],
            },
        ]);
    }

    #[test]
    fn empty_master_resynced_to_replicas() {
        check(vec![
            Case {
                story: "old master restarts with an empty volume while Sentinel still names it: it waits",
                obs: obs(vec![Booting { has_data: false }, replica(0, 10, 500, false), replica(0, 10, 500, false)], Some(0)),
                master: None,
                targets: vec![
                    Target::Wait("Sentinel still names this empty pod master while others hold data; waiting for failover"),
                    Target::Follow(0),
                    Target::Follow(0),
                ],
                actions: vec![],
            },
            Case {
                story: "after Sentinel promoted pod 1, the empty pod 0 boots as its replica",
                obs: obs(vec![Booting { has_data: false }, master(10, 510), replica(1, 10, 510, true)], Some(1)),
                master: Some(1),
                targets: vec![Target::Follow(1), Target::Master, Target::Follow(1)],
                actions: vec![],
            },
            Case {
                story: "master process restarted empty in place, replicas still hold data: ask Sentinel to fail over",
                obs: obs(vec![master(0, 0), replica(0, 10, 500, false), replica(0, 10, 500, false)], Some(0)),
                master: None,
                targets: vec![Target::Master, Target::Follow(0), Target::Follow(0)],
                actions: vec![Action::SentinelFailover],
            },
            Case {
                story: "master pod recreated with its volume while replicas hold data: it waits for Sentinel's failover \
                        (its volume may be behind them, and they would resync in full from it)",
                obs: obs(vec![Booting { has_data: true }, replica(0, 10, 500, false), replica(0, 10, 500, false)], Some(0)),
                master: None,
                targets: vec![
                    Target::Wait("Sentinel still names this restarted pod master while replicas hold data; waiting for failover"),
                    Target::Follow(0),
                    Target::Follow(0),
                ],
                actions: vec![],
            },
            Case {
                story: "master pod recreated with its volume, no replica up with data (whole set restarting): it is master",
                obs: obs(vec![Booting { has_data: true }, Down, Booting { has_data: true }], Some(0)),
                master: None,
                targets: vec![Target::Master, Target::Follow(0), Target::Follow(0)],
                actions: vec![],
            },
            Case {
                story: "a pod restarts with data while Sentinel's master runs empty: it waits instead of resyncing from nothing",
                obs: obs(vec![master(0, 0), Booting { has_data: true }, replica(0, 0, 0, true)], Some(0)),
                master: Some(0),
                targets: vec![
                    Target::Master,
                    Target::Wait("Sentinel's master is empty while this pod holds data; waiting"),
                    Target::Follow(0),
                ],
                actions: vec![],
            },
            Case {
                story: "empty store everywhere (fresh, Sentinel already up): the named master just starts",
                obs: obs(vec![Booting { has_data: false }, replica(0, 0, 0, false)], Some(0)),
                master: None,
                targets: vec![Target::Master, Target::Follow(0)],
                actions: vec![],
            },
        ]);
    }

    #[test]
    fn failover_in_progress() {
        check(vec![
            Case {
                story: "Sentinel has just promoted pod 1 and still names the restarted pod 0: pod 1 is not demoted",
                obs: failing_over(obs(vec![master(5, 100), master(10, 510), replica(0, 10, 500, false)], Some(0))),
                master: Some(0),
                targets: vec![Target::Master, Target::Follow(0), Target::Follow(0)],
                actions: vec![],
            },
            Case {
                story: "a pod booting during a failover waits for its outcome",
                obs: failing_over(obs(vec![Down, master(10, 510), Booting { has_data: true }], Some(0))),
                master: None,
                targets: vec![
                    Target::Master,
                    Target::Follow(0),
                    Target::Wait("Sentinel is failing over; waiting for its choice"),
                ],
                actions: vec![],
            },
            Case {
                story: "the same observation once the failover ended: the stray master is made a replica",
                obs: obs(vec![master(5, 100), master(10, 510), replica(0, 10, 500, false)], Some(0)),
                master: Some(0),
                targets: vec![Target::Master, Target::Follow(0), Target::Follow(0)],
                actions: vec![Action::ReplicaOf { pod: 1, master: 0 }],
            },
        ]);
    }

    #[test]
    fn stale_master_label() {
        // The label goes where `plan.master` says; these rows pin that it is
        // Sentinel's live master, not the ordinal or the previous status.
        check(vec![
            Case {
                story: "status said pod 0, Sentinel says pod 1 which is master: label moves to 1",
                obs: obs(vec![replica(1, 10, 600, true), master(10, 600)], Some(1)),
                master: Some(1),
                targets: vec![Target::Follow(1), Target::Master],
                actions: vec![],
            },
            Case {
                story: "Sentinel names a pod reporting role replica (mid-failover): nobody gets the label",
                obs: obs(vec![replica(1, 10, 600, true), replica(0, 10, 600, false)], Some(1)),
                master: None,
                targets: vec![Target::Follow(1), Target::Master],
                actions: vec![],
            },
            Case {
                story: "Sentinel names an ordinal beyond the set (scaled down): treated as no opinion",
                obs: obs(vec![master(10, 600), replica(0, 10, 600, true)], Some(7)),
                master: Some(0),
                targets: vec![Target::Master, Target::Follow(0)],
                actions: vec![],
            },
        ]);
    }

    #[test]
    fn deterministic() {
        let o = obs(
            vec![master(1, 1), master(1, 1), Booting { has_data: true }],
            None,
        );
        assert_eq!(decide(&o), decide(&o));
    }
}
