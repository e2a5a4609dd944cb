//! Real container runtimes for the end-to-end suite: a busybox image built locally (no
//! registry is reachable), a private CNI plugin directory whose `netd-cni` is a logging wrapper
//! in front of the real plugin (so tests can assert on what each runtime sends), and private
//! instances of Podman, containerd (`ctr --cni` and its CRI plugin) and dockerd, each running
//! inside the test's "host" network namespace. Nothing here reads or writes the machine's
//! `/etc/cni`, `/etc/containers` or root-namespace network configuration; every instance has
//! its own root, state, socket and config, and is torn down on drop (also on panic).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use netd_tests::{bin, must, run, wait_for, Host, Netns};

/// Whether `name` is an executable on `PATH`.
pub fn have(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false)
}

/// Checks that the binaries a scenario needs exist; prints a clear skip line when not.
/// CI installs them all (`scripts/install-deps.sh`), so a skip there is a packaging bug.
pub fn require(test: &str, bins: &[(&str, &str)]) -> bool {
    let missing: Vec<String> = bins
        .iter()
        .filter(|(b, _)| !have(b))
        .map(|(b, pkg)| format!("{b} (apt-get install {pkg})"))
        .collect();
    if missing.is_empty() {
        return true;
    }
    eprintln!("SKIPPED {test}: missing {}", missing.join(", "));
    false
}

/// Unmounts (lazily, deepest first) every mount point at or below `dir`: runtimes leave
/// overlay, shm and bind mounts under their root/state directories when killed mid-way.
pub fn umount_below(dir: &Path) {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = dir.to_string_lossy().into_owned();
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| p.replace("\\040", " "))
        .filter(|p| p == &prefix || p.starts_with(&format!("{prefix}/")))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("umount")
            .args(["-l", &p])
            .stderr(Stdio::null())
            .status();
    }
}

/// Output as text (stdout then stderr), for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A command that runs in the host namespace's network stack but in the caller's mount
/// namespace: `ip netns exec` would give every runtime command a private mount namespace,
/// hiding the netns files Podman and containerd pin under `/run/netns` from netd and from the
/// next command.
pub fn in_net(ns: &Netns, argv: &[&str]) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net={}", ns.path())).arg("--").args(argv);
    c
}

/// A local busybox image: a root filesystem with `/bin/busybox` and a symlink per applet,
/// an `/www/index.html` for `httpd`, as a plain tar (for `podman import`, `docker import`)
/// and as OCI archives (for `ctr images import`).
pub struct Image {
    dir: tempfile::TempDir,
}

/// What `httpd` in the image serves at `/`.
pub const INDEX: &str = "hello-from-netd";

