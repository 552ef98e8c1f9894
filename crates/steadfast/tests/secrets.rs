//! Secrets stay secret: passwords never appear in errors, events, `Debug` output or logs, nor
//! do the secrets of connection strings and credentials.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use steadfast::{Client, Config, Password};
use support::{RedisServer, drain};

#[tokio::test(flavor = "current_thread")]
async fn passwords_never_appear_in_errors_events_debug_or_logs() {
    use std::io::Write;
    #[derive(Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);
    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let secret = "pw-9f8e7d-SECRET";
    let server = RedisServer::start_with(&["--requirepass", "another-one"]).await;
    let url = format!("redis://user:{secret}@{}", server.address);
    let client = Client::open(&url).unwrap();
    let mut events = client.events();
    let err = client
        .query::<String>(&redis::cmd("PING"))
        .await
        .unwrap_err();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let config = Config::from_url(&url).unwrap();

    let mut printed = format!("{err} {err:?} {client:?} {config:?}");
    for event in drain(&mut events) {
        printed.push_str(&format!("{event:?}"));
    }
    printed.push_str(&String::from_utf8_lossy(&captured.0.lock().unwrap()));
    let bad_url = Config::from_url(&format!("redis://user:{secret}@host:notaport")).unwrap_err();
    printed.push_str(&format!("{bad_url} {bad_url:?}"));
    assert!(printed.len() > 200, "something was captured");
    assert!(!printed.contains(secret), "the password leaked: {printed}");
    client.shutdown().await;
}

#[test]
fn secrets_in_connection_strings_and_credentials_never_print() {
    let secret = "cs-SECRET-7781";
    let parsed =
        steadfast::config::parse_connection_string(&format!("h:6380,password={secret},ssl=True"))
            .unwrap();
    let credentials = steadfast::connect::credentials::Credentials {
        username: Some("app".into()),
        password: Password::new(secret),
        expires_at: None,
    };
    let bad = steadfast::config::parse_connection_string(&format!("h,password={secret},ssl=maybe"))
        .unwrap_err();
    let bad_url =
        Config::from_url(&format!("rediss://u:{secret}@h?tls_insecure=perhaps")).unwrap_err();
    let printed = format!(
        "{parsed:?} {:?} {credentials:?} {bad} {bad:?} {bad_url} {bad_url:?} {}",
        parsed.config, credentials.password
    );
    assert!(printed.contains("***"), "{printed}");
    assert!(!printed.contains(secret), "a secret leaked: {printed}");
}
