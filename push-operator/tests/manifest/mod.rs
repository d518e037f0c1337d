//! The PushCluster the builder tests start from, and the objects built
//! from it. Each test binary uses a part of it.
#![allow(dead_code)]

use k8s_openapi::api::apps::v1::Deployment;
use push_operator::crd::PushCluster;
use push_operator::objects::{self, Desired, Settings};

/// PushCluster `realtime/demo` with `spec_yaml` (indented YAML lines) as
/// its spec.
pub fn pc(spec_yaml: &str) -> PushCluster {
    let doc = format!(
        "apiVersion: push.dev/v1alpha1\nkind: PushCluster\nmetadata: {{name: demo, namespace: realtime, uid: 1234-uid}}\nspec:\n{spec_yaml}"
    );
    serde_yaml::from_str(&doc).expect("test manifest parses")
}

/// Every object the operator would apply, with the default settings.
pub fn built(pc: &PushCluster) -> Vec<Desired> {
    objects::desired(pc, &Settings::default()).expect("builders succeed")
}

/// The push-server Deployment among `objs`.
pub fn deployment(objs: &[Desired]) -> &Deployment {
    objs.iter()
        .find_map(|o| match o {
            Desired::Deployment(d) => Some(d),
            _ => None,
        })
        .expect("a Deployment")
}
