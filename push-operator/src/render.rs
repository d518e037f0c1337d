//! `push-operator render`: the objects for a PushCluster manifest as
//! multi-document YAML, without a cluster.

use kube::core::ObjectMeta;

use crate::crd::PushCluster;
use crate::objects::{self, Settings};
use crate::Result;

/// Renders every object `run` would apply for the PushCluster in `manifest`.
/// A manifest without namespace or uid gets `default` and a placeholder uid
/// (the API server would set the uid; owner references need one).
pub fn render(manifest: &str, settings: &Settings) -> Result<String> {
    let mut pc: PushCluster = serde_yaml::from_str(manifest)?;
    let meta: &mut ObjectMeta = &mut pc.metadata;
    meta.namespace.get_or_insert_with(|| "default".into());
    meta.uid
        .get_or_insert_with(|| "00000000-0000-0000-0000-000000000000".into());
    let mut out = String::new();
    for object in objects::desired(&pc, settings)? {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&object.to_json()?)?);
    }
    // Ingress, HTTPRoute and, when asked for explicitly, PodMonitor and
    // PrometheusRule (no cluster to discover the Prometheus Operator in).
    for object in objects::optional::render(&pc, settings)? {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&object)?);
    }
    Ok(out)
}
