//! `ndb-spawn`: the benchmark's plugin launcher. One per harness thread, started in that
//! thread's network namespace; it reads one job per line on stdin (JSON: `path`, `args`, `env`,
//! `stdin`), runs it the way a container runtime does (fork/exec with the config on stdin, the
//! result read from stdout) and answers one line (`secs`, `code`, `stdout`, `stderr`). The time
//! covers spawn to exit, measured here: launched from Python's `subprocess` under the GIL, eight
//! plugins at once took 3.5 ms each to start and exit against 1.4 ms from compiled code, for
//! every system alike (docs/benchmarks.md, twelfth round).

use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::{json, Value};

fn run(job: &Value) -> Value {
    let s = |k: &str| job[k].as_str().unwrap_or_default().to_string();
    let mut cmd = Command::new(s("path"));
    cmd.args(
        job["args"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str),
    )
    .env_clear()
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    if let Some(env) = job["env"].as_object() {
        cmd.envs(env.iter().filter_map(|(k, v)| Some((k, v.as_str()?))));
    }
    let input = s("stdin");
    let t0 = Instant::now();
    let out = cmd.spawn().and_then(|mut child| {
        // Small configs fit the pipe: written whole before the plugin reads, as runtimes do.
        if let Some(mut si) = child.stdin.take() {
            si.write_all(input.as_bytes())?;
        }
        child.wait_with_output()
    });
    let secs = t0.elapsed().as_secs_f64();
    match out {
        Ok(o) => json!({
            "secs": secs,
            "code": o.status.code().unwrap_or(-1),
            "stdout": String::from_utf8_lossy(&o.stdout),
            "stderr": String::from_utf8_lossy(&o.stderr),
        }),
        Err(e) => {
            json!({"secs": secs, "code": -1, "stdout": "", "stderr": format!("spawning {}: {e}", s("path"))})
        }
    }
}

fn main() {
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let reply = match serde_json::from_str::<Value>(&line) {
            Ok(job) => run(&job),
            Err(e) => {
                json!({"secs": 0.0, "code": -1, "stdout": "", "stderr": format!("bad job: {e}")})
            }
        };
        if writeln!(stdout, "{reply}")
            .and_then(|()| stdout.flush())
            .is_err()
        {
            break;
        }
    }
}
