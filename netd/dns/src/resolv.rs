//! The host's upstream resolvers, from resolv.conf, re-read when the file changes.
//!
//! When resolv.conf lists only systemd-resolved's stub (127.0.0.53), the real upstreams are in
//! systemd-resolved's own file; using those skips a hop and keeps working when the stub is
//! unreachable. Files are re-checked (a `stat`) at most once a second, on use.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tracing::{debug, warn};

/// systemd-resolved's list of real upstream servers.
pub(crate) const SYSTEMD_RESOLV_CONF: &str = "/run/systemd/resolve/resolv.conf";

const STUB: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 53));
const RECHECK: Duration = Duration::from_secs(1);

/// Parses `nameserver` lines of a resolv.conf; addresses with a zone (`fe80::1%eth0`) are skipped
/// because they only mean something on the host's own link.
pub(crate) fn parse(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let line = line.split(['#', ';']).next()?;
            let mut words = line.split_whitespace();
            if words.next()? != "nameserver" {
                return None;
            }
            let addr: IpAddr = words.next()?.parse().ok()?;
            Some(SocketAddr::new(addr, 53))
        })
        .collect()
}

/// Upstreams from `main`, or from `systemd` when `main` lists only the 127.0.0.53 stub.
pub(crate) fn load(main: &Path, systemd: &Path) -> Vec<SocketAddr> {
    let listed = match std::fs::read_to_string(main) {
        Ok(text) => parse(&text),
        Err(e) => {
            warn!(path = %main.display(), cause = %e, "reading resolv.conf for DNS upstreams");
            return Vec::new();
        }
    };
    if !listed.is_empty() && listed.iter().all(|a| a.ip() == STUB) {
        if let Ok(text) = std::fs::read_to_string(systemd) {
            let real = parse(&text);
            if !real.is_empty() {
                return real;
            }
        }
    }
    listed
}

struct State {
    checked: Instant,
    stamp: (Option<SystemTime>, Option<SystemTime>),
    upstreams: Arc<[SocketAddr]>,
}

/// The host's upstreams, cached and refreshed when either file's mtime changes.
pub(crate) struct HostResolvers {
    main: PathBuf,
    systemd: PathBuf,
    state: Mutex<Option<State>>,
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

impl HostResolvers {
    /// Resolvers read from `main` (falling back to `systemd` for the stub case).
    pub(crate) fn new(main: PathBuf, systemd: PathBuf) -> Self {
        Self {
            main,
            systemd,
            state: Mutex::new(None),
        }
    }

    /// The current upstream list.
    pub(crate) fn get(&self) -> Arc<[SocketAddr]> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if let Some(s) = state.as_ref() {
            if now.duration_since(s.checked) < RECHECK {
                return s.upstreams.clone();
            }
        }
        let stamp = (mtime(&self.main), mtime(&self.systemd));
        match state.as_mut() {
            Some(s) if s.stamp == stamp => {
                s.checked = now;
                s.upstreams.clone()
            }
            _ => {
                let upstreams: Arc<[SocketAddr]> = load(&self.main, &self.systemd).into();
                debug!(path = %self.main.display(), ?upstreams, "loaded host DNS upstreams");
                *state = Some(State {
                    checked: now,
                    stamp,
                    upstreams: upstreams.clone(),
                });
                upstreams
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nameservers_only() {
        let got = parse(
            "# comment\nsearch example.com\nnameserver 192.0.2.1\nnameserver 2001:db8::1 # x\n\
             nameserver fe80::1%eth0\nnameserver bogus\noptions ndots:2\n  nameserver 192.0.2.2\n",
        );
        let want: Vec<SocketAddr> = vec![
            "192.0.2.1:53".parse().unwrap(),
            "[2001:db8::1]:53".parse().unwrap(),
            "192.0.2.2:53".parse().unwrap(),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn stub_only_uses_systemd_file_and_reloads_on_change() {
        let dir = std::env::temp_dir().join(format!("netd-dns-resolv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let main = dir.join("resolv.conf");
        let sd = dir.join("sd.conf");
        std::fs::write(&main, "nameserver 127.0.0.53\n").unwrap();
        std::fs::write(&sd, "nameserver 192.0.2.9\n").unwrap();
        assert_eq!(load(&main, &sd), vec!["192.0.2.9:53".parse().unwrap()]);
        std::fs::remove_file(&sd).unwrap();
        assert_eq!(load(&main, &sd), vec!["127.0.0.53:53".parse().unwrap()]);

        let host = HostResolvers::new(main.clone(), sd.clone());
        assert_eq!(&*host.get(), &["127.0.0.53:53".parse().unwrap()]);
        std::fs::write(&main, "nameserver 192.0.2.7\nnameserver 127.0.0.53\n").unwrap();
        // Force the next get() past the recheck interval instead of sleeping.
        host.state.lock().unwrap().as_mut().unwrap().checked -= RECHECK;
        host.state.lock().unwrap().as_mut().unwrap().stamp.0 = None;
        assert_eq!(
            &*host.get(),
            &[
                "192.0.2.7:53".parse().unwrap(),
                "127.0.0.53:53".parse().unwrap()
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
