//! Variable references in action configuration: finding `#{namespace.name}` and substituting
//! their values. Validation uses it to check references at declaration time; the engine uses it
//! to resolve configuration immediately before an action starts.

use std::ops::Range;
use std::sync::LazyLock;

use regex::Regex;

/// The namespace of the variables CodePipeline itself provides for every execution.
pub const CODEPIPELINE_NAMESPACE: &str = "codepipeline";
/// The namespace of pipeline-level variables (V2).
pub const PIPELINE_VARIABLES_NAMESPACE: &str = "variables";
/// The only variable of the `codepipeline` namespace.
pub const PIPELINE_EXECUTION_ID: &str = "PipelineExecutionId";

/// One `#{namespace.name}` reference inside a string.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VariableRef {
    pub namespace: String,
    pub name: String,
    /// Byte range of the whole `#{...}` in the string it was found in.
    pub span: Range<usize>,
}

impl std::fmt::Display for VariableRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{{{}.{}}}", self.namespace, self.name)
    }
}

// Namespaces, output variable keys and pipeline variable names all share the model's
// `[A-Za-z0-9@\-_]+` pattern; anything else between `#{` and `}` is not a variable reference
// (CodePipeline leaves it untouched, e.g. `#{SecretsManager:...}`-like text).
static REFERENCE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"#\{([A-Za-z0-9@_-]+)\.([A-Za-z0-9@_-]+)\}").expect("static regex compiles")
});

/// Every variable reference in `s`, in order of appearance.
pub fn references(s: &str) -> Vec<VariableRef> {
    REFERENCE
        .captures_iter(s)
        .filter_map(|c| {
            let whole = c.get(0)?;
            Some(VariableRef {
                namespace: c.get(1)?.as_str().to_owned(),
                name: c.get(2)?.as_str().to_owned(),
                span: whole.range(),
            })
        })
        .collect()
}

/// Replaces every reference in `s` by `lookup(namespace, name)`. Substituted values are not
/// scanned again, so a value containing `#{...}` stays literal. When any reference has no value,
/// returns all unresolved references instead.
pub fn resolve(
    s: &str,
    lookup: impl Fn(&str, &str) -> Option<String>,
) -> Result<String, Vec<VariableRef>> {
    let mut out = String::with_capacity(s.len());
    let mut unresolved = Vec::new();
    let mut copied_to = 0;
    for reference in references(s) {
        out.push_str(&s[copied_to..reference.span.start]);
        copied_to = reference.span.end;
        match lookup(&reference.namespace, &reference.name) {
            Some(value) => out.push_str(&value),
            None => unresolved.push(reference),
        }
    }
    out.push_str(&s[copied_to..]);
    if unresolved.is_empty() {
        Ok(out)
    } else {
        Err(unresolved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_references_with_spans() {
        let s = "img:#{BuildVariables.Tag}-#{codepipeline.PipelineExecutionId}";
        let refs = references(s);
        assert_eq!(refs.len(), 2);
        assert_eq!(refs[0].namespace, "BuildVariables");
        assert_eq!(refs[0].name, "Tag");
        assert_eq!(&s[refs[0].span.clone()], "#{BuildVariables.Tag}");
        assert_eq!(refs[1].to_string(), "#{codepipeline.PipelineExecutionId}");
    }

    #[test]
    fn ignores_text_that_is_not_a_reference() {
        assert!(references("#{noDot} #{a b.c} {x.y} #{.y} #{x.}").is_empty());
    }

    #[test]
    fn resolves_all_or_reports_every_missing_one() {
        let lookup = |ns: &str, name: &str| match (ns, name) {
            ("S", "CommitId") => Some("abc123".to_owned()),
            ("variables", "Env") => Some("#{S.CommitId}".to_owned()),
            _ => None,
        };
        assert_eq!(
            resolve("c=#{S.CommitId} e=#{variables.Env}", lookup),
            Ok("c=abc123 e=#{S.CommitId}".to_owned())
        );
        let missing = resolve("#{A.x}/#{S.CommitId}/#{B.y}", lookup).unwrap_err();
        let names: Vec<String> = missing.iter().map(ToString::to_string).collect();
        assert_eq!(names, ["#{A.x}", "#{B.y}"]);
        assert_eq!(resolve("plain", lookup), Ok("plain".to_owned()));
    }
}
