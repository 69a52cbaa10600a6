//! `#{namespace.key}` references in action configuration, resolved right before an action starts
//! (SEMANTICS §8). Private to the engine: a reference is replaced when its value is known and
//! collected as unresolved otherwise, so the caller can fail the action naming every one.

/// Replaces every `#{ns.key}` in `template` using `lookup`. References `lookup` cannot answer are
/// left in place and appended to `unresolved` (as written, e.g. `#{Build.Image}`).
/// Text that only looks like the start of a reference (`#{` without a closing brace, or
/// without a `namespace.key` inside) is not a reference and is copied unchanged.
pub(crate) fn resolve(
    template: &str,
    lookup: &dyn Fn(&str, &str) -> Option<String>,
    unresolved: &mut Vec<String>,
) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("#{") {
        out.push_str(&rest[..start]);
        let after_open = &rest[start + 2..];
        match after_open.find('}').and_then(|end| {
            let inner = &after_open[..end];
            split_reference(inner).map(|(ns, key)| (end, ns, key))
        }) {
            Some((end, namespace, key)) => {
                let written = &rest[start..start + 2 + end + 1];
                match lookup(namespace, key) {
                    Some(value) => out.push_str(&value),
                    None => {
                        out.push_str(written);
                        if !unresolved.iter().any(|u| u == written) {
                            unresolved.push(written.to_string());
                        }
                    }
                }
                rest = &after_open[end + 1..];
            }
            None => {
                out.push_str("#{");
                rest = after_open;
            }
        }
    }
    out.push_str(rest);
    out
}

/// `namespace.key`: the namespace is CodePipeline's `[A-Za-z0-9@\-_]+`; the key is the rest
/// after the first dot (variable names may themselves contain dots) and has no whitespace.
fn split_reference(inner: &str) -> Option<(&str, &str)> {
    let (namespace, key) = inner.split_once('.')?;
    let namespace_ok = !namespace.is_empty()
        && namespace
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '@' | '-' | '_'));
    let key_ok = !key.is_empty() && !key.chars().any(|c| c.is_whitespace() || c == '{');
    (namespace_ok && key_ok).then_some((namespace, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(namespace: &str, key: &str) -> Option<String> {
        match (namespace, key) {
            ("codepipeline", "PipelineExecutionId") => Some("exec-1".into()),
            ("Build", "Image.Tag") => Some("v2".into()),
            _ => None,
        }
    }

    #[test]
    fn replaces_known_references_and_collects_unknown_ones_once() {
        let mut unresolved = vec![];
        let text = "id=#{codepipeline.PipelineExecutionId} tag=#{Build.Image.Tag} \
                    a=#{Missing.X} b=#{Missing.X} c=#{variables.Y}";
        let out = resolve(text, &lookup, &mut unresolved);
        assert_eq!(
            out,
            "id=exec-1 tag=v2 a=#{Missing.X} b=#{Missing.X} c=#{variables.Y}"
        );
        assert_eq!(unresolved, vec!["#{Missing.X}", "#{variables.Y}"]);
    }

    #[test]
    fn leaves_non_references_alone() {
        let mut unresolved = vec![];
        for text in [
            "#{", "#{nodot}", "#{.x}", "#{ns.}", "${a.b}", "#{a b.c}", "x #{a.b",
        ] {
            assert_eq!(resolve(text, &lookup, &mut unresolved), text);
        }
        assert!(unresolved.is_empty());
        assert_eq!(
            resolve("#{#{Build.Image.Tag}", &lookup, &mut unresolved),
            "#{v2"
        );
    }
}
