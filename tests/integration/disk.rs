//! A full disk (issue 19): the daemon runs on a small tmpfs the test mounts (as root), which
//! is then filled. Writes answer `Unavailable`, reads and logins go on, the watchdog pings
//! stop (so systemd restarts the daemon), nothing acknowledged is lost, and once space is
//! freed the restarted daemon opens the store cleanly and serves writes again.
//!
//! sled 0.34 keeps the first I/O error of a flush for good: a daemon that met a full disk
//! does not write again until it is restarted, which is what the stopped watchdog pings ask
//! systemd to do (`WatchdogSec=` in the unit).

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use latchkey_client::{ApiError, Client, ImportUser, NewUser};

use latchkey_test_support::{have_root, Setup};

/// A tmpfs of `size` mounted at `path`, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).expect("mkdir");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mount a tmpfs at {}: {status}",
            path.display()
        );
        Tmpfs(path.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A batch of accounts with a fixed (valid, imported) hash: a write that costs no hashing.
fn batch(tag: &str) -> Vec<ImportUser> {
    (0..50)
        .map(|i| ImportUser {
            email: format!("{tag}-{i}@example.com"),
            name: "x".repeat(200),
            role: None,
            status: None,
            password_hash: format!(
                "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA${}",
                "A".repeat(43)
            ),
            locale: None,
            created_at: None,
        })
        .collect()
}

/// Whether the daemon took a whole batch.
async fn import(client: &Client, tag: &str) -> Result<(), ApiError> {
    let outcomes = client
        .import_users(batch(tag))
        .await
        .map_err(|e| e.api().cloned().unwrap_or(ApiError::Unavailable))?;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    Ok(())
}

#[tokio::test]
async fn a_full_disk_refuses_writes_loses_nothing_and_the_restarted_daemon_writes_again() {
    if !have_root("mounts a tmpfs") {
        return;
    }
    if latchkey_test_support::postgres::backend() != latchkey_test_support::postgres::Backend::Sled
    {
        // On PostgreSQL the disk that fills is the database server's.
        return;
    }
    let setup = Setup::sled();
    let disk = setup.dir().join("disk");
    let _tmpfs = Tmpfs::mount(&disk, "48m");
    let notify_path = setup.dir().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("bind the notify socket");
    notify
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let data = disk.join("data");
    let mut daemon = setup
        .toml(&format!(
            "[store]\ndata_dir = {:?}",
            data.to_str().expect("utf-8")
        ))
        .env("NOTIFY_SOCKET", notify_path.to_str().expect("utf-8"))
        .env("WATCHDOG_USEC", "400000")
        .start()
        .await;
    let client = daemon.client().await;
    let owner = client
        .create_user(NewUser {
            email: "owner@example.com".into(),
            name: String::new(),
            password: "owner's long password".into(),
            role: None,
            locale: None,
        })
        .await
        .expect("create_user");
    let mut acknowledged = vec!["before".to_owned()];
    import(&client, "before").await.expect("a write with room");

    // Fill what is left.
    let filler = disk.join("filler");
    {
        use std::io::Write as _;
        let mut file = std::fs::File::create(&filler).expect("create the filler");
        let chunk = vec![0u8; 1 << 20];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.sync_all();
    }
    let mut refused = false;
    for i in 0..400 {
        let tag = format!("full{i}");
        match import(&client, &tag).await {
            Ok(()) => acknowledged.push(tag),
            Err(ApiError::Unavailable) => {
                refused = true;
                break;
            }
            Err(other) => panic!("a write on a full disk answered {other:?}"),
        }
    }
    assert!(refused, "no write was refused on a full disk");
    assert_eq!(import(&client, "again").await, Err(ApiError::Unavailable));

    // Reads and logins go on; health says the store is not well; the watchdog goes quiet.
    assert_eq!(client.get_user(owner.id).await.expect("get_user"), owner);
    client
        .verify_password("owner@example.com", "owner's long password", None)
        .await
        .expect("a login on a full disk");
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.health().await.expect("health").store == "ok" {
        assert!(
            Instant::now() < deadline,
            "health still says the store is ok"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut buf = [0u8; 512];
    while notify.recv(&mut buf).is_ok() {}
    let quiet_from = Instant::now();
    while quiet_from.elapsed() < Duration::from_secs(2) {
        if let Ok(n) = notify.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]);
            assert!(
                !text.contains("WATCHDOG=1"),
                "pinged on a failing store: {text}"
            );
        }
    }

    // Space comes back; the watchdog's restart (here by hand, as systemd would) opens the
    // store cleanly, with every acknowledged write, and writes work again.
    std::fs::remove_file(&filler).expect("remove the filler");
    daemon.kill9().await;
    daemon.restart().await;
    let client = daemon.client().await;
    assert_eq!(client.get_user(owner.id).await.expect("get_user"), owner);
    for tag in &acknowledged {
        for i in [0, 49] {
            let email = format!("{tag}-{i}@example.com");
            client
                .find_user(&email)
                .await
                .unwrap_or_else(|e| panic!("{email}, acknowledged before the crash: {e}"));
        }
    }
    import(&client, "after")
        .await
        .expect("a write once there is room");
}
