//! A cheap pre-parse guard: libyaml's cost grows with the square of flow
//! nesting (`[[[[...` or `{a: {a: ...`), so a 1 MiB document of brackets
//! would take minutes. No real config nests brackets deeply, so deep
//! nesting is refused before parsing.

/// Deeper flow nesting than any real config uses, far below the depth at
/// which parsing gets slow.
pub(crate) const MAX_FLOW_DEPTH: usize = 64;

/// The 1-based line and column of the first bracket that opens level
/// `MAX_FLOW_DEPTH + 1`, if any. Quoted scalars and comments are skipped;
/// brackets inside block scalars are counted, which can only over-count
/// for text no config contains.
pub(crate) fn too_deep(src: &str) -> Option<(usize, usize)> {
    let bytes = src.as_bytes();
    let (mut depth, mut line, mut line_start) = (0usize, 1usize, 0usize);
    let mut i = 0;
    while i < bytes.len() {
        let at_token_start = i == 0 || matches!(bytes[i - 1], b' ' | b'\t' | b'\n' | b'\r' | b'[' | b'{' | b',' | b':');
        match bytes[i] {
            b'\n' => {
                line += 1;
                line_start = i + 1;
            }
            b'#' if i == 0 || matches!(bytes[i - 1], b' ' | b'\t' | b'\n' | b'\r') => {
                while i + 1 < bytes.len() && bytes[i + 1] != b'\n' {
                    i += 1;
                }
            }
            quote @ (b'"' | b'\'') if at_token_start => {
                i += 1;
                while i < bytes.len() {
                    match bytes[i] {
                        b'\\' if quote == b'"' => i += 1,
                        b'\'' if quote == b'\'' && bytes.get(i + 1) == Some(&b'\'') => i += 1,
                        b'\n' => {
                            line += 1;
                            line_start = i + 1;
                        }
                        c if c == quote => break,
                        _ => {}
                    }
                    i += 1;
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_FLOW_DEPTH {
                    let column = src[line_start..i].chars().count() + 1;
                    return Some((line, column));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_too_deep_bracket() {
        let deep = format!("a:\n  b: {}", "[".repeat(MAX_FLOW_DEPTH + 5));
        assert_eq!(too_deep(&deep), Some((2, 5 + MAX_FLOW_DEPTH + 1)));
        let ok = format!("{}{}", "[".repeat(MAX_FLOW_DEPTH), "]".repeat(MAX_FLOW_DEPTH));
        assert_eq!(too_deep(&ok), None);
        let siblings = "[a], ".repeat(1000);
        assert_eq!(too_deep(&siblings), None);
    }

    #[test]
    fn skips_quotes_and_comments() {
        let brackets = "[".repeat(MAX_FLOW_DEPTH + 1);
        for text in [
            format!("a: \"{brackets}\"\n"),
            format!("a: '{brackets}'\n"),
            format!("a: 'it''s {brackets}'\n"),
            format!("a: \"\\\" {brackets}\"\n"),
            format!("a: 1 # {brackets}\n"),
            format!("# {brackets}\n"),
        ] {
            assert_eq!(too_deep(&text), None, "{text}");
        }
        assert!(too_deep(&format!("a: b#{brackets}\n")).is_some());
    }
}
