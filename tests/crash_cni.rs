//! Crash consistency at the CNI level: runtimes exec the real `netd-cni` binary in parallel
//! ADD/DEL loops while netd is SIGKILLed and restarted at random moments. Every invocation
//! must end in a success or a well-formed CNI error object, and afterwards no address is held
//! twice, every lease belongs to a live endpoint, no veth is orphaned, and every container
//! has an interface exactly when netd has its endpoint. Also: STATUS reports 50 while a /29
//! pool is full, and one DEL frees exactly one slot.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use netd_tests::{bin, soon, Host, Netns};
use serde_json::{json, Value};

/// Kills of netd during the loops (the issue asks for at least 20).
const KILLS: usize = 20;
/// Parallel runtimes, each cycling through its own containers.
const WORKERS: usize = 4;
const CONTAINERS_PER_WORKER: usize = 3;

/// What one plugin execution produced: exit status and stdout.
struct Reply {
    status: i32,
    stdout: String,
}

fn exec(cmd: &str, cid: &str, netns: &str, conf: &Value) -> Reply {
    let mut child = Command::new(bin("netd-cni"))
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs([
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", cid),
            ("CNI_NETNS", netns),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/usr/lib/cni"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning netd-cni");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .expect("stdin");
    let out = child.wait_with_output().expect("netd-cni");
    Reply {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
    }
}

/// The CNI code of a failed invocation; panics unless it is a well-formed error object.
fn error_code(r: &Reply, what: &str) -> u64 {
    assert_eq!(r.status, 1, "{what}: exit {} stdout {}", r.status, r.stdout);
    let v: Value = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("{what}: error is not JSON ({e}): {:?}", r.stdout));
    for k in ["cniVersion", "code", "msg", "details"] {
        assert!(v.get(k).is_some(), "{what}: error object lacks {k}: {v}");
    }
    v["code"].as_u64().expect("numeric code")
}

fn conf(h: &Host, name: &str, subnet: &str) -> Value {
    json!({"cniVersion": "1.1.0", "name": name, "type": "netd-cni",
           "socket": h.socket(), "subnet": subnet})
}

fn has_eth0(ns: &Netns) -> bool {
    ns.links().iter().any(|l| l == "eth0")
}

/// No address held by two endpoints, at any moment the store is read.
fn assert_no_duplicate(h: &Host, network: &str) {
    let inspect = h.client().inspect_network(network).expect("inspect");
    let mut seen = BTreeSet::new();
    for e in &inspect.endpoints {
        for ip in &e.ips {
            assert!(seen.insert(ip.addr()), "address {ip} handed out twice");
        }
    }
}

