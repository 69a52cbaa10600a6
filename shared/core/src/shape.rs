//! Model-driven shape validation: checks any JSON value against a shape of the CodePipeline
//! service model (types, required and unknown members, enums, lengths, patterns, ranges) and
//! reports every violation with its JSON path.
//!
//! The model is the service's own (`model/codepipeline-2015-07-09.json`, embedded at build time),
//! so request validation for every operation and declaration validation share one source of truth
//! instead of hand-copied limits.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::LazyLock;

use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

const MODEL_JSON: &str = include_str!("../model/codepipeline-2015-07-09.json");

/// One way a value does not fit its shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Where, as `pipeline.stages[2].actions[0].name`; empty for the value itself.
    pub path: String,
    pub kind: ViolationKind,
    /// What was expected, in words.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ViolationKind {
    WrongType,
    MissingRequired,
    UnknownMember,
    NotInEnum,
    Length,
    Pattern,
    Range,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the service model has no shape named {0:?}")]
pub struct UnknownShape(pub String);

/// The parts of the service model's `metadata` a server needs to speak the protocol.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    pub api_version: String,
    pub endpoint_prefix: String,
    pub json_version: String,
    pub protocol: String,
    pub service_id: String,
    pub target_prefix: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Operation {
    pub name: String,
    #[serde(default)]
    pub input: Option<ShapeRef>,
    #[serde(default)]
    pub output: Option<ShapeRef>,
    #[serde(default)]
    pub errors: Vec<ShapeRef>,
}

impl Operation {
    pub fn input_shape(&self) -> Option<&str> {
        self.input.as_ref().map(|r| r.shape.as_str())
    }

    pub fn output_shape(&self) -> Option<&str> {
        self.output.as_ref().map(|r| r.shape.as_str())
    }