impl Image {
    /// Builds the root filesystem and its tarball.
    pub fn build() -> Image {
        let dir = tempfile::Builder::new()
            .prefix("netd-e2e-img-")
            .tempdir()
            .expect("tempdir");
        let root = dir.path().join("rootfs");
        for d in ["bin", "etc", "www", "proc", "sys", "dev", "tmp", "root"] {
            fs::create_dir_all(root.join(d)).expect("rootfs dir");
        }
        let busybox = ["/usr/bin/busybox", "/bin/busybox"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("busybox-static is installed");
        fs::copy(busybox, root.join("bin/busybox")).expect("copy busybox");
        // `busybox --install -s` would link to the host path of busybox; link relatively.
        let list = must(Command::new(busybox).arg("--list"));
        for applet in list.lines().filter(|a| !a.is_empty() && *a != "busybox") {
            let _ = symlink("busybox", root.join("bin").join(applet));
        }
        fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
        fs::write(root.join("www/index.html"), format!("{INDEX}\n")).unwrap();
        must(
            Command::new("tar")
                .arg("-C")
                .arg(&root)
                .arg("-cf")
                .arg(dir.path().join("rootfs.tar"))
                .arg("."),
        );
        Image { dir }
    }

    /// The root filesystem tarball.
    pub fn rootfs_tar(&self) -> PathBuf {
        self.dir.path().join("rootfs.tar")
    }

    /// Writes an OCI image-layout archive named `reference` whose default command is `cmd`;
    /// `ctr images import` takes the name from the `io.containerd.image.name` annotation.
    pub fn oci_archive(&self, reference: &str, cmd: &[&str]) -> PathBuf {
        let tag = reference.rsplit(':').next().unwrap_or("latest");
        let file = reference.replace(['/', ':'], "_");
        let lay = self.dir.path().join(format!("oci-{file}"));
        let blobs = lay.join("blobs/sha256");
        fs::create_dir_all(&blobs).expect("oci dir");
        let put = |bytes: &[u8]| -> (String, usize) {
            let tmp = lay.join("blob.tmp");
            fs::write(&tmp, bytes).expect("blob");
            let sum = must(Command::new("sha256sum").arg(&tmp));
            let digest = sum.split_whitespace().next().expect("digest").to_string();
            fs::rename(&tmp, blobs.join(&digest)).expect("blob rename");
            (digest, bytes.len())
        };
        let layer = fs::read(self.rootfs_tar()).expect("rootfs tar");
        let (ld, ls) = put(&layer);
        let config = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Env": ["PATH=/bin"], "Cmd": cmd},
            "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{ld}")]},
        });
        let (cd, cs) = put(config.to_string().as_bytes());
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": format!("sha256:{cd}"), "size": cs},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": format!("sha256:{ld}"), "size": ls}],
        });
        let (md, ms) = put(manifest.to_string().as_bytes());
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "digest": format!("sha256:{md}"), "size": ms,
                           "annotations": {"io.containerd.image.name": reference,
                                           "org.opencontainers.image.ref.name": tag}}],
        });
        fs::write(lay.join("index.json"), index.to_string()).unwrap();
        fs::write(lay.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let out = self.dir.path().join(format!("{file}.oci.tar"));
        must(
            Command::new("tar")
                .arg("-C")
                .arg(&lay)
                .arg("-cf")
                .arg(&out)
                .arg("."),
        );
        out
    }
}

/// One plugin execution recorded by the logging wrapper.
#[derive(Debug, Clone)]
pub struct Call {
    /// `CNI_COMMAND`.
    pub command: String,
    /// The whole environment the runtime gave the plugin.
    pub env: BTreeMap<String, String>,
    /// The network configuration on stdin (`Null` when it was not JSON).
    pub stdin: serde_json::Value,
    /// What the plugin printed.
    pub stdout: String,
    /// The plugin's exit code.
    pub rc: i32,
}

impl Call {
    /// An environment variable (`None` when unset).
    pub fn var(&self, k: &str) -> Option<&str> {
        self.env.get(k).map(String::as_str)
    }

    /// One line for failure messages and the docs: verb, CNI_* env and stdin.
    pub fn summary(&self) -> String {
        let cni: Vec<String> = self
            .env
            .iter()
            .filter(|(k, _)| k.starts_with("CNI_") || *k == "NETD_SOCKET")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!(
            "{} rc={} [{}] {}",
            self.command,
            self.rc,
            cni.join(" "),
            self.stdin
        )
    }
}

/// A private CNI directory pair: `bin/` holds `netd-cni` (a wrapper that records env + stdin
/// and then runs the real plugin) and the reference `loopback`; `net.d/` holds conflists.
pub struct CniDirs {
    dir: tempfile::TempDir,
}

impl CniDirs {
    /// Creates the directories and the wrapper.
    pub fn new() -> CniDirs {
        let dir = tempfile::Builder::new()
            .prefix("netd-e2e-cni-")
            .tempdir()
            .expect("tempdir");
        let d = CniDirs { dir };
        for sub in ["bin", "net.d", "calls"] {
            fs::create_dir_all(d.dir.path().join(sub)).unwrap();
        }
        let real = bin("netd-cni");
        // Absolute paths: Podman's cleanup process and containerd call plugins with a
        // minimal environment.
        let script = format!(
            "#!/bin/sh\n\
             # Records what the runtime sends (env + stdin), then runs the real plugin.\n\
             f={calls}/$(/bin/date +%s%N)-$$\n\
             /usr/bin/env > \"$f.env\"\n\
             /bin/cat > \"$f.stdin\"\n\
             {real} < \"$f.stdin\" > \"$f.stdout\"\n\
             rc=$?\n\
             /bin/cat \"$f.stdout\"\n\
             echo $rc > \"$f.rc\"\n\
             exit $rc\n",
            calls = d.calls_dir().display(),
            real = real.display()
        );
        let w = d.bin_dir().join("netd-cni");
        fs::write(&w, script).unwrap();
        fs::set_permissions(&w, fs::Permissions::from_mode(0o755)).unwrap();
        for p in ["loopback", "portmap"] {
            let src = Path::new("/usr/lib/cni").join(p);
            if src.exists() {
                let _ = symlink(&src, d.bin_dir().join(p));
            }
        }
        d
    }