#[test]
fn cni_add_del_loops_survive_twenty_sigkills() {
    let mut h = Host::start();
    let conf = conf(&h, "crash", "10.96.0.0/24");
    let containers: Vec<Vec<Netns>> = (0..WORKERS)
        .map(|w| {
            (0..CONTAINERS_PER_WORKER)
                .map(|i| h.container(&format!("k{w}c{i}")))
                .collect()
        })
        .collect();
    // The first ADD creates the network; from here on it must survive every crash.
    let r = exec("ADD", "warmup", &containers[0][0].path(), &conf);
    assert_eq!(r.status, 0, "{}", r.stdout);
    let r = exec("DEL", "warmup", &containers[0][0].path(), &conf);
    assert_eq!(r.status, 0, "{}", r.stdout);

    let stop = AtomicBool::new(false);
    // CNI code -> count, for ADD and DEL failures; successes are counted under 0.
    let codes: Mutex<BTreeMap<(&str, u64), usize>> = Mutex::new(BTreeMap::new());
    std::thread::scope(|s| {
        for (w, mine) in containers.iter().enumerate() {
            let (stop, codes, conf) = (&stop, &codes, &conf);
            s.spawn(move || {
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let slot = i % mine.len();
                    let (ns, cid) = (&mine[slot], format!("k{w}-{slot}"));
                    for verb in ["ADD", "DEL"] {
                        let r = exec(verb, &cid, &ns.path(), conf);
                        let code = if r.status == 0 {
                            0
                        } else {
                            error_code(&r, &format!("{verb} {cid}"))
                        };
                        // While netd is down or dies mid-request: try again later (11) or a
                        // cut answer (5); after a crash the runtime's retry may meet what the
                        // dead daemon finished (100: the endpoint exists).
                        assert!(
                            matches!(code, 0 | 5 | 11 | 100),
                            "{verb} {cid}: unexpected CNI code {code}: {}",
                            r.stdout
                        );
                        *codes.lock().unwrap().entry((verb, code)).or_default() += 1;
                    }
                    i += 1;
                }
            });
        }
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..KILLS {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            std::thread::sleep(Duration::from_millis(50 + seed % 250));
            h.kill();
            h.spawn();
            assert_no_duplicate(&h, "crash");
        }
        stop.store(true, Ordering::Relaxed);
    });
    let codes = codes.into_inner().unwrap();
    eprintln!("CNI outcomes over {KILLS} kills (verb, code) -> count: {codes:?}");
    assert!(
        codes.get(&("ADD", 0)).copied().unwrap_or(0) >= WORKERS,
        "too few successful ADDs to mean anything: {codes:?}"
    );

    // One last crash, then the checks: the store opens, reconcile ran.
    h.kill();
    h.spawn();
    let eps = h.assert_consistent("crash");
    for (w, mine) in containers.iter().enumerate() {
        for (i, ns) in mine.iter().enumerate() {
            let cid = format!("k{w}-{i}");
            let known = eps.iter().any(|e| e.container_id == cid);
            assert_eq!(
                has_eth0(ns),
                known,
                "{cid}: interface in the container and endpoint in netd disagree"
            );
        }
    }
    // What a runtime does next: DEL everything; nothing may be left.
    for (w, mine) in containers.iter().enumerate() {
        for (i, ns) in mine.iter().enumerate() {
            let r = exec("DEL", &format!("k{w}-{i}"), &ns.path(), &conf);
            assert_eq!(r.status, 0, "{}", r.stdout);
            assert!(soon(|| ns.links() == ["lo"]), "{}", ns.name());
        }
    }
    assert!(h.assert_consistent("crash").is_empty());
}

#[test]
fn full_slash_29_makes_status_50_and_one_del_frees_one_slot() {
    let h = Host::start();
    let conf = conf(&h, "tiny29", "10.97.0.0/29");
    let status = || exec("STATUS", "", "", &conf);
    // Before the first ADD the network does not exist yet: ADD would create it.
    assert_eq!(status().status, 0);
    // .0 network, .1 gateway, .7 broadcast: five addresses.
    let cs: Vec<Netns> = (0..7).map(|i| h.container(&format!("z{i}"))).collect();
    for (i, c) in cs.iter().take(5).enumerate() {
        let r = exec("ADD", &format!("z{i}"), &c.path(), &conf);
        assert_eq!(r.status, 0, "ADD z{i}: {}", r.stdout);
        if i < 4 {
            assert_eq!(status().status, 0, "STATUS with a free address");
        }
    }
    let st = status();
    assert_eq!(error_code(&st, "STATUS of a full pool"), 50);
    assert!(st.stdout.contains("10.97.0.0/29"), "{}", st.stdout);
    let r = exec("ADD", "z5", &cs[5].path(), &conf);
    assert_eq!(error_code(&r, "ADD to a full pool"), 11);
    assert_eq!(cs[5].links(), ["lo"]);
    // One DEL frees exactly one slot: STATUS is fine, one ADD fits, the next does not.
    let r = exec("DEL", "z2", &cs[2].path(), &conf);
    assert_eq!(r.status, 0, "{}", r.stdout);
    assert_eq!(status().status, 0, "STATUS after a DEL");
    let r = exec("ADD", "z5", &cs[5].path(), &conf);
    assert_eq!(r.status, 0, "{}", r.stdout);
    assert_eq!(error_code(&status(), "STATUS full again"), 50);
    let r = exec("ADD", "z6", &cs[6].path(), &conf);
    assert_eq!(error_code(&r, "ADD past the freed slot"), 11);
    assert_eq!(h.assert_consistent("tiny29").len(), 5);
}
