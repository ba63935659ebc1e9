//! The `rules add` and `rules remove` edits.

use std::net::IpAddr;

use toml_edit::Value;

use crate::config::{
    edit::{
        ConfigDoc, EditError,
        sections::{append_section, remove_section},
    },
    rule::{Proto, RuleConfig, UnknownPolicy, default_rules, default_rules_text},
};

/// What names a rule to the `rules` commands. Two rules without an address that differ
/// only in their backend's family would both be valid, but are refused as one rule twice
/// so that `rules remove tcp 443` keeps a single meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RuleId {
    proto: Proto,
    port: u16,
    public_addr: Option<IpAddr>,
}

impl RuleId {
    fn of(r: &RuleConfig) -> Self {
        RuleId {
            proto: r.proto,
            port: r.port,
            public_addr: r.public_addr,
        }
    }
}

impl std::fmt::Display for RuleId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.public_addr {
            Some(a) => write!(f, "{} {a} port {}", self.proto, self.port),
            None => write!(f, "{} port {}", self.proto, self.port),
        }
    }
}

impl ConfigDoc {
    /// Appends a `[[rule]]` section with the fields the rule sets (`proto` only for UDP).
    /// Refused if a rule for the same protocol, port and `public_addr` (or equally without
    /// one) is in the file.
    pub fn add_rule(&mut self, rule: &RuleConfig) -> Result<(), EditError> {
        self.all_or_nothing(|d| d.add_rule_inner(rule))
    }

    fn add_rule_inner(&mut self, rule: &RuleConfig) -> Result<(), EditError> {
        let id = RuleId::of(rule);
        // Without any [[rule]] the default ports are forwarded: adding the first rule must
        // not silently stop them, so they are written out first (but for one the new rule
        // replaces).
        if self.file_config()?.rules.is_empty() {
            self.write_default_rules(Some(id))?;
        }
        if self
            .file_config()?
            .rules
            .iter()
            .any(|r| RuleId::of(r) == id)
        {
            return Err(EditError::Conflict(format!(
                "a [[rule]] already forwards {id}"
            )));
        }
        let mut fields: Vec<(&str, Value)> = Vec::new();
        if rule.proto != Proto::Tcp {
            fields.push(("proto", <&str>::from(rule.proto).into()));
        }
        fields.push(("port", i64::from(rule.port).into()));
        if let Some(b) = rule.backend {
            fields.push(("backend", b.to_string().into()));
        }
        if let Some(p) = rule.backend_port {
            fields.push(("backend_port", i64::from(p).into()));
        }
        if let Some(a) = rule.public_addr {
            fields.push(("public_addr", a.to_string().into()));
        }
        if let Some(f) = &rule.fallback {
            fields.push(("fallback", f.as_str().into()));
        }
        if rule.unknown_policy != UnknownPolicy::default() {
            fields.push(("unknown_policy", <&str>::from(rule.unknown_policy).into()));
        }
        self.edit(|doc| append_section(doc, "rule", fields))
    }

    /// Removes the `[[rule]]` forwarding `proto` `port` on `public_addr`, and returns it.
    ///
    /// With an address, only a rule naming exactly that `public_addr` matches: a rule
    /// without one covers every public address, and removing it would stop more than was
    /// asked for. Without an address, the one rule for that protocol and port is removed,
    /// whatever its address. If several forward it, the one without a `public_addr` is
    /// meant (it is the one the request names exactly); if there is no such rule, or more
    /// than one, the request is ambiguous and nothing is removed.
    pub fn remove_rule(
        &mut self,
        proto: Proto,
        port: u16,
        public_addr: Option<IpAddr>,
    ) -> Result<RuleConfig, EditError> {
        self.all_or_nothing(|d| d.remove_rule_inner(proto, port, public_addr))
    }

    fn remove_rule_inner(
        &mut self,
        proto: Proto,
        port: u16,
        public_addr: Option<IpAddr>,
    ) -> Result<RuleConfig, EditError> {
        // The default ports are rules too while none is written: removing one of them
        // leaves the other forwarded.
        if self.file_config()?.rules.is_empty() {
            self.write_default_rules(None)?;
        }
        let mut rules = self.file_config()?.rules;
        let want = RuleId {
            proto,
            port,
            public_addr,
        };
        let exact: Vec<usize> = (0..rules.len())
            .filter(|&i| RuleId::of(&rules[i]) == want)
            .collect();
        let same_port: Vec<usize> = (0..rules.len())
            .filter(|&i| rules[i].proto == proto && rules[i].port == port)
            .collect();
        let index = match (public_addr, exact.as_slice(), same_port.as_slice()) {
            (_, _, []) | (Some(_), [], _) => {
                return Err(EditError::NotFound(format!("no [[rule]] forwards {want}")));
            }
            (None, _, [only]) | (_, [only], _) => *only,
            (_, _, several) => {
                let on: Vec<String> = several
                    .iter()
                    .map(|&i| match rules[i].public_addr {
                        Some(a) => a.to_string(),
                        None => "every address".into(),
                    })
                    .collect();
                let hint = if public_addr.is_some() || exact.len() > 1 {
                    format!("remove the one meant by editing {}", self.path.display())
                } else {
                    "name the public address".into()
                };
                return Err(EditError::Ambiguous(format!(
                    "{} [[rule]] sections forward {} port {} (on {}): {hint}",
                    several.len(),
                    proto,
                    port,
                    on.join(", ")
                )));
            }
        };
        if rules.len() == 1 {
            return Err(EditError::Conflict(format!(
                "{want} is the last [[rule]]: without any, the default rules ({}) would be forwarded again; stop the daemon to stop forwarding",
                default_rules_text(self.file_config()?.http3)
            )));
        }
        self.edit(|doc| remove_section(doc, "rule", index))?;
        Ok(rules.swap_remove(index))
    }

    /// Writes out the rules in force while the file has none (`default_rules`: TCP 80 and
    /// 443 on every address, with `http3` UDP 443, the configured backends), except `skip`.
    fn write_default_rules(&mut self, skip: Option<RuleId>) -> Result<(), EditError> {
        for rule in default_rules(self.file_config()?.http3) {
            if skip == Some(RuleId::of(&rule)) {
                continue;
            }
            let mut fields = vec![("port", i64::from(rule.port).into())];
            if rule.proto != Proto::Tcp {
                fields.insert(0, ("proto", <&str>::from(rule.proto).into()));
            }
            self.edit(|doc| append_section(doc, "rule", fields))?;
        }
        Ok(())
    }
}
