//! `netd-cni`: the CNI plugin of netd. A thin client of netd's Unix-socket API: it reads the
//! CNI environment and the network configuration on stdin, asks netd to do the work, and prints
//! the CNI result (or error object) on stdout. It links no kernel code so it starts fast.
//!
//! [`run`] is the whole program over explicit inputs and outputs; `main` only wires it to the
//! process environment and standard streams.

pub mod arena;
pub mod commands;
pub mod config;
pub mod env;
pub mod error;
pub mod log;
pub mod result;
pub mod version;

use std::io::{Read, Write};

use serde_json::{json, Value};

use crate::commands::Invocation;
use crate::env::Command;
use crate::error::Error;
use crate::version::{CniVersion, LATEST, SUPPORTED};

/// The "about" text printed to stderr when `CNI_COMMAND` is unset.
pub fn about() -> String {
    format!(
        "netd-cni {}: CNI plugin for netd (container networking daemon)\n\
         CNI protocol versions supported: {}",
        env!("CARGO_PKG_VERSION"),
        SUPPORTED.join(", ")
    )
}

/// Runs one plugin invocation: `var` looks up environment variables. Returns the exit code.
pub fn run(
    var: &dyn Fn(&str) -> Option<String>,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> i32 {
    let command = match env::command(var) {
        Ok(None) => {
            let _ = writeln!(stderr, "{}", about());
            return 0;
        }
        Ok(Some(c)) => Ok(c),
        Err(e) => Err(e),
    };
    let mut buf = Vec::new();
    let conf = stdin
        .read_to_end(&mut buf)
        .map_err(|source| Error::Io {
            doing: "reading the network configuration from stdin",
            source,
        })
        .and_then(|_| config::parse_stdin(&buf));
    // Errors and VERSION answer in the request's version when it is one we speak.
    let reply_version = conf
        .as_ref()
        .ok()
        .and_then(config::peek_version)
        .and_then(CniVersion::parse)
        .map_or(LATEST, CniVersion::as_str);
    let outcome = command.and_then(|c| dispatch(c, var, conf, reply_version));
    match outcome {
        Ok(out) => {
            if let Some(v) = out {
                if writeln!(stdout, "{v}")
                    .and_then(|_| stdout.flush())
                    .is_err()
                {
                    return 1;
                }
            }
            0
        }
        Err(e) => {
            let obj = e.to_cni(reply_version);
            let _ = writeln!(
                stderr,
                "netd-cni[{}] error: {} (code {})",
                std::process::id(),
                obj.msg,
                obj.code
            );
            let text = serde_json::to_string(&obj).expect("error object serializes");
            let _ = writeln!(stdout, "{text}").and_then(|_| stdout.flush());
            1
        }
    }
}

fn dispatch(
    command: Command,
    var: &dyn Fn(&str) -> Option<String>,
    conf: Result<config::Object, Error>,
    reply_version: &str,
) -> Result<Option<Value>, Error> {
    if command == Command::Version {
        // Any stdin, even none, gets the version list: runtimes probe with dummy input.
        return Ok(Some(json!({
            "cniVersion": reply_version,
            "supportedVersions": SUPPORTED,
        })));
    }
    let env = env::parse(command, var)?;
    let conf = conf?;
    let version = CniVersion::from_request(config::peek_version(&conf))?;
    let inv = Invocation {
        env: &env,
        conf: &conf,
        version,
    };
    match command {
        Command::Add => commands::add(&inv).map(Some),
        Command::Del => commands::del(&inv).map(|_| None),
        Command::Check => commands::check(&inv).map(|_| None),
        Command::Gc => commands::gc(&inv).map(|_| None),
        Command::Status => commands::status(&inv).map(|_| None),
        Command::Version => unreachable!("answered above"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn invoke(vars: &[(&str, &str)], stdin: &str) -> (i32, String, String) {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run(
            &|k| m.get(k).cloned(),
            &mut stdin.as_bytes(),
            &mut out,
            &mut err,
        );
        (
            code,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    fn error_of(out: &str) -> Value {
        let v: Value = serde_json::from_str(out).expect("stdout is JSON");
        for k in ["cniVersion", "code", "msg", "details"] {
            assert!(v.get(k).is_some(), "error lacks {k}: {out}");
        }
        v
    }

    #[test]
    fn no_command_prints_about_to_stderr() {
        let (code, out, err) = invoke(&[], "");
        assert_eq!(code, 0);
        assert!(out.is_empty());
        assert!(err.contains("netd-cni") && err.contains("1.1.0") && err.contains("0.3.0"));
    }

    #[test]
    fn version_answers_with_any_input() {
        for stdin in ["", "garbage", r#"{"cniVersion":"0.4.0"}"#] {
            let (code, out, _) = invoke(&[("CNI_COMMAND", "VERSION")], stdin);
            assert_eq!(code, 0);
            let v: Value = serde_json::from_str(&out).unwrap();
            assert_eq!(
                v["supportedVersions"],
                json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
            );
        }
        let (_, out, _) = invoke(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"0.4.0"}"#);
        assert_eq!(
            serde_json::from_str::<Value>(&out).unwrap()["cniVersion"],
            "0.4.0"
        );
        let (_, out, _) = invoke(&[("CNI_COMMAND", "VERSION")], "");
        assert_eq!(
            serde_json::from_str::<Value>(&out).unwrap()["cniVersion"],
            "1.1.0"
        );
    }

    const ADD: [(&str, &str); 4] = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/proc/self/ns/net"),
        ("CNI_IFNAME", "eth0"),
    ];

    #[test]
    fn errors_go_to_stdout_in_the_request_version() {
        let (code, out, _) = invoke(&[("CNI_COMMAND", "BOGUS")], r#"{"cniVersion":"0.4.0"}"#);
        assert_eq!(code, 1);
        let v = error_of(&out);
        assert_eq!(v["code"], 4);
        assert_eq!(v["cniVersion"], "0.4.0");
        let (code, out, _) = invoke(&ADD, "{not json");
        assert_eq!(code, 1);
        let v = error_of(&out);
        assert_eq!(v["code"], 6);
        assert_eq!(v["cniVersion"], "1.1.0");
    }

    #[test]
    fn unsupported_request_version_is_code_1() {
        let (_, out, _) = invoke(&ADD, r#"{"cniVersion":"0.2.0","name":"n"}"#);
        assert_eq!(error_of(&out)["code"], 1);
        let (_, out, _) = invoke(&ADD, r#"{"name":"n"}"#);
        assert_eq!(error_of(&out)["code"], 1);
    }

    #[test]
    fn verbs_newer_than_the_request_version_are_code_1() {
        let check = [
            ("CNI_COMMAND", "CHECK"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/proc/self/ns/net"),
            ("CNI_IFNAME", "eth0"),
        ];
        let (_, out, _) = invoke(&check, r#"{"cniVersion":"0.3.1","name":"n"}"#);
        assert_eq!(error_of(&out)["code"], 1);
        for verb in ["GC", "STATUS"] {
            let (_, out, _) = invoke(
                &[("CNI_COMMAND", verb)],
                r#"{"cniVersion":"1.0.0","name":"n","cni.dev/valid-attachments":[]}"#,
            );
            assert_eq!(error_of(&out)["code"], 1, "{verb}");
        }
    }

    #[test]
    fn env_errors_come_before_config_errors() {
        let (_, out, _) = invoke(&[("CNI_COMMAND", "ADD")], "{not json");
        let v = error_of(&out);
        assert_eq!(v["code"], 4);
        assert!(v["msg"].as_str().unwrap().contains("CNI_CONTAINERID"));
    }

    #[test]
    fn add_with_unreachable_netd_is_try_again_later() {
        let (code, out, _) = invoke(
            &ADD,
            r#"{"cniVersion":"1.0.0","name":"n","socket":"/nonexistent/netd.sock"}"#,
        );
        assert_eq!(code, 1);
        let v = error_of(&out);
        assert_eq!(v["code"], 11, "{out}");
        assert!(v["msg"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/netd.sock"));
    }

    #[test]
    fn add_with_a_missing_netns_names_the_variable() {
        let mut vars = ADD.to_vec();
        vars[2] = ("CNI_NETNS", "/nonexistent/netns");
        let (_, out, _) = invoke(&vars, r#"{"cniVersion":"1.0.0","name":"n"}"#);
        let v = error_of(&out);
        assert_eq!(v["code"], 4);
        let msg = v["msg"].as_str().unwrap();
        assert!(
            msg.contains("CNI_NETNS") && msg.contains("/nonexistent/netns"),
            "{msg}"
        );
    }

    #[test]
    fn status_with_unreachable_netd_is_code_50() {
        let (_, out, _) = invoke(
            &[("CNI_COMMAND", "STATUS")],
            r#"{"cniVersion":"1.1.0","name":"n","socket":"/nonexistent/netd.sock"}"#,
        );
        assert_eq!(error_of(&out)["code"], 50);
    }
}
