//! Which comment lines around a section are its own: the text of a section's
//! surroundings, line by line.

pub(super) fn raw(s: Option<&str>) -> String {
    s.unwrap_or_default().to_owned()
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

pub(super) fn has_comment(text: &str) -> bool {
    text.lines().any(is_comment)
}

pub(super) fn ends_with_blank_line(text: &str) -> bool {
    text.split_inclusive('\n')
        .next_back()
        .is_some_and(|l| l.ends_with('\n') && l.trim().is_empty())
}

fn trim_leading_blank_lines(text: &str) -> &str {
    let mut start = 0;
    for line in text.split_inclusive('\n') {
        if !line.ends_with('\n') || !line.trim().is_empty() {
            break;
        }
        start += line.len();
    }
    &text[start..]
}

/// The text above a header without the comment lines directly above it (nor the header's
/// indentation).
pub(super) fn without_own_comments(prefix: &str) -> &str {
    let mut cut = prefix.rfind('\n').map_or(0, |i| i + 1);
    for line in prefix[..cut].split_inclusive('\n').rev() {
        if !is_comment(line) {
            break;
        }
        cut -= line.len();
    }
    &prefix[..cut]
}

/// The text after a section's last key without the comment lines directly below it. When
/// those run on up to the next header (`before_header`) with no blank line, they
/// introduce that section instead and stay.
pub(super) fn drop_tail(text: &str, before_header: bool) -> &str {
    let mut cut = 0;
    for line in text.split_inclusive('\n') {
        if is_comment(line) {
            cut += line.len();
        } else if line.ends_with('\n') {
            return &text[cut..];
        } else {
            // The next header's indentation: the comments reach it.
            break;
        }
    }
    if before_header { text } else { &text[cut..] }
}

/// What is left above a header: the released comments, then what was there already,
/// with one blank line between the two and none doubled.
pub(super) fn join(kept: &str, rest: &str) -> String {
    if !has_comment(kept) {
        let separated = rest.is_empty() || rest.starts_with('\n') || !rest.contains('\n');
        return if kept.contains('\n') && !separated {
            format!("\n{rest}")
        } else {
            rest.to_owned()
        };
    }
    if ends_with_blank_line(kept) {
        format!("{kept}{}", trim_leading_blank_lines(rest))
    } else {
        format!("{kept}{rest}")
    }
}
