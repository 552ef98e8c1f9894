//! `steadfast ping`, `steadfast watch` and `steadfast proxy` against real redis-server processes.

use std::process::{Command, Stdio};
use std::time::Duration;

use steadfast_testkit::TestServer;
use tokio::time::Instant;

/// A redis-server on a private loopback address; killed on drop.
async fn start_server(last_octet: u8, extra: &[&str]) -> TestServer {
    let ip = std::net::IpAddr::from([127, 214, (std::process::id() % 250) as u8, last_octet]);
    TestServer::start(ip, extra).await
}

fn ping(target: &str) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_steadfast"))
        .args(["ping", target])
        .output()
        .expect("steadfast runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

#[tokio::test]
async fn ping_times_every_step_and_says_what_the_server_is() {
    let server = start_server(2, &[]).await;
    let (code, text) = ping(&format!("redis://{}", server.address));
    assert_eq!(code, 0, "{text}");
    for step in ["resolve", "tcp", "tls", "handshake", "ping"] {
        assert!(
            text.lines().any(|l| l.starts_with(step)),
            "{step} missing:\n{text}"
        );
    }
    assert!(
        text.contains("redis_version") && text.contains("role master"),
        "{text}"
    );
    assert!(
        text.contains("maintenance notifications not supported"),
        "{text}"
    );
}

#[tokio::test]
async fn ping_accepts_a_stackexchange_connection_string() {
    let server = start_server(3, &[]).await;
    let (code, text) = ping(&format!(
        "{},abortConnect=False,connectTimeout=2000",
        server.address
    ));
    assert_eq!(code, 0, "{text}");
}

#[tokio::test]
async fn without_a_target_the_environment_names_the_server_and_the_password() {
    let server = start_server(6, &["--requirepass", "env-ENVSECRET"]).await;
    let run = |envs: &[(&str, String)]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_steadfast"));
        command.arg("ping");
        for name in [
            "STEADFAST_CONFIG_FILE",
            "STEADFAST_URL",
            "STEADFAST_CONNECTION_STRING",
            "STEADFAST_PASSWORD",
        ] {
            command.env_remove(name);
        }
        for (name, value) in envs {
            command.env(name, value);
        }
        let output = command.output().expect("steadfast runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.code().unwrap_or(-1), text)
    };
    let (code, text) = run(&[
        ("STEADFAST_URL", format!("redis://{}", server.address)),
        ("STEADFAST_PASSWORD", "env-ENVSECRET".to_owned()),
    ]);
    assert_eq!(code, 0, "{text}");
    let dir = std::env::temp_dir().join(format!("steadfast-env-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("steadfast.toml");
    std::fs::write(
        &file,
        format!(
            "url = \"redis://{}\"\npassword = \"env-ENVSECRET\"\n[command]\ndeadline = \"2s\"\n",
            server.address
        ),
    )
    .unwrap();
    let (code, text) = run(&[("STEADFAST_CONFIG_FILE", file.display().to_string())]);
    assert_eq!(code, 0, "{text}");
    let (code, text) = run(&[]);
    assert_eq!(code, 2, "nothing set: {text}");
    assert!(text.contains("STEADFAST_URL"), "{text}");
    let _ = std::fs::remove_dir_all(dir);
    assert!(!text.contains("ENVSECRET"));
}

#[tokio::test]
async fn each_failing_step_has_its_exit_code() {
    let (code, text) = ping("redis://127.214.251.9:6379");
    assert_eq!(code, 11, "nothing listens there: {text}");
    assert!(text.contains("tcp") && text.contains("FAILED"), "{text}");

    let (code, text) = ping("redis://no-such-host.invalid:6379");
    assert_eq!(code, 10, "{text}");

    let (code, text) = ping("redis://host:notaport");
    assert_eq!(code, 2, "{text}");

    let server = start_server(4, &["--requirepass", "right"]).await;
    let (code, text) = ping(&format!("redis://:wrong-PINGSECRET@{}", server.address));
    assert_eq!(code, 13, "{text}");
    assert!(
        !text.contains("wrong-PINGSECRET"),
        "the password leaked: {text}"
    );
}

#[tokio::test]
async fn watch_prints_json_lines_and_a_summary_with_no_failure() {
    let server = start_server(5, &[]).await;
    let output = Command::new(env!("CARGO_BIN_EXE_steadfast"))
        .args([
            "watch",
            &format!("redis://{}", server.address),
            "--duration",
            "2",
            "--rate",
            "50",
            "--json",
        ])
        .output()
        .expect("steadfast runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is JSON"))
        .collect();
    assert!(lines.iter().any(|l| {
        l["event"]
            .as_str()
            .is_some_and(|e| e.starts_with("Connected"))
    }));
    let summary = lines.last().expect("a summary line");
    assert_eq!(summary["summary"], true);
    assert_eq!(summary["failed"], 0);
    assert!(
        summary["operations"].as_u64().is_some_and(|n| n >= 50),
        "{summary}"
    );
}

#[tokio::test]
async fn watch_serves_the_library_metrics_for_prometheus() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = start_server(7, &[]).await;
    let metrics_at = format!("127.214.{}.8:9187", std::process::id() % 250);
    let mut watch = Command::new(env!("CARGO_BIN_EXE_steadfast"))
        .args([
            "watch",
            &format!("redis://{}", server.address),
            "--duration",
            "4",
            "--prometheus",
            &metrics_at,
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("steadfast runs");
    let deadline = Instant::now() + Duration::from_secs(3);
    let body = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let scrape = async {
            let mut stream = tokio::net::TcpStream::connect(&metrics_at).await.ok()?;
            stream
                .write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
                .await
                .ok()?;
            let mut body = String::new();
            stream.read_to_string(&mut body).await.ok()?;
            Some(body)
        };
        match scrape.await {
            Some(body) if body.contains("steadfast_commands_total") => break body,
            _ => assert!(Instant::now() < deadline, "no metrics were served"),
        }
    };
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(body.contains("steadfast_links_total"), "{body}");
    assert!(body.contains("steadfast_link_up 1"), "{body}");
}

/// A CA and a server certificate for `localhost`, as PEM files in `dir`.
fn certificates(dir: &std::path::Path, name: &str) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, name);
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("key");
    let server = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("server certificate");
    std::fs::create_dir_all(dir).expect("dir");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
    std::fs::write(dir.join("server.pem"), server.pem()).expect("write");
    std::fs::write(dir.join("server.key"), key.serialize_pem()).expect("write");
}

