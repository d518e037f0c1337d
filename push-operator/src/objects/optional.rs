//! Optional objects: the Ingress and HTTPRoute of `spec.expose` and the
//! PodMonitor and PrometheusRule of `spec.monitoring`.
//!
//! They differ from the other owned objects in two ways. Their API may not
//! be served (Gateway API or Prometheus Operator CRDs not installed): an
//! apply answered 404 is a `False` condition (`ExposeReady`,
//! `MonitoringReady`) and a Warning Event, not a failed reconcile. And most
//! PushClusters have none of them, so instead of deleting every possible
//! one on every reconcile the operator lists those it created in
//! `status.optionalObjects` and deletes exactly those the spec no longer
//! wants. All are applied with the same field manager and controller owner
//! reference as everything else, so deleting the PushCluster removes them.

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::ApiResource;
use serde_json::Value;

use super::{expose, monitoring, Names, Settings, FIELD_MANAGER};
use crate::crd::{PushCluster, PushClusterStatus};
use crate::status;
use crate::{Error, Result};

/// Condition types of the optional objects; present only while the spec
/// asks for something in that area.
pub const EXPOSE_READY: &str = "ExposeReady";
pub const MONITORING_READY: &str = "MonitoringReady";

/// A kind of optional object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kind {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    /// Reason of the `False` condition when its API is not served.
    pub missing_reason: &'static str,
}

pub const INGRESS: Kind = Kind {
    group: "networking.k8s.io",
    version: "v1",
    kind: "Ingress",
    plural: "ingresses",
    missing_reason: "IngressAPIMissing",
};
pub const HTTP_ROUTE: Kind = Kind {
    group: "gateway.networking.k8s.io",
    version: "v1",
    kind: "HTTPRoute",
    plural: "httproutes",
    missing_reason: "GatewayAPIMissing",
};
pub const POD_MONITOR: Kind = Kind {
    group: "monitoring.coreos.com",
    version: "v1",
    kind: "PodMonitor",
    plural: "podmonitors",
    missing_reason: "PrometheusOperatorMissing",
};
pub const PROMETHEUS_RULE: Kind = Kind {
    group: "monitoring.coreos.com",
    version: "v1",
    kind: "PrometheusRule",
    plural: "prometheusrules",
    missing_reason: "PrometheusOperatorMissing",
};
/// Every optional kind.
pub const KINDS: [Kind; 4] = [INGRESS, HTTP_ROUTE, POD_MONITOR, PROMETHEUS_RULE];

impl Kind {
    pub fn api_resource(&self) -> ApiResource {
        ApiResource {
            group: self.group.into(),
            version: self.version.into(),
            api_version: format!("{}/{}", self.group, self.version),
            kind: self.kind.into(),
            plural: self.plural.into(),
        }
    }
    fn area(&self) -> Area {
        if *self == INGRESS || *self == HTTP_ROUTE {
            Area::Expose
        } else {
            Area::Monitoring
        }
    }
}

/// Which condition an object reports under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Area {
    Expose,
    Monitoring,
}

impl Area {
    pub fn condition(self) -> &'static str {
        match self {
            Area::Expose => EXPOSE_READY,
            Area::Monitoring => MONITORING_READY,
        }
    }
}

/// One optional object to apply.
#[derive(Clone, Debug, PartialEq)]
pub struct OptionalObject {
    pub kind: Kind,
    pub name: String,
    /// The full object, `apiVersion` and `kind` included.
    pub object: Value,
    /// Asked for explicitly (a missing API is then reported); automatic
    /// monitoring objects are only built when discovery found the API.
    pub explicit: bool,
}

impl OptionalObject {
    /// `Kind/name`, as stored in `status.optionalObjects`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.kind.kind, self.name)
    }
}

/// What the spec asks for, given what discovery knows of the Prometheus
/// Operator (`None`: not known yet).
pub fn desired(
    pc: &PushCluster,
    names: &Names,
    crds: Option<monitoring::MonitoringCrds>,
) -> Result<Vec<OptionalObject>> {
    let mut out = Vec::new();
    let object = |kind: Kind, object: Value, explicit: bool| OptionalObject {
        kind,
        name: names.server(),
        object,
        explicit,
    };
    if let Some(e) = &pc.spec.expose {
        if let Some(i) = e.ingress.as_ref().filter(|i| i.enabled) {
            out.push(object(INGRESS, expose::ingress(pc, names, i)?, true));
        }
        if let Some(r) = e.http_route.as_ref().filter(|r| r.enabled) {
            out.push(object(HTTP_ROUTE, expose::http_route(pc, names, r)?, true));
        }
    }
    let m = pc.spec.monitoring.clone().unwrap_or_default();
    let pm = m.pod_monitor.enabled;
    if monitoring::wanted(pm, crds.map(|c| c.pod_monitors)) == Some(true) {
        let o = monitoring::pod_monitor(pc, names, &m.pod_monitor)?;
        out.push(object(POD_MONITOR, o, pm.is_some()));
    }
    let pr = m.prometheus_rule.enabled;
    if monitoring::wanted(pr, crds.map(|c| c.prometheus_rules)) == Some(true) {
        let o = monitoring::prometheus_rule(pc, names, &m.prometheus_rule)?;
        out.push(object(PROMETHEUS_RULE, o, pr.is_some()));
    }
    Ok(out)
}

/// `desired` for `push-operator render`: no cluster to discover, so only
/// what is asked for explicitly.
pub fn render(pc: &PushCluster, settings: &Settings) -> Result<Vec<Value>> {
    let names = Names::new(pc, settings)?;
    Ok(desired(pc, &names, None)?
        .into_iter()
        .map(|o| o.object)
        .collect())
}

