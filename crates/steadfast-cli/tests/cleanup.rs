//! `steadfast drill --cleanup` removes what a drill killed with SIGKILL left behind (as root).

use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

fn namespaces_of(pid: u32) -> Vec<String> {
    steadfast_lab::net::namespaces_with(&format!("sf{pid}")).expect("ip netns list")
}

/// Live redis-server processes serving the lab's first server address, wherever they are (a
/// killed process waiting to be reaped has no command line and is not counted).
fn lab_servers() -> usize {
    let output = Command::new("pgrep")
        .args(["-f", "redis-server 10.213.0.10:6379"])
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&output.stdout).lines().count()
}

#[tokio::test]
async fn cleanup_removes_what_a_killed_drill_left_behind() {
    let servers_before = lab_servers();
    let svg_dir =
        std::env::temp_dir().join(format!("steadfast-cleanup-test-{}", std::process::id()));
    let mut drill = Command::new(env!("CARGO_BIN_EXE_steadfast"))
        .args(["drill", "--quick", "--scenario", "blackhole", "--svg-dir"])
        .arg(&svg_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the steadfast binary runs");
    let pid = drill.id();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(20);
    while namespaces_of(pid).len() < 3 {
        assert!(
            Instant::now() < deadline,
            "the drill never built its lab (needs root)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "lab seen after {:?}: {:?}",
        started.elapsed(),
        namespaces_of(pid)
    );
    drill.kill().expect("SIGKILL");
    drill.wait().expect("reaped");
    assert!(
        !namespaces_of(pid).is_empty(),
        "a killed drill leaves its lab behind"
    );

    let status = Command::new(env!("CARGO_BIN_EXE_steadfast"))
        .args(["drill", "--cleanup"])
        .status()
        .expect("cleanup runs");
    assert!(status.success());
    assert!(
        namespaces_of(pid).is_empty(),
        "left: {:?}",
        namespaces_of(pid)
    );
    assert!(
        lab_servers() <= servers_before,
        "a live redis-server of the killed drill survived its namespace"
    );
    assert!(
        !std::path::Path::new(&format!("/etc/netns/sf{pid}-client")).exists(),
        "the client namespace's resolv.conf was removed"
    );
    let temp_left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .expect("temp dir")
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("sf{pid}-"))
        })
        .collect();
    assert!(
        temp_left.is_empty(),
        "temporary directories left: {temp_left:?}"
    );
    let _ = std::fs::remove_dir_all(svg_dir);
}
