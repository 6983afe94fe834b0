//! Shared by the test binaries (`tests/api`, `tests/image.rs`): runs a part's provide script.

use std::path::{Path, PathBuf};

/// Runs `tests/<part>/setup.sh <repo>/target/<cache>`, which provides a real part the tests need
/// (the system's, or one installed under `target/`), and answers that directory. Fails the test,
/// with the script's output, when it cannot.
pub fn provide(part: &str, cache: &str) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = repo.join("target").join(cache);
    let out = std::process::Command::new("bash")
        .arg(repo.join("tests").join(part).join("setup.sh"))
        .arg(&dir)
        .output()
        .unwrap_or_else(|e| panic!("run tests/{part}/setup.sh: {e}"));
    assert!(
        out.status.success(),
        "tests/{part}/setup.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}