#[tokio::test]
async fn ping_over_tls_verifies_the_certificate_and_names_the_failing_step() {
    let base = std::env::temp_dir().join(format!("steadfast-ping-tls-{}", std::process::id()));
    let (good, other) = (base.join("good"), base.join("other"));
    certificates(&good, "good CA");
    certificates(&other, "other CA");
    let path = |name: &str| good.join(name).display().to_string();
    let server = start_server(
        9,
        &[
            "--port",
            "0",
            "--tls-port",
            "6379",
            "--tls-cert-file",
            &path("server.pem"),
            "--tls-key-file",
            &path("server.key"),
            "--tls-ca-cert-file",
            &path("ca.pem"),
            "--tls-auth-clients",
            "no",
        ],
    )
    .await;
    let url = |ca: &std::path::Path| {
        format!(
            "rediss://{}?tls_server_name=localhost&tls_ca_file={}",
            server.address,
            ca.join("ca.pem").display()
        )
    };
    let (code, text) = ping(&url(&good));
    assert_eq!(code, 0, "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("tls") && l.contains("verified")),
        "{text}"
    );
    let (code, text) = ping(&url(&other));
    assert_eq!(code, 12, "an unknown CA fails the TLS step: {text}");
    let _ = std::fs::remove_dir_all(base);
}

/// `redis-cli` (a client that knows nothing of steadfast) against `address`.
fn redis_cli(address: std::net::SocketAddr, args: &[&str]) -> String {
    // Bounded: a redis-cli that waits for more (a subscription) is ended after 10 s.
    let output = Command::new("timeout")
        .args([
            "10",
            "redis-cli",
            "-h",
            &address.ip().to_string(),
            "-p",
            &address.port().to_string(),
        ])
        .args(args)
        .output()
        .expect("redis-cli installed");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_serves_redis_cli_through_a_restart_and_stops_on_sigterm() {
    let mut server = start_server(10, &[]).await;
    let port = 20_000 + (std::process::id() % 20_000) as u16;
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut proxy = Command::new(env!("CARGO_BIN_EXE_steadfast"))
        .args(["proxy", "--listen", &listen.to_string()])
        .args(["--metrics", "127.0.0.1:0", "--log-format", "json"])
        .arg(format!("redis://{}", server.address))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("steadfast runs");
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(listen).await.is_err() {
        assert!(Instant::now() < deadline, "the proxy never listened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(redis_cli(listen, &["SET", "greeting", "hello"]), "OK");
    assert_eq!(redis_cli(listen, &["GET", "greeting"]), "hello");
    // A restarted server (its data gone: no persistence) is reached again by the next client.
    server.kill();
    server.restart().await;
    assert_eq!(redis_cli(listen, &["SET", "greeting", "again"]), "OK");
    assert_eq!(
        redis_cli(server.address, &["GET", "greeting"]).as_str(),
        "again",
        "written through to the server"
    );
    // Client-side caching goes through the connection's own client, as the server answers it.
    assert_eq!(redis_cli(listen, &["CLIENT", "TRACKING", "on"]), "OK");
    let pid = proxy.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = proxy.try_wait().expect("wait") {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the proxy did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut said = String::new();
    use std::io::Read;
    let _ = proxy
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut said);
    assert!(said.contains(&format!("listening on {listen}")), "{said}");
    assert!(
        said.contains("serving /health and /metrics on http://127.0.0.1:"),
        "{said}"
    );
}
