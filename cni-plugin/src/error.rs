//! The plugin's errors and how each becomes a CNI error object (`code`, `msg`, `details`) on
//! stdout. Codes 1–11 and 50/51 are the well-known codes of the CNI spec; 100 and up are ours
//! (the spec reserves 100+ for plugins); 999 is libcni's "internal" code.

use netd_api::{ClientError, ErrorCode};
use serde::Serialize;

/// CNI error codes used by this plugin.
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in the network configuration (the message names key and value).
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variable (the message names it).
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure.
    pub const IO: u32 = 5;
    /// Failed to decode content.
    pub const DECODE: u32 = 6;
    /// Invalid network configuration.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later: a transient condition (netd busy or unreachable, pool exhausted).
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin cannot service ADD requests.
    pub const NOT_AVAILABLE: u32 = 50;
    /// STATUS: not available, and existing containers may have limited connectivity.
    pub const LIMITED_CONNECTIVITY: u32 = 51;
    /// Something this attachment needs is taken (endpoint, interface name, address, host port).
    pub const CONFLICT: u32 = 100;
    /// CHECK found the attachment differs from what ADD set up.
    pub const CHECK_FAILED: u32 = 101;
    /// Anything else (kernel, store, internal errors of netd; GC errors).
    pub const INTERNAL: u32 = 999;
}

/// Every way a CNI invocation can fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request's `cniVersion` is unsupported, or too old for the command.
    #[error("{0}")]
    Version(String),
    /// A configuration key has a value netd cannot honour.
    #[error("unsupported field {key}={value}: {reason}")]
    UnsupportedField {
        /// The key (dotted path for nested keys).
        key: String,
        /// Its value as given.
        value: String,
        /// Why it is not supported and what to use instead.
        reason: String,
    },
    /// netd has no such container attachment (CHECK).
    #[error("{0}")]
    UnknownContainer(String),
    /// A `CNI_*` environment variable is missing or malformed.
    #[error("{var}: {reason}")]
    Env {
        /// The variable.
        var: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading stdin or writing stdout failed.
    #[error("{doing}: {source}")]
    Io {
        /// What was being done.
        doing: &'static str,
        /// Cause.
        source: std::io::Error,
    },
    /// stdin is not a JSON object.
    #[error("decoding the network configuration from stdin: {0}")]
    Decode(String),
    /// The network configuration is invalid.
    #[error("{0}")]
    InvalidConfig(String),
    /// netd refused or failed a request, or could not be reached.
    #[error("{doing}: {source}")]
    Netd {
        /// What was being done, and to what.
        doing: String,
        /// The CNI code this failure maps to (depends on the command, see [`netd_code`]).
        code: u32,
        /// The client error.
        source: ClientError,
    },
    /// CHECK found a difference between `prevResult` and netd's endpoint.
    #[error("{0}")]
    CheckFailed(String),
    /// GC ran but some releases failed.
    #[error("garbage-collecting network {network}: {}", errors.join("; "))]
    Gc {
        /// The network.
        network: String,
        /// Every error met.
        errors: Vec<String>,
    },
    /// STATUS: ADD cannot work right now.
    #[error("{0}")]
    NotAvailable(String),
}

impl Error {
    /// The CNI error code.
    pub fn code(&self) -> u32 {
        match self {
            Error::Version(_) => code::INCOMPATIBLE_VERSION,
            Error::UnsupportedField { .. } => code::UNSUPPORTED_FIELD,
            Error::UnknownContainer(_) => code::UNKNOWN_CONTAINER,
            Error::Env { .. } => code::INVALID_ENV,
            Error::Io { .. } => code::IO,
            Error::Decode(_) => code::DECODE,
            Error::InvalidConfig(_) => code::INVALID_CONFIG,
            Error::Netd { code, .. } => *code,
            Error::CheckFailed(_) => code::CHECK_FAILED,
            Error::Gc { .. } => code::INTERNAL,
            Error::NotAvailable(_) => code::NOT_AVAILABLE,
        }
    }

    /// Extra detail for the `details` field.
    pub fn details(&self) -> String {
        match self {
            Error::Netd { source, .. } => match source {
                ClientError::Api { status, body } => {
                    format!("netd answered HTTP {status} with code {}", body.code)
                }
                ClientError::Unreachable { .. } => "netd is not running or its socket is \
                     elsewhere (config key \"socket\", env NETD_SOCKET)"
                    .to_string(),
                ClientError::Timeout { .. } => "netd is busy or stuck".to_string(),
                ClientError::Protocol { .. } => "unexpected answer from netd".to_string(),
            },
            _ => String::new(),
        }
    }

    /// The error object printed on stdout.
    pub fn to_cni(&self, cni_version: &str) -> CniError {
        CniError {
            cni_version: cni_version.to_string(),
            code: self.code(),
            msg: sanitize(&self.to_string()),
            details: sanitize(&self.details()),
        }
    }
}

