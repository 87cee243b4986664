//! Decoding: the request DTOs, their conversion into domain requests, and
//! the wording of field errors.

use std::collections::BTreeMap;

use bus_docker_domain::error::FieldError;
use bus_docker_domain::events::Operation;
use bus_docker_domain::ids::{ImageRef, NetworkName, OwnerId, ProfileName, RunId, SessionName};
use bus_docker_domain::mount::RequestedMount;
use bus_docker_domain::request::{
    mount_privilege_field, privilege_field, DeleteRequest, InputRequest, Request, RunRequest,
    StatusQuery,
};
use bus_docker_domain::spec::limits::MAX_STDIN_BYTES;
use serde::Deserialize;
use serde_json::{Map, Value};

/// The domain request of `operation` from its payload.
pub(super) fn request(operation: Operation, payload: &Value) -> Result<Request, FieldError> {
    let empty = Value::Object(Map::new());
    let payload = match payload {
        Value::Null => &empty,
        Value::Object(_) => payload,
        other => {
            return Err(FieldError::new(
                "payload",
                format!("must be a JSON object, found {}", kind_of(other)),
            ))
        }
    };
    Ok(match operation {
        Operation::Run => {
            mounts_are_objects(payload)?;
            let mut run = parse::<RunDto>(payload)?.try_into_domain()?;
            run.owner = parse::<OwnerDto>(payload)?.try_into_domain()?;
            run.privilege_fields = privilege_fields(payload);
            Request::Run(Box::new(run))
        }
        Operation::Status => {
            let dto = parse::<StatusDto>(payload)?;
            Request::Status(StatusQuery {
                owner: parse::<OwnerDto>(payload)?.try_into_domain()?,
                run_id: optional(dto.run_id)
                    .map(|id| RunId::parse(&id))
                    .transpose()?,
            })
        }
        Operation::Input => {
            let mut input = parse::<InputDto>(payload)?.try_into_domain()?;
            input.owner = parse::<OwnerDto>(payload)?.try_into_domain()?;
            Request::Input(input)
        }
        Operation::Delete => Request::Delete(DeleteRequest {
            run_id: required_run_id(parse::<DeleteDto>(payload)?.run_id)?,
            owner: parse::<OwnerDto>(payload)?.try_into_domain()?,
        }),
        // The runner operations take no arguments; any object is fine.
        Operation::RunnerStatus => Request::RunnerStatus,
        Operation::RunnerStart => Request::RunnerStart,
        Operation::RunnerDelete => Request::RunnerDelete,
    })
}

/// Every key of a run payload (and of its `mounts[]` entries) that names a
/// privilege field in any spelling, as spelled. The domain refuses them.
fn privilege_fields(payload: &Value) -> Vec<String> {
    let Some(fields) = payload.as_object() else {
        return Vec::new();
    };
    let mut named: Vec<String> = fields
        .keys()
        .filter(|key| privilege_field(key))
        .cloned()
        .collect();
    if let Some(Value::Array(mounts)) = fields.get("mounts") {
        for (index, mount) in mounts.iter().enumerate() {
            let keys = mount.as_object().into_iter().flat_map(Map::keys);
            named.extend(
                keys.filter(|key| mount_privilege_field(key))
                    .map(|key| format!("mounts[{index}].{key}")),
            );
        }
    }
    named
}

/// serde reads a struct from an array too (positionally); a mount given as
/// `["/src", "/dst"]` must not be read as one.
fn mounts_are_objects(payload: &Value) -> Result<(), FieldError> {
    if let Some(Value::Array(mounts)) = payload.get("mounts") {
        for (index, mount) in mounts.iter().enumerate() {
            // Other non-objects are refused by serde with its own wording.
            if mount.is_array() {
                return Err(FieldError::new(
                    format!("mounts[{index}]"),
                    "expected an object, found an array",
                ));
            }
        }
    }
    Ok(())
}

/// `run.request`. The owner is read by [`OwnerDto`] from the same payload.
#[derive(Deserialize)]
struct RunDto {
    run_id: Option<String>,
    profile: Option<String>,
    image: Option<String>,
    command: Option<Vec<String>>,
    /// [compat] older spelling of `command`.
    args: Option<Vec<String>>,
    workdir: Option<String>,
    env: Option<BTreeMap<String, String>>,
    mounts: Option<Vec<MountDto>>,
    network: Option<String>,
    stdin: Option<String>,
    interactive: Option<bool>,
    timeout_seconds: Option<u64>,
    labels: Option<BTreeMap<String, String>>,
    stream_output: Option<bool>,
    /// docs/protocol.md §6: an empty value is refused too (not read as absent):
    /// a caller that meant a session must not silently lose it.
    session: Option<String>,
}

impl RunDto {
    /// The request without its owner.
    fn try_into_domain(self) -> Result<RunRequest, FieldError> {
        let command = match (self.command, self.args) {
            (Some(command), Some(args)) if command != args => {
                return Err(FieldError::new(
                    "command",
                    "command and its older spelling args differ; send only one",
                ))
            }
            (command, args) => command.or(args),
        };
        let mounts = self
            .mounts
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(index, mount)| mount.try_into_domain(index))
            .collect::<Result<_, _>>()?;
        Ok(RunRequest {
            run_id: optional(self.run_id)
                .map(|id| RunId::parse(&id))
                .transpose()?,
            owner: None,
            profile: optional(self.profile)
                .map(|p| ProfileName::parse(&p))
                .transpose()?,
            image: optional(self.image)
                .map(|i| ImageRef::parse(&i))
                .transpose()?,
            command,
            workdir: optional(self.workdir),
            env: self.env.unwrap_or_default(),
            mounts,
            network: optional(self.network)
                .map(|n| NetworkName::parse(&n))
                .transpose()?,
            stdin: self.stdin,
            interactive: self.interactive.unwrap_or(false),
            timeout_seconds: self.timeout_seconds,
            labels: self.labels.unwrap_or_default(),
            stream_output: self.stream_output.unwrap_or(false),
            session: self.session.map(|s| SessionName::parse(&s)).transpose()?,
            privilege_fields: Vec::new(),
        })
    }
}

