//! tmp
mod support;
use support::*;
#[test]
fn dump() {
    let mut lab = Lab::new();
    let mut net = network("web", 30);
    net.icc = false;
    lab.bridge(&net);
    let (_a, ea) = lab.container(&net, "a", ip("10.30.0.2"), [2,0,0,0,0,0xa], &["8080:80"]);
    lab.fw.sync(&[net], &[ea]).unwrap();
    println!("{}", lab.host.exec(&["nft", "list", "table", "inet", "netd"]));
    println!("{}", lab.host.exec(&["nft", "list", "table", "bridge", "netd"]));
}
