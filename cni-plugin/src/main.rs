//! The `netd-cni` executable: wires [`netd_cni::run`] to the process environment and streams.

/// One request per process, then exit: memory comes from a bump arena (see [`netd_cni::arena`]).
#[global_allocator]
static ALLOC: netd_cni::arena::Arena<{ 1 << 20 }> = netd_cni::arena::Arena::new();

fn main() {
    let code = netd_cni::run(
        &|k| std::env::var(k).ok(),
        &mut std::io::stdin().lock(),
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    );
    std::process::exit(code);
}