/// One entry of `run.request.mounts`.
#[derive(Deserialize)]
struct MountDto {
    source: String,
    target: String,
    read_only: Option<bool>,
    /// [compat]
    readonly: Option<bool>,
    /// [compat]
    #[serde(rename = "readOnly")]
    read_only_camel: Option<bool>,
}

impl MountDto {
    fn try_into_domain(self, index: usize) -> Result<RequestedMount, FieldError> {
        let given: Vec<bool> = [self.read_only, self.readonly, self.read_only_camel]
            .into_iter()
            .flatten()
            .collect();
        if given.windows(2).any(|pair| pair[0] != pair[1]) {
            return Err(FieldError::new(
                format!("mounts[{index}].read_only"),
                "read_only, readonly and readOnly disagree",
            ));
        }
        Ok(RequestedMount {
            source: self.source,
            target: self.target,
            read_only: given.first().copied().unwrap_or(false),
        })
    }
}

/// The owner of any request: the first non-blank of the four spellings.
#[derive(Deserialize)]
struct OwnerDto {
    owner_identity_id: Option<String>,
    /// [compat]
    owner_account_id: Option<String>,
    /// [compat]
    identity_id: Option<String>,
    /// [compat]
    account_id: Option<String>,
}

impl OwnerDto {
    fn try_into_domain(self) -> Result<Option<OwnerId>, FieldError> {
        let spellings = [
            ("owner_identity_id", self.owner_identity_id),
            ("owner_account_id", self.owner_account_id),
            ("identity_id", self.identity_id),
            ("account_id", self.account_id),
        ];
        for (field, value) in spellings {
            if let Some(value) = optional(value) {
                return OwnerId::parse(&value)
                    .map(Some)
                    .map_err(|err| FieldError::new(field, err.message()));
            }
        }
        Ok(None)
    }
}

/// `status.request`.
#[derive(Deserialize)]
struct StatusDto {
    run_id: Option<String>,
}

/// `input.request`.
#[derive(Deserialize)]
struct InputDto {
    run_id: Option<String>,
    data: Option<String>,
    eof: Option<bool>,
}

impl InputDto {
    /// The request without its owner.
    fn try_into_domain(self) -> Result<InputRequest, FieldError> {
        let run_id = required_run_id(self.run_id)?;
        let data = self.data.unwrap_or_default();
        if data.len() > MAX_STDIN_BYTES {
            return Err(FieldError::new(
                "data",
                format!("must be at most {MAX_STDIN_BYTES} bytes"),
            ));
        }
        Ok(InputRequest {
            run_id,
            owner: None,
            data,
            eof: self.eof.unwrap_or(false),
        })
    }
}

/// `delete.request`.
#[derive(Deserialize)]
struct DeleteDto {
    run_id: Option<String>,
}

/// A string that counts as given: absent, `null` and blank are not.
fn optional(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

fn required_run_id(value: Option<String>) -> Result<RunId, FieldError> {
    match optional(value) {
        Some(id) => RunId::parse(&id),
        None => Err(FieldError::new("run_id", "is required")),
    }
}

/// Deserialize a DTO, naming the field of the first type error.
fn parse<'de, T: Deserialize<'de>>(payload: &'de Value) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(payload).map_err(|err| {
        let path = err.path().to_string();
        field_error(&path, &err.into_inner())
    })
}

/// Turn serde's error at `path` (`.` for the root) into a [`FieldError`].
fn field_error(path: &str, error: &serde_json::Error) -> FieldError {
    let parent = (path != ".").then_some(path);
    let message = error.to_string();
    if let Some(missing) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        let field = match parent {
            Some(parent) => format!("{parent}.{missing}"),
            None => missing.to_owned(),
        };
        return FieldError::new(field, "is required");
    }
    FieldError::new(parent.unwrap_or("payload"), short_message(&message))
}

/// `invalid type: integer `1`, expected a string` → `expected a string,
/// found integer 1`. String values are not repeated: they may be long.
fn short_message(message: &str) -> String {
    let body = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "));
    match body.and_then(|body| body.rsplit_once(", expected ")) {
        Some((found, expected)) => format!(
            "expected {}, found {}",
            expected_words(expected),
            found_words(found)
        ),
        None => message.to_owned(),
    }
}

fn expected_words(expected: &str) -> &str {
    match expected {
        "u64" => "a non-negative integer",
        "a boolean" => "a boolean (true or false)",
        "a sequence" => "an array",
        "a map" => "an object",
        e if e.starts_with("struct ") => "an object",
        e => e,
    }
}

fn found_words(found: &str) -> String {
    if found.starts_with("string ") {
        return "a string".to_owned();
    }
    match found {
        "unit value" | "null" => "null".to_owned(),
        "sequence" => "an array".to_owned(),
        "map" => "an object".to_owned(),
        other => other.replace('`', ""),
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_messages_are_shortened() {
        assert_eq!(
            short_message("invalid type: integer `1`, expected a string"),
            "expected a string, found integer 1"
        );
        assert_eq!(
            short_message("invalid value: integer `-1`, expected u64"),
            "expected a non-negative integer, found integer -1"
        );
        assert_eq!(
            short_message("invalid type: string \"a, expected b\", expected a sequence"),
            "expected an array, found a string"
        );
        assert_eq!(short_message("something else"), "something else");
    }
}
