//! Untrusted text made safe to keep, log and print. A plugin's log lines,
//! reports, errors and metadata, and whatever a remote node answers, can
//! carry terminal controls (ESC, CSI, OSC, BEL, CR), newlines that start a
//! forged log line, or bidirectional overrides that reorder what a reader
//! sees. This module is the one owner of which characters are unsafe and how
//! they are shown; `bronzed` uses it where plugin text enters the host and
//! `bronzectl` where node text reaches a terminal.
//!
//! Unsafe characters are written as visible escapes: `\n`, `\r`, `\t`,
//! `\xHH` for the other ASCII controls (C0 and DEL) and `\u{HHHH}` for the
//! rest (C1 controls such as the 8-bit CSI `\u{9b}`, bidi controls, line and
//! paragraph separators). The text stays readable; nothing is dropped.

use std::borrow::Cow;
use std::fmt::Write;

/// Whether `c` must not reach a log line or a terminal as it is: the
/// Unicode control characters (C0, DEL, C1), the bidirectional formatting
/// characters (embeddings, overrides, isolates and marks: the "Trojan
/// Source" set), and the line and paragraph separators that some viewers
/// break lines at.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        || matches!(c, '\u{2028}' | '\u{2029}')
}

/// Text a plugin (or anything else untrusted) produced, as the host keeps
/// it: every unsafe character escaped, and every backslash doubled, so
/// that the result is one line, the original can be read back exactly, and
/// a plugin cannot fake an escape by writing `\x1b` itself.
pub fn escape(text: &str) -> Cow<'_, str> {
    escape_within(text, usize::MAX)
}

/// [`escape`], then at most `max_bytes` bytes: cut on a character boundary
/// and never inside an escape, so the cut text still reads back as a prefix
/// of the original.
pub fn escape_within(text: &str, max_bytes: usize) -> Cow<'_, str> {
    encode(text, Backslash::Double, max_bytes)
}

/// Text about to be printed to a terminal or written as one log line: every
/// unsafe character escaped, backslashes left alone. For text that was
/// already escaped where it entered its node (doubling its backslashes
/// again would garble it) and for text from a node that may be hostile.
/// `printable(printable(t)) == printable(t)` and
/// `printable(&escape(t)) == escape(t)`.
pub fn printable(text: &str) -> Cow<'_, str> {
    encode(text, Backslash::Keep, usize::MAX)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Backslash {
    Double,
    Keep,
}

fn encode(text: &str, backslash: Backslash, max_bytes: usize) -> Cow<'_, str> {
    let needs = |c: char| is_unsafe(c) || (backslash == Backslash::Double && c == '\\');
    let Some(first) = text.find(needs) else {
        return truncate(text, max_bytes);
    };
    if first >= max_bytes {
        return truncate(text, max_bytes);
    }
    let mut out = String::with_capacity(text.len().min(max_bytes) + 16);
    out.push_str(&text[..first]);
    let mut piece = String::new();
    for c in text[first..].chars() {
        piece.clear();
        if c == '\\' && backslash == Backslash::Double {
            piece.push_str("\\\\");
        } else if is_unsafe(c) {
            match c {
                '\n' => piece.push_str("\\n"),
                '\r' => piece.push_str("\\r"),
                '\t' => piece.push_str("\\t"),
                c if c.is_ascii() => {
                    let _ = write!(piece, "\\x{:02x}", c as u32);
                }
                c => {
                    let _ = write!(piece, "\\u{{{:x}}}", c as u32);
                }
            }
        } else {
            piece.push(c);
        }
        if out.len() + piece.len() > max_bytes {
            break;
        }
        out.push_str(&piece);
    }
    Cow::Owned(out)
}

