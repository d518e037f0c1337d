//! `spec.template` and `spec.redis.template`: user overrides merged into the
//! pods and Services the other builders produced (docs/operator.md,
//! "Template overrides").
//!
//! Merge rules, the same for every field so they are easy to predict:
//! lists (imagePullSecrets, tolerations, env) are appended; maps (labels,
//! annotations, nodeSelector) are merged with the operator's own keys
//! winning, so selectors and the config-hash annotation cannot be broken;
//! single values (priorityClassName, serviceAccountName, Service type) and
//! each part of `affinity` and `topologySpreadConstraints` replace the
//! operator's default when given. Reserved variable names are refused
//! earlier, by `crd_ext::problems`.
//!
//! Objects are recognised by their `app.kubernetes.io/component` label. The
//! Redis Cluster creation Job is left alone: a Job's pod template is
//! immutable, so a later template edit could never be applied to it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PodTemplateSpec, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::monitoring::METRICS_PORT_NAME;
use super::redis::{REDIS_COMPONENT, SENTINEL_COMPONENT};
use super::server::SERVER_COMPONENT;
use super::Desired;
use crate::crd::PushCluster;
use crate::crd_ext::{ContainerTemplate, PodTemplate};
use crate::Result;

const COMPONENT: &str = "app.kubernetes.io/component";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Owner {
    Server,
    Redis,
}

fn owner_of(meta: &ObjectMeta) -> Option<Owner> {
    match meta.labels.as_ref()?.get(COMPONENT)?.as_str() {
        SERVER_COMPONENT => Some(Owner::Server),
        REDIS_COMPONENT | SENTINEL_COMPONENT => Some(Owner::Redis),
        _ => None,
    }
}

/// Merges the templates of `pc` into `objects` (the output of the builders).
pub fn apply(pc: &PushCluster, objects: &mut [Desired]) -> Result<()> {
    let server = pc.spec.template.as_ref();
    let redis = pc.spec.redis.template.as_ref();
    if server.is_none() && redis.is_none() {
        return Ok(());
    }
    for object in objects.iter_mut() {
        match object {
            Desired::Deployment(d) if owner_of(&d.metadata) == Some(Owner::Server) => {
                if let (Some(t), Some(spec)) = (server, d.spec.as_mut()) {
                    merge_pod(&mut spec.template, t.pod.as_ref(), t.container.as_ref());
                }
            }
            Desired::StatefulSet(s) => {
                let owner = owner_of(&s.metadata);
                let t = match owner {
                    Some(Owner::Redis) => redis.map(|t| (t.pod.as_ref(), t.container.as_ref())),
                    Some(Owner::Server) => server.map(|t| (t.pod.as_ref(), t.container.as_ref())),
                    None => None,
                };
                if let (Some((pod, container)), Some(spec)) = (t, s.spec.as_mut()) {
                    merge_pod(&mut spec.template, pod, container);
                }
            }
            Desired::Service(svc) => match owner_of(&svc.metadata) {
                Some(Owner::Server) => {
                    if let Some(st) = server.and_then(|t| t.service.as_ref()) {
                        merge_annotations(&mut svc.metadata, st.annotations.as_ref());
                        if let Some(ty) = st.type_ {
                            set_service_type(svc, ty.as_str());
                        }
                    }
                }
                Some(Owner::Redis) => {
                    if let Some(st) = redis.and_then(|t| t.service.as_ref()) {
                        merge_annotations(&mut svc.metadata, st.annotations.as_ref());
                    }
                }
                None => {}
            },
            _ => {}
        }
    }
    Ok(())
}

fn set_service_type(svc: &mut Service, ty: &str) {
    if let Some(spec) = svc.spec.as_mut() {
        // A headless Service (clusterIP: None) cannot be NodePort or
        // LoadBalancer; the push Service never is headless.
        if spec.cluster_ip.as_deref() != Some("None") {
            spec.type_ = Some(ty.to_string());
            if ty != "ClusterIP" {
                // A node port or load balancer would publish the metrics
                // port too; metrics stay in-cluster (the PodMonitor scrapes
                // the pods).
                if let Some(ports) = spec.ports.as_mut() {
                    ports.retain(|p| p.name.as_deref() != Some(METRICS_PORT_NAME));
                }
            }
        }
    }
}

/// Adds `extra` to `base` without replacing a key `base` already has.
fn merge_map(
    base: &mut Option<BTreeMap<String, String>>,
    extra: Option<&BTreeMap<String, String>>,
) {
    let Some(extra) = extra.filter(|e| !e.is_empty()) else {
        return;
    };
    let map = base.get_or_insert_with(BTreeMap::new);
    for (k, v) in extra {
        map.entry(k.clone()).or_insert_with(|| v.clone());
    }
}

fn merge_annotations(meta: &mut ObjectMeta, extra: Option<&BTreeMap<String, String>>) {
    merge_map(&mut meta.annotations, extra);
}

fn merge_pod(
    template: &mut PodTemplateSpec,
    pod: Option<&PodTemplate>,
    container: Option<&ContainerTemplate>,
) {
    if let Some(pod) = pod {
        if let Some(m) = &pod.metadata {
            let meta = template.metadata.get_or_insert_with(ObjectMeta::default);
            merge_map(&mut meta.labels, m.labels.as_ref());
            merge_map(&mut meta.annotations, m.annotations.as_ref());
        }
        let spec = template.spec.get_or_insert_with(Default::default);
        if let Some(secrets) = &pod.image_pull_secrets {
            let list = spec.image_pull_secrets.get_or_insert_with(Vec::new);
            for s in secrets {
                if !list.contains(s) {
                    list.push(s.clone());
                }
            }
        }
        merge_map(&mut spec.node_selector, pod.node_selector.as_ref());
        if let Some(t) = &pod.tolerations {
            spec.tolerations
                .get_or_insert_with(Vec::new)
                .extend(t.iter().cloned());
        }
        if let Some(user) = &pod.affinity {
            let a = spec.affinity.get_or_insert_with(Default::default);
            if user.node_affinity.is_some() {
                a.node_affinity = user.node_affinity.clone();
            }
            if user.pod_affinity.is_some() {
                a.pod_affinity = user.pod_affinity.clone();
            }
            if user.pod_anti_affinity.is_some() {
                a.pod_anti_affinity = user.pod_anti_affinity.clone();
            }
        }
        if let Some(tsc) = &pod.topology_spread_constraints {
            spec.topology_spread_constraints = Some(tsc.clone());
        }
        if let Some(p) = &pod.priority_class_name {
            spec.priority_class_name = Some(p.clone());
        }
        if let Some(sa) = &pod.service_account_name {
            spec.service_account_name = Some(sa.clone());
        }
    }
    if let Some(env) = container
        .and_then(|c| c.env.as_ref())
        .filter(|e| !e.is_empty())
    {
        if let Some(spec) = template.spec.as_mut() {
            // Main containers only: the init containers run the operator's
            // own boot step, which takes nothing from the user.
            for c in &mut spec.containers {
                c.env
                    .get_or_insert_with(Vec::new)
                    .extend(env.iter().cloned());
            }
        }
    }
}