    /// The plugin directory.
    pub fn bin_dir(&self) -> PathBuf {
        self.dir.path().join("bin")
    }

    /// The configuration directory.
    pub fn conf_dir(&self) -> PathBuf {
        self.dir.path().join("net.d")
    }

    fn calls_dir(&self) -> PathBuf {
        self.dir.path().join("calls")
    }

    /// Writes `<file>` into the configuration directory: a 1.0.0 conflist for network `net`
    /// with the given extra plugin keys, talking to `host`'s netd.
    pub fn conflist(&self, file: &str, host: &Host, net: &str, extra: serde_json::Value) {
        let mut plugin = serde_json::json!({
            "type": "netd-cni",
            "socket": host.socket(),
            "capabilities": {"portMappings": true, "aliases": true, "ips": true, "mac": true},
        });
        if let (Some(p), Some(e)) = (plugin.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                p.insert(k.clone(), v.clone());
            }
        }
        let list = serde_json::json!({"cniVersion": "1.0.0", "name": net, "plugins": [plugin]});
        fs::write(
            self.conf_dir().join(file),
            serde_json::to_string_pretty(&list).unwrap(),
        )
        .unwrap();
    }

    /// Every recorded call, oldest first (a call still running has no `.rc` yet and is left out).
    pub fn calls(&self) -> Vec<Call> {
        let mut stems: Vec<String> = fs::read_dir(self.calls_dir())
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter_map(|e| {
                        e.file_name()
                            .to_str()
                            .and_then(|n| n.strip_suffix(".rc"))
                            .map(String::from)
                    })
                    .collect()
            })
            .unwrap_or_default();
        stems.sort_by_key(|s| {
            let (t, p) = s.split_once('-').unwrap_or((s, "0"));
            (
                t.parse::<u128>().unwrap_or(0),
                p.parse::<u32>().unwrap_or(0),
            )
        });
        stems
            .iter()
            .map(|s| {
                let f = |ext: &str| {
                    fs::read_to_string(self.calls_dir().join(format!("{s}.{ext}")))
                        .unwrap_or_default()
                };
                let env: BTreeMap<String, String> = f("env")
                    .lines()
                    .filter_map(|l| l.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                Call {
                    command: env.get("CNI_COMMAND").cloned().unwrap_or_default(),
                    stdin: serde_json::from_str(&f("stdin")).unwrap_or_default(),
                    stdout: f("stdout"),
                    rc: f("rc").trim().parse().unwrap_or(-1),
                    env,
                }
            })
            .collect()
    }

    /// Recorded calls of one verb.
    pub fn calls_of(&self, verb: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.command == verb)
            .collect()
    }

    /// Every recorded call as text (for assertion messages).
    pub fn dump(&self) -> String {
        self.calls()
            .iter()
            .map(Call::summary)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Podman 4 with its CNI backend, private to one test: its own `containers.conf` (through
/// `CONTAINERS_CONF`), storage root, run root and tmp dir; commands run in the host netns.
pub struct Podman<'a> {
    host: &'a Host,
    dir: tempfile::TempDir,
    conf: PathBuf,
}

/// Name the busybox image gets in Podman's and Docker's stores.
pub const PODMAN_IMAGE: &str = "localhost/netd-e2e/busybox:latest";

impl<'a> Podman<'a> {
    /// Writes the configuration and imports `image`.
    pub fn new(host: &'a Host, cni: &CniDirs, image: &Image) -> Podman<'a> {
        let dir = tempfile::Builder::new()
            .prefix("netd-e2e-podman-")
            .tempdir()
            .expect("tempdir");
        let nofile =
            String::from_utf8_lossy(&run(Command::new("sh").args(["-c", "ulimit -Hn"])).stdout)
                .trim()
                .to_string();
        let nofile = if nofile.parse::<u64>().is_ok() {
            nofile
        } else {
            "1024".into()
        };
        fs::create_dir_all(dir.path().join("tmp")).unwrap();
        // crun fails on this kind of VM (hybrid cgroups): runc. No CAP_SYS_RESOURCE: the
        // default ulimits are lowered to the hard limits. No systemd/journald: cgroupfs, file.
        let conf = format!(
            "[containers]\n\
             default_ulimits = [\"nofile={nofile}:{nofile}\", \"nproc=4096:4096\"]\n\
             [network]\n\
             network_backend = \"cni\"\n\
             cni_plugin_dirs = [\"{bin}\"]\n\
             network_config_dir = \"{confdir}\"\n\
             [engine]\n\
             runtime = \"runc\"\n\
             cgroup_manager = \"cgroupfs\"\n\
             events_logger = \"file\"\n\
             events_logfile_path = \"{d}/events.log\"\n\
             tmp_dir = \"{d}/tmp\"\n",
            bin = cni.bin_dir().display(),
            confdir = cni.conf_dir().display(),
            d = dir.path().display(),
        );
        let conf_path = dir.path().join("containers.conf");
        fs::write(&conf_path, conf).unwrap();
        let p = Podman {
            host,
            dir,
            conf: conf_path,
        };
        p.ok(&["import", p.path_str(&image.rootfs_tar()), PODMAN_IMAGE]);
        p
    }

    fn path_str<'p>(&self, p: &'p Path) -> &'p str {
        p.to_str().expect("utf-8 path")
    }

    /// A `podman` command with the private configuration, in the host netns.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let root = self.dir.path().join("root");
        let runroot = self.dir.path().join("runroot");
        let mut c = in_net(&self.host.ns, &["podman"]);
        c.env("CONTAINERS_CONF", &self.conf)
            .arg("--root")
            .arg(root)
            .arg("--runroot")
            .arg(runroot)
            .args(["--storage-driver", "vfs"])
            .args(args);
        c
    }

    /// Runs podman; returns its output.
    pub fn run(&self, args: &[&str]) -> Output {
        run(self.cmd(args))
    }

    /// Runs podman, which must succeed; returns stdout (trimmed).
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {args:?} failed:\n{}\n---- netd ----\n{}",
            text(&out),
            self.host.log()
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `podman exec NAME ARGV…`.
    pub fn exec(&self, name: &str, argv: &[&str]) -> Output {
        let mut a = vec!["exec", name];
        a.extend_from_slice(argv);
        self.run(&a)
    }

    /// Whether `ping -c1` from container `name` to `target` gets an answer.
    pub fn ping(&self, name: &str, target: &str) -> bool {
        self.exec(name, &["ping", "-c1", "-W2", target])
            .status
            .success()
    }

    /// The container's network namespace path (`podman inspect`).
    pub fn netns(&self, name: &str) -> String {
        self.ok(&[
            "inspect",
            "--format",
            "{{.NetworkSettings.SandboxKey}}",
            name,
        ])
    }
}

