//! The default config: an embedded, commented example with placeholders
//! for what only the caller knows (the CA, the hostname, extra SANs).

/// The template as embedded, placeholders and all. Not valid YAML until
/// rendered with `render_default`.
pub fn default_template() -> &'static str {
    include_str!("default.yaml")
}

const CA_CRT: &str = "@CA_CRT@";
const CA_KEY: &str = "@CA_KEY@";
const HOSTNAME: &str = "@HOSTNAME@";
const CERT_SANS: &str = "@CERT_SANS@";

/// Fills the template's placeholders. PEM text goes into block scalars at
/// the placeholder's indentation; the hostname and SANs are quoted as YAML
/// needs. An empty hostname leaves the key out. Values are not checked
/// here: `load` checks the result.
pub fn render_default(ca_crt_pem: &str, ca_key_pem: &str, hostname: &str, cert_sans: &[String]) -> String {
    let mut out = String::with_capacity(default_template().len() + ca_crt_pem.len() + ca_key_pem.len());
    for line in default_template().lines() {
        let indent = &line[..line.len() - line.trim_start().len()];
        match line.trim() {
            CA_CRT => push_block(&mut out, indent, ca_crt_pem),
            CA_KEY => push_block(&mut out, indent, ca_key_pem),
            _ if line.contains(HOSTNAME) => {
                if !hostname.is_empty() {
                    out.push_str(&line.replace(HOSTNAME, &yaml_scalar(hostname)));
                    out.push('\n');
                }
            }
            _ if line.contains(CERT_SANS) => {
                if cert_sans.is_empty() {
                    out.push_str(&line.replace(CERT_SANS, "[]"));
                    out.push('\n');
                } else {
                    out.push_str(line.replace(CERT_SANS, "").trim_end());
                    out.push('\n');
                    for san in cert_sans {
                        out.push_str(&format!("{indent}  - {}\n", yaml_scalar(san)));
                    }
                }
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// Writes `text`'s lines, each indented, as the body of a block scalar.
fn push_block(out: &mut String, indent: &str, text: &str) {
    for line in text.trim_end().lines() {
        let line = line.trim_end();
        if !line.is_empty() {
            out.push_str(indent);
            out.push_str(line);
        }
        out.push('\n');
    }
}

/// `s` as a single-line YAML scalar, quoted only when YAML needs it.
fn yaml_scalar(s: &str) -> String {
    match serde_yaml::to_string(s) {
        Ok(encoded) if encoded.trim_end().lines().count() == 1 => encoded.trim_end().to_owned(),
        _ => double_quoted(s),
    }
}

/// A YAML double-quoted scalar, every special character escaped.
fn double_quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_scalars() {
        assert_eq!(yaml_scalar("node-1"), "node-1");
        assert_eq!(yaml_scalar("123"), "'123'");
        assert_eq!(double_quoted("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
        let parsed: String = serde_yaml::from_str(&yaml_scalar("a\nb")).unwrap();
        assert_eq!(parsed, "a\nb");
    }
}
