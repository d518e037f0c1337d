//! The crate's one error type. Each variant maps to a short, stable
//! `metric_label()` so failures can be counted per cause in Prometheus.

/// Everything that can go wrong inside the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The PushCluster spec cannot be turned into objects; reported as a
    /// condition, not retried quickly (a user has to edit the spec).
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// A call to the Kubernetes API failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// (De)serializing JSON failed.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// (De)serializing YAML failed.
    #[error("yaml: {0}")]
    Yaml(#[from] serde_yaml::Error),
    /// Talking to a Redis or Sentinel process failed.
    #[error("redis {addr}: {message}")]
    Redis { addr: String, message: String },
    /// An object lacks a field the API server always sets (name, namespace).
    #[error("object is missing {0}")]
    MissingField(&'static str),
    /// Waited for a condition until a deadline (the boot step).
    #[error("timed out: {0}")]
    Timeout(String),
    /// Local I/O (render input, boot config output).
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// Low-cardinality label for the `push_operator_reconcile_failures_total` counter.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::InvalidSpec(_) => "invalid_spec",
            Error::Kube(_) => "kube",
            Error::Json(_) => "json",
            Error::Yaml(_) => "yaml",
            Error::Redis { .. } => "redis",
            Error::MissingField(_) => "missing_field",
            Error::Timeout(_) => "timeout",
            Error::Io(_) => "io",
        }
    }
}

/// Crate-wide result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
