//! The `limits set` edit.

use toml_edit::Item;

use crate::config::{
    edit::{
        ConfigDoc, EditError,
        sections::{set_value, start_section},
    },
    limits::Limits,
};

impl ConfigDoc {
    /// Writes the limits into `[limits]`, adding the section if there is none. A rate of
    /// 0 (no limit) removes the section's keys but keeps its header and the comments on
    /// it, for the next time a limit is set.
    pub fn set_limits(&mut self, limits: Limits) -> Result<(), EditError> {
        self.edit(|doc| {
            if limits.new_connections_per_second == 0 {
                if let Some(t) = doc.get_mut("limits").and_then(Item::as_table_like_mut) {
                    t.remove("new_connections_per_second");
                    t.remove("burst");
                }
                return Ok(());
            }
            if !doc.contains_key("limits") {
                let section = start_section(doc);
                doc.insert("limits", Item::Table(section));
            }
            let t = doc
                .get_mut("limits")
                .and_then(Item::as_table_like_mut)
                .ok_or(EditError::LimitsNotASection)?;
            set_value(
                t,
                "new_connections_per_second",
                i64::from(limits.new_connections_per_second).into(),
            );
            match limits.burst {
                Some(b) => set_value(t, "burst", i64::from(b).into()),
                None => {
                    t.remove("burst");
                }
            }
            Ok(())
        })
    }
}
