//! `spec.expose`: an Ingress (networking.k8s.io/v1) and a Gateway API
//! HTTPRoute (gateway.networking.k8s.io/v1) to the push Service. The proxy
//! timeouts WebSocket and SSE need are in docs/kubernetes.md.

use k8s_openapi::api::networking::v1::Ingress;
use serde_json::{json, Value};

use super::server::SERVER_COMPONENT;
use super::{meta, typed, Names};
use crate::crd::PushCluster;
use crate::crd_ext::{HttpRouteExpose, IngressExpose};
use crate::Result;

/// Port of the push Service (`objects::server` builds it with this port,
/// named `http`); the HTTPRoute needs the number, the Ingress uses the name.
pub const SERVICE_PORT: i32 = 80;
/// Name of that port.
pub const SERVICE_PORT_NAME: &str = "http";

fn with_annotations(
    mut m: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    annotations: Option<&std::collections::BTreeMap<String, String>>,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
    if let Some(a) = annotations.filter(|a| !a.is_empty()) {
        m.annotations = Some(a.clone());
    }
    m
}

/// The Ingress for `spec.expose.ingress` (caller checks `enabled`).
pub fn ingress(pc: &PushCluster, names: &Names, spec: &IngressExpose) -> Result<Value> {
    let m = with_annotations(
        meta(pc, names, names.server(), SERVER_COMPONENT)?,
        spec.annotations.as_ref(),
    );
    let paths = json!([{
        "path": spec.path,
        "pathType": "Prefix",
        "backend": { "service": { "name": names.server(), "port": { "name": SERVICE_PORT_NAME } } },
    }]);
    let rules: Vec<Value> = if spec.hosts.is_empty() {
        vec![json!({ "http": { "paths": paths } })]
    } else {
        spec.hosts
            .iter()
            .map(|h| json!({ "host": h, "http": { "paths": paths } }))
            .collect()
    };
    let mut body = json!({
        "metadata": m,
        "spec": { "rules": rules },
    });
    if let Some(class) = &spec.class_name {
        body["spec"]["ingressClassName"] = json!(class);
    }
    if let Some(tls) = &spec.tls {
        let mut entry = json!({ "secretName": tls.secret_name });
        if !spec.hosts.is_empty() {
            entry["hosts"] = json!(spec.hosts);
        }
        body["spec"]["tls"] = json!([entry]);
    }
    // Round-trip through the typed Ingress: a misspelt field fails here.
    let typed: Ingress = typed(body)?;
    let mut v = serde_json::to_value(&typed)?;
    v["apiVersion"] = json!("networking.k8s.io/v1");
    v["kind"] = json!("Ingress");
    Ok(v)
}

/// The HTTPRoute for `spec.expose.httpRoute` (caller checks `enabled`).
pub fn http_route(pc: &PushCluster, names: &Names, spec: &HttpRouteExpose) -> Result<Value> {
    let m = with_annotations(
        meta(pc, names, names.server(), SERVER_COMPONENT)?,
        spec.annotations.as_ref(),
    );
    let mut rule = json!({
        "matches": [{ "path": { "type": "PathPrefix", "value": spec.path } }],
        "backendRefs": [{ "group": "", "kind": "Service", "name": names.server(), "port": SERVICE_PORT }],
    });
    if !spec.request_timeout.is_empty() {
        rule["timeouts"] = json!({ "request": spec.request_timeout });
    }
    let mut route = json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": m,
        "spec": {
            "parentRefs": spec.parent_refs,
            "rules": [rule],
        },
    });
    if !spec.hostnames.is_empty() {
        route["spec"]["hostnames"] = json!(spec.hostnames);
    }
    Ok(route)
}