impl Drop for Podman<'_> {
    fn drop(&mut self) {
        let _ = run(self.cmd(&["rm", "--all", "--force", "--time", "0"]));
        umount_below(self.dir.path());
    }
}

/// A containerd started by hand: its own config, root, state, gRPC socket, CRI plugin
/// pointed at the private CNI directories; runs in the host netns (and in the machine's
/// mount namespace, so the pod netns it pins under `/run/netns` is visible to netd).
pub struct Containerd<'a> {
    host: &'a Host,
    dir: tempfile::TempDir,
    child: Option<Child>,
    cni: PathBuf,
    cni_conf: PathBuf,
    /// `ctr` containers to remove on drop (namespace, id).
    ctr_containers: std::cell::RefCell<Vec<(String, String)>>,
    /// CRI pods to stop and remove on drop.
    pods: std::cell::RefCell<Vec<String>>,
}

/// The image `ctr run` uses.
pub const CTR_IMAGE: &str = "docker.io/netd-e2e/busybox:latest";
/// The CRI sandbox ("pause") image: busybox serving `/www` on port 80, so the pod's own
/// sandbox answers on its hostPort without creating app containers.
pub const PAUSE_IMAGE: &str = "docker.io/netd-e2e/pause:latest";

impl<'a> Containerd<'a> {
    /// Writes the config, starts containerd and imports the images.
    pub fn start(host: &'a Host, cni: &CniDirs, image: &Image) -> Containerd<'a> {
        let dir = tempfile::Builder::new()
            .prefix("netd-e2e-ctd-")
            .tempdir()
            .expect("tempdir");
        let d = dir.path().display().to_string();
        let conf = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[debug]
  level = "info"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  # The sandbox's default oom_score_adj (-998) needs CAP_SYS_RESOURCE, which this VM lacks.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{bin}"
    conf_dir = "{confdir}"
    max_conf_num = 1
"#,
            bin = cni.bin_dir().display(),
            confdir = cni.conf_dir().display(),
        );
        fs::write(dir.path().join("config.toml"), conf).unwrap();
        let log = fs::File::create(dir.path().join("containerd.log")).unwrap();
        let child = in_net(&host.ns, &["containerd", "--config"])
            .arg(dir.path().join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawning containerd");
        let c = Containerd {
            host,
            dir,
            child: Some(child),
            cni: cni.bin_dir(),
            cni_conf: cni.conf_dir(),
            ctr_containers: Default::default(),
            pods: Default::default(),
        };
        let up = wait_for(Duration::from_secs(30), || {
            run(c.ctr_plain(&["version"]))
                .status
                .success()
                .then_some(())
        });
        assert!(up.is_some(), "containerd did not come up:\n{}", c.log());
        c.ctr_ok(&[
            "images",
            "import",
            c.s(&image.oci_archive(CTR_IMAGE, &["/bin/sh"])),
        ]);
        c.ctr_ok(&[
            "-n",
            "k8s.io",
            "images",
            "import",
            c.s(&image.oci_archive(PAUSE_IMAGE, &["/bin/httpd", "-f", "-p", "80", "-h", "/www"])),
        ]);
        c
    }

    fn s<'p>(&self, p: &'p Path) -> &'p str {
        p.to_str().expect("utf-8 path")
    }

    /// The gRPC socket (also the CRI endpoint).
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    /// containerd's log.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    fn ctr_plain(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ctr");
        c.arg("--address").arg(self.socket()).args(args);
        c
    }

    /// A `ctr` command as a user would run it with `--cni`: `ctr` loads only the first file
    /// of `/etc/cni/net.d` and plugins from `/opt/cni/bin`, so it runs in a private mount
    /// namespace where our directories are mounted there (the machine's stay untouched).
    pub fn ctr(&self, args: &[&str]) -> Command {
        let script = format!(
            "mount --bind {conf} /etc/cni/net.d && mount -t tmpfs tmpfs /opt && \
             mkdir -p /opt/cni/bin && mount --bind {bin} /opt/cni/bin && \
             exec ctr --address {sock} \"$@\"",
            conf = self.cni_conf.display(),
            bin = self.cni.display(),
            sock = self.socket().display(),
        );
        let mut c = in_net(
            &self.host.ns,
            &[
                "unshare",
                "--mount",
                "--propagation",
                "slave",
                "sh",
                "-c",
                &script,
                "ctr",
            ],
        );
        c.args(args);
        c
    }

    /// Runs ctr (private mounts); returns its output.
    pub fn ctr_run(&self, args: &[&str]) -> Output {
        run(self.ctr(args))
    }

    /// Runs ctr, which must succeed; returns stdout.
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let out = run(self.ctr(args));
        assert!(
            out.status.success(),
            "ctr {args:?} failed:\n{}\n---- containerd ----\n{}\n---- netd ----\n{}",
            text(&out),
            self.log(),
            self.host.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Remembers a `ctr` container for removal on drop.
    pub fn track(&self, ns: &str, id: &str) {
        self.ctr_containers
            .borrow_mut()
            .push((ns.to_string(), id.to_string()));
    }

    /// `cri-client --socket <containerd> ARGS`, or `None` when the client is not built.
    pub fn cri(&self, args: &[&str]) -> Output {
        let mut c = Command::new(cri_client().expect("cri-client is built"));
        c.arg("--socket").arg(self.socket()).args(args);
        run(c)
    }

    /// `cri-client` that must succeed; stdout parsed as JSON (`Null` when empty).
    pub fn cri_json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.cri(args);
        assert!(
            out.status.success(),
            "cri-client {args:?} failed:\n{}\n---- containerd ----\n{}\n---- netd ----\n{}",
            text(&out),
            self.log(),
            self.host.log()
        );
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    }

    /// Remembers a CRI pod for stop + removal on drop.
    pub fn track_pod(&self, id: &str) {
        self.pods.borrow_mut().push(id.to_string());
    }

    /// Forgets a pod the test removed itself.
    pub fn untrack_pod(&self, id: &str) {
        self.pods.borrow_mut().retain(|p| p != id);
    }
}

