//! The `netd-cni` executable: wires [`netd_cni::run`] to the process environment and streams.

fn main() {
    let code = netd_cni::run(
        &|k| std::env::var(k).ok(),
        &mut std::io::stdin().lock(),
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    );
    std::process::exit(code);
}