/// `text` cut to at most `max` bytes on a character boundary.
fn truncate(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Borrowed(&text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The inverse of [`escape`], to prove nothing is lost or ambiguous.
    fn unescape(text: &str) -> String {
        let mut out = String::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('\\') => out.push('\\'),
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some('t') => out.push('\t'),
                Some('x') => {
                    let hex: String = chars.by_ref().take(2).collect();
                    out.push(char::from(u8::from_str_radix(&hex, 16).expect("two hex digits")));
                }
                Some('u') => {
                    assert_eq!(chars.next(), Some('{'));
                    let hex: String = chars.by_ref().take_while(|&c| c != '}').collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).expect("hex")).expect("a char"));
                }
                other => panic!("not an escape: \\{other:?} in {text:?}"),
            }
        }
        out
    }

    const HOSTILE: &str = "\x1b[2J\x1b]0;t\x07\u{9b}31m\rnew\nline\t\x7f\u{202e}abc\u{2066}\\x1b";

    #[test]
    fn controls_become_visible_escapes() {
        assert_eq!(
            escape(HOSTILE),
            "\\x1b[2J\\x1b]0;t\\x07\\u{9b}31m\\rnew\\nline\\t\\x7f\\u{202e}abc\\u{2066}\\\\x1b"
        );
        assert_eq!(
            printable(HOSTILE),
            "\\x1b[2J\\x1b]0;t\\x07\\u{9b}31m\\rnew\\nline\\t\\x7f\\u{202e}abc\\u{2066}\\x1b"
        );
        assert_eq!(escape("\0\u{85}\u{2028}\u{200f}"), "\\x00\\u{85}\\u{2028}\\u{200f}");
    }

    #[test]
    fn safe_text_is_borrowed_unchanged() {
        for text in ["", "plain text", "é ü 日本 🦀", "tab-free: a=b, c \"d\""] {
            assert!(matches!(escape(text), Cow::Borrowed(t) if t == text));
            assert!(matches!(printable(text), Cow::Borrowed(t) if t == text));
        }
        assert!(matches!(printable("C:\\dir"), Cow::Borrowed("C:\\dir")));
        assert_eq!(escape("C:\\dir"), "C:\\\\dir");
    }

    #[test]
    fn cuts_fall_between_escapes_and_characters() {
        assert_eq!(escape_within("ab\x1bcd", 4), "ab");
        assert_eq!(escape_within("ab\x1bcd", 6), "ab\\x1b");
        assert_eq!(escape_within("ab\\c", 3), "ab");
        assert_eq!(escape_within("éé", 3), "é");
        assert_eq!(escape_within("plain", 3), "pla");
        assert_eq!(escape_within("\u{202e}", 7), "");
    }

    /// Text heavy in what matters here: controls, bidi, backslashes and
    /// the letters of escapes, among any other characters.
    fn hostile_text() -> impl Strategy<Value = String> {
        let pick = prop_oneof![
            any::<char>(),
            prop::sample::select(vec![
                '\\', '\n', '\r', '\t', '\x1b', '\x07', '\x7f', '\u{9b}', '\u{85}', '\u{202e}', '\u{2069}', '\u{2028}',
                'x', 'u', '{', '}', '1', 'b',
            ]),
        ];
        prop::collection::vec(pick, 0..48).prop_map(|chars| chars.into_iter().collect())
    }

    proptest! {
        #[test]
        fn escape_is_safe_one_line_and_reversible(text in hostile_text()) {
            let escaped = escape(&text);
            prop_assert!(!escaped.chars().any(is_unsafe), "{escaped:?}");
            prop_assert_eq!(unescape(&escaped), text.clone());
            // Escaped text passes through a printer unchanged.
            prop_assert_eq!(printable(&escaped), escaped.clone());
        }

        #[test]
        fn printable_is_safe_and_idempotent(text in hostile_text()) {
            let shown = printable(&text);
            prop_assert!(!shown.chars().any(is_unsafe), "{shown:?}");
            prop_assert_eq!(printable(&shown), shown.clone());
        }

        #[test]
        fn a_bounded_escape_is_a_prefix(text in hostile_text(), max in 0usize..64) {
            let cut = escape_within(&text, max);
            prop_assert!(cut.len() <= max);
            prop_assert!(text.starts_with(&unescape(&cut)));
            prop_assert!(escape(&text).starts_with(cut.as_ref()));
        }
    }
}