/// The `cri-client` binary next to the test binaries, if built.
pub fn cri_client() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    let dir = if dir.ends_with("deps") {
        dir.parent()?
    } else {
        dir
    };
    let p = dir.join("cri-client");
    p.exists().then_some(p)
}

impl Drop for Containerd<'_> {
    fn drop(&mut self) {
        // Tasks first: their shims outlive containerd otherwise.
        for id in self.pods.borrow().iter() {
            let _ = self.cri(&["stop-pod", id]);
            let _ = self.cri(&["rm-pod", id]);
        }
        for (ns, id) in self.ctr_containers.borrow().iter() {
            let _ = run(self.ctr_plain(&["-n", ns, "tasks", "kill", "-s", "KILL", id]));
            let _ = wait_for(Duration::from_secs(5), || {
                let o = run(self.ctr_plain(&["-n", ns, "tasks", "ls", "-q"]));
                (!String::from_utf8_lossy(&o.stdout).lines().any(|l| l == id)
                    || run(self.ctr_plain(&["-n", ns, "tasks", "rm", "-f", id]))
                        .status
                        .success())
                .then_some(())
            });
            let _ = run(self.ctr_plain(&["-n", ns, "tasks", "rm", "-f", id]));
            let _ = run(self.ctr_plain(&["-n", ns, "containers", "rm", id]));
        }
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child, not yet reaped.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            if wait_for(Duration::from_secs(10), || c.try_wait().ok().flatten()).is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        umount_below(self.dir.path());
        if std::thread::panicking() {
            eprintln!("---- containerd log ----\n{}", self.log());
        }
    }
}