fn parse_id(id: &str) -> Option<(Kind, String)> {
    let (kind, name) = id.split_once('/')?;
    let kind = KINDS.into_iter().find(|k| k.kind == kind)?;
    Some((kind, name.to_string()))
}

/// Objects listed in the status that the spec no longer wants. While
/// discovery has no answer yet, automatic monitoring objects are kept.
pub fn obsolete(
    pc: &PushCluster,
    wanted: &[OptionalObject],
    crds: Option<monitoring::MonitoringCrds>,
) -> Vec<(Kind, String)> {
    let m = pc.spec.monitoring.clone().unwrap_or_default();
    let undecided = |k: Kind| {
        crds.is_none()
            && ((k == POD_MONITOR && m.pod_monitor.enabled.is_none())
                || (k == PROMETHEUS_RULE && m.prometheus_rule.enabled.is_none()))
    };
    pc.status
        .iter()
        .flat_map(|s| s.optional_objects.iter())
        .filter(|id| !wanted.iter().any(|w| &w.id() == *id))
        .filter_map(|id| parse_id(id))
        .filter(|(k, _)| !undecided(*k))
        .collect()
}

/// State of one area after a reconcile.
#[derive(Clone, Debug, PartialEq)]
pub struct AreaState {
    pub ok: bool,
    pub reason: String,
    pub message: String,
}

/// What [`reconcile`] did, for the status.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    /// `status.optionalObjects` after this reconcile.
    pub objects: Vec<String>,
    pub expose: Option<AreaState>,
    pub monitoring: Option<AreaState>,
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Deletes the obsolete optional objects and applies the wanted ones.
pub async fn reconcile(
    client: &kube::Client,
    pc: &PushCluster,
    names: &Names,
    crds: Option<monitoring::MonitoringCrds>,
) -> Result<Outcome> {
    let wanted = desired(pc, names, crds)?;
    let gone = obsolete(pc, &wanted, crds);
    let mut out = Outcome {
        // Tracked objects that stay tracked: neither wanted again (re-added
        // below) nor deleted now (undecided automatic ones).
        objects: pc
            .status
            .iter()
            .flat_map(|s| s.optional_objects.iter())
            .filter(|id| {
                !wanted.iter().any(|w| &w.id() == *id)
                    && !gone.iter().any(|(k, n)| **id == format!("{}/{n}", k.kind))
            })
            .cloned()
            .collect(),
        ..Outcome::default()
    };
    for (kind, name) in &gone {
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &names.namespace, &kind.api_resource());
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => tracing::info!(kind = kind.kind, %name, "deleted (no longer in the spec)"),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let mut applied: Vec<&OptionalObject> = Vec::new();
    let mut missing: Vec<(&OptionalObject, String)> = Vec::new();
    for o in &wanted {
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &names.namespace, &o.kind.api_resource());
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match api.patch(&o.name, &params, &Patch::Apply(&o.object)).await {
            Ok(_) => {
                applied.push(o);
                out.objects.push(o.id());
            }
            // A 404 on an apply means the resource type is not served. Only
            // an explicit request is worth a condition; an automatic object
            // just waits for the next discovery.
            Err(e) if is_not_found(&e) => {
                tracing::warn!(object = %o.id(), "{}/{} is not served", o.kind.group, o.kind.version);
                if o.explicit {
                    let msg = format!(
                        "{}/{} is not served (are its CRDs installed?): {} not created",
                        o.kind.group,
                        o.kind.version,
                        o.id()
                    );
                    missing.push((o, msg));
                }
            }
            Err(e) => return Err(Error::Kube(e)),
        }
    }
    out.expose = area_state(Area::Expose, &applied, &missing);
    out.monitoring = area_state(Area::Monitoring, &applied, &missing);
    Ok(out)
}

fn area_state(
    area: Area,
    applied: &[&OptionalObject],
    missing: &[(&OptionalObject, String)],
) -> Option<AreaState> {
    let missing: Vec<_> = missing
        .iter()
        .filter(|(o, _)| o.kind.area() == area)
        .collect();
    if let Some((first, _)) = missing.first() {
        return Some(AreaState {
            ok: false,
            reason: first.kind.missing_reason.into(),
            message: missing
                .iter()
                .map(|(_, m)| m.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        });
    }
    let ids: Vec<String> = applied
        .iter()
        .filter(|o| o.kind.area() == area)
        .map(|o| o.id())
        .collect();
    (!ids.is_empty()).then(|| AreaState {
        ok: true,
        reason: "Applied".into(),
        message: format!("applied {}", ids.join(", ")),
    })
}

/// Writes `outcome` into `st`; returns the Warning Events to publish
/// (`reason`, `note`), one per area that just turned `False`.
pub fn write_status(
    outcome: &Outcome,
    st: &mut PushClusterStatus,
    now: &str,
    generation: Option<i64>,
) -> Vec<(String, String)> {
    st.optional_objects = outcome.objects.clone();
    let mut events = Vec::new();
    for (area, state) in [
        (Area::Expose, &outcome.expose),
        (Area::Monitoring, &outcome.monitoring),
    ] {
        let cond = area.condition();
        match state {
            Some(s) => {
                let changed = status::set(
                    &mut st.conditions,
                    cond,
                    s.ok,
                    &s.reason,
                    &s.message,
                    now,
                    generation,
                );
                if !s.ok && changed {
                    events.push((s.reason.clone(), s.message.clone()));
                }
            }
            None => st.conditions.retain(|c| c.type_ != cond),
        }
    }
    events
}
