//! Rotating credentials against a real redis-server: an ACL user's password is rotated while a
//! workload runs, and nothing fails.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use steadfast::Event;
use steadfast::Password;
use steadfast::connect::credentials::{Credentials, CredentialsFuture, CredentialsProvider};
use support::{RedisServer, Workload, config_for, connected, init_tracing};
use tokio::time::Instant;

/// Hands out the password it was last given, valid for `lifetime` from each call.
#[derive(Debug)]
struct Rotating {
    password: Mutex<String>,
    lifetime: Duration,
}

impl CredentialsProvider for Rotating {
    fn credentials(&self) -> CredentialsFuture {
        let password = self.password.lock().unwrap().clone();
        let expires_at = SystemTime::now() + self.lifetime;
        Box::pin(async move {
            Ok(Credentials {
                username: Some("app".into()),
                password: Password::new(password),
                expires_at: Some(expires_at),
            })
        })
    }
}

async fn acl(admin: &mut redis::aio::MultiplexedConnection, args: &[&str]) {
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("app")
        .arg(args)
        .query_async(admin)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_acl_password_is_picked_up_live_and_on_reconnect_with_no_failed_operation() {
    init_tracing();
    let server = RedisServer::start().await;
    let mut admin = server.admin().await;
    acl(&mut admin, &["on", ">first-ROTSECRET", "~*", "&*", "+@all"]).await;
    let provider = Arc::new(Rotating {
        password: Mutex::new("first-ROTSECRET".into()),
        lifetime: Duration::from_secs(2),
    });
    let mut config = config_for(&server);
    config.endpoint.credentials = Some(provider.clone());
    let client = connected(config).await;
    let mut events = client.events();
    let workload = Workload::start(client.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Rotate: the server accepts both, the provider hands out the new one.
    acl(&mut admin, &[">second-ROTSECRET"]).await;
    *provider.password.lock().unwrap() = "second-ROTSECRET".into();
    let deadline = Instant::now() + Duration::from_secs(4);
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(Event::Reauthenticated { .. })) => break,
            Ok(Ok(_)) => {}
            other => panic!("the live link was never re-authenticated: {other:?}"),
        }
    }
    // The old password is gone; a reconnect must use the new one.
    acl(&mut admin, &["<first-ROTSECRET"]).await;
    let killed: u64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("USER")
        .arg("app")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(killed >= 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ops = workload.stop().await;
    let failed: Vec<_> = ops.iter().filter(|o| o.error.is_some()).collect();
    assert!(failed.is_empty(), "{failed:?}");
    let whoami: String = client.query(redis::cmd("ACL").arg("WHOAMI")).await.unwrap();
    assert_eq!(whoami, "app");
    let mut shown = config_for(&server);
    shown.endpoint.credentials = Some(provider.clone());
    let printed = format!("{client:?} {shown:?} {:?}", shown.endpoint);
    assert!(printed.contains("provider"), "{printed}");
    assert!(!printed.contains("ROTSECRET"), "{printed}");
    client.shutdown().await;
}
