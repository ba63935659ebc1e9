//! The `hosts add`, `hosts remove` and `hosts set` edits.

use forwarder_common::host::HostPattern;
use toml_edit::Value;

use crate::config::{
    edit::{
        ConfigDoc, EditError,
        sections::{append_section, remove_section, section_mut, set_value},
    },
    hosts::{HostConfig, HostPolicy},
};

impl ConfigDoc {
    /// Appends a `[[host]]` section (`policy` only when not `forward`). Refused if the
    /// name is configured already, in whatever case or with a trailing dot.
    pub fn add_host(&mut self, host: &HostConfig) -> Result<(), EditError> {
        let want = host_label(&host.name);
        if self
            .file_config()?
            .hosts
            .iter()
            .any(|h| host_label(&h.name) == want)
        {
            return Err(EditError::Conflict(format!(
                "host {want:?} is already configured"
            )));
        }
        let mut fields: Vec<(&str, Value)> = vec![("name", host.name.as_str().into())];
        if host.policy != HostPolicy::Forward {
            fields.push(("policy", <&str>::from(host.policy).into()));
        }
        self.edit(|doc| append_section(doc, "host", fields))
    }

    pub fn remove_host(&mut self, name: &str) -> Result<(), EditError> {
        let index = self.host_index(name)?;
        self.edit(|doc| remove_section(doc, "host", index))
    }

    /// `forward` removes the `policy` key rather than writing the default out.
    pub fn set_host_policy(&mut self, name: &str, policy: HostPolicy) -> Result<(), EditError> {
        let index = self.host_index(name)?;
        self.edit(|doc| {
            let host = section_mut(doc, "host", index)?;
            if policy == HostPolicy::Forward {
                host.remove("policy");
            } else {
                set_value(host, "policy", <&str>::from(policy).into());
            }
            Ok(())
        })
    }

    fn host_index(&self, name: &str) -> Result<usize, EditError> {
        let want = host_label(name);
        self.file_config()?
            .hosts
            .iter()
            .position(|h| host_label(&h.name) == want)
            .ok_or_else(|| EditError::NotFound(format!("host {want:?} is not configured")))
    }
}

/// How names compare: the daemon's normalisation (case, trailing dot), or for a name it
/// would reject anyway, the name as written in lowercase.
pub(super) fn host_label(name: &str) -> String {
    HostPattern::parse(name).map_or_else(|_| name.trim().to_ascii_lowercase(), |p| p.label)
}