/// The commands whose netd failures are mapped differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// ADD.
    Add,
    /// DEL.
    Del,
    /// CHECK.
    Check,
    /// GC.
    Gc,
    /// STATUS.
    Status,
}

/// Maps a netd client failure during `verb` to a CNI code (the table in `docs/cni.md`).
pub fn netd_code(verb: Verb, err: &ClientError) -> u32 {
    use ErrorCode::*;
    match err {
        ClientError::Unreachable { .. } | ClientError::Timeout { .. } => match verb {
            Verb::Status => code::NOT_AVAILABLE,
            _ => code::TRY_AGAIN_LATER,
        },
        // The connection was cut mid-request (netd stopped or crashed): a retry will meet the
        // restarted daemon. An answer we cannot decode is a real I/O error.
        ClientError::Protocol { message, .. } => match verb {
            Verb::Status => code::NOT_AVAILABLE,
            _ if message.starts_with("decoding") => code::IO,
            _ => code::TRY_AGAIN_LATER,
        },
        ClientError::Api { body, .. } => match body.code {
            InvalidRequest | InvalidName | InvalidAddress | SubnetOverlap | NetworkConflict
            | NetworkExists => code::INVALID_CONFIG,
            PoolExhausted | NoSubnetAvailable => match verb {
                Verb::Status => code::NOT_AVAILABLE,
                _ => code::TRY_AGAIN_LATER,
            },
            NetnsNotFound => code::INVALID_ENV,
            NetworkNotFound | EndpointNotFound => code::UNKNOWN_CONTAINER,
            EndpointExists | InterfaceExists | AddressInUse | PortConflict | NetworkInUse => {
                code::CONFLICT
            }
            CheckFailed => code::CHECK_FAILED,
            PermissionDenied | Kernel | Store | Internal => match verb {
                Verb::Status => code::NOT_AVAILABLE,
                _ => code::INTERNAL,
            },
        },
    }
}

/// containerd (go-cni) treats a DEL error whose text contains "not found" as success, so a
/// genuine failure must never say so, whatever wording netd or the kernel used.
pub fn sanitize(msg: &str) -> String {
    let lower = msg.to_ascii_lowercase();
    if !lower.contains("not found") {
        return msg.to_string();
    }
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(i) = rest.to_ascii_lowercase().find("not found") {
        out.push_str(&rest[..i]);
        out.push_str("missing");
        rest = &rest[i + "not found".len()..];
    }
    out.push_str(rest);
    out
}

/// The CNI error object: `{"cniVersion","code","msg","details"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CniError {
    /// The request's version (or the newest one when it is unknown).
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    /// CNI error code.
    pub code: u32,
    /// What failed, and on what.
    pub msg: String,
    /// More context (may be empty).
    pub details: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use netd_api::ErrorBody;
    use std::path::PathBuf;

    fn api(code: ErrorCode) -> ClientError {
        ClientError::Api {
            status: code.http_status(),
            body: ErrorBody {
                code,
                message: "m".into(),
            },
        }
    }

    #[test]
    fn error_object_has_all_four_fields() {
        let e = Error::InvalidConfig("network name is missing".into());
        let v = serde_json::to_value(e.to_cni("1.0.0")).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"cniVersion": "1.0.0", "code": 7,
                "msg": "network name is missing", "details": ""})
        );
    }

    #[test]
    fn unreachable_is_try_again_on_add_and_not_available_on_status() {
        let e = ClientError::Unreachable {
            socket: PathBuf::from("/x"),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert_eq!(netd_code(Verb::Add, &e), 11);
        assert_eq!(netd_code(Verb::Del, &e), 11);
        assert_eq!(netd_code(Verb::Status, &e), 50);
    }

    #[test]
    fn api_codes_map_to_cni_codes() {
        assert_eq!(netd_code(Verb::Add, &api(ErrorCode::PoolExhausted)), 11);
        assert_eq!(netd_code(Verb::Status, &api(ErrorCode::PoolExhausted)), 50);
        assert_eq!(netd_code(Verb::Add, &api(ErrorCode::InvalidName)), 7);
        assert_eq!(netd_code(Verb::Add, &api(ErrorCode::InvalidAddress)), 7);
        assert_eq!(netd_code(Verb::Add, &api(ErrorCode::SubnetOverlap)), 7);
        assert_eq!(netd_code(Verb::Add, &api(ErrorCode::NetnsNotFound)), 4);
        assert_eq!(netd_code(Verb::Add, &api(ErrorCode::InterfaceExists)), 100);
        assert_eq!(netd_code(Verb::Check, &api(ErrorCode::CheckFailed)), 101);
        assert_eq!(netd_code(Verb::Check, &api(ErrorCode::EndpointNotFound)), 3);
        assert_eq!(netd_code(Verb::Add, &api(ErrorCode::Kernel)), 999);
    }

    #[test]
    fn sanitize_removes_not_found_in_any_case() {
        assert_eq!(
            sanitize("netns /x Not Found; veth not found"),
            "netns /x missing; veth missing"
        );
        assert_eq!(sanitize("all good"), "all good");
    }
}