/// A Docker engine started by hand inside the host netns: no bridge, no iptables (netd
/// does the networking), its own data root, exec root, pidfile and socket.
pub struct Dockerd<'a> {
    host: &'a Host,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl<'a> Dockerd<'a> {
    /// Starts dockerd and imports the busybox image as [`PODMAN_IMAGE`].
    pub fn start(host: &'a Host, image: &Image) -> Dockerd<'a> {
        // Short paths: dockerd's managed containerd puts sockets under the exec root.
        let dir = tempfile::Builder::new()
            .prefix("nde2e-dk-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let d = dir.path();
        fs::write(d.join("daemon.json"), "{}").unwrap();
        let log = fs::File::create(d.join("dockerd.log")).unwrap();
        let child = in_net(&host.ns, &["dockerd"])
            .arg("--config-file")
            .arg(d.join("daemon.json"))
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("docker.pid"))
            .arg("--host")
            .arg(format!("unix://{}", d.join("docker.sock").display()))
            .args([
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
                "--ip-forward=false",
                "--ip-masq=false",
                "--storage-driver=vfs",
                "--exec-opt",
                "native.cgroupdriver=cgroupfs",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawning dockerd");
        let dk = Dockerd {
            host,
            dir,
            child: Some(child),
        };
        let up = wait_for(Duration::from_secs(60), || {
            dk.run(&["version"]).status.success().then_some(())
        });
        assert!(up.is_some(), "dockerd did not come up:\n{}", dk.log());
        dk.ok(&[
            "import",
            image.rootfs_tar().to_str().unwrap(),
            PODMAN_IMAGE.trim_start_matches("localhost/"),
        ]);
        dk
    }

    /// dockerd's log.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    /// A docker client command against this engine.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("docker");
        c.env(
            "DOCKER_HOST",
            format!("unix://{}", self.dir.path().join("docker.sock").display()),
        )
        .env("DOCKER_CONFIG", self.dir.path().join("client"))
        .args(args);
        c
    }

    /// Runs docker; returns its output.
    pub fn run(&self, args: &[&str]) -> Output {
        run(self.cmd(args))
    }

    /// Runs docker, which must succeed; returns stdout (trimmed).
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "docker {args:?} failed:\n{}\n---- dockerd ----\n{}\n---- netd ----\n{}",
            text(&out),
            self.log(),
            self.host.log()
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Dockerd<'_> {
    fn drop(&mut self) {
        let ids = String::from_utf8_lossy(&self.run(&["ps", "-aq"]).stdout).into_owned();
        for id in ids.split_whitespace() {
            let _ = self.run(&["rm", "-f", id]);
        }
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child, not yet reaped.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            if wait_for(Duration::from_secs(20), || c.try_wait().ok().flatten()).is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        umount_below(self.dir.path());
        if std::thread::panicking() {
            eprintln!("---- dockerd log ----\n{}", self.log());
        }
    }
}

/// The "outside world": a namespace linked to the host namespace by a veth, addresses from
/// TEST-NET-3 (203.0.113.0/24: host .1, outside .2). It has no route to container subnets, so
/// a container reaches it only through netd's masquerade, and it reaches published ports on
/// the host address.
pub struct Outside {
    /// The outside namespace.
    pub ns: Netns,
}

/// The host namespace's address on the outside link.
pub const HOST_OUT_IP: &str = "203.0.113.1";
/// The outside namespace's address.
pub const OUTSIDE_IP: &str = "203.0.113.2";

impl Outside {
    /// Creates the namespace and the link.
    pub fn new(host: &Host) -> Outside {
        let ns = Netns::new("out");
        must(host.ns.cmd(&[
            "ip",
            "link",
            "add",
            "e2e-out",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns.name(),
        ]));
        must(host.ns.cmd(&[
            "ip",
            "addr",
            "add",
            &format!("{HOST_OUT_IP}/24"),
            "dev",
            "e2e-out",
        ]));
        must(host.ns.cmd(&["ip", "link", "set", "e2e-out", "up"]));
        must(ns.cmd(&[
            "ip",
            "addr",
            "add",
            &format!("{OUTSIDE_IP}/24"),
            "dev",
            "eth0",
        ]));
        must(ns.cmd(&["ip", "link", "set", "eth0", "up"]));
        Outside { ns }
    }

    /// An HTTP GET of `/` at `addr:port` from the outside namespace (busybox-static's
    /// `wget` crashes, so `nc`); the body when it answered 200.
    pub fn http_get(&self, addr: &str, port: u16) -> Option<String> {
        http_get(&mut self.ns.cmd(&["sh", "-c", &nc_get(addr, port)]))
    }

    /// Like [`Outside::http_get`], retried for a few seconds while the server inside the
    /// container may still be starting (a readiness wait, not a timing assertion).
    pub fn http_get_ready(&self, addr: &str, port: u16) -> Option<String> {
        netd_tests::wait_for(std::time::Duration::from_secs(15), || {
            self.http_get(addr, port)
        })
    }
}

/// A shell line sending `GET /` to `addr:port` with busybox's `nc` (in containers and in
/// namespaces using the machine's binaries alike) and printing the answer.
pub fn nc_get(addr: &str, port: u16) -> String {
    format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | timeout 5 busybox nc -w 3 {addr} {port}")
}

/// Runs a command printing an HTTP response; the body if the status was 200.
pub fn http_get(cmd: &mut Command) -> Option<String> {
    let out = run(cmd);
    let s = String::from_utf8_lossy(&out.stdout).into_owned();
    (s.starts_with("HTTP/1.") && s.lines().next()?.contains(" 200"))
        .then(|| s.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
}

/// Lines of the host namespace's nftables ruleset that mention `needle`.
pub fn nft_lines_with(host: &Host, needle: &str) -> Vec<String> {
    let out = host.ns.exec(&["nft", "list", "ruleset"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(needle))
        .map(|l| l.trim().to_string())
        .collect()
}
