//! Line diffs between two encoded configs, shown before an apply so the
//! operator sees what changes.

use similar::TextDiff;

/// A unified diff from `old_yaml` (labelled `live`) to `new_yaml`
/// (labelled `new`); empty when the two are equal.
pub fn diff(old_yaml: &str, new_yaml: &str) -> String {
    if old_yaml == new_yaml {
        return String::new();
    }
    TextDiff::from_lines(old_yaml, new_yaml).unified_diff().context_radius(3).header("live", "new").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_changed_lines() {
        let old = "version: v1alpha1\nmachine:\n  hostname: a\n";
        let new = "version: v1alpha1\nmachine:\n  hostname: b\n";
        let out = diff(old, new);
        assert!(out.starts_with("--- live\n+++ new\n"), "{out}");
        assert!(out.contains("\n-  hostname: a\n"), "{out}");
        assert!(out.contains("\n+  hostname: b\n"), "{out}");
        assert_eq!(diff(old, old), "");
    }
}
