//! Replays every seed (`seeds/<target>/`) and every input that once broke a target
//! (`regressions/<target>/`) through the same checks the fuzz targets run, on the stable
//! toolchain and without libFuzzer, so a fixed crash stays fixed.

use std::path::Path;

#[test]
fn seeds_and_regressions_pass_every_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut ran = 0;
    for target in netd_fuzz::TARGETS {
        let check = netd_fuzz::check_of(target).expect("known target");
        for dir in ["seeds", "regressions"] {
            for (path, input) in netd_fuzz::inputs(&root.join(dir).join(target)) {
                eprintln!("{target}: {}", path.display());
                check(&input);
                ran += 1;
            }
        }
    }
    assert!(ran > 0, "no seed found");
}
