//! push-operator: reconciles a `PushCluster` into Redis, the push-server
//! Deployment and a connection-based autoscaler.
//!
//! # Layout
//!
//! `crd` holds the `PushCluster` types (spec, status, defaults, validation)
//! from which the CRD YAML in `crds/pushcluster.yaml` is generated.
//!
//! `crd_ext` holds the types of `spec.template`, `spec.redis.template`,
//! `spec.expose` and `spec.monitoring`.
//!
//! `objects` turns a `PushCluster` into the Kubernetes objects to apply:
//! `objects::redis` builds Redis (StatefulSet, Sentinel, Services, PDBs, or a
//! Redis Cluster plus its creation Job) and `objects::server` builds the
//! push-server config, Deployment, Service, PDB and HPA. Pure functions, used
//! by `render` and by the controller alike. `objects::template` merges the
//! user's `template` overrides into what they built; `objects::expose` and
//! `objects::monitoring` build the Ingress, HTTPRoute, PodMonitor and
//! PrometheusRule, which `objects::optional` applies, tracks in
//! `status.optionalObjects` and deletes when no longer wanted (their APIs
//! may not be served).
//!
//! `topology` is the one side-effect-free decision of which Redis pod is
//! master and what each replica follows; its module doc lists the
//! invariants (Sentinel owns failover, no empty master over data, ...).
//!
//! `redis_probe` observes pods and Sentinels with the `redis` crate (AUTH,
//! TLS, timeouts, all at once) into a `topology::Observation` and carries
//! out `topology::Action`s.
//! `boot` is the `redis-boot` init container of Redis and Sentinel pods,
//! which applies the same decision at start-up.
//!
//! `controller` is the reconcile loop (generated Secrets, the auth checks,
//! server-side apply with the master Service selecting the observed master,
//! obsolete objects, status, events), its error policy and the `Controller`
//! wiring; `status` holds the condition bookkeeping it uses.
//!
//! `leader` implements leader election on a coordination Lease (released on
//! shutdown, never acting past its renew deadline); `metrics`
//! and `http` expose reconcile metrics and health endpoints.
//!
//! `render` implements `push-operator render`: objects as multi-document
//! YAML. `error` is the crate's one error enum, with a `metric_label()` per
//! variant.

pub mod boot;
pub mod controller;
pub mod crd;
pub mod crd_ext;
pub mod error;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod objects;
pub mod redis_probe;
pub mod render;
pub mod status;
pub mod topology;

pub use error::{Error, Result};