    /// The exception shapes the operation may answer with, in model order.
    pub fn error_shapes(&self) -> impl Iterator<Item = &str> {
        self.errors.iter().map(|r| r.shape.as_str())
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct ShapeRef {
    pub shape: String,
    #[serde(default, rename = "idempotencyToken")]
    pub idempotency_token: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShapeType {
    Structure,
    List,
    Map,
    String,
    Integer,
    Long,
    Float,
    Double,
    Boolean,
    Timestamp,
    Blob,
}

/// One shape of the model, with the constraints the validator enforces.
#[derive(Debug, Clone, Deserialize)]
pub struct Shape {
    #[serde(rename = "type")]
    pub shape_type: ShapeType,
    /// Structure members in model order.
    #[serde(default)]
    pub members: serde_json::Map<String, Value>,
    #[serde(default)]
    pub required: Vec<String>,
    #[serde(default)]
    pub min: Option<i64>,
    #[serde(default)]
    pub max: Option<i64>,
    #[serde(default)]
    pub pattern: Option<String>,
    #[serde(default, rename = "enum")]
    pub enum_values: Option<Vec<String>>,
    #[serde(default)]
    pub member: Option<ShapeRef>,
    #[serde(default)]
    pub key: Option<ShapeRef>,
    #[serde(default)]
    pub value: Option<ShapeRef>,
    #[serde(default)]
    pub exception: bool,
    #[serde(default)]
    pub sensitive: bool,
}

impl Shape {
    /// The target shape of a structure member.
    pub fn member_shape(&self, member: &str) -> Option<&str> {
        self.members.get(member)?.get("shape")?.as_str()
    }
}

/// The CodePipeline service model, parsed once.
#[derive(Debug, Deserialize)]
pub struct ServiceModel {
    pub metadata: Metadata,
    pub operations: BTreeMap<String, Operation>,
    pub shapes: HashMap<String, Shape>,
    /// Every model pattern, compiled as a full match; `None` where the `regex` crate cannot
    /// compile it, in which case the pattern check is skipped rather than rejecting input.
    #[serde(skip)]
    patterns: HashMap<String, Option<Regex>>,
}

static MODEL: LazyLock<ServiceModel> = LazyLock::new(|| {
    // The model is a file of this crate, checked by the tests: failing here is a build defect,
    // not bad input.
    let mut model: ServiceModel =
        serde_json::from_str(MODEL_JSON).expect("embedded CodePipeline service model is valid");
    model.patterns = model
        .shapes
        .values()
        .filter_map(|s| s.pattern.as_deref())
        .map(|p| (p.to_owned(), Regex::new(&format!("^(?:{p})$")).ok()))
        .collect();
    model
});

/// The embedded CodePipeline service model.
pub fn codepipeline() -> &'static ServiceModel {
    &MODEL
}

/// Validates `value` against the CodePipeline model shape `shape` and returns every violation.
/// `path_prefix` names the value itself (`""` for a request body, `"pipeline"` for a nested part).
pub fn validate_shape(
    shape: &str,
    value: &Value,
    path_prefix: &str,
) -> Result<Vec<Violation>, UnknownShape> {
    codepipeline().validate(shape, value, path_prefix)
}

/// The operations of the model, by name, with their input shapes (`CreatePipeline` ->
/// `CreatePipelineInput`).
pub fn operation_input_shapes() -> impl Iterator<Item = (&'static str, Option<&'static str>)> {
    codepipeline()
        .operations
        .values()
        .map(|op| (op.name.as_str(), op.input_shape()))
}

impl ServiceModel {
    pub fn shape(&self, name: &str) -> Option<&Shape> {
        self.shapes.get(name)
    }

    pub fn operation(&self, name: &str) -> Option<&Operation> {
        self.operations.get(name)
    }

    /// Model patterns the `regex` crate cannot compile; their checks are skipped.
    pub fn skipped_patterns(&self) -> Vec<&str> {
        let mut skipped: Vec<&str> = self
            .patterns
            .iter()
            .filter(|(_, regex)| regex.is_none())
            .map(|(pattern, _)| pattern.as_str())
            .collect();
        skipped.sort_unstable();
        skipped
    }

    /// True when `name` is an exception shape (`ValidationException`, ...).
    pub fn is_exception(&self, name: &str) -> bool {
        self.shape(name).is_some_and(|s| s.exception)
    }

    pub fn validate(
        &self,
        shape: &str,
        value: &Value,
        path_prefix: &str,
    ) -> Result<Vec<Violation>, UnknownShape> {
        if !self.shapes.contains_key(shape) {
            return Err(UnknownShape(shape.to_owned()));
        }
        let mut out = Vec::new();
        self.check(shape, value, path_prefix, &mut out);
        Ok(out)
    }

    fn check(&self, shape_name: &str, value: &Value, path: &str, out: &mut Vec<Violation>) {
        let Some(shape) = self.shapes.get(shape_name) else {
            // A dangling reference inside the model; the model test catches it.
            return;
        };
        let mut push = |kind, message: String| {
            out.push(Violation {
                path: path.to_owned(),
                kind,
                message,
            })
        };
        match shape.shape_type {
            ShapeType::Structure => {
                let Value::Object(object) = value else {
                    push(ViolationKind::WrongType, expected("an object", value));
                    return;
                };
                for (member, member_value) in object {
                    let member_path = join(path, member);
                    match shape.member_shape(member) {
                        None => out.push(Violation {
                            path: member_path,
                            kind: ViolationKind::UnknownMember,
                            message: format!(
                                "unknown member; expected one of: {}",
                                shape
                                    .members
                                    .keys()
                                    .map(String::as_str)
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        }),
                        // AWS JSON servers treat an explicit null like an absent member.
                        Some(_) if member_value.is_null() => {}
                        Some(target) => self.check(target, member_value, &member_path, out),
                    }
                }
                for required in &shape.required {
                    if object.get(required).is_none_or(Value::is_null) {
                        let target = shape.member_shape(required).unwrap_or("a value");
                        out.push(Violation {
                            path: join(path, required),
                            kind: ViolationKind::MissingRequired,
                            message: format!("required member is missing (expected {target})"),
                        });
                    }
                }
            }
            ShapeType::List => {
                let Value::Array(items) = value else {
                    push(ViolationKind::WrongType, expected("a list", value));
                    return;
                };
                if let Some(message) = count_problem(items.len(), shape, "item") {
                    push(ViolationKind::Length, message);
                }
                if let Some(member) = &shape.member {
                    for (i, item) in items.iter().enumerate() {
                        self.check(&member.shape, item, &format!("{path}[{i}]"), out);
                    }
                }
            }
            ShapeType::Map => {
                let Value::Object(entries) = value else {
                    push(
                        ViolationKind::WrongType,
                        expected("a map (JSON object)", value),
                    );
                    return;
                };
                if let Some(message) = count_problem(entries.len(), shape, "entry") {
                    push(ViolationKind::Length, message);
                }
                for (key, entry) in entries {
                    let entry_path = join(path, key);
                    if let Some(key_shape) = &shape.key {
                        let mut key_violations = Vec::new();
                        self.check(
                            &key_shape.shape,
                            &Value::String(key.clone()),
                            &entry_path,
                            &mut key_violations,
                        );
                        out.extend(key_violations.into_iter().map(|mut v| {
                            v.message = format!("key {}", v.message);
                            v
                        }));
                    }
                    if let Some(value_shape) = &shape.value {
                        self.check(&value_shape.shape, entry, &entry_path, out);
                    }
                }
            }
            ShapeType::String => {
                let Value::String(s) = value else {
                    push(ViolationKind::WrongType, expected("a string", value));
                    return;
                };
                if let Some(allowed) = &shape.enum_values {
                    if !allowed.iter().any(|a| a == s) {
                        push(
                            ViolationKind::NotInEnum,
                            format!("expected one of {}, got {s:?}", allowed.join(", ")),
                        );
                    }
                    // An enum value that is in the set needs no further checks.
                    return;
                }
                // Smithy string lengths count Unicode scalar values, not bytes.
                let length_problem = length_problem(s.chars().count(), shape);
                // An empty string that is too short says all there is to say; its pattern
                // mismatch would only repeat it.
                let judge_pattern = !(s.is_empty() && length_problem.is_some());
                if let Some(message) = length_problem {
                    push(ViolationKind::Length, message);
                }
                if judge_pattern
                    && let Some(pattern) = &shape.pattern
                    && let Some(Some(regex)) = self.patterns.get(pattern)
                    && !regex.is_match(s)
                {
                    push(
                        ViolationKind::Pattern,
                        format!("{s:?} does not match the pattern {pattern}"),
                    );
                }
            }
            ShapeType::Integer | ShapeType::Long => {
                let number = match value {
                    Value::Number(n) => n.as_i64().or_else(|| n.as_u64().map(|_| i64::MAX)),
                    _ => None,
                };
                let Some(number) = number else {
                    push(ViolationKind::WrongType, expected("an integer", value));
                    return;
                };
                if let Some(message) = range_problem(number, shape) {
                    push(ViolationKind::Range, message);
                }
            }
            ShapeType::Float | ShapeType::Double => {
                if !value.is_number() {
                    push(ViolationKind::WrongType, expected("a number", value));
                }
            }
            ShapeType::Boolean => {
                if !value.is_boolean() {
                    push(ViolationKind::WrongType, expected("true or false", value));
                }
            }
            ShapeType::Timestamp => {
                // awsJson1_1 sends timestamps as epoch seconds.
                if !value.is_number() {
                    push(
                        ViolationKind::WrongType,
                        expected("a timestamp in epoch seconds", value),
                    );
                }
            }
            ShapeType::Blob => {
                let is_base64 = value.as_str().is_some_and(|s| {
                    s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
                });
                if !is_base64 {
                    push(ViolationKind::WrongType, expected("a base64 string", value));
                }
            }
        }
    }
}

/// `parent.member`, or just `member` at the top.
fn join(path: &str, member: &str) -> String {
    let simple = !member.is_empty()
        && member
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match (path.is_empty(), simple) {
        (true, true) => member.to_owned(),
        (false, true) => format!("{path}.{member}"),
        (_, false) => format!("{path}[{member:?}]"),
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn expected(what: &str, value: &Value) -> String {
    format!("expected {what}, got {}", type_name(value))
}

fn bounds(shape: &Shape) -> String {
    match (shape.min, shape.max) {
        (Some(min), Some(max)) => format!("{min} to {max}"),
        (Some(min), None) => format!("at least {min}"),
        (None, Some(max)) => format!("at most {max}"),
        (None, None) => String::from("any number of"),
    }
}

fn out_of_bounds(n: i64, shape: &Shape) -> bool {
    shape.min.is_some_and(|min| n < min) || shape.max.is_some_and(|max| n > max)
}

fn length_problem(len: usize, shape: &Shape) -> Option<String> {
    let n = i64::try_from(len).unwrap_or(i64::MAX);
    out_of_bounds(n, shape).then(|| format!("expected {} characters, got {len}", bounds(shape)))
}

fn count_problem(len: usize, shape: &Shape, noun: &str) -> Option<String> {
    let n = i64::try_from(len).unwrap_or(i64::MAX);
    out_of_bounds(n, shape).then(|| format!("expected {} {noun}(s), got {len}", bounds(shape)))
}

fn range_problem(n: i64, shape: &Shape) -> Option<String> {
    let range = match (shape.min, shape.max) {
        (Some(min), Some(max)) => format!("from {min} to {max}"),
        (Some(min), None) => format!("of at least {min}"),
        (None, Some(max)) => format!("of at most {max}"),
        (None, None) => return None,
    };
    out_of_bounds(n, shape).then(|| format!("expected an integer {range}, got {n}"))
}
