//! push-operator: reconciles a `PushCluster` into Redis, the push-server
//! Deployment and a connection-based autoscaler.
//!
//! # Layout
//!
//! `crd` holds the `PushCluster` types (spec, status, defaults, validation)
//! from which the CRD YAML in `crds/pushcluster.yaml` is generated.
//!
//! `objects` turns a `PushCluster` into the Kubernetes objects to apply:
//! `objects::redis` builds Redis (StatefulSet, Sentinel, Services, PDBs, or a
//! Redis Cluster plus its creation Job) and `objects::server` builds the
//! push-server config, Deployment, Service, PDB and HPA. Pure functions, used
//! by `render` and by the controller alike.
//!
//! `error` is the crate's one error enum, with a `metric_label()` per variant.
//!
//! `render` implements `push-operator render`: objects as multi-document YAML.

pub mod boot;
pub mod controller;
pub mod crd;
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
