//! Host labels: the name each host id is shown under.

use std::sync::Arc;

use forwarder_common::{HOST_FIRST_CONFIGURED, HOST_OTHER, HOST_UNKNOWN, host::HostPattern};

/// Label of host id 0: no name could be read from the connection.
pub const HOST_UNKNOWN_LABEL: &str = "unknown";
/// Label of host id 1: a name that is not configured.
pub const HOST_OTHER_LABEL: &str = "other";

/// The label of every host id in use: `unknown`, `other`, then the configured patterns
/// under the ids the host table gave them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostLabels {
    /// Indexed by host id; `None` for ids no configured host holds.
    labels: Vec<Option<String>>,
    /// Configured host ids in configuration order.
    order: Vec<u32>,
}

impl Default for HostLabels {
    fn default() -> Self {
        Self::from_assigned(Vec::new())
    }
}

impl HostLabels {
    /// Configured hosts numbered in order from `HOST_FIRST_CONFIGURED`.
    pub fn new(hosts: &[HostPattern]) -> Self {
        Self::from_assigned(
            (HOST_FIRST_CONFIGURED..)
                .zip(hosts.iter().map(|h| h.label.clone()))
                .collect(),
        )
    }

    /// Configured hosts with the ids the host table holds, in configuration order.
    pub fn from_assigned(assigned: Vec<(u32, String)>) -> Self {
        let mut labels = vec![
            Some(HOST_UNKNOWN_LABEL.to_owned()),
            Some(HOST_OTHER_LABEL.to_owned()),
        ];
        let mut order = Vec::with_capacity(assigned.len());
        for (id, label) in assigned {
            let i = id as usize;
            if labels.len() <= i {
                labels.resize(i + 1, None);
            }
            labels[i] = Some(label);
            order.push(id);
        }
        Self { labels, order }
    }

    /// The label of host id `id`. An id the daemon did not configure (which the kernel
    /// never reports) is counted as `other`, so no label can come from anywhere else.
    pub fn label(&self, id: u32) -> &str {
        self.labels
            .get(id as usize)
            .and_then(Option::as_deref)
            .unwrap_or(HOST_OTHER_LABEL)
    }

    /// One past the highest host id in use: statistics are read for `0..count()`.
    pub fn count(&self) -> u32 {
        u32::try_from(self.labels.len()).unwrap_or(u32::MAX)
    }

    /// Host ids in display order: configured hosts in configuration order, then `other`,
    /// then `unknown`.
    pub fn display_order(&self) -> impl Iterator<Item = u32> + '_ {
        self.order.iter().copied().chain([HOST_OTHER, HOST_UNKNOWN])
    }
}

/// The host labels as the running daemon has them: replaced whole when the host table
/// changes (`forwarder hosts add`, a reload), read by every consumer per use.
#[derive(Clone, Debug, Default)]
pub struct SharedLabels(Arc<std::sync::RwLock<Arc<HostLabels>>>);

impl SharedLabels {
    pub fn new(labels: HostLabels) -> Self {
        Self(Arc::new(std::sync::RwLock::new(Arc::new(labels))))
    }

    pub fn get(&self) -> Arc<HostLabels> {
        Arc::clone(
            &self
                .0
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    pub fn set(&self, labels: HostLabels) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(labels);
    }
}
