//! Finding, adding and removing sections in the document. Where a new section goes and
//! which comments leave with a removed one is described in the module above.

use toml_edit::{ArrayOfTables, DocumentMut, InlineTable, Item, Table, TableLike, Value};

use crate::config::edit::{
    EditError,
    comments::{drop_tail, ends_with_blank_line, has_comment, join, raw, without_own_comments},
};

/// The `index`th `[[key]]` section, however the file writes the array.
pub(super) fn section_mut<'d>(
    doc: &'d mut DocumentMut,
    key: &'static str,
    index: usize,
) -> Result<&'d mut dyn TableLike, EditError> {
    let found = match doc.get_mut(key) {
        Some(Item::ArrayOfTables(a)) => a.get_mut(index).map(|t| t as &mut dyn TableLike),
        Some(Item::Value(Value::Array(a))) => a
            .get_mut(index)
            .and_then(Value::as_inline_table_mut)
            .map(|t| t as &mut dyn TableLike),
        _ => None,
    };
    found.ok_or(EditError::SectionMissing { key, n: index + 1 })
}

/// Replaces a value but keeps the comment after it (`port = 443  # HTTPS`) and the
/// comment lines above its key.
pub(super) fn set_value(t: &mut dyn TableLike, key: &str, mut value: Value) {
    match t.get_mut(key) {
        Some(item) => {
            if let Some(old) = item.as_value() {
                *value.decor_mut() = old.decor().clone();
            }
            *item = Item::Value(value);
        }
        None => {
            t.insert(key, Item::Value(value));
        }
    }
}

pub(super) fn append_section(
    doc: &mut DocumentMut,
    key: &'static str,
    fields: Vec<(&str, Value)>,
) -> Result<(), EditError> {
    match doc.get_mut(key) {
        // `rule = [{ port = 443 }]` stays in the style the user chose.
        Some(Item::Value(Value::Array(a))) => {
            let mut t = InlineTable::new();
            for (k, v) in fields {
                t.insert(k, v);
            }
            a.push(t);
            return Ok(());
        }
        Some(Item::ArrayOfTables(_)) | None => {}
        Some(_) => {
            return Err(EditError::NotAList { key });
        }
    }
    let mut section = start_section(doc);
    for (k, v) in fields {
        section.insert(k, Item::Value(v));
    }
    match doc.get_mut(key) {
        Some(Item::ArrayOfTables(a)) => a.push(section),
        _ => {
            let mut a = ArrayOfTables::new();
            a.push(section);
            doc.insert(key, Item::ArrayOfTables(a));
        }
    }
    Ok(())
}

/// An empty section placed at the end of the file (see the module documentation).
pub(super) fn start_section(doc: &mut DocumentMut) -> Table {
    let position = header_positions(doc.as_table())
        .into_iter()
        .max()
        .unwrap_or(0)
        + 1;
    let trailing = raw(doc.trailing().as_str());
    let (above, below) =
        if doc.as_table().get_values().is_empty() && header_positions(doc.as_table()).is_empty() {
            // Only comments so far: they introduce the file.
            (trailing.clone(), String::new())
        } else {
            let rest = drop_tail(&trailing, false);
            (
                trailing[..trailing.len() - rest.len()].to_owned(),
                rest.to_owned(),
            )
        };
    let prefix = if above.trim().is_empty() && doc.to_string().trim().is_empty() {
        String::new()
    } else {
        let mut p = above;
        if !p.is_empty() && !p.ends_with('\n') {
            p.push('\n');
        }
        if !ends_with_blank_line(&p) {
            p.push('\n');
        }
        p
    };
    doc.set_trailing(below);
    let mut t = Table::new();
    t.set_position(Some(position));
    t.decor_mut().set_prefix(prefix);
    t
}

pub(super) fn remove_section(
    doc: &mut DocumentMut,
    key: &'static str,
    index: usize,
) -> Result<(), EditError> {
    let (removed, now_empty) = match doc.get_mut(key) {
        Some(Item::ArrayOfTables(a)) if index < a.len() => {
            let t = a.remove(index);
            (t, a.is_empty())
        }
        Some(Item::Value(Value::Array(a))) if index < a.len() => {
            a.remove(index);
            return Ok(());
        }
        _ => {
            return Err(EditError::SectionMissing { key, n: index + 1 });
        }
    };
    if now_empty {
        doc.remove(key);
    }
    release_comments(doc, &removed);
    Ok(())
}

/// Hands the comments around a removed section that are not its own to what follows it.
fn release_comments(doc: &mut DocumentMut, removed: &Table) {
    let Some(position) = removed.position() else {
        return;
    };
    let prefix = raw(removed.decor().prefix().and_then(|p| p.as_str()));
    let positions = header_positions(doc.as_table());
    let first_in_file =
        doc.as_table().get_values().is_empty() && positions.iter().all(|&p| p > position);
    let kept = if first_in_file {
        prefix.as_str()
    } else {
        without_own_comments(&prefix)
    };
    match positions.into_iter().filter(|&p| p > position).min() {
        Some(next) => {
            if let Some(t) = table_at(doc.as_table_mut(), next) {
                let text = raw(t.decor().prefix().and_then(|p| p.as_str()));
                let joined = join(kept, drop_tail(&text, true));
                t.decor_mut().set_prefix(joined);
            }
        }
        None => {
            let text = raw(doc.trailing().as_str());
            let rest = drop_tail(&text, false);
            let joined = if has_comment(kept) && !has_comment(rest) {
                // Nothing follows but what this section left: end the file on it.
                format!("{}\n", kept.trim_end())
            } else {
                join(kept, rest)
            };
            doc.set_trailing(joined);
        }
    }
}

/// Positions of the sections that have a header in the file (`[limits]`, `[[rule]]`).
fn header_positions(t: &Table) -> Vec<isize> {
    let mut out = Vec::new();
    collect_positions(t, &mut out);
    out
}

fn collect_positions(t: &Table, out: &mut Vec<isize>) {
    for (_, item) in t.iter() {
        let children: Vec<&Table> = match item {
            Item::Table(c) => vec![c],
            Item::ArrayOfTables(a) => a.iter().collect(),
            _ => continue,
        };
        for c in children {
            if !c.is_dotted()
                && !c.is_implicit()
                && let Some(p) = c.position()
            {
                out.push(p);
            }
            collect_positions(c, out);
        }
    }
}

fn table_at(t: &mut Table, position: isize) -> Option<&mut Table> {
    for (_, item) in t.iter_mut() {
        let children: Vec<&mut Table> = match item {
            Item::Table(c) => vec![c],
            Item::ArrayOfTables(a) => a.iter_mut().collect(),
            _ => continue,
        };
        for c in children {
            if !c.is_dotted() && !c.is_implicit() && c.position() == Some(position) {
                return Some(c);
            }
            if let Some(found) = table_at(c, position) {
                return Some(found);
            }
        }
    }
    None
}
