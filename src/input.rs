//! Reading mlobs resources from YAML files: the CLI's input path.
//!
//! Every document is checked against the generated CRD schema and CEL rules before it is turned
//! into a typed value, so a bad file gives the same answer here as `kubectl apply` would, with
//! the file, document and field path in the message.

use std::path::Path;

use serde_json::Value;

use crate::crd::validate::{self, FieldError, Invalid};
use crate::crd::{GROUP, GpuTelemetryPolicy, MLObservabilityPipeline, VERSION};

/// One mlobs resource read from a file.
#[derive(Debug, Clone)]
pub enum Document {
    Pipeline(Box<MLObservabilityPipeline>),
    Policy(Box<GpuTelemetryPolicy>),
}

/// Why a file could not be used. Every variant is invalid input (CLI exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{file}: cannot read: {source}")]
    Read { file: String, source: std::io::Error },
    #[error("{file}: not valid YAML: {message}")]
    Yaml { file: String, message: String },
    #[error("{file}: document {doc}: {message}")]
    Document { file: String, doc: usize, message: String },
    #[error("{file}: document {doc} ({kind} {name}) is invalid:{errors}")]
    Invalid {
        file: String,
        doc: usize,
        kind: String,
        name: String,
        errors: Invalid,
    },
}

impl InputError {
    /// Field errors, when the input was rejected by validation.
    pub fn field_errors(&self) -> &[FieldError] {
        match self {
            InputError::Invalid { errors, .. } => &errors.0,
            _ => &[],
        }
    }
}

const PIPELINE_KIND: &str = "MLObservabilityPipeline";
const POLICY_KIND: &str = "GpuTelemetryPolicy";

/// How messages name standard input (`-f -`).
pub const STDIN_NAME: &str = "<stdin>";

/// Whether a file argument means standard input, as `kubectl apply -f -`.
pub fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// The file as messages name it.
pub fn display_name(path: &Path) -> String {
    if is_stdin(path) {
        STDIN_NAME.to_string()
    } else {
        path.display().to_string()
    }
}

/// Reads every document of a YAML file, or of standard input when `path` is `-`.
pub fn load_file(path: &Path) -> Result<Vec<Document>, InputError> {
    let file = display_name(path);
    let read = if is_stdin(path) {
        std::io::read_to_string(std::io::stdin().lock())
    } else {
        std::fs::read_to_string(path)
    };
    let text = read.map_err(|source| InputError::Read {
        file: file.clone(),
        source,
    })?;
    parse_documents(&file, &text)
}

/// Parses and validates every document of a YAML text. `file` is only used in messages.
pub fn parse_documents(file: &str, text: &str) -> Result<Vec<Document>, InputError> {
    let values: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| InputError::Yaml {
        file: file.to_string(),
        message: e.to_string(),
    })?;
    let mut docs = Vec::new();
    for (i, value) in values.into_iter().enumerate() {
        let doc = i + 1;
        if value.is_null() {
            continue;
        }
        docs.push(parse_document(file, doc, value)?);
    }
    if docs.is_empty() {
        return Err(InputError::Document {
            file: file.to_string(),
            doc: 0,
            message: "no MLObservabilityPipeline or GpuTelemetryPolicy found".into(),
        });
    }
    Ok(docs)
}

fn parse_document(file: &str, doc: usize, value: Value) -> Result<Document, InputError> {
    let bad = |message: String| InputError::Document {
        file: file.to_string(),
        doc,
        message,
    };
    let Value::Object(map) = &value else {
        return Err(bad(format!(
            "expected a mapping with apiVersion and kind, got {}",
            short(&value)
        )));
    };
    let api_version = map.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
    let kind = map.get("kind").and_then(Value::as_str).unwrap_or_default().to_string();
    let expected_api = format!("{GROUP}/{VERSION}");
    if api_version != expected_api {
        return Err(bad(format!("apiVersion: must be {expected_api}, got {api_version:?}")));
    }
    let name = map
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if name.is_empty() {
        return Err(bad("metadata.name: is required".into()));
    }
    let invalid = |errors: Vec<FieldError>| InputError::Invalid {
        file: file.to_string(),
        doc,
        kind: kind.clone(),
        name: name.clone(),
        errors: Invalid(errors),
    };
    match kind.as_str() {
        PIPELINE_KIND => checked(value, validate::validate_pipeline)
            .map(|p| Document::Pipeline(Box::new(p)))
            .map_err(invalid),
        POLICY_KIND => checked(value, validate::validate_policy)
            .map(|p| Document::Policy(Box::new(p)))
            .map_err(invalid),
        other => Err(bad(format!(
            "kind: must be {PIPELINE_KIND} or {POLICY_KIND}, got {other:?}"
        ))),
    }
}

/// Schema check on the raw value (names the field of a type error), then typed, then the full
/// validation (CEL and mlobs' own rules).
fn checked<K>(value: Value, validate_typed: fn(&K) -> Result<(), Invalid>) -> Result<K, Vec<FieldError>>
where
    K: kube::CustomResourceExt + serde::de::DeserializeOwned,
{
    let errors = validate::schema_errors(&validate::crd_schema::<K>(), &value);
    if !errors.is_empty() {
        return Err(errors);
    }
    let typed: K = typed(value).map_err(|e| vec![e])?;
    validate_typed(&typed).map_err(|e| e.0)?;
    Ok(typed)
}

/// Deserializes with the failing field's path in the error.
fn typed<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(value).map_err(|e| FieldError {
        path: e.path().to_string(),
        rule: "type".into(),
        message: e.inner().to_string(),
    })
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 60 {
        format!("{}…", &s[..s.floor_char_boundary(60)])
    } else {
        s
    }
}
