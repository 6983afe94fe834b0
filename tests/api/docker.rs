//! The container image's parts that can be checked without a Docker daemon: the Dockerfile
//! passes hadolint, the build context leaves the build outputs out, and the `HEALTHCHECK`
//! command (`tickrelay healthcheck`) tells a live daemon from a dead port.

use std::path::Path;
use std::process::Command;

use crate::helpers::{provide, spawn_app};

#[test]
fn the_dockerfile_passes_hadolint() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cache = provide("docker", "hadolint");
    let out = Command::new(cache.join("venv/bin/hadolint"))
        .args(["--no-color", "--failure-threshold", "info"])
        .arg(repo.join("Dockerfile"))
        .output()
        .expect("run hadolint");
    assert!(
        out.status.success(),
        "hadolint:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let dockerfile = std::fs::read_to_string(repo.join("Dockerfile")).unwrap();
    for needed in [
        "USER 10001",
        "HEALTHCHECK",
        "EXPOSE 8080",
        "STOPSIGNAL SIGTERM",
    ] {
        assert!(dockerfile.contains(needed), "the Dockerfile lacks {needed}");
    }
    let ignore = std::fs::read_to_string(repo.join(".dockerignore")).unwrap();
    assert!(
        ignore.lines().any(|l| l.trim() == "target/"),
        ".dockerignore keeps target/ out"
    );
}

#[actix_web::test]
async fn healthcheck_passes_against_a_live_daemon_and_fails_against_a_dead_port() {
    let app = spawn_app().await;
    let healthcheck = |url: String| {
        Command::new(env!("CARGO_BIN_EXE_tickrelay"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["healthcheck", "--url", &url])
            .output()
            .expect("run tickrelay healthcheck")
    };
    let url = app.url("/healthz");
    let live = actix_web::rt::task::spawn_blocking(move || healthcheck(url))
        .await
        .unwrap();
    assert!(
        live.status.success(),
        "{}",
        String::from_utf8_lossy(&live.stderr)
    );

    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = healthcheck(format!("http://127.0.0.1:{port}/healthz"));
    assert!(!dead.status.success());
    assert!(
        String::from_utf8_lossy(&dead.stderr).contains(&port.to_string()),
        "the failure names what it tried: {}",
        String::from_utf8_lossy(&dead.stderr)
    );
}
